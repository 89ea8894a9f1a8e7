"""An adb server (host side of adb) for virtual phones, spoken to by the unmodified adbutils, uiautomator2 and
Debian's ``adb`` command line.

It implements the smart-socket protocol of a real adb server, version 41: host services (``host:version``,
``host:devices[-l]``, ``host:track-devices``, ``host:tport:*``/``host:transport*``, ``host-serial:S:*`` queries,
``wait-for-*``, forwards with a real local listener) and, after a transport switch, the device services of adbd
(``shell:`` v1, ``shell,v2:``, ``exec:``, ``sync:``, ``tcp:PORT``, ``reboot:``). It advertises only the features
it implements, because clients change protocol on what is advertised (``stat_v2`` would make ``adb`` send STA2).

Requests are logged by service name only: a shell command line may carry a PIN.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from phonehome.errors import LabError
from phonehome.virtual.phone import VirtualPhone
from phonehome.virtual.shell import Shell

log = logging.getLogger(__name__)

ADB_SERVER_VERSION = 41
#: device features advertised in ``features`` (comma-separated, as adbd sends them)
DEVICE_FEATURES: tuple[str, ...] = ("shell_v2", "fixed_push_mkdir")
#: largest DATA chunk of the sync protocol
SYNC_DATA_MAX = 64 * 1024
#: largest request a client may send (adb's MAX_PAYLOAD)
MAX_REQUEST_BYTES = 1024 * 1024
#: how often blocking services (track-devices, wait-for) re-check the stop flag and the client
POLL_INTERVAL_S = 0.25
#: how long stop() waits for each thread
JOIN_TIMEOUT_S = 3.0
#: a connection that sends nothing for this long is dropped (clients send their request at once)
REQUEST_TIMEOUT_S = 60.0
LISTEN_BACKLOG = 64

SHELL_ID_STDIN = 0
SHELL_ID_STDOUT = 1
SHELL_ID_STDERR = 2
SHELL_ID_EXIT = 3
SHELL_ID_CLOSE_STDIN = 4


class _ClientGone(Exception):
    """The client closed its end; the connection's work is over."""


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise _ClientGone
        data.extend(chunk)
    return bytes(data)


def _okay(sock: socket.socket, payload: bytes = b"") -> None:
    sock.sendall(b"OKAY" + payload)


#: what adb says when a service is asked of an unauthorised device (adb 1.0.41, transport.cpp)
UNAUTHORIZED_MESSAGE = ("device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set\nTry 'adb kill-server' if "
                        "that seems wrong.\nOtherwise check for a confirmation dialog on your device.")


def _not_online(phone: VirtualPhone) -> str:
    """The FAIL message of a service asked of a phone that is not ``device``, as adb words it."""
    return UNAUTHORIZED_MESSAGE if phone.state == "unauthorized" else "device offline"


def _fail(sock: socket.socket, message: str) -> None:
    data = message.encode()
    sock.sendall(b"FAIL" + f"{len(data):04x}".encode() + data)


def _block(text: str) -> bytes:
    data = text.encode()
    return f"{len(data):04x}".encode() + data


def _client_closed(sock: socket.socket) -> bool:
    """True when the client hung up (readable with nothing to read); data it sends meanwhile is discarded."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(4096) == b""
    except (OSError, ValueError):
        return True


@dataclass(frozen=True)
class Target:
    """Which device a host request addresses: ``kind`` is any | usb | local | serial | id."""

    kind: str
    value: str = ""


@dataclass
class _Forward:
    serial: str
    local: str
    remote: str
    listener: socket.socket
    thread: threading.Thread


class AdbServer:
    """Serves ``phones`` on ``host:port`` (port 0 picks a free one, read it from :attr:`port` after start)."""

    def __init__(self, phones: Sequence[VirtualPhone], *, host: str = "127.0.0.1", port: int = 0) -> None:
        serials = [p.serial for p in phones]
        if len(set(serials)) != len(serials):
            raise LabError(f"virtual phones share a serial: {sorted(s for s in serials if serials.count(s) > 1)}")
        self._phones = list(phones)
        self._host = host
        self._requested_port = port
        self._listener: socket.socket | None = None
        self._port = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._changed = threading.Condition()
        self._clients: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._forwards: dict[str, _Forward] = {}
        self._accept_thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port clients connect to (``adbutils.AdbClient(port=...)``, ``adb -P``)."""
        return self._port

    @property
    def host(self) -> str:
        return self._host

    @property
    def phones(self) -> list[VirtualPhone]:
        return list(self._phones)

    def start(self) -> None:
        """Bind and serve in background threads. Raises LabError when the port cannot be bound."""
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self._host, self._requested_port))
        except OSError as exc:
            listener.close()
            raise LabError(f"adb server cannot listen on {self._host}:{self._requested_port}: {exc.strerror}; "
                           "choose another port (0 picks a free one)") from exc
        listener.listen(LISTEN_BACKLOG)
        self._listener = listener
        self._port = listener.getsockname()[1]
        for phone in self._phones:
            phone.subscribe(self._notify)
        self._accept_thread = self._spawn(self._accept_loop, listener, name=f"adbserver-{self._port}")
        log.info("virtual adb server listening on %s:%d with %d phone(s)", self._host, self._port,
                 len(self._phones))

    @property
    def serving(self) -> bool:
        """True while the server accepts connections (False before start, after stop, or if its loop died)."""
        thread = self._accept_thread
        return thread is not None and thread.is_alive() and not self._stopping.is_set()

    def stop(self) -> None:
        """Close the listener, every client connection and forward; join the threads. Never raises."""
        try:
            self._stopping.set()
            for phone in self._phones:
                phone.unsubscribe(self._notify)
            self._notify()
            if self._listener is not None:
                _close_listener(self._listener)
            with self._lock:
                forwards = list(self._forwards.values())
                self._forwards.clear()
                clients = list(self._clients)
            for fwd in forwards:
                _close_listener(fwd.listener)
            for sock in clients:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                threads = list(self._threads)
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join(JOIN_TIMEOUT_S)
            for sock in clients:
                with contextlib.suppress(OSError):
                    sock.close()
        except Exception:  # stop must never raise: it runs in teardown
            log.exception("virtual adb server: error while stopping")

    def __enter__(self) -> AdbServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, target: Callable[..., None], *args: object, name: str) -> threading.Thread:
        def run() -> None:
            try:
                target(*args)
            except Exception:  # a broken connection must not take the server down
                log.exception("virtual adb server: %s failed", name)
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()
        return thread

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                if self._stopping.is_set():
                    conn.close()
                    return
                self._clients.add(conn)
            self._spawn(self._serve_client, conn, name=f"adb-client-{self._port}")

    def _serve_client(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(REQUEST_TIMEOUT_S)
            self._handle(conn)
        except (_ClientGone, OSError):
            pass
        finally:
            with self._lock:
                self._clients.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    # --- requests ------------------------------------------------------------------------------------------

    def _read_request(self, conn: socket.socket) -> str:
        header = _recv_exact(conn, 4)
        try:
            size = int(header, 16)
        except ValueError:
            raise _ClientGone from None
        if size > MAX_REQUEST_BYTES:
            raise _ClientGone
        return _recv_exact(conn, size).decode("utf-8", errors="replace")

    def _handle(self, conn: socket.socket) -> None:
        request = self._read_request(conn)
        default: VirtualPhone | None = None
        while True:
            log.debug("adb request: %s", request.split(":", 1)[0] if not request.startswith("host") else
                      request[:60])
            if request.startswith("host"):
                phone = self._host_request(conn, request, default)
                if phone is None:
                    return
                default = phone
                conn.settimeout(None)
                request = self._read_request(conn)
                continue
            if default is None:
                _fail(conn, "no transport selected: send host:transport first")
                return
            self._device_service(conn, default, request)
            return

    def _find(self, target: Target) -> tuple[VirtualPhone | None, str]:
        """The phone a target names, or None and the error a real server gives."""
        if target.kind == "serial":
            for phone in self._phones:
                if phone.serial == target.value and phone.state is not None:
                    return phone, ""
            return None, f"device '{target.value}' not found"
        if target.kind == "id":
            for phone in self._phones:
                if str(phone.transport_id) == target.value and phone.state is not None:
                    return phone, ""
            return None, f"no device with transport id '{target.value}'"
        candidates = [p for p in self._phones if p.state is not None and self._kind_matches(p, target.kind)]
        if not candidates:
            return None, "no devices/emulators found"
        if len(candidates) > 1:
            return None, "more than one device/emulator"
        return candidates[0], ""

    @staticmethod
    def _kind_matches(phone: VirtualPhone, kind: str) -> bool:
        if kind == "usb":
            return phone.spec.transport == "usb"
        if kind == "local":
            return phone.spec.transport == "tcp"
        return True

    def _split_target(self, request: str, default: VirtualPhone | None) -> tuple[Target, str]:
        if request.startswith("host-serial:"):
            return _split_serial(request[len("host-serial:"):], [p.serial for p in self._phones])
        if request.startswith("host-transport-id:"):
            ident, _, command = request[len("host-transport-id:"):].partition(":")
            return Target("id", ident), command
        if request.startswith("host-usb:"):
            return Target("usb"), request[len("host-usb:"):]
        if request.startswith("host-local:"):
            return Target("local"), request[len("host-local:"):]
        command = request.partition(":")[2]
        if default is not None:
            return Target("serial", default.serial), command
        return Target("any"), command

    def _host_request(self, conn: socket.socket, request: str,
                      default: VirtualPhone | None) -> VirtualPhone | None:
        """Answer a host service; returns the phone when the connection switched to it (transport)."""
        target, command = self._split_target(request, default)
        if command == "version":
            _okay(conn, _block(f"{ADB_SERVER_VERSION:04x}"))
        elif command == "kill":
            _okay(conn)  # a lab's server belongs to the lab: `adb kill-server` must not stop it
        elif command in ("devices", "devices-l"):
            _okay(conn, _block(self._device_list(long=command == "devices-l")))
        elif command in ("track-devices", "track-devices-l"):
            self._track_devices(conn, long=command == "track-devices-l")
        elif command == "host-features":
            _okay(conn, _block(",".join(DEVICE_FEATURES)))
        elif command.startswith("connect:"):
            addr = command[len("connect:"):]
            known = any(p.serial == addr for p in self._phones)
            _okay(conn, _block(f"already connected to {addr}" if known else
                               f"failed to connect to '{addr}': Connection refused"))
        elif command.startswith("disconnect:"):
            addr = command[len("disconnect:"):]
            if any(p.serial == addr for p in self._phones):
                _okay(conn, _block(f"disconnected {addr}"))
            else:
                _fail(conn, f"no such device '{addr}'")
        elif command.startswith(("transport", "tport:")):
            return self._switch_transport(conn, command)
        elif command.startswith("wait-for-"):
            self._wait_for(conn, target, command[len("wait-for-"):])
        elif command == "list-forward":
            _okay(conn, _block(self._forward_list(target.value if target.kind == "serial" else None)))
        elif command == "killforward-all":
            self._kill_forwards(None)
            _okay(conn, b"OKAY")
        elif command.startswith("killforward:"):
            local = command[len("killforward:"):]
            if self._kill_forwards(local):
                _okay(conn, b"OKAY")
            else:
                _fail(conn, f"listener '{local}' not found")
        else:
            self._device_query(conn, target, command)
        return None

    def _device_query(self, conn: socket.socket, target: Target, command: str) -> None:
        phone, error = self._find(target)
        if phone is None:
            _fail(conn, error)
            return
        state = phone.state or "offline"
        if command == "get-state":
            _okay(conn, _block(state))
        elif command == "get-serialno":
            _okay(conn, _block(phone.serial))
        elif command == "get-devpath":
            _okay(conn, _block("usb:1-1" if phone.spec.transport == "usb" else "unknown"))
        elif command == "features":
            if state != "device":
                _fail(conn, _not_online(phone))
                return
            _okay(conn, _block(",".join(DEVICE_FEATURES)))
        elif command.startswith("forward:"):
            if state != "device":
                _fail(conn, _not_online(phone))
                return
            self._forward(conn, phone, command[len("forward:"):])
        else:
            _fail(conn, f"unknown host service '{command.split(':', 1)[0]}'")

    def _switch_transport(self, conn: socket.socket, command: str) -> VirtualPhone | None:
        with_id = command.startswith("tport:")
        spec = command[len("tport:"):] if with_id else command
        if spec.startswith("serial:"):
            target = Target("serial", spec[len("serial:"):])
        elif spec.startswith("transport:"):
            target = Target("serial", spec[len("transport:"):])
        elif spec.startswith("transport-id:"):
            target = Target("id", spec[len("transport-id:"):])
        elif spec in ("usb", "transport-usb"):
            target = Target("usb")
        elif spec in ("local", "transport-local"):
            target = Target("local")
        elif spec in ("any", "transport-any"):
            target = Target("any")
        else:
            _fail(conn, f"unknown transport request '{command}'")
            return None
        phone, error = self._find(target)
        if phone is None:
            _fail(conn, error)
            return None
        if phone.state != "device":
            _fail(conn, _not_online(phone))
            return None
        if with_id:
            _okay(conn, struct.pack("<Q", phone.transport_id))
        else:
            _okay(conn)
        return phone

    def _device_list(self, *, long: bool) -> str:
        lines = []
        for index, phone in enumerate(self._phones, start=1):
            state = phone.state
            if state is None:
                continue
            if not long:
                lines.append(f"{phone.serial}\t{state}\n")
                continue
            fields = [f"{phone.serial:<22}", state]
            if phone.spec.transport == "usb":
                fields.append(f"usb:1-{index}")
            if state == "device":
                product = phone.getprop("ro.product.name")
                model = phone.spec.model.replace(" ", "_")
                fields += [f"product:{product}", f"model:{model}", f"device:{phone.getprop('ro.product.device')}"]
            fields.append(f"transport_id:{phone.transport_id}")
            lines.append(" ".join(fields) + "\n")
        return "".join(lines)

    def _track_devices(self, conn: socket.socket, *, long: bool) -> None:
        _okay(conn)
        last: str | None = None
        while not self._stopping.is_set():
            current = self._device_list(long=long)
            if current != last:
                conn.sendall(_block(current))
                last = current
            with self._changed:
                self._changed.wait(POLL_INTERVAL_S)
            if _client_closed(conn):
                return

    def _wait_for(self, conn: socket.socket, target: Target, spec: str) -> None:
        transport, _, state = spec.partition("-")
        if transport not in ("any", "usb", "local") or state not in (
                "device", "recovery", "rescue", "sideload", "bootloader", "any", "disconnect"):
            _fail(conn, f"bad wait-for request 'wait-for-{spec}'")
            return
        if target.kind == "any":
            target = Target(transport)
        specific = target.kind in ("serial", "id")
        watched, _ = self._find(target) if specific else (None, "")
        watched_id = watched.transport_id if watched is not None else None
        _okay(conn)

        def done() -> bool:
            if state == "disconnect":  # the transport seen at the start is gone (TCP phones get a new one)
                if specific:
                    return watched is None or watched.state is None or watched.transport_id != watched_id
                return not any(p.state is not None and self._kind_matches(p, transport) for p in self._phones)
            if target.kind in ("serial", "id"):
                phones = [p for p in self._phones if (p.serial == target.value if target.kind == "serial"
                                                      else str(p.transport_id) == target.value)]
            else:
                phones = [p for p in self._phones if self._kind_matches(p, transport)]
            wanted = ("device",) if state == "device" else ("device", "offline") if state == "any" else ()
            return any(p.state in wanted for p in phones)

        while not self._stopping.is_set():
            if done():
                _okay(conn)
                return
            with self._changed:
                self._changed.wait(POLL_INTERVAL_S)
            if _client_closed(conn):
                return

    # --- forwards ------------------------------------------------------------------------------------------

    def _forward(self, conn: socket.socket, phone: VirtualPhone, spec: str) -> None:
        norebind = spec.startswith("norebind:")
        if norebind:
            spec = spec[len("norebind:"):]
        local, sep, remote = spec.partition(";")
        if not sep or not local.startswith("tcp:") or not remote:
            _fail(conn, f"malformed forward spec '{spec}': only tcp:LOCAL;tcp:REMOTE is supported")
            return
        with self._lock:
            existing = self._forwards.get(local)
        if existing is not None:
            if norebind:
                _fail(conn, "cannot rebind existing socket")
                return
            self._kill_forwards(local)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", int(local[len("tcp:"):])))
        except (OSError, ValueError) as exc:
            listener.close()
            _fail(conn, f"cannot bind listener: {exc}")
            return
        listener.listen(LISTEN_BACKLOG)
        bound = listener.getsockname()[1]
        local_spec = f"tcp:{bound}"
        thread = self._spawn(self._forward_loop, listener, phone.serial, remote, name=f"adb-forward-{bound}")
        with self._lock:
            self._forwards[local_spec] = _Forward(phone.serial, local_spec, remote, listener, thread)
        reply = b"OKAY"
        if local == "tcp:0":
            reply += _block(str(bound))
        _okay(conn, reply)

    def _forward_loop(self, listener: socket.socket, serial: str, remote: str) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self._clients.add(client)
            self._spawn(self._forward_one, client, serial, remote, name="adb-forward-conn")

    def _forward_one(self, client: socket.socket, serial: str, remote: str) -> None:
        try:
            phone = next((p for p in self._phones if p.serial == serial), None)
            if phone is None or phone.state != "device" or not remote.startswith("tcp:"):
                return
            handler = phone.port_handler(int(remote[len("tcp:"):]))
            if handler is None:
                return
            phone.track_stream(client)
            try:
                handler(client)
            finally:
                phone.untrack_stream(client)
        except (OSError, ValueError):
            pass
        finally:
            with self._lock:
                self._clients.discard(client)
            with contextlib.suppress(OSError):
                client.close()

    def _forward_list(self, serial: str | None) -> str:
        with self._lock:
            return "".join(f"{f.serial} {f.local} {f.remote}\n" for f in self._forwards.values()
                           if serial is None or f.serial == serial)

    def _kill_forwards(self, local: str | None) -> bool:
        with self._lock:
            if local is None:
                victims = list(self._forwards.values())
                self._forwards.clear()
            else:
                fwd = self._forwards.pop(local, None)
                victims = [fwd] if fwd else []
        for fwd in victims:
            _close_listener(fwd.listener)
        return bool(victims)

    # --- device services -----------------------------------------------------------------------------------

    def _device_service(self, conn: socket.socket, phone: VirtualPhone, service: str) -> None:
        if phone.state != "device":
            _fail(conn, _not_online(phone))
            return
        phone.track_stream(conn)
        try:
            if service.startswith(("shell:", "shell,", "exec:")):
                self._shell(conn, phone, service)
            elif service == "sync:":
                _okay(conn)
                SyncSession(phone, conn).serve()
            elif service.startswith("tcp:"):
                self._tcp(conn, phone, service[len("tcp:"):])
            elif service.startswith("reboot:"):
                _okay(conn)
                phone.reboot()
            elif service in ("root:", "unroot:"):
                _okay(conn)
                if phone.spec.rooted:
                    conn.sendall(b"adbd is already running as root\n")
                else:
                    conn.sendall(b"adbd cannot run as root in production builds\n")
            else:
                _fail(conn, "closed")
        finally:
            phone.untrack_stream(conn)

    def _tcp(self, conn: socket.socket, phone: VirtualPhone, port_spec: str) -> None:
        try:
            port = int(port_spec.split(":")[0])
        except ValueError:
            _fail(conn, "closed")
            return
        handler = phone.port_handler(port)
        if handler is None:
            _fail(conn, "closed")
            return
        _okay(conn)
        conn.settimeout(None)
        handler(conn)

    def _shell(self, conn: socket.socket, phone: VirtualPhone, service: str) -> None:
        head, _, command = service.partition(":")
        v2 = head.startswith("shell,") and "v2" in head.split(",")[1:]
        _okay(conn)
        conn.settimeout(None)
        shell = Shell(phone)
        if v2:
            _ShellV2(conn, shell).run(command)
        elif not command.strip():
            _interactive_v1(conn, shell)
        else:
            _ShellV1(conn, shell).run(command)


def _close_listener(listener: socket.socket) -> None:
    """Close a listening socket so that a thread blocked in accept() wakes up (close alone does not on Linux)."""
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        listener.close()


_SERIAL_COMMANDS: tuple[str, ...] = ("features", "get-state", "get-serialno", "get-devpath", "list-forward",
                                     "killforward-all", "killforward:", "forward:", "wait-for-")


def _split_serial(rest: str, known: Sequence[str]) -> tuple[Target, str]:
    """``SERIAL:command`` where the serial may itself hold colons (``127.0.0.1:5555``): a known serial first,
    else the first colon that is followed by a host command."""
    for serial in sorted(known, key=len, reverse=True):
        if rest.startswith(serial + ":"):
            return Target("serial", serial), rest[len(serial) + 1:]
    for index, char in enumerate(rest):
        if char == ":" and rest.startswith(_SERIAL_COMMANDS, index + 1):
            return Target("serial", rest[:index]), rest[index + 1:]
    serial, _, command = rest.partition(":")
    return Target("serial", serial), command


class _ShellV1:
    """Raw output, then close: the exit code only reaches the client through adbutils' echo marker."""

    def __init__(self, conn: socket.socket, shell: Shell) -> None:
        self._conn = conn
        self._shell = shell
        self._broken = False

    def _write(self, data: bytes) -> None:
        if self._broken or not data:
            return
        try:
            self._conn.sendall(data)
        except OSError:
            self._broken = True
            self._shell.hangup.set()

    def _watch(self) -> None:
        try:
            while self._conn.recv(4096):
                pass  # stdin of a v1 shell: real commands here never read it
        except OSError:
            pass
        self._shell.hangup.set()

    def run(self, command: str) -> None:
        watcher = threading.Thread(target=self._watch, name="adb-shell-v1-watch", daemon=True)
        watcher.start()
        self._shell.run(command, self._write, self._write)
        with contextlib.suppress(OSError):
            self._conn.shutdown(socket.SHUT_RDWR)
        watcher.join(JOIN_TIMEOUT_S)


class _ShellV2:
    """Framed stdout/stderr and the exit code; client frames (stdin, close-stdin, window size) are read so that a
    hang-up is noticed."""

    def __init__(self, conn: socket.socket, shell: Shell) -> None:
        self._conn = conn
        self._shell = shell
        self._broken = False
        self._send_lock = threading.Lock()

    def _frame(self, ident: int, data: bytes) -> None:
        if self._broken:
            return
        try:
            with self._send_lock:
                self._conn.sendall(bytes([ident]) + struct.pack("<I", len(data)) + data)
        except OSError:
            self._broken = True
            self._shell.hangup.set()

    def _stdout(self, data: bytes) -> None:
        if data:
            self._frame(SHELL_ID_STDOUT, data)

    def _stderr(self, data: bytes) -> None:
        if data:
            self._frame(SHELL_ID_STDERR, data)

    def _watch(self) -> None:
        try:
            while True:
                header = _recv_exact(self._conn, 5)
                size = struct.unpack("<I", header[1:])[0]
                if size:
                    _recv_exact(self._conn, size)
        except (_ClientGone, OSError):
            pass
        self._shell.hangup.set()

    def run(self, command: str) -> None:
        watcher = threading.Thread(target=self._watch, name="adb-shell-v2-watch", daemon=True)
        watcher.start()
        status = self._shell.run(command, self._stdout, self._stderr) if command.strip() else 0
        self._frame(SHELL_ID_EXIT, bytes([status & 0xFF]))
        with contextlib.suppress(OSError):
            self._conn.shutdown(socket.SHUT_RDWR)
        watcher.join(JOIN_TIMEOUT_S)


def _interactive_v1(conn: socket.socket, shell: Shell) -> None:
    """``adb shell`` with no command on a v1 client: run each line read until EOF or ``exit``."""
    buffer = b""

    def write(data: bytes) -> None:
        with contextlib.suppress(OSError):
            conn.sendall(data)

    while True:
        try:
            chunk = conn.recv(4096)
        except OSError:
            return
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            text = line.decode(errors="replace").strip()
            if text == "exit":
                return
            if text:
                shell.run(text, write, write)


class SyncSession:
    """adbd's file sync service, version 1: STAT, LIST, SEND, RECV, QUIT."""

    def __init__(self, phone: VirtualPhone, conn: socket.socket) -> None:
        self._phone = phone
        self._conn = conn

    def serve(self) -> None:
        try:
            while True:
                header = _recv_exact(self._conn, 8)
                ident = header[:4]
                size = struct.unpack("<I", header[4:])[0]
                if size > MAX_REQUEST_BYTES:
                    self._fail("path too long")
                    return
                path = _recv_exact(self._conn, size).decode("utf-8", errors="replace")
                if ident == b"STAT":
                    self._stat(path)
                elif ident == b"LIST":
                    self._list(path)
                elif ident == b"SEND":
                    self._send(path)
                elif ident == b"RECV":
                    self._recv(path)
                elif ident == b"QUIT":
                    return
                else:
                    self._fail(f"unknown sync command {ident.decode(errors='replace')!r}")
                    return
        except _ClientGone:
            return

    def _fail(self, message: str) -> None:
        data = message.encode()
        self._conn.sendall(b"FAIL" + struct.pack("<I", len(data)) + data)

    def _stat(self, path: str) -> None:
        st = self._phone.fs.stat(path)
        # one write: adbutils reads the body with a single recv()
        self._conn.sendall(b"STAT" + struct.pack("<III", st.mode, st.size, st.mtime))

    def _list(self, path: str) -> None:
        try:
            entries = self._phone.fs.listdir(path)
        except OSError:
            entries = []
        for name, st in entries:
            encoded = name.encode()
            self._conn.sendall(b"DENT" + struct.pack("<IIII", st.mode, st.size, st.mtime, len(encoded)) + encoded)
        self._conn.sendall(b"DONE" + b"\x00" * 16)

    def _send(self, spec: str) -> None:
        path, _, mode_text = spec.rpartition(",")
        if not path:
            path, mode_text = spec, "33188"
        try:
            mode = int(mode_text)
        except ValueError:
            mode = 0o100644
        # Streamed to a temporary file beside the target and renamed at DONE: a big push costs no memory, and a
        # push cut short leaves the old file. The client sends everything before it reads an answer, so a
        # refused path still reads the data through, then fails.
        error = None
        target: Path | None = None
        try:
            target = self._phone.fs.host_path_for_write(path)
        except PermissionError:
            error = f"couldn't create file: Read-only file system ({path})"
        except IsADirectoryError:
            error = f"couldn't create file: Is a directory ({path})"
        except OSError as exc:  # a parent is a file, ...
            error = f"couldn't create file: {exc.strerror or 'Not a directory'} ({path})"
        partial = target.with_name(f".{target.name}.push-{threading.get_ident()}") if target else None
        try:
            with contextlib.ExitStack() as stack:
                sink = stack.enter_context(partial.open("wb")) if partial else None
                while True:
                    header = _recv_exact(self._conn, 8)
                    ident = header[:4]
                    value = struct.unpack("<I", header[4:])[0]
                    if ident == b"DATA":
                        if value > SYNC_DATA_MAX:
                            self._fail("data chunk too large")
                            raise _ClientGone
                        chunk = _recv_exact(self._conn, value)
                        if sink is not None:
                            sink.write(chunk)
                    elif ident == b"DONE":
                        break
                    else:
                        self._fail(f"invalid data message {ident.decode(errors='replace')!r}")
                        raise _ClientGone
            if error is not None or target is None or partial is None:
                self._fail(error or f"couldn't create file ({path})")
                return
            partial.replace(target)
            partial = None
            self._phone.fs.finish_write(target, mode=mode & 0o7777, mtime=value or None)
        finally:
            if partial is not None:
                partial.unlink(missing_ok=True)
        self._conn.sendall(b"OKAY" + b"\x00" * 4)

    def _recv(self, path: str) -> None:
        try:
            chunks = self._phone.fs.iter_chunks(path, SYNC_DATA_MAX)
        except IsADirectoryError:
            self._fail("open failed: Is a directory")
            return
        except OSError:
            self._fail("open failed: No such file or directory")
            return
        for chunk in chunks:
            self._conn.sendall(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
        self._conn.sendall(b"DONE" + b"\x00" * 4)
