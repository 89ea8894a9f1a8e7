"""What the adb server says about a phone, asked over the adb host protocol itself (no adbutils, no adb binary).

A dead or missing adb server and a phone that is not on it are different faults with different fixes: this module
tells them apart in one round trip, so that the harness ends a wait at once when no server answers, and names
``unauthorized`` (accept the RSA prompt) and ``offline`` (reconnect the cable or ``adb connect``) instead of
waiting out a boot timeout. ``adbutils`` would start an adb server of its own when none answers, which is exactly
what a probe must not do.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from phonehome.identifiers import mask

#: connecting to and hearing back from a local adb server takes milliseconds; a server that does not answer
#: within this is as good as gone
PROBE_TIMEOUT_S = 3.0
#: the state reported for a serial when no server answered at all
NO_SERVER = "no-server"
ABSENT = "absent"
ONLINE = "device"
#: how a server that accepts connections but never answers (hung, or stopped) is told apart from none at all
NO_ANSWER = "no answer"

_FIXES: dict[str, str] = {
    "unauthorized": "accept the 'Allow USB debugging' (RSA key) prompt on the phone, then run again",
    "offline": "reconnect the USB cable (or 'adb connect HOST:PORT' for a phone over TCP) and check 'adb devices'",
    "authorizing": "wait for the phone to finish authorising this host, or accept its prompt",
    "connecting": "wait for the connection, or 'adb reconnect'",
    "recovery": "the phone is in recovery: boot it normally",
    "bootloader": "the phone is in the bootloader: boot it normally",
    "sideload": "the phone is in sideload mode: boot it normally",
}


class AdbProtocolError(ConnectionError):
    """The server answered, but not with the adb host protocol (or with FAIL)."""


@dataclass(frozen=True)
class AdbServerStatus:
    """One look at an adb server: ``error`` is None when it answered, else why it did not."""

    address: str
    error: str | None
    devices: tuple[tuple[str, str], ...] = ()

    @property
    def reachable(self) -> bool:
        return self.error is None

    def state_of(self, serial: str) -> str:
        """``device``, ``unauthorized``, ``offline``, ... as the server lists it; ``absent`` when it does not list
        the serial; ``no-server`` when no server answered."""
        if self.error is not None:
            return NO_SERVER
        return next((state for listed, state in self.devices if listed == serial), ABSENT)


def query_adb_server(host: str, port: int, *, timeout_s: float = PROBE_TIMEOUT_S) -> AdbServerStatus:
    """Ask the server at ``host:port`` for its devices (``host:devices``). Never raises."""
    address = f"{host}:{port}"
    try:
        listing = _request(host, port, "host:devices", timeout_s)
    except ConnectionRefusedError:
        return AdbServerStatus(address, "connection refused (no adb server is listening there)")
    except TimeoutError:
        return AdbServerStatus(address, f"{NO_ANSWER} within {timeout_s:g} s")
    except (OSError, AdbProtocolError) as exc:
        return AdbServerStatus(address, _reason(exc))
    devices = []
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            devices.append((parts[0], parts[1]))
    return AdbServerStatus(address, None, tuple(devices))


def transport_problem(status: AdbServerStatus, serial: str, label: str) -> str | None:
    """One line naming what stands between the harness and the phone, with its fix; None when it is online.

    Serials are masked: they are device identifiers, and other phones' serials are listed to help find a typo.
    """
    state = status.state_of(serial)
    if state == ONLINE:
        return None
    if state == NO_SERVER and status.error is not None and status.error.startswith(NO_ANSWER):
        return (f"the adb server at {status.address} is hung: it takes connections but gave {status.error}; "
                "restart it ('adb kill-server', then 'adb start-server')")
    if state == NO_SERVER:
        return (f"no adb server at {status.address}: {status.error}; start one with 'adb start-server' (or set "
                "ANDROID_ADB_SERVER_HOST/ANDROID_ADB_SERVER_PORT to where it runs)")
    if state == ABSENT:
        seen = ", ".join(f"{mask(other)} ({other_state})" for other, other_state in status.devices) or "none"
        return (f"phone {label} ({mask(serial)}) is not on the adb server at {status.address}; the server sees: "
                f"{seen}; check the cable, the serial in the inventory, and 'adb devices'")
    fix = _FIXES.get(state, "check 'adb devices' on the bench host")
    return f"phone {label} ({mask(serial)}) is '{state}' on the adb server at {status.address}: {fix}"


def _request(host: str, port: int, service: str, timeout_s: float) -> str:
    with socket.create_connection((host, port), timeout=timeout_s) as conn:
        conn.settimeout(timeout_s)
        payload = service.encode()
        conn.sendall(f"{len(payload):04x}".encode() + payload)
        status = read_exactly(conn, 4)
        if status == b"FAIL":
            raise AdbProtocolError(f"the server refused {service}: {_read_string(conn)}")
        if status != b"OKAY":
            raise AdbProtocolError(f"not an adb server (it answered {status!r})")
        return _read_string(conn)


def _read_string(conn: socket.socket) -> str:
    length_text = read_exactly(conn, 4)
    try:
        length = int(length_text, 16)
    except ValueError:
        raise AdbProtocolError(f"not an adb server (bad length {length_text!r})") from None
    return read_exactly(conn, length).decode(errors="replace")


def read_exactly(conn: socket.socket, size: int) -> bytes:
    """``size`` bytes of an adb host-protocol answer; AdbProtocolError (a ConnectionError) when it ends early."""
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise AdbProtocolError("the server closed the connection mid-answer")
        data += chunk
    return data


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
