"""Socket-table poll benchmark: what one batched ``adb shell`` read of /proc/net/{tcp,tcp6,udp,udp6} costs.

Starts a virtual lab with the ad-SDK phone (its periodic HTTPS keeps sockets open), polls its tables with the
same poller the ``traffic`` fixture uses for ``--seconds``, and prints the poll count, median and worst poll
time and the resulting interval (poll + pause). On a real phone, run the same ``SocketPoller`` against its adb
serial (``--serial``, with an adb server running) for its own numbers.

Usage (root, for the lab): ``.venv/bin/python benchmarks/bench_socket_poll.py [--seconds 5] [--serial S]``.
Not a test: numbers go in the README by hand.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from phonehome.capture.sockets import POLL_PAUSE_S, AdbShell, SocketPoller

REPO = Path(__file__).resolve().parents[1]


def measure(shell: AdbShell, seconds: float, label: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        poller = SocketPoller(shell, label=label, record=Path(tmp) / "apps.txt")
        started = time.monotonic()
        poller.start()
        time.sleep(seconds)
        table = poller.stop()
        elapsed = time.monotonic() - started
    ms = sorted(d * 1000 for d in poller.durations)
    print(f"{label}: {poller.timing()}; mean interval {1000 * elapsed / max(len(ms), 1):.0f} ms "
          f"(pause {POLL_PAUSE_S * 1000:.0f} ms); p90 {ms[int(len(ms) * 0.9)] if ms else 0:.0f} ms; "
          f"{table.snapshots} snapshots, {len(poller.failures)} failures, refused: {sorted(table.refused) or 'none'}")
    if ms:
        print(f"  stdev {statistics.pstdev(ms):.1f} ms, min {ms[0]:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--serial", help="a real phone's adb serial (default: a virtual lab phone)")
    parser.add_argument("--adb-port", type=int, default=5037)
    args = parser.parse_args()
    if args.serial:
        measure(AdbShell(args.serial, port=args.adb_port), args.seconds, args.serial)
        return
    from phonehome.identifiers import parse_identifiers
    from phonehome.virtual.lab import Lab, LabDevice
    from phonehome.virtual.phone import VirtualPhoneSpec

    ids = parse_identifiers({"imei": "356938035643809", "android_id": "1f2e3d4c5b6a7980", "serial": "VBENCH0001",
                             "phone": "+4915112345678", "imsi": "262019876543210", "gaid":
                             "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "wifi_mac": "02:1a:11:f0:00:09",
                             "location": {"lat": 52.52, "lon": 13.405}}, source="bench")
    spec = VirtualPhoneSpec(serial="VBENCH0001", label="bench-phone", model="bench", identifiers=ids)
    state = Lab.up([LabDevice(spec=spec, firmware=REPO / "fixtures" / "firmware" / "adsdk.yaml")],
                   instance="bench-poll")
    try:
        measure(AdbShell(spec.serial, host=state.adb_host, port=state.adb_port), args.seconds, spec.label)
    finally:
        Lab.down("bench-poll")


if __name__ == "__main__":
    main()
