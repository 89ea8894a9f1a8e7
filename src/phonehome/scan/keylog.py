"""TLS key logs: NSS ``SSLKEYLOGFILE`` text and pcapng Decryption Secrets Blocks, indexed by client random.

One line per secret, ``LABEL <client random, 64 hex> <secret, hex>``, as OpenSSL, BoringSSL, NSS, Python's
``ssl``, eCapture, friTap and PCAPdroid write it; ``#`` starts a comment. TLS 1.2 sessions have a
``CLIENT_RANDOM`` line (the 48-byte master secret), TLS 1.3 sessions one line per traffic secret. A pcapng file
can carry the same text in a Decryption Secrets Block (``editcap --inject-secrets tls,keys.log``): the capture
reader hands those to :meth:`KeyLog.add_text` as it meets them.

Key logs are secrets: nothing here prints a secret, and the warnings name files and line numbers only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from phonehome.errors import InputError

#: the labels phonehome uses (others, such as QUIC's or EXPORTER_SECRET, are valid lines and ignored)
TLS12_LABEL = "CLIENT_RANDOM"
TLS13_LABELS = frozenset((
    "CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
    "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0",
))
#: pcapng Decryption Secrets Block secrets type of an NSS key log ("TLSK")
DSB_TLS_KEY_LOG = 0x544C534B
#: malformed lines named one by one in the warnings; the rest are only counted
MAX_NAMED_BAD_LINES = 5

_FIX_KEYLOG = "pass an NSS key log (SSLKEYLOGFILE format: 'LABEL <client random hex> <secret hex>' per line)"


class KeyLog:
    """Secrets by client random, from any number of key logs (files, capture blocks)."""

    def __init__(self) -> None:
        self._secrets: dict[bytes, dict[str, bytes]] = {}
        self.sources: list[str] = []
        self.bad_lines = 0
        self.warnings: list[str] = []

    def __len__(self) -> int:
        """Sessions with at least one secret."""
        return len(self._secrets)

    def lookup(self, client_random: bytes) -> dict[str, bytes] | None:
        return self._secrets.get(client_random)

    def add_text(self, text: str, source: str) -> int:
        """Add the secrets of one key log; returns how many lines held one. Malformed lines are counted and
        named in :attr:`warnings` (a key log cut off while being written ends in half a line)."""
        self.sources.append(source)
        added = 0
        named = 0
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            try:
                if len(parts) != 3 or not parts[0].isupper():
                    raise ValueError
                client_random, secret = bytes.fromhex(parts[1]), bytes.fromhex(parts[2])
                if len(client_random) != 32 or not secret:
                    raise ValueError
            except ValueError:
                self.bad_lines += 1
                if named < MAX_NAMED_BAD_LINES:
                    self.warnings.append(f"{source} line {number}: not a key-log line "
                                         "('LABEL <client random, 64 hex> <secret hex>'); ignored")
                named += 1
                continue
            self._secrets.setdefault(client_random, {})[parts[0]] = secret
            added += 1
        if named > MAX_NAMED_BAD_LINES:
            self.warnings.append(f"{source}: {named - MAX_NAMED_BAD_LINES} more malformed key-log lines ignored")
        return added

    def add_block(self, secrets_type: int, data: bytes, source: str) -> None:
        """A pcapng Decryption Secrets Block's payload (only TLS key logs are used)."""
        if secrets_type == DSB_TLS_KEY_LOG:
            self.add_text(data.decode("utf-8", "replace"), source)


def load_keylogs(paths: Iterable[str | os.PathLike[str]], *, into: KeyLog | None = None) -> KeyLog:
    """Read key-log files (``--keylog``, repeatable) into a new key log or ``into``. A missing or unreadable
    file is bad input; so is a file of lines none of which is a secret (it is not a key log)."""
    keylog = into if into is not None else KeyLog()
    for path in paths:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            raise InputError(source, "key log not found", fix="pass the path of an existing key log") from None
        except IsADirectoryError:
            raise InputError(source, "is a directory, not a key log", fix=_FIX_KEYLOG) from None
        except OSError as exc:
            raise InputError(source, f"cannot read key log: {exc.strerror}", fix=_FIX_KEYLOG) from None
        bad_before = keylog.bad_lines
        if not keylog.add_text(text, source) and keylog.bad_lines > bad_before:
            raise InputError(source, "holds no TLS secret line", fix=_FIX_KEYLOG)
    return keylog


def client_random_of(stream_head: bytes) -> bytes | None:
    """The client random of the ClientHello at the start of a TLS stream: the 32 bytes after the record header
    (5), the handshake header (4) and the legacy version (2). None when there is no ClientHello there."""
    if len(stream_head) < 43 or stream_head[0] != 22 or stream_head[5] != 1:
        return None
    return stream_head[11:43]
