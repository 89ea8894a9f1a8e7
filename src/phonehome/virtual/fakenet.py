"""The fake internet: DNS, HTTP, TLS, MQTT and raw TCP/UDP sinks that answer the virtual phones' firmware.

Runs inside the lab's fake-internet namespace (``python -m phonehome.virtual.fakenet --config FILE``), where it
owns every address of 198.18.0.0/15 (see :mod:`phonehome.virtual.netlab`). It exists so that a capture shows
what a real phone's traffic shows: a DNS query and answer, a TCP handshake, an HTTP exchange, a TLS handshake
with the client's SNI and a certificate. What arrives on a TCP port is recognised by content, not by port (as
the scanner does), so one port can serve a TLS client and a plain-HTTP client alike.

The log (JSON lines on stdout) records who talked to which host with which protocol, never payloads: paths and
bodies may carry identifiers.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import ipaddress
import json
import os
import signal
import socket
import ssl
import struct
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phonehome.identifiers import mask

DNS_PORT = 53
DNS_TTL_S = 60
#: a client that says nothing for this long is treated as a raw sink connection
FIRST_BYTES_TIMEOUT_S = 2.0
#: an idle connection is closed after this long
IDLE_TIMEOUT_S = 30.0
#: the accept/receive loops wake up this often to notice a stop request
POLL_INTERVAL_S = 0.5
MAX_HTTP_HEADER_BYTES = 64 * 1024
LISTEN_BACKLOG = 64
CERT_VALIDITY_DAYS = 30

HTTP_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"CONNECT ")
DNS_TYPE_A = 1
DNS_RCODE_NXDOMAIN = 3
DNS_RCODE_NOTIMP = 4


@dataclass(frozen=True)
class FakenetConfig:
    """What the fake internet serves: host name -> address (``*.zone`` for a wildcard), and ports."""

    hosts: Mapping[str, str]
    tcp_ports: tuple[int, ...] = (80, 443)
    udp_ports: tuple[int, ...] = ()
    bind: str = "0.0.0.0"
    dns_port: int = DNS_PORT
    #: where the TLS servers append their session secrets (NSS key log), "" for none (issue 11)
    keylog: str = ""

    def to_json(self) -> str:
        return json.dumps({"hosts": dict(self.hosts), "tcp_ports": list(self.tcp_ports),
                           "udp_ports": list(self.udp_ports), "bind": self.bind, "dns_port": self.dns_port,
                           "keylog": self.keylog})

    @classmethod
    def from_json(cls, text: str) -> FakenetConfig:
        data = json.loads(text)
        return cls(hosts=dict(data["hosts"]), tcp_ports=tuple(data["tcp_ports"]),
                   udp_ports=tuple(data["udp_ports"]), bind=data.get("bind", "0.0.0.0"),
                   dns_port=int(data.get("dns_port", DNS_PORT)), keylog=str(data.get("keylog", "")))


# --- DNS -----------------------------------------------------------------------------------------------------


def resolve(hosts: Mapping[str, str], name: str) -> str | None:
    """The address of ``name``: an exact entry first, then the longest matching ``*.zone`` wildcard."""
    name = name.rstrip(".").lower()
    if name in hosts:
        return hosts[name]
    best: tuple[int, str] | None = None
    for pattern, address in hosts.items():
        if pattern.startswith("*.") and name.endswith(pattern[1:]) and (best is None or len(pattern) > best[0]):
            best = (len(pattern), address)
    return best[1] if best else None


def _read_name(packet: bytes, offset: int) -> tuple[str, int]:
    """A (possibly compressed) domain name at ``offset``; returns it and the offset after it."""
    labels: list[str] = []
    end: int | None = None
    for _ in range(128):  # bounded: a pointer loop must not hang the server
        length = packet[offset]
        if length & 0xC0 == 0xC0:
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | packet[offset + 1]
            continue
        if length == 0:
            return ".".join(labels), (end if end is not None else offset + 1)
        labels.append(packet[offset + 1: offset + 1 + length].decode("ascii", "replace"))
        offset += 1 + length
    raise ValueError("DNS name too long or looping")


@dataclass(frozen=True)
class DnsQuestion:
    ident: int
    flags: int
    name: str
    qtype: int
    qclass: int
    question_end: int


def parse_dns_query(packet: bytes) -> DnsQuestion:
    """The first question of a DNS query; ValueError if it is not one."""
    if len(packet) < 12:
        raise ValueError("short DNS packet")
    ident, flags, qdcount = struct.unpack("!HHH", packet[:6])
    if flags & 0x8000 or qdcount < 1:
        raise ValueError("not a DNS query")
    name, offset = _read_name(packet, 12)
    qtype, qclass = struct.unpack("!HH", packet[offset: offset + 4])
    return DnsQuestion(ident, flags, name, qtype, qclass, offset + 4)


def dns_answer(packet: bytes, hosts: Mapping[str, str]) -> tuple[bytes, DnsQuestion, str | None]:
    """The response to a query: A for known names, an empty NOERROR for their other types, NXDOMAIN else."""
    question = parse_dns_query(packet)
    opcode = (question.flags >> 11) & 0xF
    address = resolve(hosts, question.name) if opcode == 0 else None
    rcode = DNS_RCODE_NOTIMP if opcode != 0 else (0 if address else DNS_RCODE_NXDOMAIN)
    answers = b""
    if address and question.qtype == DNS_TYPE_A:
        answers = struct.pack("!HHHIH", 0xC00C, DNS_TYPE_A, 1, DNS_TTL_S, 4) + ipaddress.IPv4Address(address).packed
    flags = 0x8000 | (question.flags & 0x7900) | 0x0080 | rcode  # QR, opcode+RD copied, RA
    header = struct.pack("!HHHHHH", question.ident, flags, 1, 1 if answers else 0, 0, 0)
    return header + packet[12: question.question_end] + answers, question, address


# --- TLS -----------------------------------------------------------------------------------------------------


def make_certificate(names: Sequence[str], directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for ``names``, made at start-up so no key is ever shipped or reused."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "phonehome fake internet")])
    now = datetime.datetime.now(datetime.UTC)
    sans = [x509.DNSName(name) for name in dict.fromkeys(names)] or [x509.DNSName("fakenet.invalid")]
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CERT_VALIDITY_DAYS))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def server_tls_context(names: Sequence[str], *, keylog: str = "") -> ssl.SSLContext:
    """The fake internet's TLS servers; with ``keylog`` they write every session's secrets there (the server
    side decrypts as well as the client's), in a file created 0600: a key log is a secret."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if keylog:
        os.close(os.open(keylog, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        os.chmod(keylog, 0o600)
        context.keylog_filename = keylog
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="phonehome-fakenet-") as tmp:
        cert, key = make_certificate(names, Path(tmp))
        context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    context.sni_callback = _remember_sni
    context.num_tickets = 0  # a client that closes without reading tickets would otherwise send an RST
    return context


def _remember_sni(tls: Any, name: str | None, _context: ssl.SSLContext) -> None:
    """Keep the client's SNI on its socket for the log (the ssl module offers no getter on the server side)."""
    tls.phonehome_sni = name


# --- the servers ---------------------------------------------------------------------------------------------


@dataclass
class Fakenet:
    """All listeners of one fake internet. ``start()`` binds everything (so errors surface at once), threads
    serve, ``stop()`` closes them. ``events`` receives one dict per exchange for the log."""

    config: FakenetConfig
    emit: Callable[[dict[str, Any]], None] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _sockets: list[socket.socket] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _tls: ssl.SSLContext | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _log(self, **event: Any) -> None:
        if self.emit is not None:
            with self._lock:
                self.emit(event)

    def start(self) -> None:
        names = [name for name in self.config.hosts if name]
        self._tls = server_tls_context(names, keylog=self.config.keylog)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((self.config.bind, self.config.dns_port))
        self._serve_udp(udp, self._on_dns)
        for port in sorted(set(self.config.udp_ports) - {self.config.dns_port}):
            sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sink.bind((self.config.bind, port))
            self._serve_udp(sink, self._on_udp_sink)
        for port in sorted(set(self.config.tcp_ports)):
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.config.bind, port))
            listener.listen(LISTEN_BACKLOG)
            self._spawn(self._accept_loop, listener)

    def stop(self) -> None:
        self._stop.set()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _serve_udp(self, sock: socket.socket, handler: Any) -> None:
        sock.settimeout(POLL_INTERVAL_S)
        self._sockets.append(sock)
        self._spawn(self._udp_loop, sock, handler)

    def _udp_loop(self, sock: socket.socket, handler: Any) -> None:
        while not self._stop.is_set():
            try:
                data, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                handler(sock, data, peer)
            except Exception as exc:  # one malformed datagram must not stop the server
                self._log(proto="udp", error=f"{type(exc).__name__}: {exc}", client=peer[0])

    def _on_dns(self, sock: socket.socket, data: bytes, peer: tuple[str, int]) -> None:
        reply, question, address = dns_answer(data, self.config.hosts)
        sock.sendto(reply, peer)
        self._log(proto="dns", client=peer[0], name=self._loggable(question.name), qtype=question.qtype,
                  answer=address)

    def _loggable(self, name: str) -> str:
        """A name as the log shows it: as-is when a profile names it, else with its leading labels masked
        (an ad SDK puts identifiers there); the zone of a matching wildcard stays readable."""
        name = name.rstrip(".").lower()
        if name in self.config.hosts:
            return name
        zones = [p[1:] for p in self.config.hosts if p.startswith("*.") and name.endswith(p[1:])]
        if zones:
            zone = max(zones, key=len)
            return ".".join(mask(label) for label in name[: -len(zone)].split(".")) + zone
        return _mask_name(name)

    def _on_udp_sink(self, sock: socket.socket, data: bytes, peer: tuple[str, int]) -> None:
        self._log(proto="udp", client=peer[0], port=sock.getsockname()[1], bytes=len(data))

    def _accept_loop(self, listener: socket.socket) -> None:
        listener.settimeout(POLL_INTERVAL_S)
        self._sockets.append(listener)
        while not self._stop.is_set():
            try:
                conn, peer = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._spawn(self._serve_connection, conn, peer)

    def _serve_connection(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        local = conn.getsockname()
        info: dict[str, Any] = {"client": peer[0], "server": local[0], "port": local[1]}
        try:
            with conn:
                self._dispatch(conn, info, tls_done=False)
        except (OSError, ValueError, ssl.SSLError) as exc:
            self._log(**info, proto=info.get("proto", "tcp"), error=f"{type(exc).__name__}: {exc}")

    def _dispatch(self, conn: socket.socket, info: dict[str, Any], *, tls_done: bool) -> None:
        conn.settimeout(FIRST_BYTES_TIMEOUT_S)
        try:
            # plain TCP: peek, so a TLS ClientHello stays in the socket for the handshake; inside TLS, read
            head = conn.recv(8) if tls_done else conn.recv(8, socket.MSG_PEEK)
        except TimeoutError:
            head = b""
        conn.settimeout(IDLE_TIMEOUT_S)
        if not tls_done and len(head) >= 2 and head[0] == 0x16 and head[1] == 0x03:
            self._serve_tls(conn, info)
            return
        reader = io.BufferedReader(_PrefixedSocket(conn, head if tls_done else b""))
        if head and any(method.startswith(head) or head.startswith(method) for method in HTTP_METHODS):
            self._serve_http(conn, reader, info)
        elif head[:1] == b"\x10":
            self._serve_mqtt(conn, reader, info)
        else:
            self._serve_sink(reader, info)

    def _serve_tls(self, conn: socket.socket, info: dict[str, Any]) -> None:
        assert self._tls is not None
        tls = self._tls.wrap_socket(conn, server_side=True)
        sni = getattr(tls, "phonehome_sni", None) or ""
        info.update(tls=tls.version(), sni=self._loggable(sni))
        self._log(**info, proto="tls", handshake="ok")
        with tls:
            self._dispatch(tls, info, tls_done=True)

    def _serve_http(self, conn: socket.socket, reader: io.BufferedReader[Any], info: dict[str, Any]) -> None:
        while True:
            request = _read_http_request(reader)
            if request is None:
                return
            method, path, headers, body_length = request
            host = headers.get("host", "")
            self._log(**info, proto="https" if "tls" in info else "http", method=method,
                      host=self._loggable(host.rsplit(":", 1)[0]),
                      path_bytes=len(path), body_bytes=body_length)
            body = b'{"status":"ok"}'
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + (b"" if method == "HEAD" else body))
            if headers.get("connection", "").lower() == "close":
                return

    def _serve_mqtt(self, conn: socket.socket, reader: io.BufferedReader[Any], info: dict[str, Any]) -> None:
        while True:
            packet = _read_mqtt_packet(reader)
            if packet is None:
                return
            kind, flags, body = packet
            if kind == 1:  # CONNECT -> CONNACK accepted
                conn.sendall(b"\x20\x02\x00\x00")
                self._log(**info, proto="mqtt", packet="CONNECT", bytes=len(body))
            elif kind == 3:  # PUBLISH; QoS 1 gets a PUBACK
                self._log(**info, proto="mqtt", packet="PUBLISH", bytes=len(body))
                if (flags >> 1) & 3 == 1:
                    topic_length = struct.unpack("!H", body[:2])[0]
                    conn.sendall(b"\x40\x02" + body[2 + topic_length: 4 + topic_length])
            elif kind == 8:  # SUBSCRIBE -> SUBACK granting QoS 0
                conn.sendall(b"\x90\x03" + body[:2] + b"\x00")
            elif kind == 12:  # PINGREQ -> PINGRESP
                conn.sendall(b"\xd0\x00")
            elif kind == 14:  # DISCONNECT
                return

    def _serve_sink(self, reader: io.BufferedReader[Any], info: dict[str, Any]) -> None:
        total = 0
        while chunk := reader.read1(65536):
            total += len(chunk)
        self._log(**info, proto="tls-sink" if "tls" in info else "tcp", bytes=total)


class _PrefixedSocket(io.RawIOBase):
    """A socket as a raw stream, with bytes already read from it put back in front."""

    def __init__(self, sock: socket.socket, prefix: bytes) -> None:
        super().__init__()
        self._sock = sock
        self._prefix = prefix

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        return self._sock.recv_into(buffer)


def _mask_name(name: str) -> str:
    """A host name not in the profiles may carry an identifier in a label: mask all but the last two labels."""
    labels = name.rstrip(".").split(".")
    if len(labels) <= 2:
        return name
    return ".".join([*(mask(label) for label in labels[:-2]), *labels[-2:]])


def _read_http_request(reader: Any) -> tuple[str, str, dict[str, str], int] | None:
    """One request from a buffered reader: (method, path, lower-cased headers, body length); None at EOF."""
    line = reader.readline(MAX_HTTP_HEADER_BYTES)
    if not line:
        return None
    parts = line.decode("latin-1").split()
    if len(parts) < 2:
        raise ValueError("malformed HTTP request line")
    headers: dict[str, str] = {}
    size = len(line)
    while True:
        header = reader.readline(MAX_HTTP_HEADER_BYTES)
        size += len(header)
        if size > MAX_HTTP_HEADER_BYTES:
            raise ValueError("HTTP header too large")
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        length = 0
        while True:
            chunk_size = int(reader.readline(1024).split(b";")[0].strip() or b"0", 16)
            reader.read(chunk_size + 2)
            length += chunk_size
            if chunk_size == 0:
                break
    else:
        length = int(headers.get("content-length", "0") or 0)
        reader.read(length)
    return parts[0], parts[1], headers, length


def _read_mqtt_packet(reader: Any) -> tuple[int, int, bytes] | None:
    """One MQTT control packet: (type, flags, body); None at EOF."""
    first = reader.read(1)
    if not first:
        return None
    length, multiplier = 0, 1
    for _ in range(4):
        byte = reader.read(1)
        if not byte:
            return None
        length += (byte[0] & 0x7F) * multiplier
        if not byte[0] & 0x80:
            break
        multiplier *= 128
    return first[0] >> 4, first[0] & 0x0F, reader.read(length)


# --- the process ---------------------------------------------------------------------------------------------


def _print_event(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, sort_keys=True) + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT. Prints ``{"ready": true}`` once every socket is bound."""
    parser = argparse.ArgumentParser(prog="python -m phonehome.virtual.fakenet")
    parser.add_argument("--config", required=True, type=Path, help="JSON written by FakenetConfig.to_json()")
    args = parser.parse_args(argv)
    config = FakenetConfig.from_json(args.config.read_text())
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    fakenet = Fakenet(config, emit=_print_event)
    try:
        fakenet.start()
    except OSError as exc:
        _print_event({"ready": False, "error": f"cannot bind: {exc}"})
        return 1
    _print_event({"ready": True, "hosts": len(config.hosts), "tcp_ports": list(config.tcp_ports),
                  "udp_ports": list(config.udp_ports)})
    stop.wait()
    fakenet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
