"""The evidence manifest: hashes, Ed25519 signatures and ``phonehome verify`` (exit 0/1/2)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from phonehome.cli import main
from phonehome.errors import InputError
from phonehome.manifest import model, signing


def _keys(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = Ed25519PrivateKey.generate()
    private = tmp_path / f"{name}.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public = tmp_path / f"{name}.pub.pem"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def _run(tmp_path: Path) -> Path:
    """A capture folder as a run leaves it: a kept capture, a deleted one (hash only), the manifest."""
    captures = tmp_path / "captures"
    captures.mkdir()
    kept = captures / "nokia-unlock.pcapng"
    kept.write_bytes(b"\x0a\x0d\x0d\x0a" + b"\0" * 60)
    gone = captures / "fixed-unlock.pcapng"
    gone.write_bytes(b"\x0a\x0d\x0d\x0a" + b"\1" * 60)
    entries = [model.file_entry(kept, captures, "capture"), model.file_entry(gone, captures, "capture", kept=False)]
    gone.unlink()
    manifest = {"format": model.FORMAT, "files": [e.to_json() for e in entries], "verdicts": []}
    model.write(manifest, captures / model.MANIFEST_NAME)
    return captures


def test_unsigned_manifest_verifies_and_a_changed_capture_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(signing.KEY_ENV, raising=False)
    monkeypatch.delenv(signing.KEY_FILE_ENV, raising=False)
    captures = _run(tmp_path)
    manifest = captures / model.MANIFEST_NAME
    entry = json.loads(manifest.read_text())["files"][0]
    assert entry == {"path": "nokia-unlock.pcapng", "bytes": 64, "role": "capture", "kept": True,
                     "sha256": model.sha256_file(captures / "nokia-unlock.pcapng")[0]}
    assert main(["verify", str(manifest)]) == 0
    assert capsys.readouterr().out.strip() == (
        f"{manifest}: OK: 1 file(s) re-hashed, 1 not kept by the run; unsigned")
    with (captures / "nokia-unlock.pcapng").open("r+b") as fh:  # one byte of the evidence changed
        fh.seek(10)
        fh.write(b"\xff")
    assert main(["verify", str(manifest)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{manifest}: nokia-unlock.pcapng: changed since the run (sha256 ")
    assert out[-1].startswith(f"{manifest}: FAILED (1 problem(s))")
    (captures / "nokia-unlock.pcapng").unlink()
    result = model.verify(manifest)
    assert result.problems == ["nokia-unlock.pcapng: missing (the manifest lists it as kept)"]


def test_signed_manifest_good_tampered_and_wrong_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    private, public = _keys(tmp_path, "lab")
    _, other_public = _keys(tmp_path, "other")
    monkeypatch.delenv(signing.KEY_ENV, raising=False)
    monkeypatch.setenv(signing.KEY_FILE_ENV, str(private))
    captures = _run(tmp_path)
    manifest = captures / model.MANIFEST_NAME
    assert (captures / "manifest.json.sig").is_file()
    assert main(["verify", str(manifest), "--key", str(public)]) == 0
    assert "signature by key sha256 " in capsys.readouterr().out
    assert main(["verify", str(manifest), "--key", str(other_public)]) == 1
    assert "signed by another key" in capsys.readouterr().out
    # the manifest edited after signing (a verdict turned into a pass): the signature no longer holds
    data = json.loads(manifest.read_text())
    data["verdicts"] = [{"device": "nokia", "verdict": "pass"}]
    manifest.write_bytes(model.dumps(data))
    assert main(["verify", str(manifest)]) == 1
    assert "bad signature" in capsys.readouterr().out
    # no signature at all, while the lab's key is required
    (captures / "manifest.json.sig").unlink()
    assert main(["verify", str(manifest), "--key", str(public)]) == 1
    assert "not signed" in capsys.readouterr().out


def test_key_from_the_environment_as_raw_base64(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    monkeypatch.delenv(signing.KEY_FILE_ENV, raising=False)
    monkeypatch.setenv(signing.KEY_ENV, base64.b64encode(raw).decode())
    captures = _run(tmp_path)
    pub_raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    (tmp_path / "lab.pub").write_text(base64.b64encode(pub_raw).decode() + "\n")
    result = model.verify(captures / model.MANIFEST_NAME, trusted_key=signing.load_public_key(tmp_path / "lab.pub"))
    assert result.ok and result.signer is not None


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(signing.KEY_FILE_ENV, raising=False)
    monkeypatch.setenv(signing.KEY_ENV, "bm90IGEga2V5")  # "not a key" in base64
    with pytest.raises(InputError, match="a raw Ed25519 key has 32 bytes, this one 9"):
        signing.signing_key_from_env()
    monkeypatch.delenv(signing.KEY_ENV)
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    assert main(["verify", str(tmp_path / "other.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a phonehome-manifest/1 file" in err and "Traceback" not in err
    assert main(["verify", str(tmp_path / "missing.json")]) == 2
    (tmp_path / "key.pub").write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    captures = _run(tmp_path)
    capsys.readouterr()
    assert main(["verify", str(captures / model.MANIFEST_NAME), "--key", str(tmp_path / "key.pub")]) == 2
    assert "cannot read the public key" in capsys.readouterr().err
