"""A capture file made elsewhere, with its phase windows, for re-analysis."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from phonehome.capture.base import (
    CaptureStats,
    PhaseRecord,
    PhoneMatch,
    _PhasedCapture,
    load_phases,
    phases_path,
)
from phonehome.errors import CaptureError, InputError

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)



class FileCapture(_PhasedCapture):
    """An existing capture re-analysed: phases come from its sidecar JSON (``<pcap>.phases.json`` by default).

    ``phase(name)`` replays a recorded window instead of recording one, so the same test code runs on it.
    """

    source = "file"

    @property
    def owns_pcap(self) -> bool:
        return False

    def __init__(self, pcap: Path, *, phases: Path | None = None, phone: PhoneMatch | None = None,
                 label: str | None = None, redact: Sequence[str] = ()) -> None:
        super().__init__(pcap, phone=phone, label=label, redact=redact)
        self._phases_file = Path(phases) if phases is not None else phases_path(Path(pcap))
        self._recorded: dict[str, PhaseRecord] = {}

    def _start(self) -> None:
        if not self._pcap.is_file():
            raise InputError(self._pcap, "capture file not found", fix="pass the path of an existing pcap/pcapng")
        self._recorded = {record.name: record for record in load_phases(self._phases_file)}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self._state != "running":
            raise CaptureError(f"{self._what()}: phase {name!r} entered while the capture is not running")
        record = self._recorded.get(name)
        if record is None:
            raise CaptureError(f"{self._what()}: {self._phases_file} has no phase {name!r} "
                               f"(has: {', '.join(self._recorded) or 'none'})")
        yield
        if all(existing.name != name for existing in self._phases):
            self._phases.append(record)

    def stop(self) -> CaptureStats:
        if self._state == "running":
            self._last_action = 0.0  # nothing to wait for: the file is complete
        return super().stop()

    def write_phases(self, dest: Path | None = None) -> Path:
        if dest is None:
            return self._phases_file  # never overwrite the input
        return super().write_phases(dest)

    def _stop(self) -> CaptureStats:
        if not self._phases:  # nothing replayed: analyse every recorded phase
            self._phases.extend(self._recorded.values())
        return CaptureStats(source=self.source, pcap=self._pcap, received=len(self._packets()), dropped=None,
                            phases=self.phases)


