"""The evidence manifest: what a run recorded, with a sha256 for every file, so that its integrity can be checked
later (``phonehome verify``).

``manifest.json`` sits in the capture folder and names its files relative to itself. It holds the tool versions
and the inventory's sha256; per phone its build fingerprint and the identifiers checked (masked) with their
source; per capture its file's sha256 and size, its phases in UTC and the clock offsets (recorder and phone
against this host); the findings summary and the verdict per phone. A capture deleted by
``--phonehome-keep-pcaps`` keeps its hash, marked ``kept: false``. Identifier values never appear in clear.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phonehome.errors import InputError
from phonehome.manifest import signing

MANIFEST_NAME = "manifest.json"
#: the manifest's copy in an Allure results folder (the report generator attaches it to the report)
RESULTS_COPY_NAME = "phonehome-manifest.json"
SIGNATURE_SUFFIX = ".sig"
FORMAT = "phonehome-manifest/1"
_HASH_CHUNK_BYTES = 1 << 20
_FIX = "point at a manifest.json written by a phonehome run"


def sha256_file(path: Path) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of a file, read in chunks (captures may be hundreds of MB)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def utc(timestamp: float) -> str:
    """Epoch seconds as ISO 8601 UTC with milliseconds."""
    stamp = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class FileEntry:
    """One file of the evidence; ``kept`` is False when the run deleted it (its hash still says what it was)."""

    path: str
    sha256: str
    bytes: int
    role: str
    kept: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "bytes": self.bytes, "role": self.role, "kept": self.kept}


def file_entry(path: Path, root: Path, role: str, *, kept: bool = True) -> FileEntry:
    digest, size = sha256_file(path)
    try:
        name = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:  # outside the manifest's folder: named absolutely
        name = str(path.resolve())
    return FileEntry(name, digest, size, role, kept)


def dumps(manifest: Mapping[str, Any]) -> bytes:
    """The manifest's bytes: what the signature covers."""
    return (json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def write(manifest: Mapping[str, Any], path: Path) -> tuple[Path, Path | None]:
    """Write ``manifest.json`` (and ``manifest.json.sig`` when a signing key is configured)."""
    data = dumps(manifest)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    key = signing.signing_key_from_env()
    sig_path = path.with_name(path.name + SIGNATURE_SUFFIX)
    if key is None:
        sig_path.unlink(missing_ok=True)  # a stale signature of an older manifest would fail verification
        return path, None
    sig_path.write_text(json.dumps(signing.sign(data, key).to_json(), indent=1) + "\n", encoding="utf-8")
    return path, sig_path


# --- verification ------------------------------------------------------------------------------------------------


@dataclass
class Verification:
    """What ``phonehome verify`` found: problems make it exit 1."""

    manifest: Path
    checked: int = 0
    not_kept: int = 0
    signer: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _load(path: Path) -> tuple[bytes, dict[str, Any]]:
    try:
        data = path.read_bytes()
        manifest = json.loads(data)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"cannot read the manifest: {exc}", fix=_FIX) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(path, f"not a {FORMAT} file", where="format", fix=_FIX)
    if not isinstance(manifest.get("files"), list):
        raise InputError(path, "no files list", where="files", fix=_FIX)
    return data, manifest


def _signature(path: Path) -> signing.Signature | None:
    sig_path = path.with_name(path.name + SIGNATURE_SUFFIX)
    if not sig_path.exists():
        return None
    try:
        raw = json.loads(sig_path.read_text(encoding="utf-8"))
        return signing.Signature(str(raw["algorithm"]), str(raw["public_key"]), str(raw["signature"]))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(sig_path, f"cannot read the signature: {exc}",
                         fix="it is the manifest.json.sig written beside the manifest") from None


def verify(path: Path, *, trusted_key: str | None = None, files_dir: Path | None = None) -> Verification:
    """Re-hash every kept file the manifest lists and check its signature (against ``trusted_key``, raw base64,
    when given: then an unsigned manifest is a problem too)."""
    data, manifest = _load(path)
    result = Verification(path)
    root = files_dir if files_dir is not None else path.parent
    for index, raw in enumerate(manifest["files"]):
        if not isinstance(raw, dict) or not {"path", "sha256"} <= set(raw):
            raise InputError(path, "a file entry without path and sha256", where=f"files[{index}]", fix=_FIX)
        name = str(raw["path"])
        if raw.get("kept") is False:
            result.not_kept += 1
            continue
        target = root / name
        if not target.is_file():
            result.problems.append(f"{name}: missing (the manifest lists it as kept)")
            continue
        digest, size = sha256_file(target)
        result.checked += 1
        if digest != raw["sha256"]:
            result.problems.append(f"{name}: changed since the run (sha256 {digest[:16]}…, manifest says "
                                   f"{str(raw['sha256'])[:16]}…; {size} bytes, manifest says {raw.get('bytes')})")
    signature = _signature(path)
    if signature is None:
        if trusted_key is not None:
            result.problems.append(f"{path.name}: not signed (no {path.name}{SIGNATURE_SUFFIX}), but --key was given")
        return result
    result.signer = signing.key_fingerprint(signature.public_key)
    if not signing.signature_ok(data, signature):
        result.problems.append(f"{path.name}: bad signature (the manifest changed after signing, or the "
                               "signature is not of this manifest)")
    elif trusted_key is not None and signature.public_key != trusted_key:
        result.problems.append(f"{path.name}: signed by another key (sha256 {result.signer[:16]}…) than --key "
                               f"(sha256 {signing.key_fingerprint(trusted_key)[:16]}…)")
    return result


def summary_lines(result: Verification) -> Sequence[str]:
    """What ``phonehome verify`` prints: one line per problem, then the verdict."""
    lines = [f"{result.manifest}: {problem}" for problem in result.problems]
    signed = (f"signature by key sha256 {result.signer[:16]}… {'valid' if result.ok else 'checked'}"
              if result.signer else "unsigned")
    not_kept = f", {result.not_kept} not kept by the run" if result.not_kept else ""
    status = "OK" if result.ok else f"FAILED ({len(result.problems)} problem(s))"
    lines.append(f"{result.manifest}: {status}: {result.checked} file(s) re-hashed{not_kept}; {signed}")
    return lines
