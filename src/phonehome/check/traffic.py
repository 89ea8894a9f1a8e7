"""``phonehome check --traffic``: a screen wake shows packets from the phone under its capture filter.

The capture starts exactly as the harness starts it (:func:`phonehome.capture.capture_for` with the device's
capture spec; a virtual phone's on the running lab's interface), the phone's screen goes off and on through the
phone controller (the calls the fixtures make), the device's ``settle_s.screen_on`` passes, and the packets of that
window are counted. None is the bench problem a whole night of "no traffic from the phone" errors would otherwise
reveal: a filter on the wrong MAC (randomised Wi-Fi MAC), the wrong interface, a phone not on the access point.
Identifier values (and every MAC written in the filter) appear masked only.
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phonehome.errors import InputError, PhonehomeError
from phonehome.identifiers import Identifiers, mask

if TYPE_CHECKING:
    from phonehome.capture import CaptureContext
    from phonehome.inventory import DeviceEntry
    from phonehome.virtual.lab import LabPhone

#: the window whose packets are counted
PHASE = "screen-on"
_MAC = re.compile(r"(?<![0-9A-Fa-f:-])[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}(?![0-9A-Fa-f:-])")


@dataclass(frozen=True)
class WakeResult:
    """What one screen wake showed: the phone's packets in the window, under which filter, where, how long."""

    packets: int
    bpf: str | None
    where: str
    window_s: float

    def filter_text(self) -> str:
        return f"filter '{self.bpf}'" if self.bpf else "no filter"

    def ok_message(self) -> str:
        return (f"screen wake: {self.packets} packet(s) from the phone under {self.filter_text()} on {self.where} "
                f"in {self.window_s:.1f} s")

    def problem_message(self) -> str:
        return (f"traffic: no packet from the phone under {self.filter_text()} on {self.where} within "
                f"{self.window_s:.1f} s of a screen wake: check the filter, the phone's MAC (randomisation: "
                "turn it off for the bench network, or put the MAC the phone uses in the inventory), and that the "
                "phone is on the access point of that interface")


def masked_filter(bpf: str | None, identifiers: Identifiers) -> str | None:
    """The filter for people: the identifier values it was filled with, and any MAC written in it, masked."""
    if bpf is None:
        return None
    for name in identifiers.names():
        for value in sorted(identifiers.get(name), key=len, reverse=True):
            if value and len(value) >= 4:
                bpf = bpf.replace(value, mask(value))
    return _MAC.sub(lambda match: mask(match.group(0)), bpf)


def capture_place(entry: DeviceEntry, context: CaptureContext) -> str:
    """Where the capture records, as a person would name it."""
    spec = entry.capture
    if spec.source == "interface":
        return str(context.lab_interface if spec.interface in (None, "auto") else spec.interface)
    if spec.source == "ssh":
        return f"{spec.interface} on {spec.host}"
    return f"the phone ({spec.source})"


def wake(entry: DeviceEntry, phone: Any, identifiers: Identifiers, *, lab_phone: LabPhone | None = None,
         adb_server_port: int | None = None) -> WakeResult:
    """Capture as the harness does, switch the screen off and on, wait ``settle_s.screen_on``, count the phone's
    packets in that window. Raises InputError for a filter that cannot be filled, PhonehomeError for a phone or
    capture fault; the capture file (identifiers inside) is deleted before returning."""
    from phonehome.capture import CaptureContext, capture_for

    with tempfile.TemporaryDirectory(prefix="phonehome-check-") as tmp:
        context = CaptureContext(directory=Path(tmp), lab_interface=lab_phone.interface if lab_phone else None,
                                 adb_server_port=adb_server_port)
        capture = capture_for(entry, context, name="traffic", identifiers=identifiers)
        bpf = masked_filter(entry.capture.bpf(identifiers), identifiers)
        try:
            capture.start()
            phone.screen_off()
            time.sleep(entry.settle("screen_off"))
            with capture.phase(PHASE):
                phone.screen_on()
                time.sleep(entry.settle("screen_on"))
            capture.stop()
            record = capture.phases[-1]
            return WakeResult(packets=capture.packets_in(PHASE), bpf=bpf, where=capture_place(entry, context),
                              window_s=record.end - record.start)
        finally:
            capture.close()


def wake_problem(entry: DeviceEntry, phone: Any, identifiers: Identifiers, **kwargs: Any) -> tuple[bool, str]:
    """(True, the OK line) or (False, the problem with its fix), for one phone."""
    try:
        result = wake(entry, phone, identifiers, **kwargs)
    except InputError as exc:
        return False, f"traffic: {exc}"
    except PhonehomeError as exc:
        return False, f"traffic: {str(exc).removeprefix(f'device {entry.label}: ')}"
    finally:
        phone.close()
    if result.packets == 0:
        return False, result.problem_message()
    return True, result.ok_message()
