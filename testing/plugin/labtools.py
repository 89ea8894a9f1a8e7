"""Helpers shared by the root-only lab tests (``test_firmware``, ``test_lab``, ``test_netlab``): a dumpcap run
started and stopped the way the capture notes say is safe, tshark field extraction and unique lab names.

Kept as plain functions and a class rather than fixtures, because the tests start and stop captures in the
middle of their own set-up."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

#: dumpcap prints its "File:" line once it really captures
DUMPCAP_READY_TIMEOUT_S = 10.0
#: dumpcap drops the kernel's last ring block when stopped sooner than ~250 ms after the last packet
CAPTURE_TAIL_S = 0.6
DUMPCAP_STOP_TIMEOUT_S = 30.0
TSHARK_TIMEOUT_S = 30.0


class Dumpcap:
    """dumpcap on one interface, optionally with a capture filter; returns once it really captures."""

    def __init__(self, interface: str, out: Path, capture_filter: str | None = None) -> None:
        command = [str(shutil.which("dumpcap")), "-i", interface, "-w", str(out)]
        if capture_filter:
            command += ["-f", capture_filter]
        self.proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
        assert self.proc.stderr is not None
        deadline = time.monotonic() + DUMPCAP_READY_TIMEOUT_S
        seen = []
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            seen.append(line)
            if line.startswith("File:") or not line:
                break
        assert seen[-1].startswith("File:"), "".join(seen)

    def stop(self) -> str:
        """Stop after a short tail (so the last packets are written); dumpcap's closing stderr, for its
        packet and drop counts."""
        time.sleep(CAPTURE_TAIL_S)
        self.proc.send_signal(signal.SIGINT)
        _, rest = self.proc.communicate(timeout=DUMPCAP_STOP_TIMEOUT_S)
        assert self.proc.returncode == 0, rest
        return rest


def tshark_fields(path: Path, display_filter: str, *fields: str) -> list[str]:
    """The non-empty lines of ``tshark -T fields`` (one a matching frame) for the given fields."""
    args = [str(shutil.which("tshark")), "-r", str(path), "-Y", display_filter, "-T", "fields"]
    for field in fields:
        args += ["-e", field]
    out = subprocess.run(args, capture_output=True, text=True, timeout=TSHARK_TIMEOUT_S, check=True).stdout
    return [line for line in out.split("\n") if line]


def instance_name() -> str:
    """A lab instance name no other test (or a leftover of an earlier run) uses."""
    return f"t-{uuid.uuid4().hex[:8]}"
