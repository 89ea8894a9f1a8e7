"""The ``phonehome`` command line.

Each subcommand lives in the module that owns its subject and exposes ``add_parser(subparsers)`` and
``run(args) -> int``; this module only dispatches, and turns bad input into one line on stderr (exit 2).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from phonehome import __version__
from phonehome.errors import InputError, PhonehomeError

#: subcommand name -> module that implements it
SUBCOMMANDS: dict[str, str] = {
    "scan": "phonehome.scan.command",
    "lab": "phonehome.virtual.command",
    "verify": "phonehome.manifest.command",
    "check": "phonehome.check.command",
}

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_FAULT = 3


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse makes a formatter for each add_argument (a metavar check), and a formatter without a width
        # imports shutil (bz2, lzma: ~3 ms of every `phonehome scan`) to ask the terminal's
        formatter_class: Any = self.formatter_class
        formatter: argparse.HelpFormatter = formatter_class(prog=self.prog, width=help_width())
        return formatter


def help_width() -> int:
    """The width argparse gives help text (``shutil.get_terminal_size().columns - 2``), without shutil."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return (columns or 80) - 2


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; ``only`` (a subcommand named on the command line) skips importing the other subcommands,
    which keeps start-up fast (``phonehome scan`` is timed end to end by its benchmark)."""
    parser = OneLineParser(prog="phonehome", description="Catch phones phoning home.")
    parser.add_argument("--version", action="version", version=f"phonehome {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name, module_name in SUBCOMMANDS.items():
        if only is not None and name != only:
            continue
        module = importlib.import_module(module_name)
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(only=words[0] if words and words[0] in SUBCOMMANDS else None)
    args = parser.parse_args(words)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    module = importlib.import_module(SUBCOMMANDS[args.command])
    try:
        return int(module.run(args))
    except InputError as exc:
        print(f"phonehome {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PhonehomeError as exc:
        print(f"phonehome {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAULT
    except KeyboardInterrupt:
        print(f"phonehome {args.command}: interrupted", file=sys.stderr)
        return 130


def entry() -> NoReturn:
    """The ``phonehome`` program (console script, ``python -m phonehome``): :func:`main`, then exit without the
    interpreter's last garbage collection over everything imported and loaded (``gc.freeze``: ~10-20 ms of every
    ``phonehome scan``, which is timed end to end). Files are closed and output flushed as ever; only cycles
    left at exit go uncollected."""
    code = main()
    gc.freeze()
    sys.exit(code)
