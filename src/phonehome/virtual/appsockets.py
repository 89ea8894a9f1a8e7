"""Sockets owned by a virtual phone's apps: the kernel records the UID of each app that opens one.

On Android every app runs under its own Linux UID, and ``/proc/net/{tcp,tcp6,udp,udp6}`` print the UID that opened
each socket; that is how phonehome names the app behind a flow. The firmware runner (root, in the phone's network
namespace) opens each request's sockets with the filesystem UID of the app the profile names: a socket's owner is
its inode's UID, which the kernel takes from the creating thread's fsuid (``sock_alloc``), and ``setfsuid`` is
per thread, so concurrent requests of different apps do not mix. The virtual phone's shell then serves the
namespace's real tables, and its package list maps those UIDs back to packages.

Apps keep their connections open for a while after a request (an HTTP client's connection pool does), which is
also what lets a socket-table poll every 100-250 ms see them.
"""

from __future__ import annotations

import ctypes
import socket
import threading
from collections.abc import Mapping

#: how long a request's socket stays open after its exchange, as an app's connection pool keeps it
HOLD_S = 1.5
#: UIDs of the packages every virtual phone has (AOSP: android.uid.system = 1000, android.uid.phone = 1001)
SYSTEM_UIDS: Mapping[str, int] = {
    "android": 1000, "com.android.settings": 1000, "com.android.providers.settings": 1000,
    "com.android.phone": 1001, "com.android.systemui": 10012, "com.android.launcher3": 10013,
}
#: where third-party and unlisted packages get UIDs from (Process.FIRST_APPLICATION_UID is 10000)
FIRST_FREE_APP_UID = 10100

_libc = ctypes.CDLL(None, use_errno=True)
_closing: list[threading.Timer] = []


def app_socket(family: int, kind: int, uid: int | None) -> socket.socket:
    """A socket whose owner in /proc/net is ``uid`` (None: the runner's own, root, as a native daemon's)."""
    if uid is None:
        return socket.socket(family, kind)
    _libc.setfsuid(uid)
    try:
        return socket.socket(family, kind)  # nothing else may run under the app's fsuid (file access would fail)
    finally:
        _libc.setfsuid(0)


def hold(sock: socket.socket, seconds: float = HOLD_S) -> None:
    """Close ``sock`` after ``seconds`` (its app keeps it pooled), without blocking the caller."""
    timer = threading.Timer(seconds, sock.close)
    timer.daemon = True
    timer.start()


def package_uids(apps: Mapping[str, int], packages: tuple[str, ...]) -> dict[str, int]:
    """UID per installed package: the system table, the firmware profile's apps, then fresh app UIDs."""
    uids = {**SYSTEM_UIDS, **apps}
    taken = set(uids.values())
    next_uid = FIRST_FREE_APP_UID
    for package in packages:
        if package not in uids:
            while next_uid in taken:
                next_uid += 1
            uids[package] = next_uid
            taken.add(next_uid)
    return uids
