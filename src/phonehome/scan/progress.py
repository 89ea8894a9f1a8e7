"""The one-line progress display of a long ``phonehome scan``: bytes read, percent, MB/s, time left.

Shown only where a person watches (stderr is a terminal) and only for large captures; redrawn at most a few
times a second from the reader's once-per-chunk callback, so it costs nothing per packet.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TextIO

#: captures smaller than this finish before a progress line would help
PROGRESS_MIN_BYTES = 100 << 20
#: at most this many redraws per second
REDRAW_INTERVAL_S = 0.25


class ProgressLine:
    """Draws ``scanned 1.2 GB of 2.0 GB (61 %), 310 MB/s, 3 s left`` over itself on ``stream``.

    Call it with the bytes read so far; :meth:`finish` erases the line so that what is printed next (warnings,
    the findings table) starts on a clean line. ``clock`` is a parameter so tests can drive the time.
    """

    def __init__(self, stream: TextIO, total_bytes: int, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.total = max(total_bytes, 1)
        self.clock = clock
        self.started = clock()
        self.last_draw = 0.0  # the first draw after one interval: a rate measured over nothing means nothing
        self.width = 0

    def __call__(self, done: int) -> None:
        now = self.clock() - self.started
        if now - self.last_draw < REDRAW_INTERVAL_S:
            return
        self.last_draw = now
        self._draw(self.render(done, now))

    def render(self, done: int, seconds: float) -> str:
        """The line for ``done`` bytes read after ``seconds``."""
        done = min(max(done, 0), self.total)
        rate = done / seconds if seconds > 0 else 0.0
        left = f"{math.ceil((self.total - done) / rate)} s left" if rate > 0 else "time left unknown"
        return (f"phonehome scan: {done / 1e6:,.0f} of {self.total / 1e6:,.0f} MB ({100 * done // self.total} %), "
                f"{rate / 1e6:,.0f} MB/s, {left}")

    def _draw(self, line: str) -> None:
        self.stream.write("\r" + line.ljust(self.width))
        self.stream.flush()
        self.width = len(line)

    def finish(self) -> None:
        """Erase the line (if one was drawn)."""
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


def progress_line(stream: TextIO, total_bytes: int, *, quiet: bool = False) -> ProgressLine | None:
    """A progress line for a scan of ``total_bytes``, or None where none belongs: ``--quiet``, a small
    capture, or ``stream`` not a terminal (a pipe, a CI log, a file)."""
    if quiet or total_bytes < PROGRESS_MIN_BYTES:
        return None
    try:
        interactive = stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return None
    return ProgressLine(stream, total_bytes) if interactive else None
