"""The virtual phone: boot state machine, screen, keyguard, apps, files, log and identifiers.

A :class:`VirtualPhone` is the device side of everything the adb server (:mod:`phonehome.virtual.adbserver`)
serves: its shell (:mod:`phonehome.virtual.shell`) and its uiautomator2 server (:mod:`phonehome.virtual.u2server`)
only read and change the state kept here. The behaviour copies what a harness meets on a real bench, because the
harness is tested against it: a reboot kills apps and the screen at once, adbd lingers about a second, the device
vanishes (USB) or goes ``offline`` (TCP), comes back ``offline``, then ``device`` with ``sys.boot_completed``
empty, then ``1``, with a new ``boot_id``. The keyguard is dismissed only by the right gesture, key or credential.

Lifecycle events (``boot_completed``, ``screen_on``, ``screen_off``, ``unlocked``, ``shutdown``) go to the
``on_event`` callback from a dedicated thread, so a firmware that sends traffic on them never blocks adb.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import itertools
import logging
import os
import posixpath
import queue
import shutil
import socket
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phonehome.errors import InputError
from phonehome.identifiers import Identifiers, mask

log = logging.getLogger(__name__)

UNLOCK_METHODS: tuple[str, ...] = ("none", "swipe", "pin", "password")
TRANSPORTS: tuple[str, ...] = ("usb", "tcp")
#: a persistent property that makes every later boot hang before ``sys.boot_completed`` (fault rehearsal)
BOOT_HANG_PROP = "persist.phonehome.fault.boot_hang"
#: a property that puts the phone's adb transport into ``unauthorized`` (a revoked key) or ``offline`` (a cable
#: glitch) a moment after it is set, until the next boot (fault rehearsal: the phone lost mid-test)
TRANSPORT_FAULT_PROP = "phonehome.fault.transport"
TRANSPORT_FAULTS: tuple[str, ...] = ("unauthorized", "offline")
#: the delay lets the shell that set the property return its exit code first
TRANSPORT_FAULT_DELAY_S = 0.2
EVENTS: tuple[str, ...] = ("boot_completed", "screen_on", "screen_off", "unlocked", "shutdown")

#: how long close() waits for the boot and event threads
THREAD_JOIN_TIMEOUT_S = 5.0
#: lines of logcat kept (the ring buffer of a real phone is a few MB)
LOGCAT_MAX_LINES = 5000
#: an upward swipe must cover this share of the screen height to count as "swipe up"
SWIPE_UP_MIN_FRACTION = 0.25

SYSTEMUI = "com.android.systemui"
KEYGUARD_ACTIVITY = "com.android.systemui.keyguard.KeyguardActivity"
LAUNCHER = "com.android.launcher3"
LAUNCHER_ACTIVITY = "com.android.launcher3.Launcher"
PROC_NET_TABLES = frozenset(f"/proc/net/{name}" for name in ("tcp", "tcp6", "udp", "udp6"))
SYSTEM_PACKAGES: tuple[str, ...] = (
    "android", SYSTEMUI, LAUNCHER, "com.android.settings", "com.android.phone", "com.android.providers.settings",
    "com.android.chrome", "com.android.camera2", "com.android.contacts", "com.android.dialer",
    "com.android.messaging", "com.android.vending", "com.google.android.gms",
)

# Android key codes the phone reacts to (android.view.KeyEvent)
KEYCODE_HOME = 3
KEYCODE_BACK = 4
KEYCODE_0 = 7
KEYCODE_9 = 16
KEYCODE_POWER = 26
KEYCODE_A = 29
KEYCODE_Z = 54
KEYCODE_SPACE = 62
KEYCODE_ENTER = 66
KEYCODE_DEL = 67
KEYCODE_MENU = 82
KEYCODE_SLEEP = 223
KEYCODE_WAKEUP = 224

WRITABLE_ROOTS: tuple[str, ...] = ("/data/local/tmp", "/sdcard", "/storage/emulated/0")
ROOTED_WRITABLE_ROOTS: tuple[str, ...] = ("/data",)
KNOWN_DIRS: tuple[str, ...] = (
    "/", "/data", "/data/local", "/data/local/tmp", "/sdcard", "/storage", "/storage/emulated",
    "/storage/emulated/0", "/system", "/system/bin", "/proc", "/sys", "/sys/class", "/sys/class/net",
    "/sys/class/net/wlan0", "/proc/sys", "/proc/sys/kernel", "/proc/sys/kernel/random",
)
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
WLAN_MAC_PATH = "/sys/class/net/wlan0/address"

_transport_ids = itertools.count(1)
_transport_ids_lock = threading.Lock()


def _next_transport_id() -> int:
    with _transport_ids_lock:
        return next(_transport_ids)


@dataclass(frozen=True)
class BootTimings:
    """How long each step of a reboot takes, in seconds (real phones: 1, 5-20, 1-3, 10-60)."""

    adbd_linger_s: float = 1.0
    absent_s: float = 1.0
    offline_s: float = 0.5
    booting_s: float = 2.0


@dataclass(frozen=True)
class VirtualPhoneSpec:
    """Everything that makes one virtual phone different from another.

    ``serial`` is the adb serial (``host:port`` style for a TCP phone); the hardware serial the phone reports in
    ``ro.serialno`` is ``identifiers.get("serial")`` when set, else the adb serial. ``rooted`` gives the shell the
    privileges a production build denies (iphonesubinfo on Android 10+, writes under /data). ``unlock_secret`` is
    never logged nor shown in ``repr``.
    """

    serial: str
    label: str
    model: str
    manufacturer: str = "Virtual"
    android_release: str = "9"
    sdk: int = 28
    identifiers: Identifiers = field(default_factory=lambda: Identifiers(values=()))
    unlock_method: str = "none"
    unlock_secret: str | None = field(default=None, repr=False)
    transport: str = "usb"
    timings: BootTimings = BootTimings()
    build_fingerprint: str = ""
    screen: tuple[int, int] = (1080, 2160)
    density: int = 420
    rooted: bool = False
    packages: tuple[str, ...] = ()
    wlan_ip: str | None = None

    def __repr__(self) -> str:
        return (f"VirtualPhoneSpec(label={self.label!r}, serial={mask(self.serial)!r}, model={self.model!r}, "
                f"sdk={self.sdk}, unlock_method={self.unlock_method!r}, identifiers={self.identifiers!r})")

    def __post_init__(self) -> None:
        where = f"virtual phone {self.label or self.serial}"
        if not self.serial or any(ch.isspace() for ch in self.serial):
            raise InputError(None, f"serial {self.serial!r} is empty or has spaces", where=where,
                             fix="use an adb serial such as 'VIRT0001' or '127.0.0.1:5555'")
        if self.unlock_method not in UNLOCK_METHODS:
            raise InputError(None, f"unlock method {self.unlock_method!r} is unknown", where=f"{where}: unlock",
                             fix=f"use one of {', '.join(UNLOCK_METHODS)}")
        if self.unlock_method in ("pin", "password") and not self.unlock_secret:
            raise InputError(None, f"unlock method {self.unlock_method} needs a secret", where=f"{where}: unlock",
                             fix="set the PIN/password environment variable named in devices.yaml")
        if self.unlock_method == "pin" and self.unlock_secret and not self.unlock_secret.isdigit():
            raise InputError(None, "a PIN must be digits", where=f"{where}: unlock",
                             fix="use unlock method 'password' for a secret with letters")
        if self.transport not in TRANSPORTS:
            raise InputError(None, f"transport {self.transport!r} is unknown", where=f"{where}: transport",
                             fix=f"use one of {', '.join(TRANSPORTS)}")
        if self.screen[0] <= 0 or self.screen[1] <= 0:
            raise InputError(None, f"screen size {self.screen} is not positive", where=f"{where}: screen",
                             fix="give width and height in pixels, e.g. (1080, 2160)")

    @property
    def hardware_serial(self) -> str:
        """What ``getprop ro.serialno`` answers."""
        values = self.identifiers.get("serial")
        return values[0] if values else self.serial

    @property
    def fingerprint(self) -> str:
        """``ro.build.fingerprint``: given, or derived like a real one from brand, model and release."""
        if self.build_fingerprint:
            return self.build_fingerprint
        brand = self.manufacturer.lower().replace(" ", "")
        device = self.model.lower().replace(" ", "_")
        return f"{brand}/{device}/{device}:{self.android_release}/PQ3A.190801.002/1:user/release-keys"


@dataclass(frozen=True)
class FileStat:
    """A file's mode, size and mtime as the sync protocol reports them; mode 0 means "no such file"."""

    mode: int
    size: int
    mtime: int

    @property
    def exists(self) -> bool:
        return self.mode != 0

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


@dataclass(frozen=True)
class KeyBounds:
    """One key of the PIN pad: what it types and where it is (left, top, right, bottom in pixels)."""

    key: str
    bounds: tuple[int, int, int, int]

    def contains(self, x: int, y: int) -> bool:
        left, top, right, bottom = self.bounds
        return left <= x < right and top <= y < bottom


def pin_pad(screen: tuple[int, int]) -> tuple[KeyBounds, ...]:
    """The bouncer's PIN pad layout, shared by taps and ``dumpWindowHierarchy`` so that a harness that clicks the
    keys it sees in the hierarchy types them."""
    width, height = screen
    rows = (("1", "2", "3"), ("4", "5", "6"), ("7", "8", "9"), ("delete", "0", "enter"))
    top = height // 2
    key_w = width // 3
    key_h = (height - top - height // 10) // len(rows)
    keys: list[KeyBounds] = []
    for r, row in enumerate(rows):
        for c, key in enumerate(row):
            keys.append(KeyBounds(key, (c * key_w, top + r * key_h, (c + 1) * key_w, top + (r + 1) * key_h)))
    return tuple(keys)


class VirtualFS:
    """The phone's files: what adb can push lives on disk under ``root`` (so it survives reboots and new
    ``VirtualPhone`` objects on the same storage), the rest are read-only files the phone makes up."""

    def __init__(self, root: Path, synthetic: Callable[[str], bytes | None], *, rooted: bool) -> None:
        self._root = root
        self._synthetic = synthetic
        self._writable = WRITABLE_ROOTS + (ROOTED_WRITABLE_ROOTS if rooted else ())
        self._boot_time = int(time.time())
        (root / "sdcard").mkdir(parents=True, exist_ok=True)
        (root / "data" / "local" / "tmp").mkdir(parents=True, exist_ok=True)

    @staticmethod
    def normalize(path: str) -> str:
        """An absolute device path without ``.``/``..``; /storage/emulated/0 is /sdcard as on a phone."""
        norm = posixpath.normpath("/" + path.strip())
        norm = "/" + norm.lstrip("/")
        if norm == "/storage/emulated/0" or norm.startswith("/storage/emulated/0/"):
            norm = "/sdcard" + norm[len("/storage/emulated/0"):]
        return norm

    def _host(self, path: str) -> Path | None:
        norm = self.normalize(path)
        if not any(norm == w or norm.startswith(w + "/") for w in (*self._writable, "/data/local/tmp")):
            return None
        return self._root / norm.lstrip("/")

    def writable(self, path: str) -> bool:
        norm = self.normalize(path)
        return any(norm == w or norm.startswith(w + "/") for w in self._writable)

    def stat(self, path: str) -> FileStat:
        norm = self.normalize(path)
        host = self._host(norm)
        if host is not None and host.exists():
            st = host.stat()
            return FileStat(st.st_mode, st.st_size if not host.is_dir() else 4096, int(st.st_mtime))
        content = self._synthetic(norm)
        if content is not None:
            return FileStat(stat.S_IFREG | 0o444, len(content), self._boot_time)
        if norm in KNOWN_DIRS:
            return FileStat(stat.S_IFDIR | 0o755, 4096, self._boot_time)
        return FileStat(0, 0, 0)

    def read(self, path: str) -> bytes:
        """Raises FileNotFoundError / IsADirectoryError like the real thing."""
        norm = self.normalize(path)
        host = self._host(norm)
        if host is not None and host.is_file():
            return host.read_bytes()
        content = self._synthetic(norm)
        if content is not None:
            return content
        if self.stat(norm).is_dir:
            raise IsADirectoryError(norm)
        raise FileNotFoundError(norm)

    def iter_chunks(self, path: str, chunk_size: int) -> Iterator[bytes]:
        """A file's content in pieces (a pull of a big file costs no memory); raises like :meth:`read` before the
        first piece."""
        norm = self.normalize(path)
        host = self._host(norm)
        if host is not None and host.is_file():
            fh = host.open("rb")
            return _chunks_of(fh, chunk_size)
        data = self.read(norm)
        return iter([data[i:i + chunk_size] for i in range(0, len(data), chunk_size)])

    def write(self, path: str, data: bytes, *, mode: int = 0o644, mtime: int | None = None,
              append: bool = False) -> None:
        """Raises PermissionError outside the writable areas, IsADirectoryError on a directory."""
        host = self.host_path_for_write(path)
        with host.open("ab" if append else "wb") as fh:
            fh.write(data)
        self.finish_write(host, mode=mode, mtime=mtime)

    def host_path_for_write(self, path: str) -> Path:
        """Where a file being written lives on this host (parents created, as adbd's push does); raises
        PermissionError outside the writable areas, IsADirectoryError on a directory."""
        norm = self.normalize(path)
        host = self._host(norm)
        if host is None or not self.writable(norm):
            raise PermissionError(norm)
        if host.is_dir():
            raise IsADirectoryError(norm)
        host.parent.mkdir(parents=True, exist_ok=True)
        return host

    @staticmethod
    def finish_write(host: Path, *, mode: int, mtime: int | None) -> None:
        host.chmod(mode & 0o777 or 0o644)
        if mtime:
            os.utime(host, (mtime, mtime))

    def listdir(self, path: str) -> list[tuple[str, FileStat]]:
        """Entries of a directory (with ``.`` and ``..`` as adbd sends them); raises NotADirectoryError /
        FileNotFoundError."""
        norm = self.normalize(path)
        st = self.stat(norm)
        if not st.exists:
            raise FileNotFoundError(norm)
        if not st.is_dir:
            raise NotADirectoryError(norm)
        names: dict[str, FileStat] = {".": st, "..": self.stat(posixpath.dirname(norm) or "/")}
        prefix = norm.rstrip("/") + "/"
        for known in KNOWN_DIRS:
            if known != norm and known.startswith(prefix) and "/" not in known[len(prefix):]:
                names[known[len(prefix):]] = self.stat(known)
        host = self._host(norm)
        if host is not None and host.is_dir():
            for child in sorted(host.iterdir()):
                names[child.name] = self.stat(prefix + child.name)
        return list(names.items())

    def mkdir(self, path: str, *, parents: bool = False) -> None:
        norm = self.normalize(path)
        host = self._host(norm)
        if host is None or not self.writable(norm):
            raise PermissionError(norm)
        host.mkdir(parents=parents, exist_ok=parents)

    def remove(self, path: str, *, recursive: bool = False) -> None:
        norm = self.normalize(path)
        host = self._host(norm)
        if host is None or not self.writable(norm) or norm in WRITABLE_ROOTS:
            if self.stat(norm).exists:
                raise PermissionError(norm)
            raise FileNotFoundError(norm)
        if host.is_dir():
            if not recursive:
                raise IsADirectoryError(norm)
            shutil.rmtree(host)
        elif host.exists():
            host.unlink()
        else:
            raise FileNotFoundError(norm)


def _chunks_of(fh: io.BufferedReader, chunk_size: int) -> Iterator[bytes]:
    with fh:
        while chunk := fh.read(chunk_size):
            yield chunk


@dataclass(frozen=True)
class LogLine:
    """One logcat entry."""

    when: float
    pid: int
    level: str
    tag: str
    message: str

    def render(self) -> str:
        """``threadtime`` format, the default of ``logcat``."""
        stamp = time.strftime("%m-%d %H:%M:%S", time.localtime(self.when))
        millis = int((self.when % 1) * 1000)
        return f"{stamp}.{millis:03d} {self.pid:5d} {self.pid:5d} {self.level} {self.tag}: {self.message}"


PortHandler = Callable[[socket.socket], None]


class VirtualPhone:
    """A phone that the real adbutils, uiautomator2 and ``adb`` drive through :class:`AdbServer`.

    The phone starts booted, screen off, keyguard armed (unless ``unlock_method`` is none), like a phone that has
    been on for a while; it is in the same state after every boot (as if the boot screen had timed out), so that
    the harness's screen-on and unlock phases always do something. :meth:`reboot` runs the boot state machine in
    a background thread. Files under /data/local/tmp and /sdcard live in ``storage_dir`` and survive reboots.
    """

    def __init__(self, spec: VirtualPhoneSpec, *, storage_dir: Path,
                 on_event: Callable[[str], None] | None = None, apps: Mapping[str, int] | None = None,
                 net_proc: Path | None = None) -> None:
        self.spec = spec
        # issue 12: the firmware's apps (package -> UID) and /proc/<pid>/net of a process in the phone's network
        # namespace, whose real socket tables the shell serves as /proc/net/* (see virtual/appsockets.py)
        self.apps = dict(apps or {})
        self.net_proc = net_proc
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._listeners: list[Callable[[], None]] = []
        self._on_event = on_event
        self._events: queue.Queue[str | None] = queue.Queue()
        self._closing = threading.Event()
        self._storage_dir = Path(storage_dir)
        self.fs = VirtualFS(self._storage_dir / "fs", self._synthetic_file, rooted=spec.rooted)
        self._state: str | None = "device"
        self._transport_id = _next_transport_id()
        self._boot_id = str(uuid.uuid4())
        self._boot_completed = True
        self._booted_at = time.monotonic()
        # running -> shutting_down (adbd lingers) -> down (absent/offline) -> booting (device, not completed)
        self._phase = "running"
        self._generation = 0
        self._boot_threads: list[threading.Thread] = []
        self._screen_on = False
        self._keyguard = spec.unlock_method != "none"
        self._bouncer = False
        self._entry = ""
        self._wrong_attempts = 0
        self._resumed: tuple[str, str] = (LAUNCHER, LAUNCHER_ACTIVITY)
        self._running_apps: dict[str, int] = {}
        self._pids = itertools.count(3000)
        self._props: dict[str, str] = {}
        self._settings: dict[str, dict[str, str]] = self._initial_settings()
        self._log: list[LogLine] = []
        self._ports: dict[int, PortHandler] = {}
        self._streams: set[socket.socket] = set()
        self._wifi = True
        self._data = True
        self._size_override: tuple[int, int] | None = None
        self._density_override: int | None = None
        self._rotation = 0
        self._clipboard: str | None = None
        self._toast: str | None = None
        self._start_system_apps()
        self.log("I", "Zygote", "System server started")
        self._event_thread = threading.Thread(target=self._dispatch_events, name=f"phone-events-{spec.serial}",
                                              daemon=True)
        self._event_thread.start()

    # --- observing -----------------------------------------------------------------------------------------

    @property
    def serial(self) -> str:
        return self.spec.serial

    @property
    def state(self) -> str | None:
        """``device``, ``offline``, or None while a USB phone is absent from ``adb devices``."""
        with self._lock:
            return self._state

    @property
    def transport_id(self) -> int:
        """Changes each time adbd comes back, as the host's transport for a device does."""
        with self._lock:
            return self._transport_id

    @property
    def boot_id(self) -> str:
        with self._lock:
            return self._boot_id

    @property
    def boot_completed(self) -> bool:
        with self._lock:
            return self._boot_completed

    @property
    def rebooting(self) -> bool:
        """True from reboot() until ``sys.boot_completed`` is 1 again."""
        with self._lock:
            return self._phase != "running"

    @property
    def screen_on(self) -> bool:
        with self._lock:
            return self._screen_on

    @property
    def locked(self) -> bool:
        """True while the keyguard is armed (showing on screen, or waiting behind a dark screen)."""
        with self._lock:
            return self._keyguard

    @property
    def bouncer_showing(self) -> bool:
        with self._lock:
            return self._bouncer and self._keyguard and self._screen_on

    @property
    def wrong_unlock_attempts(self) -> int:
        """Wrong PINs/passwords entered since boot (a right one does not reset it, so a lab can see them)."""
        with self._lock:
            return self._wrong_attempts

    @property
    def foreground(self) -> str:
        """The package in front: systemui while the keyguard is up, else the resumed app (a launcher after
        unlock)."""
        return self.foreground_activity[0]

    @property
    def foreground_activity(self) -> tuple[str, str]:
        with self._lock:
            if self._keyguard:
                return (SYSTEMUI, KEYGUARD_ACTIVITY)
            return self._resumed

    @property
    def resumed_activity(self) -> tuple[str, str]:
        with self._lock:
            return self._resumed

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self._booted_at

    @property
    def display_size(self) -> tuple[int, int]:
        with self._lock:
            return self._size_override or self.spec.screen

    @property
    def density(self) -> int:
        with self._lock:
            return self._density_override or self.spec.density

    @property
    def rotation(self) -> int:
        with self._lock:
            return self._rotation

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (no arguments, must not block) whenever ``state`` changes: the adb server's
        track-devices and wait-for services use it."""
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def identifier(self, name: str) -> str | None:
        """First value of an identifier (``imei``, ``imsi``...), or None when the phone has none."""
        values = self.spec.identifiers.get(name)
        return values[0] if values else None

    def identifiers_all(self, name: str) -> tuple[str, ...]:
        return self.spec.identifiers.get(name)

    # --- properties and settings ---------------------------------------------------------------------------

    def _base_props(self) -> dict[str, str]:
        spec = self.spec
        brand = spec.manufacturer.lower().replace(" ", "")
        device = spec.model.lower().replace(" ", "_")
        props = {
            "ro.serialno": spec.hardware_serial,
            "ro.boot.serialno": spec.hardware_serial,
            "ro.product.model": spec.model,
            "ro.product.manufacturer": spec.manufacturer,
            "ro.product.brand": brand,
            "ro.product.name": device,
            "ro.product.device": device,
            "ro.product.cpu.abi": "arm64-v8a",
            "ro.product.cpu.abilist": "arm64-v8a,armeabi-v7a,armeabi",
            "ro.build.version.release": spec.android_release,
            "ro.build.version.sdk": str(spec.sdk),
            "ro.build.fingerprint": spec.fingerprint,
            "ro.build.type": "userdebug" if spec.rooted else "user",
            "ro.build.tags": "release-keys",
            "ro.debuggable": "1" if spec.rooted else "0",
            "ro.secure": "0" if spec.rooted else "1",
            "ro.sf.lcd_density": str(spec.density),
            "ro.hardware": "virtual",
            "persist.sys.timezone": "UTC",
            "persist.sys.locale": "en-US",
            "gsm.version.baseband": "virtual-modem-1.0",
            "net.hostname": f"android-{hashlib.sha256(spec.serial.encode()).hexdigest()[:16]}",
            "sys.boot_completed": "1" if self._boot_completed else "",
            "dev.bootcomplete": "1" if self._boot_completed else "",
            "init.svc.bootanim": "stopped" if self._boot_completed else "running",
            "service.bootanim.exit": "1" if self._boot_completed else "0",
            "ro.boot.bootreason": "reboot",
        }
        imsi = self.identifier("imsi")
        if imsi:
            props["gsm.sim.operator.numeric"] = imsi[:5]
            props["gsm.operator.numeric"] = imsi[:5]
            props["gsm.sim.state"] = "READY"
            props["gsm.operator.alpha"] = "Virtual Mobile"
        else:
            props["gsm.sim.state"] = "ABSENT"
        return props

    def getprop(self, name: str) -> str:
        with self._lock:
            if name in self._props:
                return self._props[name]
            return self._base_props().get(name, "")

    def all_props(self) -> dict[str, str]:
        with self._lock:
            props = self._base_props()
            props.update(self._props)
            return dict(sorted(props.items()))

    def change_lock(self, old: str | None, new_pin: str | None) -> bool:
        """``locksettings``: a secure lock changes only with its current credential; ``new_pin`` None clears it
        (the keyguard stays as a swipe screen, as on Android)."""
        with self._lock:
            if self.spec.unlock_method in ("pin", "password") and old != self.spec.unlock_secret:
                return False
            method = "pin" if new_pin is not None else "swipe"
            self.spec = dataclasses.replace(self.spec, unlock_method=method, unlock_secret=new_pin)
        self.log("I", "LockSettingsService", f"lock changed to {method}")
        return True

    def setprop(self, name: str, value: str) -> bool:
        """False for read-only ``ro.*`` properties (a real setprop fails on them too)."""
        with self._lock:
            if name.startswith("ro.") and self.getprop(name):
                return False
            self._props[name] = value
        if name == TRANSPORT_FAULT_PROP and value in TRANSPORT_FAULTS:
            fault = threading.Timer(TRANSPORT_FAULT_DELAY_S, self._set_state, (value,))
            fault.daemon = True
            fault.start()
        return True

    def _initial_settings(self) -> dict[str, dict[str, str]]:
        android_id = self.identifier("android_id") or hashlib.sha256(
            ("android_id" + self.spec.serial).encode()).hexdigest()[:16]
        secure = {"android_id": android_id, "location_mode": "3", "lockscreen.disabled": "0",
                  "default_input_method": "com.android.inputmethod.latin/.LatinIME"}
        bt_mac = self.identifier("bt_mac")
        if bt_mac:
            secure["bluetooth_address"] = bt_mac.upper()
        system = {"screen_off_timeout": "60000", "screen_brightness": "102", "screen_brightness_mode": "0",
                  "pointer_location": "0", "show_touches": "0"}
        glob = {"adb_enabled": "1", "airplane_mode_on": "0", "wifi_on": "1", "mobile_data": "1",
                "stay_on_while_plugged_in": "0", "device_name": self.spec.model}
        return {"system": system, "secure": secure, "global": glob}

    def settings_get(self, namespace: str, key: str) -> str | None:
        with self._lock:
            return self._settings.get(namespace, {}).get(key)

    def settings_put(self, namespace: str, key: str, value: str) -> None:
        with self._lock:
            self._settings.setdefault(namespace, {})[key] = value

    def settings_delete(self, namespace: str, key: str) -> bool:
        with self._lock:
            return self._settings.get(namespace, {}).pop(key, None) is not None

    def settings_list(self, namespace: str) -> dict[str, str]:
        with self._lock:
            return dict(sorted(self._settings.get(namespace, {}).items()))

    # --- files ---------------------------------------------------------------------------------------------

    def _synthetic_file(self, path: str) -> bytes | None:
        if path == BOOT_ID_PATH:
            return (self.boot_id + "\n").encode()
        if path == WLAN_MAC_PATH:
            return (self.wlan_mac + "\n").encode()
        if path in PROC_NET_TABLES:
            return self._proc_net(path)
        if path == "/proc/version":
            return b"Linux version 4.9.112-virtual (build@phonehome) #1 SMP PREEMPT\n"
        if path == "/proc/uptime":
            up = self.uptime_s
            return f"{up:.2f} {up * 1.7:.2f}\n".encode()
        if path == "/system/build.prop":
            return "".join(f"{k}={v}\n" for k, v in self.all_props().items() if k.startswith("ro.")).encode()
        return None

    @property
    def wlan_mac(self) -> str:
        """The Wi-Fi MAC from the identifiers, else a stable locally administered one."""
        mac = self.identifier("wifi_mac")
        if mac:
            return mac.lower()
        digest = hashlib.sha256(("wlan" + self.spec.serial).encode()).digest()
        octets = bytes([(digest[0] | 0x02) & 0xFE]) + digest[1:6]
        return ":".join(f"{b:02x}" for b in octets)

    def wlan_mac_readable(self) -> bool:
        """Android 11 hides the MAC from unprivileged shells."""
        return self.spec.sdk < 30 or self.spec.rooted

    # --- log -----------------------------------------------------------------------------------------------

    def log(self, level: str, tag: str, message: str, *, pid: int = 1000) -> None:
        """Add a logcat line. Never pass a secret here: logcat is collected as test evidence."""
        with self._lock:
            self._log.append(LogLine(time.time(), pid, level, tag, message))
            if len(self._log) > LOGCAT_MAX_LINES:
                del self._log[: len(self._log) - LOGCAT_MAX_LINES]
            self._changed.notify_all()

    def log_lines(self, start: int = 0) -> tuple[list[LogLine], int]:
        """Lines from index ``start`` and the index to continue from."""
        with self._lock:
            return self._log[start:], len(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def wait_log(self, start: int, timeout_s: float) -> None:
        """Block until a line past ``start`` exists or ``timeout_s`` passed (for ``logcat`` without -d)."""
        with self._changed:
            if len(self._log) <= start:
                self._changed.wait(timeout_s)

    # --- apps ----------------------------------------------------------------------------------------------

    def installed_packages(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(SYSTEM_PACKAGES + tuple(self.apps) + self.spec.packages))

    def package_uids(self) -> dict[str, int]:
        """UID of every installed package, as ``cmd package list packages -U`` prints them."""
        from phonehome.virtual.appsockets import package_uids

        return package_uids(self.apps, self.installed_packages())

    def _proc_net(self, path: str) -> bytes | None:
        """The namespace's real table (its sockets carry the UIDs of the apps that opened them); a phone whose
        firmware sends nothing has no sockets: the header alone."""
        if self.net_proc is None:
            from phonehome.scan.attribution import PROC_NET_HEADERS

            return (PROC_NET_HEADERS[path.rsplit("/", 1)[1]] + "\n").encode()
        try:
            return (self.net_proc / path.rsplit("/", 1)[1]).read_bytes()
        except OSError:
            return None

    def _start_system_apps(self) -> None:
        with self._lock:
            self._running_apps = {"system_server": 1000, SYSTEMUI: next(self._pids), LAUNCHER: next(self._pids),
                                  "com.android.phone": next(self._pids)}

    def running_apps(self) -> dict[str, int]:
        with self._lock:
            return dict(self._running_apps)

    def start_app(self, package: str, activity: str | None = None) -> bool:
        """Launch an installed app: it becomes the resumed activity (behind the keyguard if locked)."""
        if package not in self.installed_packages():
            return False
        activity = activity or f"{package}.MainActivity"
        if activity.startswith("."):
            activity = package + activity
        with self._lock:
            if package not in self._running_apps:
                self._running_apps[package] = next(self._pids)
            self._resumed = (package, activity)
        self.log("I", "ActivityManager", f"START u0 {{cmp={package}/{activity}}} from uid 2000")
        return True

    def stop_app(self, package: str) -> None:
        with self._lock:
            self._running_apps.pop(package, None)
            if self._resumed[0] == package:
                self._resumed = (LAUNCHER, LAUNCHER_ACTIVITY)
        self.log("I", "ActivityManager", f"Force stopping {package} appid=10100 user=0: from pid 4242")

    # --- device ports (where the uiautomator2 server listens) ------------------------------------------------

    def listen(self, port: int, handler: PortHandler) -> bool:
        """Open a device TCP port; False when something already listens there."""
        with self._lock:
            if port in self._ports:
                return False
            self._ports[port] = handler
            return True

    def unlisten(self, port: int, handler: PortHandler | None = None) -> None:
        with self._lock:
            if handler is None or self._ports.get(port) == handler:  # bound methods compare equal, not identical
                self._ports.pop(port, None)

    def port_handler(self, port: int) -> PortHandler | None:
        with self._lock:
            return self._ports.get(port)

    def track_stream(self, sock: socket.socket) -> None:
        """Register an adb stream to this phone so that adbd's death closes it, as a reboot does."""
        with self._lock:
            self._streams.add(sock)

    def untrack_stream(self, sock: socket.socket) -> None:
        with self._lock:
            self._streams.discard(sock)

    # --- screen, keys, touch -------------------------------------------------------------------------------

    def wake(self) -> None:
        """Screen on (KEYCODE_WAKEUP): the keyguard shows if armed."""
        with self._lock:
            if self._screen_on or self._phase != "running":
                return
            self._screen_on = True
        self.log("I", "PowerManagerService", "Waking up from sleep (uid=2000 reason=android.policy:POWER)...")
        self._emit("screen_on")

    def sleep(self) -> None:
        """Screen off (KEYCODE_SLEEP): re-arms the keyguard and forgets a half-typed PIN."""
        with self._lock:
            if not self._screen_on:
                return
            self._screen_on = False
            self._bouncer = False
            self._entry = ""
            if self.spec.unlock_method != "none":
                self._keyguard = True
        self.log("I", "PowerManagerService", "Going to sleep due to power button (uid 1000)...")
        self._emit("screen_off")

    def press_key(self, code: int, *, longpress: bool = False) -> None:
        """One key press, as ``input keyevent`` or uiautomator2's pressKeyCode deliver it."""
        if code == KEYCODE_POWER:
            if self.screen_on:
                self.sleep()
            else:
                self.wake()
            return
        if code == KEYCODE_WAKEUP:
            self.wake()
            return
        if code == KEYCODE_SLEEP:
            self.sleep()
            return
        if not self.screen_on:
            return
        if self.locked:
            self._keyguard_key(code)
            return
        if code == KEYCODE_HOME:
            with self._lock:
                self._resumed = (LAUNCHER, LAUNCHER_ACTIVITY)
        elif code == KEYCODE_BACK:
            with self._lock:
                if self._resumed[0] != LAUNCHER:
                    self._resumed = (LAUNCHER, LAUNCHER_ACTIVITY)

    def _keyguard_key(self, code: int) -> None:
        method = self.spec.unlock_method
        if method == "swipe":
            if code == KEYCODE_MENU:  # the MENU key dismisses an insecure keyguard, as on AOSP
                self._unlock("menu key")
            return
        if code == KEYCODE_ENTER:
            self._submit_credential()
        elif code == KEYCODE_DEL:
            with self._lock:
                self._entry = self._entry[:-1]
        elif code == KEYCODE_BACK:
            with self._lock:
                self._bouncer = False
                self._entry = ""
        elif code == KEYCODE_MENU:
            with self._lock:
                self._bouncer = True
        elif KEYCODE_0 <= code <= KEYCODE_9:
            self._type_on_keyguard(str(code - KEYCODE_0))
        elif KEYCODE_A <= code <= KEYCODE_Z and method == "password":
            self._type_on_keyguard(chr(ord("a") + code - KEYCODE_A))
        elif code == KEYCODE_SPACE and method == "password":
            self._type_on_keyguard(" ")

    def _type_on_keyguard(self, text: str) -> None:
        allowed = text if self.spec.unlock_method == "password" else "".join(ch for ch in text if ch.isdigit())
        with self._lock:
            self._bouncer = True  # typing on the keyguard brings up the bouncer, as on Android
            self._entry += allowed

    def type_text(self, text: str) -> None:
        """``input text``: on the keyguard it types into the PIN/password field; elsewhere it goes to the app."""
        if not self.screen_on:
            return
        if self.locked:
            if self.spec.unlock_method in ("pin", "password"):
                self._type_on_keyguard(text)
            return

    def clear_entry(self) -> None:
        """Empty the PIN/password field (uiautomator2's clearTextField on it)."""
        with self._lock:
            self._entry = ""

    def _submit_credential(self) -> None:
        with self._lock:
            entry, self._entry = self._entry, ""
            if not self._bouncer and not entry:
                return
            if not entry:
                return
            correct = entry == self.spec.unlock_secret
            if not correct:
                self._wrong_attempts += 1
                attempts = self._wrong_attempts
        if correct:
            self._unlock(f"{self.spec.unlock_method} accepted")
        else:
            self.log("W", "KeyguardUpdateMonitor", f"wrong {self.spec.unlock_method} entered, failed attempts: "
                     f"{attempts}")

    def swipe(self, x1: int, y1: int, x2: int, y2: int) -> None:
        """A swipe up across at least a quarter of the screen dismisses a swipe keyguard or shows the bouncer."""
        if not self.screen_on or not self.locked:
            return
        height = self.display_size[1]
        if y1 - y2 < height * SWIPE_UP_MIN_FRACTION:
            return
        if self.spec.unlock_method == "swipe":
            self._unlock("swipe up")
        else:
            with self._lock:
                self._bouncer = True

    def tap(self, x: int, y: int) -> None:
        """A tap on the bouncer's PIN pad types that key."""
        if not self.bouncer_showing or self.spec.unlock_method != "pin":
            return
        for key in pin_pad(self.display_size):
            if key.contains(x, y):
                if key.key == "enter":
                    self._submit_credential()
                elif key.key == "delete":
                    self.press_key(KEYCODE_DEL)
                else:
                    self._type_on_keyguard(key.key)
                return

    def dismiss_keyguard(self) -> bool:
        """``wm dismiss-keyguard``: works only on an insecure keyguard (none/swipe), as on Android."""
        if self.spec.unlock_method in ("pin", "password"):
            with self._lock:
                self._bouncer = self._screen_on
            return False
        if self.locked and self.screen_on:
            self._unlock("wm dismiss-keyguard")
        return True

    def _unlock(self, how: str) -> None:
        with self._lock:
            if not self._keyguard:
                return
            self._keyguard = False
            self._bouncer = False
            self._entry = ""
        self.log("I", "KeyguardViewMediator", f"keyguard dismissed ({how})")
        self._emit("unlocked")

    def set_display(self, size: tuple[int, int] | None = None, density: int | None = None,
                    rotation: int | None = None, *, reset: bool = False) -> None:
        with self._lock:
            if reset:
                self._size_override = None
                self._density_override = None
            if size is not None:
                self._size_override = size
            if density is not None:
                self._density_override = density
            if rotation is not None:
                self._rotation = rotation % 4

    def set_radio(self, name: str, enabled: bool) -> None:
        """``svc wifi|data enable|disable``."""
        with self._lock:
            if name == "wifi":
                self._wifi = enabled
                self._settings["global"]["wifi_on"] = "1" if enabled else "0"
            elif name == "data":
                self._data = enabled
                self._settings["global"]["mobile_data"] = "1" if enabled else "0"
        self.log("I", "ConnectivityService", f"{name} {'enabled' if enabled else 'disabled'} by shell")

    def radio(self, name: str) -> bool:
        with self._lock:
            return self._wifi if name == "wifi" else self._data

    @property
    def clipboard(self) -> str | None:
        with self._lock:
            return self._clipboard

    @clipboard.setter
    def clipboard(self, text: str | None) -> None:
        with self._lock:
            self._clipboard = text

    @property
    def toast(self) -> str | None:
        with self._lock:
            return self._toast

    @toast.setter
    def toast(self, text: str | None) -> None:
        with self._lock:
            self._toast = text

    # --- screenshot ----------------------------------------------------------------------------------------

    def screenshot(self, fmt: str = "PNG", *, quality: int = 80, scale: float = 1.0) -> bytes:
        """The screen as a PNG or JPEG: black when off, the lock screen or bouncer, or the launcher.

        Pillow is imported here only (it comes with uiautomator2), so that importing the phone stays cheap.
        """
        from PIL import Image, ImageDraw  # lazy: only screenshots need it

        width, height = self.display_size
        if self.rotation % 2:
            width, height = height, width
        with self._lock:
            screen_on, locked, bouncer = self._screen_on, self._keyguard, self.bouncer_showing
            entry_len = len(self._entry)
        if not screen_on:
            image = Image.new("RGB", (width, height), (0, 0, 0))
        elif locked:
            image = Image.new("RGB", (width, height), (20, 30, 60))
            draw = ImageDraw.Draw(image)
            clock = time.strftime("%H:%M")
            draw.text((width // 2 - 60, height // 6), clock, fill=(255, 255, 255))
            if bouncer and self.spec.unlock_method == "pin":
                for key in pin_pad((width, height)):
                    left, top, right, bottom = key.bounds
                    draw.ellipse((left + 40, top + 20, right - 40, bottom - 20), outline=(200, 200, 220), width=4)
                    draw.text(((left + right) // 2 - 8, (top + bottom) // 2 - 8), key.key[:3], fill=(255, 255, 255))
            if bouncer:
                for i in range(entry_len):
                    cx = width // 2 - entry_len * 30 + i * 60 + 30
                    draw.ellipse((cx - 12, height // 3 - 12, cx + 12, height // 3 + 12), fill=(255, 255, 255))
            else:
                draw.polygon(((width // 2 - 40, height - 200), (width // 2, height - 260),
                              (width // 2 + 40, height - 200)), fill=(255, 255, 255))
        else:
            image = Image.new("RGB", (width, height), (30, 90, 60))
            draw = ImageDraw.Draw(image)
            colours = ((219, 68, 55), (66, 133, 244), (244, 180, 0), (15, 157, 88))
            cell = width // 4
            for i in range(12):
                x, y = (i % 4) * cell, height // 3 + (i // 4) * cell
                draw.rounded_rectangle((x + 30, y + 30, x + cell - 30, y + cell - 30), radius=30,
                                       fill=colours[i % 4])
        if scale != 1.0 and scale > 0:
            image = image.resize((max(1, int(width * scale)), max(1, int(height * scale))))
        buf = io.BytesIO()
        if fmt.upper() == "JPEG":
            image.save(buf, format="JPEG", quality=max(1, min(100, quality)))
        else:
            image.save(buf, format="PNG", optimize=False, compress_level=1)
        return buf.getvalue()

    # --- reboot --------------------------------------------------------------------------------------------

    def reboot(self) -> None:
        """Reboot: apps die and the screen goes off before this returns; the rest of the boot state machine
        runs in a background thread. While the phone is already going down the request is ignored (as a phone
        ignores it); during the boot after that it starts over."""
        with self._lock:
            if self._closing.is_set() or self._phase in ("shutting_down", "down"):
                return
            self._phase = "shutting_down"
            self._generation += 1
            generation = self._generation
            was_on = self._screen_on
            self._screen_on = False
            self._bouncer = False
            self._entry = ""
            self._keyguard = self.spec.unlock_method != "none"
            self._ports.clear()  # apps die, the uiautomator2 server with them
            self._running_apps.clear()
            self._resumed = (LAUNCHER, LAUNCHER_ACTIVITY)
        self.log("I", "ShutdownThread", "Rebooting, reason: shell")
        if was_on:
            self._emit("screen_off")
        self._emit("shutdown")
        thread = threading.Thread(target=self._boot_sequence, args=(generation,), name=f"boot-{self.serial}",
                                  daemon=True)
        with self._lock:
            self._boot_threads.append(thread)
        thread.start()

    def _set_state(self, state: str | None) -> None:
        with self._lock:
            self._state = state
            listeners = list(self._listeners)
            self._changed.notify_all()
        for listener in listeners:
            try:
                listener()
            except Exception:  # a listener must not break the boot
                log.exception("state listener failed")

    def _pause(self, seconds: float, generation: int) -> bool:
        """Sleep; False when the phone is being closed or a newer reboot took over."""
        if self._closing.wait(max(0.0, seconds)):
            return False
        with self._lock:
            return self._generation == generation

    def _boot_sequence(self, generation: int) -> None:
        timings = self.spec.timings
        if not self._pause(timings.adbd_linger_s, generation):
            return
        with self._lock:
            self._phase = "down"
        self._kill_adbd()
        self._set_state(None if self.spec.transport == "usb" else "offline")
        if not self._pause(timings.absent_s, generation):
            return
        with self._lock:
            self._boot_id = str(uuid.uuid4())
            self._boot_completed = False
            self._booted_at = time.monotonic()
            self._wrong_attempts = 0
            self._transport_id = _next_transport_id()
            self._props = {k: v for k, v in self._props.items() if k.startswith("persist.")}
            self._log.clear()
        self.log("I", "init", "init first stage started!")
        self._set_state("offline")
        if not self._pause(timings.offline_s, generation):
            return
        with self._lock:
            self._phase = "booting"
        self._set_state("device")
        self._start_system_apps()
        if not self._pause(timings.booting_s, generation):
            return
        if self.getprop(BOOT_HANG_PROP) == "1":  # a rehearsed fault: a boot that never completes
            self.log("E", "init", f"{BOOT_HANG_PROP}=1: the boot never completes")
            return
        with self._lock:
            if self._generation != generation:
                return
            self._boot_completed = True
            self._phase = "running"
            self._changed.notify_all()
        self.log("I", "ActivityManager", "Boot completed")
        self._emit("boot_completed")

    def _kill_adbd(self) -> None:
        with self._lock:
            streams = list(self._streams)
            self._streams.clear()
        for sock in streams:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def wait_boot_completed(self, timeout_s: float) -> bool:
        """For lab code and tests: block until booted and ``device``."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not (self._boot_completed and self._state == "device" and self._phase == "running"):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    # --- events --------------------------------------------------------------------------------------------

    def _emit(self, event: str) -> None:
        log.debug("virtual phone %s: %s", self.spec.label, event)
        self._events.put(event)

    def _dispatch_events(self) -> None:
        while True:
            event = self._events.get()
            if event is None:
                return
            if self._on_event is None:
                continue
            try:
                self._on_event(event)
            except Exception:  # the firmware's failure must not kill the phone; it is logged for the lab
                log.exception("on_event(%s) failed for virtual phone %s", event, self.spec.label)

    def close(self) -> None:
        """Stop the boot and event threads and close adb streams. Never raises."""
        self._closing.set()
        self._kill_adbd()
        self._events.put(None)
        with self._lock:
            threads = [*self._boot_threads, self._event_thread]
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(THREAD_JOIN_TIMEOUT_S)
        with self._lock:
            self._ports.clear()

    def info(self) -> dict[str, Any]:
        """Serializable summary for reports and ``phonehome lab status`` (no identifiers, no secret)."""
        return {"serial": self.serial, "label": self.spec.label, "model": self.spec.model,
                "state": self.state, "boot_completed": self.boot_completed, "screen_on": self.screen_on,
                "locked": self.locked, "foreground": self.foreground, "transport": self.spec.transport}


def iter_props(props: dict[str, str]) -> Iterator[str]:
    """``getprop`` without arguments prints ``[name]: [value]`` lines."""
    for name, value in props.items():
        yield f"[{name}]: [{value}]"

