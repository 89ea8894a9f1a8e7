"""PCAPdroid on the phone, controlled over adb: captures without root."""

from __future__ import annotations

import contextlib
import logging
import secrets
import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from phonehome.capture.base import (
    CONTROL_TIMEOUT_S,
    PCAPDROID_ACTIVITY,
    PCAPDROID_DIR,
    PCAPDROID_HINT,
    PCAPDROID_SETTLE_S,
    POLL_INTERVAL_S,
    PULL_TIMEOUT_S,
    READY_TIMEOUT_S,
    STOP_TIMEOUT_S,
    CaptureStats,
    PhoneMatch,
    _PhasedCapture,
    _prepare_output,
    _restrict,
    _run,
)
from phonehome.capture.remote import adb_prefix
from phonehome.errors import CaptureError

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)



class PcapdroidCapture(_PhasedCapture):
    """PCAPdroid (VPN mode, no root) driven by its intent API (``CaptureCtrl``), the dump pulled by adb.

    The first start asks for consent on the phone: grant it permanently (PCAPdroid settings > Control
    permissions) for ``com.android.shell``. PCAPdroid reports no drop count through ``am start``, so
    ``CaptureStats.dropped`` is None; the received count is the packets in the pulled file.
    """

    source = "pcapdroid"

    def __init__(self, serial: str, pcap: Path, *, server_port: int | None = None,
                 extras: Mapping[str, str] | None = None, phone: PhoneMatch | None = None,
                 label: str | None = None) -> None:
        super().__init__(pcap, phone=phone, label=label or serial)
        self.serial = serial
        self._adb = adb_prefix(serial, server_port=server_port)
        self._name = f"phonehome-{secrets.token_hex(6)}.pcap"
        self.extras = dict(extras or {})
        self._started = 0.0

    @property
    def device_file(self) -> str:
        return f"{PCAPDROID_DIR}/{self._name}"

    def intent(self, action: str) -> list[str]:
        """``am start`` of PCAPdroid's CaptureCtrl activity with the action and (for start) the dump settings."""
        extras: dict[str, str] = {"action": action}
        if action == "start":
            extras.update({"pcap_dump_mode": "pcap_file", "pcap_name": self._name, **self.extras})
        command = ["am", "start"]
        for key, value in extras.items():
            command += ["-e", key, value]
        return [*command, "-n", PCAPDROID_ACTIVITY]

    def _shell(self, command: Sequence[str], what: str) -> str:
        script = " ".join(shlex.quote(arg) for arg in command)
        return _run([*self._adb, "shell", script], timeout_s=CONTROL_TIMEOUT_S, what=f"{self._what()}: {what}")

    def _size(self) -> int | None:
        out = self._shell(["sh", "-c", f"stat -c %s {shlex.quote(self.device_file)} 2>/dev/null || true"],
                          "checking the dump file")
        text = out.strip()
        return int(text) if text.isdigit() else None

    def _start(self) -> None:
        _prepare_output(self._pcap)
        self._started = time.time()
        command = [*self._adb, "shell", *self.intent("start")]
        try:
            out = self._shell(self.intent("start"), "starting PCAPdroid")
        except CaptureError as exc:
            raise CaptureError(f"{self._what()}: PCAPdroid could not be started ({PCAPDROID_HINT})",
                               command=command, returncode=exc.returncode, stderr=exc.stderr) from None
        if "Error" in out:  # older `am` prints errors on stdout with rc 0
            raise CaptureError(f"{self._what()}: PCAPdroid could not be started ({PCAPDROID_HINT})",
                               command=command, stderr=out)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while (size := self._size()) is None or size < 24:  # a pcap header: PCAPdroid is writing
            if time.monotonic() > deadline:
                raise CaptureError(f"{self._what()}: PCAPdroid did not start dumping within {READY_TIMEOUT_S:g} s "
                                   "(grant com.android.shell the capture permission permanently in PCAPdroid)",
                                   command=command)
            time.sleep(POLL_INTERVAL_S)
        self._sync_clock((*self._adb, "shell"))

    def _stop(self) -> CaptureStats:
        self._shell(self.intent("stop"), "stopping PCAPdroid")
        last, stable_since = self._size(), time.monotonic()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() - stable_since < PCAPDROID_SETTLE_S:
            if time.monotonic() > deadline:
                raise CaptureError(f"{self._what()}: the dump file kept growing {STOP_TIMEOUT_S:g} s after stop")
            time.sleep(POLL_INTERVAL_S)
            size = self._size()
            if size != last:
                last, stable_since = size, time.monotonic()
        if last is None:
            raise CaptureError(f"{self._what()}: PCAPdroid wrote no dump file at {self.device_file}")
        _run([*self._adb, "pull", self.device_file, str(self._pcap)], timeout_s=PULL_TIMEOUT_S,
             what=f"{self._what()}: pulling the dump")
        _restrict(self._pcap)
        with contextlib.suppress(CaptureError):
            self._shell(["rm", "-f", self.device_file], "removing the dump from the phone")
        self._state = "stopped"
        received = len(self._packets())
        return CaptureStats(source=self.source, pcap=self._pcap, received=received, dropped=None,
                            command=tuple(self._adb), started=self._started, stopped=time.time(),
                            phases=self.phases)

    def _abort(self) -> None:
        with contextlib.suppress(CaptureError):
            self._shell(self.intent("stop"), "stopping PCAPdroid")

