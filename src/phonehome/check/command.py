"""``phonehome check [--inventory F] [--device LABEL]... [--traffic [--lab-instance NAME]]``: every bench problem
in seconds, one line each.

Exit 0 when no check found an error (warnings are printed, such as a model that differs), 1 on errors, 2 on bad
input (the inventory itself: one line naming the file, line and field).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from phonehome.check.checks import ERROR, OK, check_entries

EXIT_OK = 0
EXIT_PROBLEMS = 1
INVENTORY_ENV = "PHONEHOME_INVENTORY"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "check", help="check the bench: adb, phones, unlock, capture; one line per problem",
        description="Check every phone of the inventory before a run: the adb server and the serial (and its "
                    "state), the model and identifiers the phone reports against the inventory, the unlock "
                    "secret and lock kind, the capture interface (dumpcap records on it for 2 s), the filter's "
                    "placeholders, and two phones whose captures would record each other; with --traffic, that a "
                    "screen wake shows packets from each phone under its capture filter. One line per problem "
                    "with its fix. Exit 0 when all is well, 1 on problems, 2 on bad input.")
    parser.add_argument("--inventory", type=Path, default=None, metavar="FILE",
                        help=f"devices.yaml to check (default: ${INVENTORY_ENV}, else ./devices.yaml)")
    parser.add_argument("--device", action="append", default=[], metavar="LABEL",
                        help="check only this phone (repeatable; globs allowed)")
    parser.add_argument("--no-dumpcap", action="store_true",
                        help="do not run dumpcap to prove it may capture (the interface is still checked)")
    parser.add_argument("--traffic", action="store_true",
                        help="also capture each phone as a test would, switch its screen off and on, wait its "
                             "settle_s.screen_on, and count its packets under the filter (none: the filter, the "
                             "MAC or the access point is wrong); virtual phones need a running lab "
                             "(phonehome lab up)")
    parser.add_argument("--lab-instance", default=None, metavar="NAME",
                        help="the running virtual lab that serves the virtual phones, for --traffic (default: "
                             "the lab 'phonehome lab up' starts without --instance)")


def run(args: argparse.Namespace) -> int:
    from phonehome.inventory import load_inventory

    path = args.inventory or Path(os.environ.get(INVENTORY_ENV) or "devices.yaml")
    inventory = load_inventory(path)
    entries = inventory.select(labels=args.device)
    problems = check_entries(entries, run_dumpcap=not args.no_dumpcap, traffic=args.traffic,
                             lab_instance=args.lab_instance)
    seen = {problem.device: problem.message for problem in problems if problem.severity == OK}
    problems = [problem for problem in problems if problem.severity != OK]
    for problem in problems:
        print(problem)
    troubled = {problem.device for problem in problems if problem.severity == ERROR}
    for entry in entries:
        if entry.label not in troubled:
            note = seen.get(entry.label) or ("virtual: the lab serves it" if entry.backend == "virtual" else "")
            print(f"{entry.label}: ok" + (f" ({note})" if note else ""))
    errors = sum(1 for problem in problems if problem.severity == ERROR)
    print(f"phonehome check: {len(entries)} phone(s), {errors} error(s), {len(problems) - errors} warning(s)")
    return EXIT_PROBLEMS if errors else EXIT_OK
