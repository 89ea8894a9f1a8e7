"""Ed25519 signatures of the evidence manifest: the one module of the manifest that imports ``cryptography``.

The private key comes from ``PHONEHOME_SIGNING_KEY`` (the key itself: PEM, or the 32 raw bytes in base64) or
``PHONEHOME_SIGNING_KEY_FILE`` (a file holding either). The signature is detached (``manifest.json.sig``) and
covers the manifest's exact bytes; the manifest names the public key, so ``phonehome verify`` can check
integrity alone, and with ``--key PUB`` that the signer is the one a lab trusts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from phonehome.errors import InputError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_ENV = "PHONEHOME_SIGNING_KEY"
KEY_FILE_ENV = "PHONEHOME_SIGNING_KEY_FILE"
ALGORITHM = "ed25519"
RAW_KEY_BYTES = 32
_KEY_FIX = ("give an Ed25519 key as PEM or as its 32 raw bytes in base64 "
            "(openssl genpkey -algorithm ed25519 -out key.pem)")


@dataclass(frozen=True)
class Signature:
    """A detached signature and the public key that checks it (raw, base64)."""

    algorithm: str
    public_key: str
    value: str

    def to_json(self) -> dict[str, str]:
        return {"algorithm": self.algorithm, "public_key": self.public_key,
                "public_key_sha256": key_fingerprint(self.public_key), "signature": self.value}


def key_fingerprint(public_key_b64: str) -> str:
    """The sha256 of the raw public key, as people compare keys by."""
    return hashlib.sha256(base64.b64decode(public_key_b64)).hexdigest()


def _decode(text: str, source: str, *, private: bool) -> Ed25519PrivateKey | Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    stripped = text.strip()
    try:
        if stripped.startswith("-----BEGIN"):
            data = stripped.encode()
            key = (serialization.load_pem_private_key(data, password=None) if private
                   else serialization.load_pem_public_key(data))
            if not isinstance(key, Ed25519PrivateKey if private else Ed25519PublicKey):
                raise InputError(source, "not an Ed25519 key", fix=_KEY_FIX)
            return key
        raw = base64.b64decode(stripped, validate=True)
        if len(raw) != RAW_KEY_BYTES:
            raise InputError(source, f"a raw Ed25519 key has {RAW_KEY_BYTES} bytes, this one {len(raw)}",
                             fix=_KEY_FIX)
        return (Ed25519PrivateKey.from_private_bytes(raw) if private
                else Ed25519PublicKey.from_public_bytes(raw))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise InputError(source, f"cannot read the {'private' if private else 'public'} key: {exc}",
                         fix=_KEY_FIX) from None


def signing_key_from_env() -> Ed25519PrivateKey | None:
    """The private key named by the environment, or None when signing is not asked for."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    text = os.environ.get(KEY_ENV)
    source = KEY_ENV
    if not text:
        path = os.environ.get(KEY_FILE_ENV)
        if not path:
            return None
        source = path
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(path, f"cannot read the signing key: {exc}", where=KEY_FILE_ENV, fix=_KEY_FIX) from None
    key = _decode(text, source, private=True)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def load_public_key(path: Path) -> str:
    """A public key file (PEM, or raw base64), as raw base64."""
    from cryptography.hazmat.primitives import serialization

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read the public key: {exc}", fix=_KEY_FIX) from None
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = _decode(text, str(path), private=False)
    assert isinstance(key, Ed25519PublicKey)
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def sign(data: bytes, key: Ed25519PrivateKey) -> Signature:
    from cryptography.hazmat.primitives import serialization

    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return Signature(ALGORITHM, base64.b64encode(public).decode(), base64.b64encode(key.sign(data)).decode())


def signature_ok(data: bytes, signature: Signature) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``data`` by its public key."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if signature.algorithm != ALGORITHM:
        return False
    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(signature.public_key, validate=True))
        public.verify(base64.b64decode(signature.value, validate=True), data)
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True
