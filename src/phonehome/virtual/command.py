"""``phonehome lab up|down|status``: run the virtual lab from the command line.

``up`` starts the virtual phones of ``devices.yaml`` (``backend: virtual`` entries) behind their own adb server,
each in a network namespace whose root-side interface is the capture point, and leaves them running;
``status`` prints how to reach them; ``down`` removes everything. Needs root, like the lab itself.
Serials and Wi-Fi MACs are masked in what it prints, ``--json`` too, unless ``--show-identifiers``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from phonehome.errors import InputError, LabError
from phonehome.identifiers import mask
from phonehome.virtual.lab import DEFAULT_INSTANCE, Lab, LabDevice, LabState, log_path

DEFAULT_INVENTORY = Path("devices.yaml")
EXIT_OK = 0
EXIT_NOT_RUNNING = 1


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("lab", help="start, inspect or stop the virtual phone lab (needs root)",
                                   description=__doc__.split("\n\n")[1] if __doc__ else None)
    actions = parser.add_subparsers(dest="lab_action", metavar="ACTION", required=True,
                                    parser_class=type(parser))
    up = actions.add_parser("up", help="start the virtual phones of devices.yaml and their network lab")
    up.add_argument("--devices", type=Path, default=DEFAULT_INVENTORY, metavar="DEVICES_YAML",
                    help="the inventory whose 'backend: virtual' devices to start (default: ./devices.yaml)")
    up.add_argument("--only", action="append", default=[], metavar="LABEL",
                    help="start only this device (repeatable; globs allowed)")
    up.add_argument("--adb-port", type=int, default=0, help="port of the lab's adb server (default: any free)")
    for action in (up, actions.add_parser("down", help="stop the lab and remove its namespaces and processes"),
                   actions.add_parser("status", help="show the running lab: adb port, phones, interfaces")):
        action.add_argument("--instance", default=DEFAULT_INSTANCE,
                            help=f"lab instance name, so several labs can run side by side (default: {DEFAULT_INSTANCE})")
        action.add_argument("--json", action="store_true",
                            help="print the state as JSON (serials and Wi-Fi MACs masked unless "
                                 "--show-identifiers)")
    for action in (up, actions.choices["status"]):
        action.add_argument("--show-identifiers", action="store_true",
                            help="print serials and Wi-Fi MACs in clear: a capture filter such as "
                                 "'ether host MAC' needs the clear MAC (capturing on a phone's own interface "
                                 "needs none)")


def run(args: argparse.Namespace) -> int:
    if args.lab_action == "up":
        state = Lab.up(_devices(args.devices, args.only), instance=args.instance, adb_port=args.adb_port,
                       detach=True)
        _print_state(state, args.json, args.show_identifiers)
        return EXIT_OK
    if args.lab_action == "down":
        Lab.down(args.instance)
        if Lab.status(args.instance) is not None:
            raise LabError(f"lab {args.instance!r} is still running after down; see {args.instance}.log")
        print(f"lab {args.instance!r} is down")
        return EXIT_OK
    running = Lab.status(args.instance)
    if running is None:
        # a lab that stopped by itself left its log: say why it stopped
        cause = Lab.failure(args.instance) if log_path(args.instance).exists() else None
        print(json.dumps(None) if args.json else cause or f"lab {args.instance!r} is not running")
        return EXIT_NOT_RUNNING
    _print_state(running, args.json, args.show_identifiers)
    return EXIT_OK


def _devices(path: Path, only: list[str]) -> list[LabDevice]:
    from phonehome.inventory import load_inventory

    entries = [entry for entry in load_inventory(path).select(labels=only) if entry.backend == "virtual"]
    if not entries:
        raise InputError(path, "no 'backend: virtual' device selected",
                         fix="add a virtual device to the inventory (see docs/devices.md) or fix --only")
    return [LabDevice.from_entry(entry) for entry in entries]


def _print_state(state: LabState, as_json: bool, show_identifiers: bool) -> None:
    if not show_identifiers:
        state = dataclasses.replace(state, phones=tuple(
            dataclasses.replace(phone, serial=mask(phone.serial), wifi_mac=mask(phone.wifi_mac))
            for phone in state.phones))
    if as_json:
        print(json.dumps(state.to_json(), indent=2))
        return
    out = sys.stdout
    out.write(f"lab {state.instance!r} running (pid {state.pid})\n")
    out.write(f"adb server: {state.adb_host}:{state.adb_port}  "
              f"(export ANDROID_ADB_SERVER_PORT={state.adb_port}, or adb -P {state.adb_port} devices)\n")
    out.write(f"{'label':<20} {'serial':<20} {'capture on':<14} {'wifi mac':<18} {'ip':<14} namespace\n")
    for phone in state.phones:
        out.write(f"{phone.label:<20} {phone.serial:<20} {phone.interface:<14} {phone.wifi_mac:<18} "
                  f"{phone.ip:<14} {phone.netns}\n")
    if state.log_path:
        out.write(f"log: {state.log_path}\n")
