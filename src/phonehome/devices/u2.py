"""The uiautomator2 backend: drives a real (or virtual) Android phone over adb.

The one module that imports ``uiautomator2`` and ``adbutils``, lazily, when a phone is built. Everything it
changes on the phone is verified from the phone's own state (``dumpsys power``, ``dumpsys window``,
``/proc/sys/kernel/random/boot_id``), because uiautomator2 reports success for actions that did nothing (its
``unlock()`` with the screen on, for one). The adb server address is configurable so that the virtual lab's
server on its own port is used exactly like a USB phone's.
"""

from __future__ import annotations

import gc
import logging
import re
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phonehome.devices.adbprobe import NO_ANSWER, AdbServerStatus, query_adb_server, transport_problem
from phonehome.devices.android import (
    WHERE_READERS,
    ScreenState,
    UnknownFormat,
    checked_subscriber_value,
    iphonesubinfo_command,
    parse_android_id,
    parse_boot_id,
    parse_keyguard_secure,
    parse_keyguard_showing,
    parse_mac,
    parse_parcel_exception,
    parse_parcel_string,
    parse_screen_state,
    parse_serial,
    parse_subinfo_dump,
)
from phonehome.errors import AdbServerGone, CredentialError, DeviceError, InputError, PhoneUnreachable
from phonehome.identifiers import Identifiers, mask, parse_identifiers

if TYPE_CHECKING:
    from phonehome.inventory import DeviceEntry

log = logging.getLogger(__name__)

DEFAULT_ADB_HOST = "127.0.0.1"
DEFAULT_ADB_PORT = 5037
#: a shell command on the phone (getprop, dumpsys, input) must answer within this
SHELL_TIMEOUT_S = 30.0
#: the adb transport must show the phone as ``device`` within this when the session connects
CONNECT_TIMEOUT_S = 60.0
#: screen on/off must show in ``dumpsys power`` within this
SCREEN_TIMEOUT_S = 10.0
#: the keyguard must be gone from ``dumpsys window`` within this after the credential was entered
UNLOCK_TIMEOUT_S = 10.0
#: pause between two looks at the phone's state while waiting for a change
POLL_INTERVAL_S = 0.25
#: pause between two looks at the adb transport while the phone reboots
BOOT_POLL_INTERVAL_S = 0.5
#: how often the boot wait logs where it is
BOOT_PROGRESS_EVERY_S = 5.0
#: a ``reboot:`` request must be accepted within this (the connection then dies with the old boot)
REBOOT_REQUEST_TIMEOUT_S = 10.0
#: an ``adb connect host:port`` attempt while a TCP phone is offline
TCP_RECONNECT_TIMEOUT_S = 2.0
#: at most this many logcat lines go into failure evidence
LOGCAT_MAX_LINES = 2000
#: connecting to the adb server (adbutils' own value)
ADB_CONNECT_TIMEOUT_S = 3.0
#: the one recovery attempt of a phone whose set-up failed waits this long for it on the adb server
RECOVERY_TIMEOUT_S = 20.0
#: transport states that do not change by themselves during a run: waiting for them is a wasted timeout
FAIL_FAST_STATES = frozenset({"unauthorized", "recovery", "bootloader", "sideload"})
#: default boot timeout when the inventory entry does not set one
DEFAULT_BOOT_TIMEOUT_S = 180.0

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
#: the identifiers read through IPhoneSubInfo, one transaction code each
SUBSCRIBER_NAMES = ("imei", "imsi", "iccid", "phone")
KEYCODE_WAKEUP = "224"
KEYCODE_SLEEP = "223"
KEYCODE_ENTER = "66"
KEYCODE_MENU = "82"

_TCP_SERIAL = re.compile(r"^[\w.\-\[\]:]+:\d+$")
_WM_SIZE = re.compile(r"(?:Override|Physical) size:\s*(\d+)x(\d+)")

PowerCycle = Callable[["U2Phone"], bool | None]
StepFactory = Callable[[str], AbstractContextManager[Any]]


class _AdbFailure(Exception):
    """An adb request failed; carries only the text that may be shown."""


@contextmanager
def _quiet_adb_sockets() -> Iterator[None]:
    """adbutils leaves a socket to the adb server unclosed when a device request fails (the phone just went
    away during a reboot); it is garbage either way, so its ResourceWarning is noise, not a finding."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            yield
        except _AdbFailure as failure:
            # the adbutils error stays chained as __context__ (``from None`` only hides it), and its traceback
            # holds the failed request's socket: drop it, then free the socket while quiet
            failure.__context__ = None
            gc.collect()
            raise


def is_tcp_serial(serial: str) -> bool:
    """``host:port`` serials are adb-over-TCP phones: they go offline on reboot instead of vanishing."""
    return bool(_TCP_SERIAL.match(serial)) and not serial.startswith("emulator-")


def _after_label(problem: str, label: str) -> str:
    """``transport_problem`` names the phone; the DeviceError around it names it already."""
    return problem.removeprefix(f"phone {label} ")


def _client_that_never_starts_a_server(adbutils: Any, host: str, port: int) -> Any:
    """An ``adbutils.AdbClient`` whose connections fail when no server answers, instead of running ``adb
    start-server`` (adbutils does, with its own bundled adb, on every refused connection): a server that died
    mid-run must be a fault the harness names, not one silently replaced by a new, empty server."""
    from adbutils._adb import AdbConnection
    from adbutils.errors import AdbConnectionError

    class _Connection(AdbConnection):  # type: ignore[misc]
        def _safe_connect(self) -> Any:
            """One attempt; a refused socket is closed here (adbutils leaves it to the garbage collector)."""
            address = (self._AdbConnection__host, self._AdbConnection__port)
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            try:
                sock.settimeout(ADB_CONNECT_TIMEOUT_S)
                sock.connect(address)
                sock.settimeout(None)
            except TimeoutError:
                sock.close()
                raise adbutils.AdbTimeout("connect to adb server timeout") from None
            except OSError as exc:
                sock.close()
                raise AdbConnectionError(f"connect to adb server failed: {exc}") from None
            return sock

    class _Client(adbutils.AdbClient):  # type: ignore[misc]
        def make_connection(self, timeout: float | None = None) -> Any:
            connection = _Connection(self.host, self.port)
            connection.conn.settimeout(timeout or SHELL_TIMEOUT_S)
            return connection

    return _Client(host=host, port=port, socket_timeout=SHELL_TIMEOUT_S)


class U2Phone:
    """A phone driven by uiautomator2 over an adb server (USB, TCP, or the virtual lab's server)."""

    def __init__(self, entry: DeviceEntry, *, adb_host: str = DEFAULT_ADB_HOST, adb_port: int = DEFAULT_ADB_PORT,
                 power_cycle: PowerCycle | None = None, step: StepFactory | None = None,
                 diagnose: Callable[[], str | None] | None = None) -> None:
        import adbutils  # the one place (with the functions below) that imports it

        self._entry = entry
        self._adbutils = adbutils
        self._client = _client_that_never_starts_a_server(adbutils, adb_host, adb_port)
        self._power_cycle = power_cycle
        self._diagnose = diagnose
        self._step = step or (lambda name: nullcontext())
        self._u2: Any = None
        self._release_read: tuple[int, str] | None = None
        self._adb_address = f"{adb_host}:{adb_port}"
        self._adb_host, self._adb_port = adb_host, adb_port
        self._last_status = AdbServerStatus(self._adb_address, None)
        #: credentials typed into the phone this run: a failed one is never typed again (a real phone locks out)
        self.credential_attempts = 0
        self._credential_refused: str | None = None
        #: identifiers ``read_identifiers`` was asked for but could not read, with why
        self.unreadable: dict[str, str] = {}
        #: what the phone said when it refused an identifier (a SecurityException's message), by name
        self._refusals: dict[str, str] = {}
        #: reboots the harness itself drove (``handle_reboot``): any other new boot id is a fault of the phone
        self._reboots = 0
        #: a boot of this phone outlasted its boot timeout: recovery does not wait for another
        self._boot_timed_out = False

    def __repr__(self) -> str:
        return f"U2Phone(label={self.label!r}, serial={mask(self.serial)!r}, adb_server={self._adb_address!r})"

    # --- identity ----------------------------------------------------------------------------------------

    @property
    def serial(self) -> str:
        return self._entry.serial

    @property
    def label(self) -> str:
        return self._entry.label

    @property
    def _device(self) -> Any:
        return self._client.device(self.serial)

    def connect(self) -> None:
        """Wait for the phone on the adb server and start uiautomator2 on it."""
        with self._step("connect"):
            self._wait_for_transport(CONNECT_TIMEOUT_S)
            self._connect_u2()

    def info(self) -> dict[str, Any]:
        props = {"model": "ro.product.model", "manufacturer": "ro.product.manufacturer",
                 "android": "ro.build.version.release", "sdk": "ro.build.version.sdk",
                 "fingerprint": "ro.build.fingerprint"}
        info: dict[str, Any] = {"label": self.label, "serial": self.serial, "backend": "uiautomator2",
                                "adb_server": self._adb_address}
        for key, prop in props.items():
            try:
                info[key] = self._getprop(prop)
            except DeviceError as exc:
                info[key] = f"unavailable ({exc.problem})"
        return info

    # --- adb plumbing ------------------------------------------------------------------------------------

    def _shell(self, args: Sequence[str], *, timeout_s: float = SHELL_TIMEOUT_S, secret: bool = False) -> str:
        """Run a shell command; a failure is a DeviceError. ``secret`` keeps the command out of the message."""
        what = "a credential command" if secret else " ".join(args)
        failure: str | None = None
        try:
            with _quiet_adb_sockets():
                try:
                    result = self._device.shell2(list(args), timeout=timeout_s)
                except (self._adbutils.AdbError, self._adbutils.AdbTimeout, OSError) as exc:
                    raise _AdbFailure(type(exc).__name__ if secret else str(exc)) from None
        except _AdbFailure as failed:
            failure = str(failed)
        if failure is not None:  # raised outside the except block: no chained error can carry the command
            self._transport_state()  # no adb server at all is its own, clearer fault
            failure = failure.replace(self.serial, mask(self.serial))
            raise self._fault(f"adb shell {what} failed: {failure}")
        if result.returncode != 0:
            output = "" if secret else f": {result.output.strip()[-300:]}"
            raise DeviceError(self.label, f"adb shell {what} exited {result.returncode}{output}")
        return str(result.output)

    def _with_diagnosis(self, problem: str) -> str:
        """The problem, and what the bench knows of its cause (a virtual lab that stopped names why)."""
        cause = self._diagnose() if self._diagnose is not None else None
        return f"{problem}; {cause}" if cause else problem

    def _fault(self, problem: str) -> DeviceError:
        return DeviceError(self.label, self._with_diagnosis(problem))

    def _try_shell(self, args: Sequence[str]) -> str | None:
        """A shell command whose failure only means "not available" (identifier sources, boot polling)."""
        try:
            return self._shell(args).strip()
        except DeviceError:
            return None

    def clock_offset_s(self) -> float | None:
        """The phone's clock minus this host's, in seconds (the evidence manifest records it per capture); None
        when the phone's clock cannot be read. Within the round trip with ``date +%s.%N``, else to the second."""
        for args, pattern in ((["date", "+%s.%N"], r"\d+\.\d+"), (["date", "+%s"], r"\d+")):
            before = time.time()
            text = self._try_shell(args)
            after = time.time()
            if text is not None and re.fullmatch(pattern, text):
                return round(float(text) - (before + after) / 2, 3)
        return None

    def _getprop(self, name: str) -> str:
        return self._shell(["getprop", name]).strip()

    def _transport_state(self) -> str:
        """``device``, ``offline``, ``unauthorized``..., or ``absent`` when the server does not list it.

        Asked with the adb host protocol directly (:mod:`phonehome.devices.adbprobe`): adbutils would start an adb
        server of its own where none answers, and its failure paths leave sockets open. No server at all is not
        a state to wait out: it raises at once, naming the address and the refusal.
        """
        status = query_adb_server(self._adb_host, self._adb_port)
        self._last_status = status
        if not status.reachable:
            problem = transport_problem(status, self.serial, self.label)
            assert problem is not None
            cause = self._diagnose() if self._diagnose is not None else None
            if cause:  # the bench knows why: its cause replaces the generic "start an adb server" advice
                what = "the adb server at" if status.error and status.error.startswith(NO_ANSWER) else "no adb server at"
                problem = f"{what} {status.address} ({status.error}): {cause}"
            raise AdbServerGone(self.label, problem)
        return status.state_of(self.serial)

    def _reconnect_tcp(self) -> None:
        """A TCP phone stays listed as offline after a reboot until the server connects again."""
        try:
            self._client.connect(self.serial, timeout=TCP_RECONNECT_TIMEOUT_S)
        except (self._adbutils.AdbError, self._adbutils.AdbTimeout, OSError) as exc:
            log.debug("device %s: adb connect: %s", self.label, exc)

    def _wait_for_transport(self, timeout_s: float) -> None:
        """Wait for ``device``; an unauthorised phone or a missing server ends the wait at once (neither goes
        away by itself during a run), absent and offline phones are given ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        state = self._transport_state()
        while state != "device":
            if state in FAIL_FAST_STATES or time.monotonic() >= deadline:
                problem = transport_problem(self._last_status, self.serial, self.label) or state
                waited = "" if state in FAIL_FAST_STATES else f" (waited {timeout_s:g} s)"
                raise PhoneUnreachable(self.label, self._with_diagnosis(
                    f"not online{waited}: {_after_label(problem, self.label)}"))
            if is_tcp_serial(self.serial) and state in ("absent", "offline"):
                self._reconnect_tcp()
            time.sleep(BOOT_POLL_INTERVAL_S)
            state = self._transport_state()

    def recover(self) -> None:
        """One recovery attempt after a failed set-up (after TradeFed's device recovery): ``adb connect`` for a
        TCP phone, then wait for it on the server and restart uiautomator2. Raises what stands in the way."""
        self._drop_u2()
        if is_tcp_serial(self.serial):
            self._reconnect_tcp()
        self._wait_for_transport(RECOVERY_TIMEOUT_S)
        # a phone that rebooted by itself is still booting: give it its boot time, unless a boot of this
        # phone already timed out (waiting again would only cost the same time once more)
        deadline = time.monotonic() + (0.0 if self._boot_timed_out else self._boot_timeout_s())
        while self._try_shell(["getprop", "sys.boot_completed"]) != "1":
            if time.monotonic() >= deadline:
                raise DeviceError(self.label, "online on adb, but its boot has not completed (sys.boot_completed "
                                  "is not 1)")
            time.sleep(BOOT_POLL_INTERVAL_S)
        self._connect_u2()

    def _connect_u2(self) -> None:
        import uiautomator2  # the one place that imports it

        try:
            self._u2 = uiautomator2.connect(self._device)
        except Exception as exc:  # uiautomator2 raises many unrelated types when its server does not start
            raise self._fault(f"uiautomator2 did not start: {type(exc).__name__}: {exc}") from None

    def _drop_u2(self) -> None:
        if self._u2 is None:
            return
        try:
            self._u2.stop_uiautomator(wait=False)
        except Exception as exc:  # the phone may already be gone; nothing to clean up then
            log.debug("device %s: stopping uiautomator2: %s", self.label, exc)
        self._u2 = None

    def _ui(self) -> Any:
        if self._u2 is None:
            self._connect_u2()
        return self._u2

    # --- power -------------------------------------------------------------------------------------------

    def power_on(self) -> None:
        with self.handle_reboot(), self._step("power-on"):
            cycled = self._power_cycle(self) if self._power_cycle else None
            if not cycled:
                self._reboot()

    @contextmanager
    def handle_reboot(self) -> Iterator[None]:
        old_boot = self.boot_id()
        self._reboots += 1
        self._drop_u2()
        yield
        with self._step("wait for boot"):
            self._wait_for_new_boot(old_boot)
        with self._step("reconnect"):
            self._connect_u2()

    def boot_id(self) -> str:
        """This boot's id: it changes with every boot, which is how a reboot is told from a hiccup."""
        try:
            return parse_boot_id(self._shell(["cat", BOOT_ID_PATH]), *self._release())
        except UnknownFormat as exc:
            raise DeviceError(self.label, f"{exc}: cannot tell one boot from the next") from None

    def _boot_timeout_s(self) -> float:
        return float(getattr(self._entry, "boot_timeout_s", None) or DEFAULT_BOOT_TIMEOUT_S)

    def boot_mark(self) -> tuple[str, int]:
        """This boot's id and how many reboots the harness drove so far: ``check_same_boot`` compares."""
        return self.boot_id(), self._reboots

    def check_same_boot(self, mark: tuple[str, int]) -> None:
        """Raise a DeviceError when the phone rebooted (or lost power, or went away) since ``mark`` without the
        harness asking: the capture then holds another boot's traffic, not what the test meant to record."""
        boot_id, reboots = mark
        if reboots != self._reboots:
            return  # the test rebooted it (power_on, handle_reboot): a new boot id is expected
        try:
            now = self.boot_id()
        except AdbServerGone:
            raise
        except DeviceError as exc:
            raise DeviceError(self.label, f"lost during the test ({exc.problem}): the capture may have missed what "
                              "it sent, so this test's verdict cannot be trusted") from None
        if now != boot_id:
            raise self._fault("rebooted during the test without the harness asking (its boot id changed): the "
                              "capture holds another boot's traffic, so this test's verdict cannot be trusted")

    def _reboot(self) -> None:
        """Ask adbd to reboot (the ``reboot:`` service, as ``adb reboot``), else ``shell reboot``.

        The connection dies with the old boot, so errors after the request are expected; whether it
        rebooted is decided by the boot id, never by this call.
        """
        adbutils = self._adbutils
        try:
            conn = self._device.open_transport(timeout=REBOOT_REQUEST_TIMEOUT_S)
            try:
                conn.send_command("reboot:")
                conn.check_okay()
                conn.read_until_close()
            finally:
                conn.close()
            return
        except (adbutils.AdbError, adbutils.AdbTimeout, OSError) as exc:
            log.info("device %s: reboot service: %s; trying 'shell reboot'", self.label, exc)
        try:
            self._device.shell(["reboot"], timeout=REBOOT_REQUEST_TIMEOUT_S)
        except (adbutils.AdbError, adbutils.AdbTimeout, OSError) as exc:
            log.info("device %s: shell reboot: %s (expected while the phone goes down)", self.label, exc)

    def _wait_for_new_boot(self, old_boot: str) -> None:
        """Wait for a different boot id, then ``sys.boot_completed=1``, logging progress.

        The old boot still answers ``sys.boot_completed=1`` right after the reboot request, so only a new boot
        id proves the phone went down and came back.
        """
        timeout_s = self._boot_timeout_s()
        start = time.monotonic()
        deadline = start + timeout_s
        next_progress = start + BOOT_PROGRESS_EVERY_S
        stage = "old boot still running"
        last_state = ""
        while True:
            state = self._transport_state()
            if state != last_state:
                log.info("device %s: adb state %s after %.1f s", self.label, state, time.monotonic() - start)
                last_state = state
            if state in ("absent", "offline") and is_tcp_serial(self.serial):
                self._reconnect_tcp()
            if state == "device":
                boot_id = self._try_shell(["cat", BOOT_ID_PATH])
                if boot_id and boot_id != old_boot:
                    stage = "new boot, waiting for sys.boot_completed=1"
                    if self._try_shell(["getprop", "sys.boot_completed"]) == "1":
                        log.info("device %s: booted in %.1f s", self.label, time.monotonic() - start)
                        return
            now = time.monotonic()
            if now >= deadline:
                self._boot_timed_out = True
                raise self._fault(f"did not boot within {timeout_s:g} s ({stage}; adb state: {state})")
            if now >= next_progress:
                log.info("device %s: waiting for boot: %s, adb state %s, %.0f/%.0f s", self.label, stage, state,
                         now - start, timeout_s)
                next_progress = now + BOOT_PROGRESS_EVERY_S
            time.sleep(BOOT_POLL_INTERVAL_S)

    # --- screen and keyguard -----------------------------------------------------------------------------

    def screen_state(self) -> ScreenState:
        output = self._shell(["dumpsys", "power"])
        try:
            return parse_screen_state(output, *self._release())
        except UnknownFormat as exc:
            raise DeviceError(self.label, str(exc)) from None

    def keyguard_showing(self) -> bool:
        try:
            return parse_keyguard_showing(self.dumpsys_window(), *self._release())
        except UnknownFormat as exc:
            raise DeviceError(self.label, str(exc)) from None

    def screen_on(self) -> bool:
        with self._step("screen-on"):
            changed = not self.screen_state().awake
            if changed:
                self._ui().screen_on()
            self._wait_screen(awake=True)
        return changed

    def screen_off(self) -> bool:
        with self._step("screen-off"):
            changed = self.screen_state().awake
            if changed:
                self._ui().screen_off()
            self._wait_screen(awake=False)
        return changed

    def _wait_screen(self, *, awake: bool) -> None:
        deadline = time.monotonic() + SCREEN_TIMEOUT_S
        state = self.screen_state()
        while state.awake != awake:
            if time.monotonic() >= deadline:
                want = "on" if awake else "off"
                raise self._fault(f"screen did not turn {want} within {SCREEN_TIMEOUT_S:g} s "
                                  f"(dumpsys power: {state.raw})")
            time.sleep(POLL_INTERVAL_S)
            state = self.screen_state()

    def unlock(self) -> bool:
        """Unlock the phone with the inventory's method, checking the lock screen before any credential is typed.

        A credential goes only into a phone showing a secure lock screen, and only once per run: a refused one
        raises :class:`CredentialError` and is never typed again (a real phone locks out after five, and some
        wipe). A lock that is not what the inventory says is an error naming both, before anything is typed.
        """
        method = self._entry.unlock.method
        with self._step("unlock"):
            if self._credential_refused is not None:
                raise CredentialError(self.label, self._credential_refused)
            woke = not self.screen_state().awake
            if woke:
                self._ui().screen_on()
                self._wait_screen(awake=True)
            window = self.dumpsys_window()
            showing = self._parsed(parse_keyguard_showing, window)
            secure = parse_keyguard_secure(window, *self._release())
            self._check_lock_kind(method, secure)
            if not showing:
                return woke
            if method == "none":
                raise CredentialError(self.label, "keyguard is showing but the inventory says unlock: none "
                                      "(set unlock.method to swipe, pin or password)")
            self._swipe_up()
            if method not in ("pin", "password"):
                self._wait_keyguard_gone(method)
                return True
            attempts = self.credential_attempts
            try:
                self._enter_secret()
                self._wait_keyguard_gone(method)
            except CredentialError:
                raise
            except DeviceError as exc:
                if self.credential_attempts == attempts:
                    raise  # nothing was typed: a plain fault, which a recovery may cure
                # typed, but whether the phone took it is unknown: it is never typed again in this run
                self._credential_refused = (f"the outcome of the {method} entry is unknown ({exc.problem}); it is "
                                            "not typed again in this run, so that the phone does not lock out")
                raise CredentialError(self.label, self._credential_refused) from None
        return True

    def _parsed(self, parse: Callable[[str, int, str], bool], text: str) -> bool:
        try:
            return parse(text, *self._release())
        except ValueError as exc:
            raise DeviceError(self.label, str(exc)) from None

    def check_lock_kind(self) -> None:
        """The inventory's unlock method against the phone's lock, without touching the phone (``phonehome
        check``): CredentialError naming both when they differ."""
        self._check_lock_kind(self._entry.unlock.method, parse_keyguard_secure(self.dumpsys_window()))

    def _check_lock_kind(self, method: str, secure: bool | None) -> None:
        """The inventory's unlock method against the phone's own lock (``secure=`` in ``dumpsys window``)."""
        wants_secret = method in ("pin", "password")
        if secure is None:
            if wants_secret:  # cannot tell: typing a PIN into an unknown screen could land anywhere
                raise CredentialError(self.label, f"the inventory says unlock: {method}, but dumpsys window shows "
                                      "no keyguard 'secure=' field, so whether the phone has a secure lock cannot "
                                      "be checked; no credential was typed")
            return
        if wants_secret and not secure:
            raise CredentialError(self.label, f"the inventory says unlock: {method}, but the phone has no secure "
                                  "lock screen (swipe or none); no credential was typed (set unlock.method to "
                                  "swipe or none, or set the phone's lock)")
        if not wants_secret and secure:
            raise CredentialError(self.label, f"the inventory says unlock: {method}, but the phone has a secure "
                                  "lock screen (PIN, password or pattern); set unlock.method and secret_env")

    def _swipe_up(self) -> None:
        """Swipe from the bottom to reveal the bouncer (or dismiss an insecure keyguard)."""
        width, height = self._screen_size()
        x = str(width // 2)
        self._shell(["input", "swipe", x, str(height * 9 // 10), x, str(height // 5), "300"])

    def _screen_size(self) -> tuple[int, int]:
        sizes = _WM_SIZE.findall(self._shell(["wm", "size"]))
        if not sizes:
            raise DeviceError(self.label, "'wm size' printed no screen size")
        width, height = sizes[-1]  # an override, when present, comes last and is what input uses
        return int(width), int(height)

    def _enter_secret(self) -> None:
        """Type the PIN/password and press ENTER, without ever putting the secret in a message or log."""
        secret = self._entry.unlock.secret()
        if not secret:
            raise CredentialError(self.label, f"unlock secret from ${self._entry.unlock.secret_env} is empty")
        self.credential_attempts += 1
        self._shell(["input", "text", secret], secret=True)
        self._shell(["input", "keyevent", KEYCODE_ENTER])

    def _wait_keyguard_gone(self, method: str) -> None:
        deadline = time.monotonic() + UNLOCK_TIMEOUT_S
        while self.keyguard_showing():
            if time.monotonic() >= deadline:
                if method in ("pin", "password"):
                    self._credential_refused = (
                        f"the {method} from ${self._entry.unlock.secret_env} was refused (keyguard still showing "
                        f"{UNLOCK_TIMEOUT_S:g} s after it was entered); it is not typed again in this run, so "
                        "that the phone does not lock out: check the variable, then unlock the phone by hand")
                    raise CredentialError(self.label, self._credential_refused)
                raise DeviceError(self.label, f"keyguard still showing {UNLOCK_TIMEOUT_S:g} s after the "
                                  f"{method} unlock")
            time.sleep(POLL_INTERVAL_S)

    # --- identifiers -------------------------------------------------------------------------------------

    def read_identifiers(self) -> tuple[Identifiers, dict[str, str]]:
        wanted = tuple(getattr(self._entry, "read_identifiers", ()) or ())
        readers: dict[str, Callable[[], tuple[str, str] | None]] = {
            "serial": self._read_serial, "android_id": self._read_android_id, "imei": self._read_imei,
            "wifi_mac": self._read_wifi_mac, "bt_mac": self._read_bt_mac,
            "imsi": lambda: self._read_iphonesubinfo("imsi"), "iccid": lambda: self._read_iphonesubinfo("iccid"),
            "phone": lambda: self._read_iphonesubinfo("phone"),
        }
        raw: dict[str, object] = {}
        sources: dict[str, str] = {}
        for name in wanted:
            if name in WHERE_READERS:  # structured: location, serving cell, Wi-Fi network
                read, command, missing = WHERE_READERS[name]
                output = self._try_shell(["dumpsys", command])
                if output is None:  # failed (a hung or crashed service): not the same as a dump that shows none
                    self.unreadable[name] = f"dumpsys {command} failed"
                    continue
                try:
                    block = read(output, *self._release()) if output else None
                except UnknownFormat as exc:
                    raise DeviceError(self.label, f"cannot read {name}: {exc}") from None
                if block and self._valid(name, block):
                    raw[name], sources[name] = block, f"dumpsys {command}"
                else:
                    self.unreadable[name] = f"dumpsys {command} {'gave a malformed value' if block else missing}"
                continue
            reader = readers.get(name)
            try:
                found = reader() if reader else None
            except UnknownFormat as exc:  # a format nobody reads is said, never taken for "not readable"
                raise DeviceError(self.label, f"cannot read {name}: {exc}") from None
            if found is None:
                why = "no reader for it" if reader is None else self._refusals.pop(
                    name, "the phone did not reveal it (or no valid value)")
                self.unreadable[name] = why
                log.info("device %s: %s not readable from the phone: %s", self.label, name, why)
                continue
            value, source = found
            if self._valid(name, value):
                raw[name] = value
                sources[name] = source
            else:
                self.unreadable[name] = f"{source} gave a malformed value"
        self._drop_shared_values(raw, sources)
        ids = parse_identifiers(raw, source=f"device {self.label}", where="read_identifiers")
        return ids, sources

    def _drop_shared_values(self, raw: dict[str, object], sources: dict[str, str]) -> None:
        """One value read for two identifiers (an IMEI as the IMSI) means a transaction code answered for another
        getter, as on a build that added methods to IPhoneSubInfo: neither is read, and why is said."""
        by_value: dict[str, list[str]] = {}
        for name in SUBSCRIBER_NAMES:
            if isinstance(raw.get(name), str):
                by_value.setdefault(str(raw[name]), []).append(name)
        for names in by_value.values():
            if len(names) < 2:
                continue
            for name in names:
                others = " and ".join(other for other in names if other != name)
                self.unreadable[name] = (f"{sources.pop(name)} gave the value read as {others} too (this build's "
                                         "IPhoneSubInfo transaction codes differ from Android's?): not read")
                del raw[name]

    def _valid(self, name: str, value: object) -> bool:
        """Values a phone returns can be placeholders; only well-formed ones are kept."""
        try:
            parse_identifiers({name: value}, source=f"device {self.label}", where="read_identifiers")
        except InputError:
            log.info("device %s: ignoring malformed %s read from the phone", self.label, name)
            return False
        return True

    def _release(self) -> tuple[int, str]:
        """(SDK level, maker) for the parsers: formats differ by release and by maker's build."""
        if self._release_read is None:
            sdk = self._try_shell(["getprop", "ro.build.version.sdk"]) or ""
            maker = (self._try_shell(["getprop", "ro.product.manufacturer"]) or "").lower()
            if not sdk.isdigit():
                return 0, maker  # not cached: the phone may be between boots
            self._release_read = (int(sdk), maker)
        return self._release_read

    def _read_serial(self) -> tuple[str, str] | None:
        for prop in ("ro.serialno", "ro.boot.serialno"):
            value = self._try_shell(["getprop", prop])
            serial = parse_serial(value, *self._release()) if value else None
            if serial:
                return serial, f"getprop {prop}"
        return None

    def _read_android_id(self) -> tuple[str, str] | None:
        value = self._try_shell(["settings", "get", "secure", "android_id"])
        android_id = parse_android_id(value, *self._release()) if value is not None else None
        return (android_id, "settings get secure android_id") if android_id else None

    def _read_imei(self) -> tuple[str, str] | None:
        return self._read_iphonesubinfo("imei")

    def _read_iphonesubinfo(self, name: str) -> tuple[str, str] | None:
        """``service call iphonesubinfo CODE`` with this release's code, else ``dumpsys iphonesubinfo``; a value
        of the wrong shape (a wrong code's answer, a placeholder) is not read."""
        sdk, maker = self._release()
        command = iphonesubinfo_command(name, sdk, maker)
        output = self._try_shell(command)
        value = parse_parcel_string(output, sdk, maker) if output else None
        checked = checked_subscriber_value(name, value) if value else None
        if checked:
            return checked, " ".join(command[:4])  # the transaction: the caller argument is always the same
        refusal = parse_parcel_exception(output, sdk, maker) if output else None
        found = self._read_subinfo(name)
        if found is None and refusal:  # why it is unreadable, as the phone said it (masked: no identifier in it)
            self._refusals[name] = f"{' '.join(command)} raised {refusal}"
        return found

    def _read_subinfo(self, name: str) -> tuple[str, str] | None:
        output = self._try_shell(["dumpsys", "iphonesubinfo"])
        value = parse_subinfo_dump(output, *self._release()).get(name) if output else None
        return (value, "dumpsys iphonesubinfo") if value else None

    def _read_wifi_mac(self) -> tuple[str, str] | None:
        """wlan0's MAC: from Android 10 the per-network random one, which is what the phone uses on the lab's
        network; placeholders are not read."""
        value = self._try_shell(["cat", "/sys/class/net/wlan0/address"])
        mac = parse_mac(value, *self._release()) if value else None
        return (mac, "/sys/class/net/wlan0/address") if mac else None

    def _read_bt_mac(self) -> tuple[str, str] | None:
        value = self._try_shell(["settings", "get", "secure", "bluetooth_address"])
        mac = parse_mac(value, *self._release(), command="settings get secure bluetooth_address") if value else None
        return (mac, "settings get secure bluetooth_address") if mac else None

    # --- evidence ----------------------------------------------------------------------------------------

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            data = self._device.shell(["screencap", "-p"], encoding=None, timeout=SHELL_TIMEOUT_S)
        except (self._adbutils.AdbError, self._adbutils.AdbTimeout, OSError) as exc:
            raise DeviceError(self.label, f"screenshot failed: {exc}") from None
        if not isinstance(data, bytes) or not data.startswith(b"\x89PNG"):
            try:
                self._ui().screenshot(str(path))
            except Exception as exc:  # uiautomator2's screenshot path has its own error types
                raise DeviceError(self.label, f"screenshot failed: {type(exc).__name__}: {exc}") from None
            return path
        path.write_bytes(data)
        return path

    def logcat_since(self, since: float) -> str:
        output = self._try_shell(["logcat", "-d", "-v", "threadtime", "-T", f"{since:.3f}"])
        if output is None:
            output = self._try_shell(["logcat", "-d", "-v", "threadtime", "-t", str(LOGCAT_MAX_LINES)])
        if output is None:
            raise DeviceError(self.label, "logcat is not readable")
        lines = output.splitlines()
        return "\n".join(lines[-LOGCAT_MAX_LINES:])

    def dumpsys_window(self) -> str:
        return self._shell(["dumpsys", "window"])

    def close(self) -> None:
        try:
            self._drop_u2()
        except Exception as exc:  # close never raises: teardown must not hide a test's result
            log.warning("device %s: close: %s", self.label, exc)
