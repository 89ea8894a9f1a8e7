"""Real TLS conversations for tests: OpenSSL (through Python's ``ssl``) on both ends, with an NSS key log.

:func:`tls_conversation` runs a TLS client and server in memory (``ssl.MemoryBIO``), in a child Python process so
the TLS 1.3 cipher suite can be chosen (``OPENSSL_CONF``: Python has no API for it), and returns the bytes each
side sent, flight by flight, plus the key log the client wrote. :func:`add_tls_conversation` puts them on a
:class:`~phonehome.testing.captures.CaptureBuilder` TCP connection, so a test gets a capture of genuine TLS
records that tshark decrypts with the same key log::

    flights = tls_conversation(keylog, version="1.2", cipher="ECDHE-RSA-AES128-GCM-SHA256",
                               exchanges=[(request_bytes, response_bytes)])
    conn = cap.tcp("10.0.0.2", "203.0.113.7", 443)
    add_tls_conversation(conn, flights, segment_size=100)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from phonehome.testing.captures import Packet, TcpConnection

#: how long the child process may take to make a certificate and run the conversation
CONVERSATION_TIMEOUT_S = 60
#: a flight: True when the client sent it, and its bytes
Flight = tuple[bool, bytes]

_CHILD = r"""
import ctypes, datetime, json, ssl, sys, tempfile, os
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

args = json.load(sys.stdin)
work = tempfile.mkdtemp()
key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if args["rsa"] else ec.generate_private_key(
    ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, args["server_name"])])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
with open(os.path.join(work, "cert.pem"), "wb") as f:
    f.write(cert.public_bytes(serialization.Encoding.PEM))
with open(os.path.join(work, "key.pem"), "wb") as f:
    f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))
server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
server_ctx.load_cert_chain(os.path.join(work, "cert.pem"), os.path.join(work, "key.pem"))
client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
client_ctx.check_hostname = False
client_ctx.verify_mode = ssl.CERT_NONE
client_ctx.keylog_filename = args["keylog"]
if args["version"] == "1.2":
    for ctx in (server_ctx, client_ctx):
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        if args["cipher"]:
            ctx.set_ciphers(args["cipher"])
        if not args["encrypt_then_mac"]:
            ctx.options |= 1 << 19  # SSL_OP_NO_ENCRYPT_THEN_MAC
else:
    client_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
if args["hello_retry"]:
    server_ctx.set_ecdh_curve("prime256v1")  # the client's first key share is X25519: a HelloRetryRequest
if args["alpn"]:
    client_ctx.set_alpn_protocols(args["alpn"])
    server_ctx.set_alpn_protocols(args["alpn"])
c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
client = client_ctx.wrap_bio(c_in, c_out, server_hostname=args["server_name"])
server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
flights = []

def pump():
    moved = True
    while moved:
        moved = False
        data = c_out.read()
        if data:
            flights.append([True, data.hex()]); s_in.write(data); moved = True
        data = s_out.read()
        if data:
            flights.append([False, data.hex()]); c_in.write(data); moved = True

def step(obj):
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass

for _ in range(8):
    step(client); pump(); step(server); pump()

def read_all(obj):
    out = b""
    while True:
        try:
            chunk = obj.read(1 << 16)
        except ssl.SSLWantReadError:
            return out
        if not chunk:
            return out
        out += chunk

def key_update(obj):
    # Python has no API for KeyUpdate: call OpenSSL's SSL_key_update on the SSL* of CPython's _ssl._SSLSocket
    # (PyObject_HEAD, a weakref, then the SSL pointer), after checking it is the TLS 1.3 connection it should be
    lib = ctypes.CDLL("libssl.so.3")
    ptr = ctypes.c_void_p.from_address(id(obj._sslobj) + 3 * ctypes.sizeof(ctypes.c_void_p)).value
    lib.SSL_version.argtypes = [ctypes.c_void_p]
    lib.SSL_key_update.argtypes = [ctypes.c_void_p, ctypes.c_int]
    if lib.SSL_version(ptr) != 0x0304:
        raise RuntimeError("not a TLS 1.3 connection: cannot send KeyUpdate")
    if lib.SSL_key_update(ptr, 0) != 1:
        raise RuntimeError("SSL_key_update failed")

received = []
for index, (request, response) in enumerate(args["exchanges"]):
    if index in args["key_update_before"]:
        key_update(client); key_update(server)
    client.write(bytes.fromhex(request)); pump()
    got = read_all(server); pump()
    server.write(bytes.fromhex(response)); pump()
    received.append([got.hex(), read_all(client).hex()]); pump()
json.dump({"flights": flights, "received": received, "cipher": client.cipher()[0], "version": client.version()},
          sys.stdout)
"""


class Conversation:
    """What one :func:`tls_conversation` produced."""

    def __init__(self, flights: list[Flight], received: list[tuple[bytes, bytes]], cipher: str,
                 version: str) -> None:
        self.flights = flights
        self.received = received  # what each side read: (request as the server got it, response as the client)
        self.cipher = cipher  # OpenSSL's name of the suite negotiated
        self.version = version  # "TLSv1.2" or "TLSv1.3"


def tls_conversation(keylog: str | os.PathLike[str], *, version: str = "1.3", cipher: str = "",
                     exchanges: Sequence[tuple[bytes, bytes]] = (), server_name: str = "example.com",
                     alpn: Sequence[str] = (), encrypt_then_mac: bool = True, rsa: bool = True,
                     key_update_before: Sequence[int] = (), hello_retry: bool = False) -> Conversation:
    """Run a TLS handshake and ``exchanges`` (request, response) between OpenSSL client and server in memory.

    ``version`` "1.2" or "1.3"; ``cipher`` an OpenSSL TLS 1.2 cipher name (``ECDHE-RSA-AES128-GCM-SHA256``) or a
    TLS 1.3 suite (``TLS_CHACHA20_POLY1305_SHA256``). ``key_update_before``: exchange indexes before which both
    sides send a TLS 1.3 KeyUpdate. ``hello_retry``: the server accepts only P-256 key shares, so a TLS 1.3
    handshake starts with a HelloRetryRequest. The client appends its secrets to ``keylog`` (NSS format).
    """
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as work:
        if version == "1.3" and cipher:
            conf = Path(work) / "openssl.cnf"
            conf.write_text("openssl_conf = init\n[init]\nssl_conf = ssl\n[ssl]\nsystem_default = defaults\n"
                            f"[defaults]\nCiphersuites = {cipher}\n", encoding="ascii")
            env["OPENSSL_CONF"] = str(conf)
        args = {"keylog": str(keylog), "version": version, "cipher": cipher if version == "1.2" else "",
                "exchanges": [(req.hex(), resp.hex()) for req, resp in exchanges], "server_name": server_name,
                "alpn": list(alpn), "encrypt_then_mac": encrypt_then_mac, "rsa": rsa,
                "key_update_before": list(key_update_before), "hello_retry": hello_retry}
        done = subprocess.run([sys.executable, "-c", _CHILD], input=json.dumps(args), capture_output=True,
                              text=True, env=env, timeout=CONVERSATION_TIMEOUT_S, check=False)
    if done.returncode:
        raise RuntimeError(f"TLS conversation failed: {done.stderr.strip()[-2000:]}")
    out = json.loads(done.stdout)
    return Conversation([(bool(c), bytes.fromhex(h)) for c, h in out["flights"]],
                        [(bytes.fromhex(a), bytes.fromhex(b)) for a, b in out["received"]],
                        out["cipher"], out["version"])


def add_tls_conversation(conn: TcpConnection, flights: Sequence[Flight], *,
                         segment_size: int | None = None) -> list[Packet]:
    """Send each flight on ``conn`` (client flights with ``send``, server ones with ``reply``)."""
    packets: list[Packet] = []
    for from_client, data in flights:
        packets += (conn.send if from_client else conn.reply)(data, segment_size=segment_size)
    return packets
