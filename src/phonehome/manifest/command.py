"""``phonehome verify MANIFEST [--key PUB]``: re-hash every file of an evidence manifest and check its signature.

Exit 0 when every kept file matches and the signature (if any; required with ``--key``) is valid, 1 on any
mismatch, 2 on bad input.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from phonehome.manifest import model, signing

EXIT_OK = 0
EXIT_PROBLEMS = 1


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "verify", help="check an evidence manifest: file hashes and Ed25519 signature",
        description="Re-hash every file an evidence manifest (manifest.json of a run) lists and check its "
                    "signature (manifest.json.sig). Exit 0 when all match, 1 on a mismatch, 2 on bad input.")
    parser.add_argument("manifest", type=Path, metavar="MANIFEST", help="the run's manifest.json")
    parser.add_argument("--key", type=Path, default=None, metavar="PUB",
                        help="the trusted Ed25519 public key (PEM, or raw base64): the manifest must be signed "
                             "by it")
    parser.add_argument("--files", type=Path, default=None, metavar="DIR",
                        help="where the listed files are (default: the manifest's folder)")


def run(args: argparse.Namespace) -> int:
    trusted = signing.load_public_key(args.key) if args.key is not None else None
    result = model.verify(args.manifest, trusted_key=trusted, files_dir=args.files)
    for line in model.summary_lines(result):
        print(line)
    return EXIT_OK if result.ok else EXIT_PROBLEMS
