"""TLS decryption with key logs: what a TLS flow carried, fed through the same decoders as cleartext.

The scanner hands a TLS flow here only when a key log holds secrets for its ClientHello's client random; every
other TLS flow stays on the scanner's fast path (one dict lookup per packet), so captures without keys scan
exactly as fast as before. Each direction of a decrypted flow gets a :class:`TlsDecoder`, a
:class:`~phonehome.scan.protocols.StreamDecoder` over the reassembled TCP bytes: it cuts records (across
segments), follows the handshake in cleartext (ServerHello: cipher suite, version, server random) and, once
keys apply, decrypts with ``cryptography``:

- TLS 1.3 (RFC 8446): AES-128/256-GCM and ChaCha20-Poly1305; handshake then application traffic secrets (the
  switch follows the decrypted Finished), and KeyUpdate.
- TLS 1.2 (RFC 5246, 5288, 7905, 7366): AES-GCM, ChaCha20-Poly1305 and AES-CBC with HMAC (MAC-then-encrypt and
  encrypt-then-MAC), keys expanded from the master secret.

Application data goes to an inner decoder chosen like the scanner's (HTTP/1.x, HTTP/2, MQTT, WebSocket, DNS over
TLS, else raw); its units come back with TCP-stream offsets (so findings cite the frames that carried the records)
and an encoding chain starting ``tls``. The client's cleartext handshake records (ClientHello, a TLS 1.2 client
certificate) are scanned as they are, as :mod:`.handshakes` does for flows without keys. A bad key, a missing secret, a corrupt record or a gap in the TCP stream stops
that direction's decryption and is counted (:meth:`TlsDecryption.warnings`); nothing here raises on bad input.
QUIC is not decrypted.
"""

from __future__ import annotations

import bisect
import hmac
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from phonehome.scan import layers
from phonehome.scan.decoders import stream_decoder
from phonehome.scan.handshakes import MAX_HANDSHAKE_BYTES as MAX_CLEARTEXT_HANDSHAKE_BYTES
from phonehome.scan.http2 import Http2Decoder
from phonehome.scan.keylog import TLS12_LABEL, KeyLog, client_random_of
from phonehome.scan.protocols import (
    PROTO_DNS,
    PROTO_HTTP,
    PROTO_HTTP2,
    PROTO_MQTT,
    PROTO_TLS,
    PROTO_TLS_HANDSHAKE,
    PROTO_UNKNOWN,
    PROTO_WEBSOCKET,
    StreamDecoder,
    Unit,
    WebSocketDecoder,
    classify_stream,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

    from phonehome.scan.scanner import Flow, Phase

# ``cryptography`` is imported where keys are made (~18 ms of start-up a scan without keys does not pay)

#: the chain every decrypted unit's encoding starts with
TLS_CHAIN = "tls"
#: decryption outcome of a TLS flow (``Flow.decryption``)
DECRYPTED = "decrypted"
NO_KEY = "no-key"
FAILED = "failed"
#: a handshake message larger than this is not one (stops a corrupt length from buffering forever)
MAX_HANDSHAKE_BYTES = 1 << 20
#: bytes a direction may hold waiting for the other side's ServerHello before giving up
MAX_WAIT_BYTES = 1 << 20
#: TLS record payloads are at most 2^14 bytes plus expansion (RFC 8446 5.2)
MAX_RECORD_BYTES = (1 << 14) + 2048
#: DNS over TLS
DOT_PORT = 853
#: distinct decryption problems listed in the warnings
MAX_PROBLEMS = 10

CT_CCS, CT_ALERT, CT_HANDSHAKE, CT_APPDATA = 20, 21, 22, 23
HS_SERVER_HELLO, HS_FINISHED, HS_KEY_UPDATE = 2, 20, 24
EXT_SUPPORTED_VERSIONS, EXT_ENCRYPT_THEN_MAC = 0x002B, 0x0016
TLS12, TLS13 = 0x0303, 0x0304
#: a ServerHello with this random is a HelloRetryRequest (RFC 8446 4.1.3)
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")


@dataclass(frozen=True)
class Suite:
    """What phonehome needs to know of a cipher suite."""

    name: str
    cipher: str  # "gcm", "chacha" or "cbc"
    key_bytes: int
    fixed_iv_bytes: int  # TLS 1.2 key-block IV (4 for GCM's salt, 12 for ChaCha20); TLS 1.3 always 12
    prf_hash: str  # "sha256" or "sha384": TLS 1.2 PRF, TLS 1.3 HKDF
    mac_hash: str = ""  # CBC suites' HMAC


_S = Suite
SUITES: dict[int, Suite] = {
    # TLS 1.3
    0x1301: _S("TLS_AES_128_GCM_SHA256", "gcm", 16, 12, "sha256"),
    0x1302: _S("TLS_AES_256_GCM_SHA384", "gcm", 32, 12, "sha384"),
    0x1303: _S("TLS_CHACHA20_POLY1305_SHA256", "chacha", 32, 12, "sha256"),
    # TLS 1.2 AEAD
    0x009C: _S("RSA_WITH_AES_128_GCM_SHA256", "gcm", 16, 4, "sha256"),
    0x009D: _S("RSA_WITH_AES_256_GCM_SHA384", "gcm", 32, 4, "sha384"),
    0x009E: _S("DHE_RSA_WITH_AES_128_GCM_SHA256", "gcm", 16, 4, "sha256"),
    0x009F: _S("DHE_RSA_WITH_AES_256_GCM_SHA384", "gcm", 32, 4, "sha384"),
    0xC02B: _S("ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "gcm", 16, 4, "sha256"),
    0xC02C: _S("ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "gcm", 32, 4, "sha384"),
    0xC02F: _S("ECDHE_RSA_WITH_AES_128_GCM_SHA256", "gcm", 16, 4, "sha256"),
    0xC030: _S("ECDHE_RSA_WITH_AES_256_GCM_SHA384", "gcm", 32, 4, "sha384"),
    0xCCA8: _S("ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "chacha", 32, 12, "sha256"),
    0xCCA9: _S("ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "chacha", 32, 12, "sha256"),
    0xCCAA: _S("DHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "chacha", 32, 12, "sha256"),
    # TLS 1.2 CBC + HMAC
    0x002F: _S("RSA_WITH_AES_128_CBC_SHA", "cbc", 16, 16, "sha256", "sha1"),
    0x0035: _S("RSA_WITH_AES_256_CBC_SHA", "cbc", 32, 16, "sha256", "sha1"),
    0x003C: _S("RSA_WITH_AES_128_CBC_SHA256", "cbc", 16, 16, "sha256", "sha256"),
    0x003D: _S("RSA_WITH_AES_256_CBC_SHA256", "cbc", 32, 16, "sha256", "sha256"),
    0xC009: _S("ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "cbc", 16, 16, "sha256", "sha1"),
    0xC00A: _S("ECDHE_ECDSA_WITH_AES_256_CBC_SHA", "cbc", 32, 16, "sha256", "sha1"),
    0xC013: _S("ECDHE_RSA_WITH_AES_128_CBC_SHA", "cbc", 16, 16, "sha256", "sha1"),
    0xC014: _S("ECDHE_RSA_WITH_AES_256_CBC_SHA", "cbc", 32, 16, "sha256", "sha1"),
    0xC023: _S("ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", "cbc", 16, 16, "sha256", "sha256"),
    0xC024: _S("ECDHE_ECDSA_WITH_AES_256_CBC_SHA384", "cbc", 32, 16, "sha384", "sha384"),
    0xC027: _S("ECDHE_RSA_WITH_AES_128_CBC_SHA256", "cbc", 16, 16, "sha256", "sha256"),
    0xC028: _S("ECDHE_RSA_WITH_AES_256_CBC_SHA384", "cbc", 32, 16, "sha384", "sha384"),
}
_MAC_BYTES = {"sha1": 20, "sha256": 32, "sha384": 48}


@dataclass(frozen=True)
class DecryptedUnit(Unit):
    """A unit of decrypted bytes. Its span is the TCP bytes of the records that carried it (not exact: headers
    and tags sit between records); ``span`` maps a match inside an exact inner unit back to the TCP bytes that
    carried exactly it, so a finding cites those frames and not every frame of a long body."""

    plain_start: int = 0
    inner_exact: bool = False
    decoder: TlsDecoder | None = None

    def span(self, lo: int, hi: int) -> tuple[int, int]:
        if self.decoder is None:
            return self.start, self.end
        start = self.plain_start + lo
        return self.decoder.tcp_offset(start), self.decoder.tcp_offset(max(self.plain_start + hi - 1, start)) + 1


class DecryptError(Exception):
    """A record that does not decrypt or authenticate with the keys at hand (bad key or corrupt record)."""


# --- key schedules --------------------------------------------------------------------------------------------


def hkdf_expand_label(secret: bytes, label: str, length: int, hash_name: str) -> bytes:
    """RFC 8446 7.1 HKDF-Expand-Label with an empty context."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

    full = b"tls13 " + label.encode("ascii")
    info = struct.pack("!HB", length, len(full)) + full + b"\x00"
    algorithm = hashes.SHA384() if hash_name == "sha384" else hashes.SHA256()
    return HKDFExpand(algorithm, length, info).derive(secret)


def tls12_prf(secret: bytes, label: bytes, seed: bytes, length: int, hash_name: str) -> bytes:
    """RFC 5246 5 P_hash, the TLS 1.2 PRF."""
    out = b""
    a = label + seed
    while len(out) < length:
        a = hmac.digest(secret, a, hash_name)
        out += hmac.digest(secret, a + label + seed, hash_name)
    return out[:length]


class RecordKeys:
    """One direction's record protection under one key: decrypts records in order (the sequence number)."""

    def __init__(self, suite: Suite, version: int, key: bytes, iv: bytes, mac_key: bytes = b"", *,
                 encrypt_then_mac: bool = False, secret: bytes = b"") -> None:
        self.suite = suite
        self.version = version
        self.key, self.iv, self.mac_key = key, iv, mac_key
        self.encrypt_then_mac = encrypt_then_mac
        self.secret = secret  # TLS 1.3 traffic secret, for KeyUpdate
        self.seq = 0
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

        self.aead: AESGCM | ChaCha20Poly1305 | None = None
        if suite.cipher == "gcm":
            self.aead = AESGCM(key)
        elif suite.cipher == "chacha":
            self.aead = ChaCha20Poly1305(key)

    @classmethod
    def tls13(cls, suite: Suite, secret: bytes) -> RecordKeys:
        key = hkdf_expand_label(secret, "key", suite.key_bytes, suite.prf_hash)
        iv = hkdf_expand_label(secret, "iv", 12, suite.prf_hash)
        return cls(suite, TLS13, key, iv, secret=secret)

    def updated(self) -> RecordKeys:
        """TLS 1.3 KeyUpdate: the next generation of this direction's traffic secret."""
        size = _MAC_BYTES[self.suite.prf_hash]
        return RecordKeys.tls13(self.suite, hkdf_expand_label(self.secret, "traffic upd", size, self.suite.prf_hash))

    def _xor_nonce(self) -> bytes:
        return (int.from_bytes(self.iv, "big") ^ self.seq).to_bytes(12, "big")

    def open(self, header: bytes, fragment: bytes) -> tuple[int, bytes, int]:
        """Decrypt one record: (content type, plaintext, bytes before the ciphertext in the fragment)."""
        from cryptography.exceptions import InvalidTag

        seq = self.seq
        try:
            if self.version == TLS13:
                assert self.aead is not None
                inner = self.aead.decrypt(self._xor_nonce(), fragment, header)
                end = len(inner)
                while end and not inner[end - 1]:
                    end -= 1
                if not end:
                    raise DecryptError("a TLS 1.3 record without a content type")
                result = (inner[end - 1], inner[:end - 1], 0)
            elif self.aead is not None:
                result = self._open12_aead(header, fragment, seq)
            else:
                result = self._open12_cbc(header, fragment, seq)
        except InvalidTag:
            raise DecryptError("a record failed authentication (wrong key, or a corrupt record)") from None
        except ValueError as exc:
            raise DecryptError(f"a record could not be decrypted ({exc})") from None
        self.seq = seq + 1
        return result

    def _open12_aead(self, header: bytes, fragment: bytes, seq: int) -> tuple[int, bytes, int]:
        assert self.aead is not None
        if self.suite.cipher == "gcm":
            if len(fragment) < 24:
                raise DecryptError("a record too short for AES-GCM")
            nonce, body, prefix = self.iv + fragment[:8], fragment[8:], 8
        else:
            if len(fragment) < 16:
                raise DecryptError("a record too short for ChaCha20-Poly1305")
            nonce, body, prefix = self._xor_nonce(), fragment, 0
        aad = struct.pack("!Q", seq) + header[:3] + struct.pack("!H", len(body) - 16)
        return header[0], self.aead.decrypt(nonce, body, aad), prefix

    def _open12_cbc(self, header: bytes, fragment: bytes, seq: int) -> tuple[int, bytes, int]:
        mac_bytes = _MAC_BYTES[self.suite.mac_hash]
        seq_head = struct.pack("!Q", seq) + header[:3]
        if self.encrypt_then_mac:
            if len(fragment) < 32 + mac_bytes or (len(fragment) - mac_bytes) % 16:
                raise DecryptError("a CBC record of impossible length")
            sealed, mac = fragment[:-mac_bytes], fragment[-mac_bytes:]
            expected = hmac.digest(self.mac_key, seq_head + struct.pack("!H", len(sealed)) + sealed,
                                   self.suite.mac_hash)
            if not hmac.compare_digest(mac, expected):
                raise DecryptError("a record failed its MAC (wrong key, or a corrupt record)")
            plain = _unpad(self._cbc_decrypt(sealed))
            return header[0], plain, 16
        if len(fragment) < 32 or len(fragment) % 16:
            raise DecryptError("a CBC record of impossible length")
        padded = _unpad(self._cbc_decrypt(fragment))
        if len(padded) < mac_bytes:
            raise DecryptError("a record failed its MAC (wrong key, or a corrupt record)")
        plain, mac = padded[:-mac_bytes], padded[-mac_bytes:]
        expected = hmac.digest(self.mac_key, seq_head + struct.pack("!H", len(plain)) + plain, self.suite.mac_hash)
        if not hmac.compare_digest(mac, expected):
            raise DecryptError("a record failed its MAC (wrong key, or a corrupt record)")
        return header[0], plain, 16

    def _cbc_decrypt(self, sealed: bytes) -> bytes:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        decryptor = Cipher(algorithms.AES(self.key), modes.CBC(sealed[:16])).decryptor()
        return decryptor.update(sealed[16:]) + decryptor.finalize()


def _unpad(data: bytes) -> bytes:
    if not data:
        raise DecryptError("an empty CBC record")
    pad = data[-1]
    if pad + 1 > len(data) or data[-pad - 1:] != bytes((pad,)) * (pad + 1):
        raise DecryptError("a record with bad CBC padding (wrong key, or a corrupt record)")
    return data[:-pad - 1]


# --- sessions -------------------------------------------------------------------------------------------------


class Session:
    """One TLS connection both directions share: the client's secrets and what the ServerHello chose."""

    def __init__(self, client_random: bytes, secrets: dict[str, bytes]) -> None:
        self.client_random = client_random
        self.secrets = secrets
        self.server_random = b""
        self.suite: Suite | None = None
        self.version = 0
        self.encrypt_then_mac = False
        self.decrypted_records = 0
        self.problem = ""  # why decryption stopped (a failed flow), "" while fine
        self.missing = ""  # a secret the key log lacks (the flow has no usable key)
        self.inner_kind = ""  # protocol of the first application data seen (a hint for the other direction)

    @property
    def ready(self) -> bool:
        return self.suite is not None

    def server_hello(self, body: bytes) -> str:
        """Parse a ServerHello; returns a problem ("" when fine, or when it was a HelloRetryRequest)."""
        try:
            legacy_version = struct.unpack_from("!H", body, 0)[0]
            server_random = body[2:34]
            sid_len = body[34]
            pos = 35 + sid_len
            suite_code = struct.unpack_from("!H", body, pos)[0]
            pos += 3  # suite, compression
            version = legacy_version
            etm = False
            if pos + 2 <= len(body):
                end = pos + 2 + struct.unpack_from("!H", body, pos)[0]
                pos += 2
                while pos + 4 <= end:
                    ext, size = struct.unpack_from("!HH", body, pos)
                    if ext == EXT_SUPPORTED_VERSIONS and size == 2:
                        version = struct.unpack_from("!H", body, pos + 4)[0]
                    elif ext == EXT_ENCRYPT_THEN_MAC:
                        etm = True
                    pos += 4 + size
        except (struct.error, IndexError):
            return "a ServerHello could not be parsed"
        if server_random == HRR_RANDOM:
            return ""
        suite = SUITES.get(suite_code)
        if suite is None:
            return f"cipher suite 0x{suite_code:04x} is not supported for decryption"
        if version not in (TLS12, TLS13) or (version == TLS13) != (suite_code >> 8 == 0x13):
            return f"TLS version 0x{version:04x} is not supported for decryption"
        self.server_random, self.suite, self.version = server_random, suite, version
        self.encrypt_then_mac = etm and suite.cipher == "cbc"
        return ""

    def keys(self, from_client: bool, epoch: int) -> RecordKeys | None:
        """The record keys of one direction: TLS 1.2 epoch 1; TLS 1.3 epoch 1 (handshake) or 2 (application)."""
        suite = self.suite
        assert suite is not None
        if self.version == TLS13:
            side = "CLIENT" if from_client else "SERVER"
            label = f"{side}_HANDSHAKE_TRAFFIC_SECRET" if epoch == 1 else f"{side}_TRAFFIC_SECRET_0"
            secret = self.secrets.get(label)
            if secret is None:
                self.missing = self.missing or f"the key log has no {label} for this session"
                return None
            return RecordKeys.tls13(suite, secret)
        master = self.secrets.get(TLS12_LABEL)
        if master is None:
            self.missing = self.missing or f"the key log has no {TLS12_LABEL} for this session"
            return None
        mac = _MAC_BYTES[suite.mac_hash] if suite.cipher == "cbc" else 0
        iv = 0 if suite.cipher == "cbc" else suite.fixed_iv_bytes
        block = tls12_prf(master, b"key expansion", self.server_random + self.client_random,
                          2 * (mac + suite.key_bytes + iv), suite.prf_hash)
        keys = block[2 * mac:2 * mac + 2 * suite.key_bytes]
        ivs = block[2 * (mac + suite.key_bytes):]
        n = 0 if from_client else 1
        return RecordKeys(suite, TLS12, keys[n * suite.key_bytes:(n + 1) * suite.key_bytes],
                          ivs[n * iv:(n + 1) * iv], block[n * mac:(n + 1) * mac],
                          encrypt_then_mac=self.encrypt_then_mac)


class TlsDecoder(StreamDecoder):
    """One direction of a TLS connection whose secrets are known: records in, decrypted units out."""

    protocol = PROTO_TLS

    def __init__(self, session: Session, *, from_client: bool, port: int, overlap: int) -> None:
        self._tcp_offset = 0
        super().__init__(0)
        self.session = session
        self.from_client = from_client
        self.port = port
        self.overlap = overlap
        self.epoch = 0
        self.record_keys: RecordKeys | None = None
        self.stopped = False
        self.handshake = b""
        self.inner: StreamDecoder | None = None
        self.inner_head = b""
        self.plain_pos = 0
        #: per application-data record: plaintext offset, and TCP-stream offset of its first plaintext byte
        self.plain_starts: list[int] = []
        self.tcp_starts: list[int] = []
        self.cut_records = 0
        self.cleartext_seen = 0  # the client's cleartext handshake bytes scanned (bounded as in .handshakes)
        self.plaintext: bytearray | None = None  # application data kept for tests (TlsDecryption.keep_plaintext)

    # the scanner trims its frame map up to ``offset``: plaintext the inner decoder still holds must stay mapped
    @property
    def offset(self) -> int:
        if self.plain_starts:
            plain = self.inner.offset if self.inner is not None else self.plain_pos - len(self.inner_head)
            index = max(bisect.bisect_right(self.plain_starts, plain) - 1, 0)
            return min(self._tcp_offset, self.tcp_starts[index])
        return self._tcp_offset

    @offset.setter
    def offset(self, value: int) -> None:
        self._tcp_offset = value

    def consume(self, n: int) -> None:
        self.buf = self.buf[n:]
        self._tcp_offset += n

    @property
    def held(self) -> int:
        inner = self.inner.held if self.inner is not None else 0
        return len(self.buf) + self._pending + len(self.inner_head) + inner

    def parse(self, final: bool) -> list[Unit]:
        units: list[Unit] = []
        buf = self.buf
        pos = 0
        while not self.stopped and pos + 5 <= len(buf):
            rtype = buf[pos]
            rlen = (buf[pos + 3] << 8) | buf[pos + 4]
            if not CT_CCS <= rtype <= 24 or buf[pos + 1] != 3 or rlen > MAX_RECORD_BYTES:
                self._stop("a corrupt TLS record header")
                break
            if pos + 5 + rlen > len(buf):
                self.need = len(buf) - pos + 5 + rlen
                break
            if not self._record(buf[pos:pos + 5], buf[pos + 5:pos + 5 + rlen], self._tcp_offset + pos, units):
                # waiting for the other direction's ServerHello
                if len(buf) - pos > MAX_WAIT_BYTES:
                    self._stop("no ServerHello seen before the encrypted records")
                break
            pos += 5 + rlen
        if self.stopped:
            pos = len(buf)
        self.consume(pos)
        if final:
            if self.buf:
                if not self.session.ready and not self.stopped:
                    self._stop("no ServerHello seen before the encrypted records")
                elif not self.stopped:
                    self.cut_records += 1
                self.consume(len(self.buf))
            units += self._inner_finish()
        return units

    def hole(self) -> list[Unit]:
        """A gap in the TCP stream: the record boundaries and sequence numbers are lost; stop here."""
        if not self.stopped:
            self._stop("a gap in the TCP stream (bytes never captured)")
        units = self._inner_finish()
        self._join()
        self.consume(len(self.buf))
        return units

    def _stop(self, problem: str) -> None:
        self.stopped = True
        if not self.session.problem:
            self.session.problem = problem

    def _record(self, header: bytes, fragment: bytes, start: int, units: list[Unit]) -> bool:
        """Handle one whole record; False to wait (the session's keys are not known yet)."""
        session = self.session
        rtype = header[0]
        if self.epoch == 0:
            if rtype == CT_HANDSHAKE:
                if self.from_client and self.cleartext_seen + len(fragment) <= MAX_CLEARTEXT_HANDSHAKE_BYTES:
                    # on the wire as it is: a cleartext finding (SNI, a client certificate naming the IMEI...)
                    self.cleartext_seen += len(fragment)
                    units.append(Unit(fragment, start + 5, start + 5 + len(fragment), True, "", PROTO_TLS_HANDSHAKE))
                self._handshake(fragment)
                return True
            if rtype == CT_ALERT:
                return True
            if not session.ready:
                if session.problem:  # the ServerHello named something phonehome cannot decrypt
                    self.stopped = True
                    return True
                # wait for the ServerHello; a server's own ChangeCipherSpec before it follows a HelloRetryRequest
                return rtype == CT_CCS and not self.from_client
            if rtype == CT_CCS:
                if session.version == TLS12:
                    self._set_epoch(1)
                return True  # TLS 1.3: the middlebox-compatibility ChangeCipherSpec
            if rtype == CT_APPDATA and session.version == TLS13:
                self._set_epoch(1)
            else:
                self._stop("an unexpected cleartext TLS record")
                return True
        keys = self.record_keys
        if keys is None:
            self._stop(session.missing or "no key for these records")
            return True
        if rtype == CT_CCS and session.version == TLS13:
            return True
        try:
            ctype, plain, prefix = keys.open(header, fragment)
        except DecryptError as exc:
            self._stop(str(exc))
            return True
        session.decrypted_records += 1
        if ctype == CT_APPDATA:
            if plain:
                units += self._application_data(plain, start + 5 + prefix)
        elif ctype == CT_HANDSHAKE:
            self._handshake(plain)
        return True

    def _set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.record_keys = self.session.keys(self.from_client, epoch)
        if self.record_keys is None:
            self._stop(self.session.missing)

    def _handshake(self, data: bytes) -> None:
        """Handshake messages (cleartext, or decrypted): the ServerHello, TLS 1.3's Finished and KeyUpdate."""
        self.handshake += data
        while len(self.handshake) >= 4:
            size = int.from_bytes(self.handshake[1:4], "big")
            if size > MAX_HANDSHAKE_BYTES:
                self._stop("a corrupt TLS handshake message")
                self.handshake = b""
                return
            if len(self.handshake) < 4 + size:
                return
            kind, body = self.handshake[0], self.handshake[4:4 + size]
            self.handshake = self.handshake[4 + size:]
            if kind == HS_SERVER_HELLO and not self.from_client and self.epoch == 0:
                problem = self.session.server_hello(body)
                if problem:
                    self._stop(problem)
                    return
            elif self.session.version == TLS13 and kind == HS_FINISHED and self.epoch == 1:
                self._set_epoch(2)
            elif self.session.version == TLS13 and kind == HS_KEY_UPDATE and self.record_keys is not None:
                self.record_keys = self.record_keys.updated()

    # --- application data -------------------------------------------------------------------------------------

    def _application_data(self, plain: bytes, tcp_start: int) -> list[Unit]:
        if self.plaintext is not None:
            self.plaintext += plain
        self.plain_starts.append(self.plain_pos)
        self.tcp_starts.append(tcp_start)
        self.plain_pos += len(plain)
        inner = self.inner
        if inner is None:
            self.inner_head += plain
            inner = self._start_inner(final=False)
            if inner is None:
                return []
            plain, self.inner_head = self.inner_head, b""
        units = inner.feed(plain)
        units += self._after_inner(inner)
        return self._mapped(units)

    def _start_inner(self, *, final: bool) -> StreamDecoder | None:
        head = self.inner_head
        kind = classify_stream(head)
        if not kind:
            if not final:
                return None
            kind = PROTO_UNKNOWN
        if kind == PROTO_UNKNOWN and self.session.inner_kind in (PROTO_HTTP, PROTO_HTTP2, PROTO_MQTT,
                                                                  PROTO_WEBSOCKET):
            kind = self.session.inner_kind  # the server side of what the client spoke (HTTP/2 has no preface)
        offset = self.plain_pos - len(head)
        if kind not in (PROTO_HTTP, PROTO_HTTP2, PROTO_MQTT, PROTO_WEBSOCKET) and self.port == DOT_PORT:
            kind = PROTO_DNS  # DNS over TLS
        decoder = stream_decoder(kind, offset, overlap=self.overlap)
        self.session.inner_kind = self.session.inner_kind or decoder.protocol
        self.inner = decoder
        return decoder

    def _after_inner(self, inner: StreamDecoder) -> list[Unit]:
        """Carry the inner decoder's news to the scanner (host, DNS answers, warnings), and follow an upgrade."""
        units: list[Unit] = []
        if inner.switch_to in (PROTO_WEBSOCKET, PROTO_HTTP2):  # an Upgrade inside TLS
            upgraded: StreamDecoder = (WebSocketDecoder(inner.offset) if inner.switch_to == PROTO_WEBSOCKET else
                                       Http2Decoder(inner.offset, decode_content=layers.decode_content))
            self.inner = upgraded
            self.session.inner_kind = upgraded.protocol
            units = upgraded.feed(inner.buf) if inner.buf else []
        if inner.host:
            self.host = inner.host
        if inner.addresses:
            self.addresses += inner.addresses
            inner.addresses.clear()
        if inner.warnings:
            self.warnings += inner.warnings
            inner.warnings.clear()
        return units

    def _inner_finish(self) -> list[Unit]:
        if self.inner is None and self.inner_head:
            self._start_inner(final=True)
            if self.inner is not None:
                head, self.inner_head = self.inner_head, b""
                units = self.inner.feed(head)
                return self._mapped(units + self._finish_inner(self.inner))
        if self.inner is None:
            return []
        return self._mapped(self._finish_inner(self.inner))

    def _finish_inner(self, inner: StreamDecoder) -> list[Unit]:
        units = inner.finish()
        if inner.buf:
            units += inner.hole()
        return units + self._after_inner(inner)

    def _forget_mapped(self, oldest: int) -> None:
        """Drop record-map entries for plaintext no unit will need again (the inner decoder reports from its
        offset minus its overlap onwards; the units just mapped may still be matched)."""
        if len(self.plain_starts) < 1024 or self.inner is None:
            return
        index = bisect.bisect_right(self.plain_starts, min(self.inner.offset - self.overlap, oldest)) - 1
        if index > 0:
            del self.plain_starts[:index], self.tcp_starts[:index]

    def tcp_offset(self, plain_offset: int) -> int:
        """The TCP-stream offset that carried plaintext byte ``plain_offset`` (application data only)."""
        index = max(bisect.bisect_right(self.plain_starts, plain_offset) - 1, 0)
        return self.tcp_starts[index] + plain_offset - self.plain_starts[index]

    def _mapped(self, units: list[Unit]) -> list[Unit]:
        """Units at TCP-stream offsets (the records that carried them), their chain starting with ``tls``.

        The record map is trimmed only after the units are mapped: they may start before what the inner decoder
        still holds. A unit's ``span`` is used right away, while the scanner matches it."""
        out: list[Unit] = []
        for unit in units:
            if not unit.data or not self.plain_starts:
                continue
            start = self.tcp_offset(unit.start)
            end = self.tcp_offset(max(unit.end - 1, unit.start)) + 1
            chain = f"{TLS_CHAIN}>{unit.chain}" if unit.chain else TLS_CHAIN
            out.append(DecryptedUnit(unit.data, start, end, False, chain, unit.protocol, unit.peel,
                                     plain_start=unit.start, inner_exact=unit.exact, decoder=self))
        self._forget_mapped(min((unit.start for unit in units), default=self.plain_pos))
        return out


class TlsDecryption:
    """The TLS part of one scan: which flows have keys, their sessions, and what could not be decrypted."""

    def __init__(self, keylog: KeyLog | None, *, overlap: int) -> None:
        self.keylog = keylog if keylog is not None else KeyLog()
        self.overlap = overlap
        self.sessions: dict[int, Session] = {}
        self.capture_secrets: list[tuple[int, bytes]] = []  # Decryption Secrets Blocks, as the reader meets them
        self._absorbed = 0
        self._decoders: dict[tuple[int, bool], TlsDecoder] = {}
        #: keep each direction's decrypted application data (:meth:`plaintexts`): for tests, costs memory
        self.keep_plaintext = False
        #: what :meth:`warnings` needs of the flows :meth:`retire` let go: failed sessions' problems, cut directions
        self._retired_problems: dict[str, int] = {}
        self._retired_cut = 0

    @property
    def active(self) -> bool:
        """True when there are keys at all (from files, or from the capture so far): else TLS stays opaque."""
        return bool(len(self.keylog)) or len(self.capture_secrets) > self._absorbed

    def decoder(self, ident: int, *, from_client: bool, head: bytes, port: int) -> TlsDecoder | None:
        """A decoder for one direction of flow ``ident`` when its session has keys; None leaves it opaque."""
        while self._absorbed < len(self.capture_secrets):
            kind, data = self.capture_secrets[self._absorbed]
            self._absorbed += 1
            self.keylog.add_block(kind, data, "the capture's Decryption Secrets Block")
        session = self.sessions.get(ident)
        if from_client:
            client_random = client_random_of(head)
            secrets = self.keylog.lookup(client_random) if client_random is not None else None
            if client_random is None or secrets is None:
                return None
            session = self.sessions[ident] = Session(client_random, secrets)
        elif session is None:
            return None
        decoder = TlsDecoder(session, from_client=from_client, port=port, overlap=self.overlap)
        if self.keep_plaintext:
            decoder.plaintext = bytearray()
        self._decoders[ident, from_client] = decoder
        return decoder

    def plaintexts(self) -> dict[int, tuple[bytes, bytes]]:
        """Decrypted application data by flow: (client to server, server to client); needs keep_plaintext."""
        out: dict[int, tuple[bytes, bytes]] = {}
        for ident in sorted({i for i, _ in self._decoders}):
            sides = [self._decoders.get((ident, side)) for side in (True, False)]
            client, server = (bytes(d.plaintext or b"") if d is not None else b"" for d in sides)
            out[ident] = (client, server)
        return out

    def outcome(self, ident: int) -> str:
        """``decrypted``, ``failed`` (keys were there; a record did not decrypt) or ``no-key``."""
        session = self.sessions.get(ident)
        if session is None:
            return NO_KEY
        if session.missing and not session.decrypted_records:
            return NO_KEY
        return FAILED if session.problem else DECRYPTED

    def retire(self, ident: int) -> None:
        """Flow ``ident`` is over and its outcome taken: let go of its session and decoders (their keys, ciphers
        and buffers), keeping only the counts :meth:`warnings` gives (not with ``keep_plaintext``)."""
        if self.keep_plaintext:
            return
        for side in (True, False):
            decoder = self._decoders.pop((ident, side), None)
            if decoder is not None and decoder.cut_records:
                self._retired_cut += 1
        session = self.sessions.pop(ident, None)
        if session is not None and _failed(session):
            self._retired_problems[session.problem] = self._retired_problems.get(session.problem, 0) + 1

    def warnings(self, flows: Sequence[Flow]) -> list[str]:
        out = list(self.keylog.warnings)
        if not (self.sessions or self._retired_problems or len(self.keylog)):
            return out
        tls = no_key = 0
        for flow in flows:  # one pass, nothing kept: a scan's flows are many, and read from its flow table
            if flow.decryption:
                tls += 1
                no_key += flow.decryption == NO_KEY
        if not tls:
            return out
        problems = dict(self._retired_problems)
        for session in self.sessions.values():
            if _failed(session):
                problems[session.problem] = problems.get(session.problem, 0) + 1
        if no_key:
            out.append(f"{no_key} of {tls} TLS flows had no key in the key logs: what they carried was not "
                       "scanned")
        if problems:
            listed = "; ".join(f"{p} ({n})" for p, n in list(problems.items())[:MAX_PROBLEMS])
            out.append(f"{sum(problems.values())} TLS flows could not be decrypted to the end: {listed}")
        cut = self._retired_cut + sum(1 for d in self._decoders.values() if d.cut_records)
        if cut:
            out.append(f"{cut} TLS flow directions end in a record cut short (the capture stopped mid-record)")
        return out


def _failed(session: Session) -> bool:
    """The session had keys and a record did not decrypt (the ``failed`` outcome)."""
    return bool(session.problem) and not (session.missing and not session.decrypted_records)


def coverage(flows: Sequence[Flow], phases: Sequence[Phase] = ()) -> dict[str, Any]:
    """TLS flows, decrypted and without a key, overall and per phase (a flow belongs to the phase it began in).
    One pass over ``flows``, nothing kept of them."""
    names = {DECRYPTED: "decrypted", NO_KEY: "no_key", FAILED: "failed"}
    total = dict.fromkeys(("flows", *names.values()), 0)
    per_phase = {p.name: dict(total) for p in phases}
    for flow in flows:
        if not flow.decryption:
            continue
        counts = [total] + [per_phase[p.name] for p in phases if p.contains(flow.first_time)]
        for count in counts:
            count["flows"] += 1
            if flow.decryption in names:
                count[names[flow.decryption]] += 1
    out: dict[str, Any] = total
    if phases:
        out["phases"] = per_phase
    return out
