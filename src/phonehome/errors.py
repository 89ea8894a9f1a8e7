"""One error hierarchy for phonehome, rooted in :class:`PhonehomeError`.

Every error carries the context a lab engineer needs to act on it: which file and field, which device, which
command. The command line prints ``str(error)`` as a single line; pytest shows it as the reason of an error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

#: lines of a tool's stderr shown in an error: its first lines, where a tool says what went wrong, ...
STDERR_HEAD_LINES = 2
#: ... its first error line and the one after it (dumpcap explains the error on the next line) ...
STDERR_ERROR_LINES = 2
#: ... and its last lines, where it says how it ended; the lines between are elided, whole
STDERR_TAIL_LINES = 4
#: a longer line is shortened at a word boundary; a single longer word is kept whole
STDERR_LINE_CHARS = 300

#: an error line: a tool's name as prefix ("dumpcap: ...", as Unix tools report errors) or words of a fault
_ERROR_LINE = re.compile(
    r"(?-i:^[a-z][\w.-]*: )|error|fail|fatal|cannot|can't|could not|couldn't|unable|permission|denied|"
    r"not permitted|no such|there is no|invalid|unknown|refused|timed out|not found|killed",
    re.IGNORECASE)


class PhonehomeError(Exception):
    """Base of every error phonehome raises on purpose."""


class InputError(PhonehomeError):
    """Bad input from the user: a file, an option or a value. Never shown with a traceback.

    ``where`` is a line (``"line 12"``), a field (``"devices[2].unlock"``) or both; ``fix`` says what to do.
    """

    def __init__(self, source: str | Path | None, problem: str, *, where: str | None = None,
                 fix: str | None = None) -> None:
        self.source = str(source) if source is not None else None
        self.problem = problem
        self.where = where
        self.fix = fix
        super().__init__(self._render())

    def _render(self) -> str:
        head = ": ".join(part for part in (self.source, self.where) if part)
        text = f"{head}: {self.problem}" if head else self.problem
        return f"{text} ({self.fix})" if self.fix else text


class DeviceError(PhonehomeError):
    """A phone did not do what it was asked: names the device."""

    def __init__(self, device: str, problem: str) -> None:
        self.device = device
        self.problem = problem
        super().__init__(f"device {device}: {problem}")


class CredentialError(DeviceError):
    """An unlock credential was refused, or the phone's lock is not what the inventory says. Never retried: a
    real phone locks out (and some wipe) after a few wrong attempts, so the phone is quarantined instead."""


class AdbServerGone(DeviceError):
    """No adb server answers where the phone is expected: nothing to wait for, no evidence to collect."""


class PhoneUnreachable(DeviceError):
    """The adb server answers, but the phone is not ``device`` on it (absent, offline, unauthorized) after the
    wait: at session start, connecting again at once would only wait again."""


class CaptureError(PhonehomeError):
    """A capture could not start, stopped early, dropped packets or saw nothing: the evidence is incomplete."""

    def __init__(self, problem: str, *, command: Sequence[str] | None = None, returncode: int | None = None,
                 stderr: str | None = None) -> None:
        self.problem = problem
        self.command = list(command) if command else None
        self.returncode = returncode
        self.stderr = stderr
        parts = [problem]
        if self.command:
            parts.append(f"command: {' '.join(self.command)}")
        if returncode is not None:
            parts.append(f"rc={returncode}")
        excerpt = stderr_excerpt(stderr) if stderr else []
        if len(excerpt) == 1:
            parts.append(f"stderr: {excerpt[0]}")
        elif excerpt:
            parts.append("stderr:\n" + "\n".join(f"  {line}" for line in excerpt))
        super().__init__("; ".join(parts))


def stderr_excerpt(text: str, *, head: int = STDERR_HEAD_LINES, error: int = STDERR_ERROR_LINES,
                   tail: int = STDERR_TAIL_LINES, line_chars: int = STDERR_LINE_CHARS) -> list[str]:
    """The lines of a tool's stderr worth showing in an error, each whole.

    The first ``head`` lines, the first line that reads as an error with the ``error - 1`` lines after it, and
    the last ``tail`` lines; a run of lines between them becomes one ``… N lines …`` marker (a run of one line
    is shown instead, as the marker would be no shorter). Blank lines are dropped; a carriage return (a progress
    counter) ends a line too. A line longer than ``line_chars`` is shortened at a word boundary with `` …``.
    """
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    keep = set(range(min(head, len(lines)))) | set(range(max(0, len(lines) - tail), len(lines)))
    first_error = next((i for i, line in enumerate(lines) if _ERROR_LINE.search(line)), None)
    if first_error is not None:
        keep |= set(range(first_error, min(first_error + max(error, 1), len(lines))))
    shown: list[str] = []
    i = 0
    while i < len(lines):
        if i in keep:
            shown.append(_shorten(lines[i], line_chars))
            i += 1
            continue
        end = i
        while end < len(lines) and end not in keep:
            end += 1
        if end - i == 1:
            shown.append(_shorten(lines[i], line_chars))
        else:
            shown.append(f"… {end - i} lines …")
        i = end
    return shown


def _shorten(line: str, limit: int) -> str:
    """The line cut at the last word boundary within ``limit`` characters; never inside a word."""
    if len(line) <= limit:
        return line
    cut = line.rfind(" ", 0, limit + 1)
    while cut > 0 and line[cut - 1] == " ":
        cut -= 1
    if cut <= 0:  # one long word (a path, a hex dump): whole, up to the next space
        space = line.find(" ", limit)
        return line if space < 0 else line[:space] + " …"
    return line[:cut] + " …"


class LabError(PhonehomeError):
    """The virtual device lab (namespaces, fake internet, virtual phones) could not be set up or used."""
