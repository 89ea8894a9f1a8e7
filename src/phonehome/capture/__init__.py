"""Live capture of a phone's traffic, with named phase windows: the one module that starts capture processes.

dumpcap is the recorder (pyshark loses packets in bursts and breaks under event loops). Every capture source —
an interface on this host, tcpdump on a rooted phone, PCAPdroid on the phone, dumpcap on a remote host over ssh,
or a file for re-analysis — satisfies the :class:`Capture` protocol, so the harness never cares which one runs.

Fail closed: a capture that never became ready, died, dropped packets, or saw no packet from the phone during a
phase raises :class:`~phonehome.errors.CaptureError` carrying the command, return code and stderr. Missing
evidence is an error, never "nothing found".

Phase windows are recorded in capture time: the wall clock (epoch seconds) that also stamps the packets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from phonehome.capture.base import (
    STOP_DELAY_S,
    Capture,
    CaptureStats,
    PhaseRecord,
    PhoneMatch,
    load_phases,
    measure_clock_offset,
    phases_path,
    read_packet_index,
)
from phonehome.capture.dumpcap import DumpcapCapture, parse_dumpcap_stats, parse_tcpdump_stats
from phonehome.capture.file import FileCapture
from phonehome.capture.pcapdroid import PcapdroidCapture
from phonehome.capture.remote import (
    AdbTcpdumpCapture,
    RemoteCommandCapture,
    RemoteShell,
    SshDumpcapCapture,
    adb_prefix,
    adb_shell,
    dumpcap_recorder,
    local_shell,
    ssh_shell,
    tcpdump_recorder,
)
from phonehome.errors import InputError

__all__ = ['STOP_DELAY_S', 'AdbTcpdumpCapture', 'Capture', 'CaptureContext', 'CaptureStats', 'DumpcapCapture', 'FileCapture', 'PcapdroidCapture', 'PhaseRecord', 'PhoneMatch', 'RemoteCommandCapture', 'RemoteShell', 'SshDumpcapCapture', 'adb_prefix', 'adb_shell', 'capture_for', 'dumpcap_recorder', 'load_phases', 'local_shell', 'measure_clock_offset', 'parse_dumpcap_stats', 'parse_tcpdump_stats', 'phases_path', 'read_packet_index', 'ssh_shell', 'tcpdump_recorder']

if TYPE_CHECKING:
    from phonehome.identifiers import Identifiers
    from phonehome.inventory import DeviceEntry




@dataclass(frozen=True)
class CaptureContext:
    """What the harness knows at run time that devices.yaml cannot: the virtual phone's lab interface (for
    ``interface: auto``), the adb server port of the virtual lab, where capture files go, and whether the user
    asked to see identifiers unmasked in messages."""

    directory: Path
    lab_interface: str | None = None
    adb_server_port: int | None = None
    show_identifiers: bool = False


def capture_for(entry: DeviceEntry, context: CaptureContext, *, name: str,
                identifiers: Identifiers | None = None) -> Capture:
    """Build the capture that ``entry.capture`` describes, writing ``<directory>/<label>-<name>.pcapng``.

    ``identifiers`` are the device's identifiers as the harness knows them (the inventory's merged with those
    read from the phone); they fill the filter template. Default: the inventory's alone.
    """
    spec = entry.capture
    ids = identifiers if identifiers is not None else entry.identifiers
    bpf = spec.bpf(ids)
    macs = ids.get("wifi_mac")
    # with a filter the file holds only the phone's packets; without one, the phone is known by its MACs
    phone = PhoneMatch() if bpf else PhoneMatch.of(macs=macs)
    redact: tuple[str, ...] = ()
    if not context.show_identifiers:
        redact = tuple(value for key in (*spec.placeholders(), "wifi_mac") for value in ids.get(key))
    pcap = Path(context.directory) / f"{entry.label}-{name}.pcapng"
    label = entry.label
    if spec.source == "interface":
        interface = spec.interface
        if interface in (None, "auto"):
            if context.lab_interface is None:
                raise InputError(entry.source, "capture.interface is 'auto' but this device has no lab interface",
                                 where=f"line {entry.line}, {entry.key}.capture.interface",
                                 fix="name the access point interface, e.g. interface: wlan0-ap")
            interface = context.lab_interface
        return DumpcapCapture(interface, pcap, bpf=bpf, phone=phone, label=label, buffer_mib=spec.buffer_mib,
                              redact=redact)
    if spec.source == "ssh":
        assert spec.host is not None and spec.interface is not None  # validated by the inventory
        return SshDumpcapCapture(spec.host, spec.interface, pcap, bpf=bpf, phone=phone, label=label, redact=redact)
    if spec.source == "adb-tcpdump":
        recorder = list(spec.command) if spec.command else None
        return AdbTcpdumpCapture(entry.serial, pcap.with_suffix(".pcap"), interface=spec.interface or "wlan0",
                                 bpf=bpf, server_port=context.adb_server_port, label=label, recorder=recorder,
                                 redact=redact)
    if spec.source == "pcapdroid":
        return PcapdroidCapture(entry.serial, pcap.with_suffix(".pcap"), server_port=context.adb_server_port,
                                extras=spec.extras, label=label)
    if spec.source == "file":
        assert spec.file is not None
        return FileCapture(spec.file, phases=spec.phases, phone=PhoneMatch.of(macs=macs), label=label,
                           redact=redact)
    raise InputError(entry.source, f"unknown capture source {spec.source!r}",
                     where=f"line {entry.line}, {entry.key}.capture.source")
