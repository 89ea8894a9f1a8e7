"""What Android prints, read: the pure text parsers of the phone backend, release by release and maker by maker.

Every phone is read through text (``dumpsys power``, ``dumpsys window``, ``service call iphonesubinfo``,
``getprop``, ``settings``, ``dumpsys location``, ``dumpsys telephony.registry``, ``dumpsys wifi``,
``/proc/net/tcp``, ``pm list packages``), and those formats change with each release and each maker's build. Each parser takes the command's
output and the phone's SDK level and maker (``ro.build.version.sdk``, ``ro.product.manufacturer``; 0 and "" when not
known) and either returns what it read or raises :class:`UnknownFormat` naming the command and the release: an
output phonehome has no reading for is never taken for a default ("no keyguard field in dumpsys window on SDK 34
(samsung)"). Identifier values are checked before use (Luhn for an IMEI, length and digits for an IMSI or ICCID,
coordinates in range, a MAC that is not a placeholder): a value that fails is "could not read"
(None), never a guess. The real outputs these parsers are proven on are under ``testing/android_outputs/``.

No adb, no uiautomator2 here: :mod:`phonehome.devices.u2` runs the commands, the virtual phone prints the same
formats, and both import these functions.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

#: Android 10 (SDK 29) renumbered IPhoneSubInfo's transactions (``getGroupIdLevel1`` went) and restricted device
#: identifiers to READ_PRIVILEGED_PHONE_STATE; Android 11 (SDK 30) renumbered them again (``*WithFeature`` methods)
IPHONESUBINFO_RENUMBERED_SDK = 29
IPHONESUBINFO_FEATURE_SDK = 30
#: ``service call iphonesubinfo`` transaction codes of getDeviceId, getSubscriberId, getIccSerialNumber and
#: getLine1Number, the variants whose first argument is the calling package: (SDK 28 and before, SDK 29, SDK 30
#: and later), counted in the generated IPhoneSubInfo stubs (FIRST_CALL_TRANSACTION + n) of each release
IPHONESUBINFO_CODES: dict[str, tuple[int, int, int]] = {"imei": (1, 1, 1), "imsi": (7, 7, 8),
                                                        "iccid": (11, 10, 12), "phone": (13, 12, 15)}
#: the calling package ``service call`` passes (``s16``): the shell's own, which its uid owns, as in the usual
#: ``service call iphonesubinfo 1 s16 com.android.shell``; without it the getter is told a null package
IPHONESUBINFO_CALLER = "com.android.shell"
#: MACs Android reports when it hides the real one
PLACEHOLDER_MACS = frozenset({"02:00:00:00:00:00", "00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff"})
#: serial numbers of unprovisioned boards (MediaTek and Qualcomm reference builds), the same on every such phone
PLACEHOLDER_SERIALS = frozenset({"0123456789abcdef", "unknown", "0000000000000000", "0123456789"})
#: a cell identity field Android could not fill (Integer.MAX_VALUE)
CELL_UNAVAILABLE = 2147483647

# ``mWakefulness=Awake`` (AOSP), ``mWakefulnessRaw=Awake`` (builds that print only the raw state),
# ``getWakefulnessLocked()=Awake`` (Samsung builds), ``getWakefulnessLocked()=1`` (some ROMs print the number);
# in this order of preference when a build prints several
_WAKEFULNESS = tuple(re.compile(rf"^\s*({re.escape(field)})=(\w+)", re.MULTILINE)
                     for field in ("mWakefulness", "mWakefulnessRaw", "getWakefulnessLocked()"))
#: PowerManagerInternal.WAKEFULNESS_*: the states and the numbers some ROMs print for them
WAKEFULNESS_STATES = {"0": "Asleep", "1": "Awake", "2": "Dreaming", "3": "Dozing"}
_DISPLAY_POWER = re.compile(r"Display Power: state=(\w+)")
_SCREEN_ON_OLD = re.compile(r"^\s*mScreenOn=(true|false)", re.MULTILINE)
# field=value pairs that say the keyguard (lock screen or bouncer) is showing; names vary by release and maker
_KEYGUARD_FLAGS = re.compile(
    r"\b(mShowingLockscreen|mDreamingLockscreen|isStatusBarKeyguard|mKeyguardShowing|isKeyguardShowing)"
    r"=(true|false)\b")
_KEYGUARD_MONITOR = re.compile(r"KeyguardStateMonitor\s+mIsShowing=(true|false)")
_KEYGUARD_DELEGATE = re.compile(r"KeyguardServiceDelegate\b[^\n]*(?:\n[ \t]+[^\n]*){0,6}?\bshowing=(true|false)")
_KEYGUARD_SECURE = re.compile(r"KeyguardServiceDelegate\b[^\n]*(?:\n[ \t]+[^\n]*){0,12}?\n[ \t]+secure=(true|false)")
_BOOT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_GETPROP_LINE = re.compile(r"^\[([^\]]*)\]: \[(.*)\]$", re.DOTALL)
_PARCEL_WORD = re.compile(r"\b([0-9a-fA-F]{8})\b")
_MAC = re.compile(r"[0-9a-fA-F]{2}(?:[:-][0-9a-fA-F]{2}){5}")
_IP_LINK = re.compile(r"^\d+:\s+([^:@\s]+)(?:@\S+)?:.*\n\s+link/ether\s+(\S+)", re.MULTILINE)
# a fix as Location.toString prints it: the provider, then "lat,lon" up to the next blank
_LOCATION = re.compile(r"Location\[[\w.-]*\s+(?P<coords>[^\s\]]+)")
# "48.858370,2.294481": Locale.ROOT from Android 12, and an English, Chinese, Japanese... phone before
_COORDS_POINT = re.compile(r"(-?\d+(?:\.\d+)?),\s*(-?\d+(?:\.\d+)?)")
# "48,858370,2,294481": before Android 12 Location.toString formats "%.6f,%.6f" in the phone's locale, so a German,
# French, Russian, Brazilian... phone writes decimal commas (and an Arabic one Arabic-Indic digits and U+066B)
_COORDS_COMMA = re.compile(r"(-?\d+),(\d+),(-?\d+),(\d+)")
_CELL_IDENTITY = re.compile(r"mCellIdentity=CellIdentity(Lte|Nr|Wcdma|Gsm|Tdscdma|Cdma):\{([^}]*)\}")
# ``mCi=1`` (LTE, GSM, WCDMA) or ``mNci = 1`` (NR, on every release that has it)
_CELL_FIELD = re.compile(r"\b(m[A-Z]\w*)\s?=\s?(\S*)")
# the connected network in `dumpsys wifi`: an SSID may hold commas, so it runs up to ", BSSID: "
_WIFI_INFO = re.compile(r"mWifiInfo SSID: (?P<ssid>.*?), BSSID: (?P<bssid>[^,\s]*),(?P<rest>[^\n]*)")
_SUPPLICANT_STATE = re.compile(r"Supplicant state: (\w+)")
_TCP_HEADER = re.compile(r"^\s*sl\s+local_address\s+rem_address\s+st\b")
_TCP_LINE = re.compile(r"^\s*\d+:\s+([0-9A-F]+):([0-9A-F]{4})\s+([0-9A-F]+):([0-9A-F]{4})\s+([0-9A-F]{2})\s+"
                       r"\S+\s+\S+\s+\S+\s+(\d+)\s+\d+\s+(\d+)")
# a package name has letters, digits and underscores in dot-separated parts; the framework's is just ``android``
_PACKAGE_LINE = re.compile(r"^package:(?:(.+)=)?([A-Za-z]\w*(?:\.\w+)*)(?:\s+(?:uid|versionCode):\S+)*$")
#: Parcel.writeException's codes (EX_SECURITY ... EX_TRANSACTION_FAILED)
_PARCEL_EXCEPTIONS = {-1: "SecurityException", -2: "BadParcelableException", -3: "IllegalArgumentException",
                      -4: "NullPointerException", -5: "IllegalStateException", -6: "NetworkOnMainThreadException",
                      -7: "UnsupportedOperationException", -8: "ServiceSpecificException", -9: "ParcelableException",
                      -127: "reply with a noted-app-ops header", -128: "reply with a strict-mode header",
                      -129: "TransactionFailedException"}
#: at most this much of a phone's message goes into an error
MESSAGE_CHARS = 200
_SUBINFO_FIELDS = {"imei": ("Device ID", "IMEI"), "imsi": ("Subscriber ID", "IMSI"),
                   "iccid": ("ICC Serial Number", "ICCID"), "phone": ("Line 1 Number", "Phone Number")}


class UnknownFormat(ValueError):
    """An output phonehome has no reading for; names the command and the release, so a new phone's format is a
    clear error to report rather than a default (a keyguard taken as gone, an identifier never looked for)."""

    def __init__(self, command: str, what: str, sdk: int = 0, maker: str = "") -> None:
        self.command = command
        super().__init__(f"no {what} in {command} on {release_name(sdk, maker)}")


def release_name(sdk: int, maker: str = "") -> str:
    """``SDK 34 (samsung)``; ``an unknown SDK`` when the phone did not say."""
    where = f"SDK {sdk}" if sdk > 0 else "an unknown SDK"
    return f"{where} ({maker.lower()})" if maker else where


# --- screen, keyguard, boot --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScreenState:
    """The display as the phone's power manager sees it."""

    awake: bool
    raw: str


def parse_screen_state(dumpsys_power: str, sdk: int = 0, maker: str = "") -> ScreenState:
    """Read ``mWakefulness`` (Android 5+; ``getWakefulnessLocked()`` on Samsung's builds), else ``Display Power:
    state`` or ``mScreenOn`` (older builds).

    Dozing and dreaming count as off: the display is not showing the user's screen. A wakefulness that is none
    of Android's four states is an :class:`UnknownFormat`, not "off".
    """
    match = next((found for pattern in _WAKEFULNESS if (found := pattern.search(dumpsys_power))), None)
    if match:
        field, value = match.groups()
        state = WAKEFULNESS_STATES.get(value, value)
        if state not in WAKEFULNESS_STATES.values():
            raise UnknownFormat("dumpsys power", f"wakefulness Awake, Asleep, Dreaming or Dozing ({field}={value[:20]})",
                                sdk, maker)
        return ScreenState(awake=state == "Awake", raw=f"{field}={value}")
    match = _DISPLAY_POWER.search(dumpsys_power)
    if match:
        return ScreenState(awake=match.group(1).upper() == "ON", raw=f"Display Power: state={match.group(1)}")
    match = _SCREEN_ON_OLD.search(dumpsys_power)
    if match:
        return ScreenState(awake=match.group(1) == "true", raw=f"mScreenOn={match.group(1)}")
    raise UnknownFormat("dumpsys power", "mWakefulness, 'Display Power: state' or mScreenOn", sdk, maker)


def parse_keyguard_showing(dumpsys_window: str, sdk: int = 0, maker: str = "") -> bool:
    """True when ``dumpsys window`` says the keyguard (lock screen or bouncer) is showing.

    Field names vary by release and maker (``mShowingLockscreen`` up to Android 9, ``KeyguardServiceDelegate
    showing`` and ``KeyguardStateMonitor mIsShowing`` from 6, ``isKeyguardShowing`` next to
    ``mDreamingLockscreen`` on 13+ builds), so every known one is read; any ``true`` means showing. None present
    is an :class:`UnknownFormat`: an unknown keyguard state must not pass as unlocked.
    """
    seen: list[bool] = [value == "true" for _, value in _KEYGUARD_FLAGS.findall(dumpsys_window)]
    seen += [value == "true" for value in _KEYGUARD_MONITOR.findall(dumpsys_window)]
    seen += [value == "true" for value in _KEYGUARD_DELEGATE.findall(dumpsys_window)]
    if not seen:
        raise UnknownFormat("dumpsys window", "keyguard field (mShowingLockscreen, isStatusBarKeyguard, "
                            "isKeyguardShowing, KeyguardStateMonitor mIsShowing, KeyguardServiceDelegate showing)",
                            sdk, maker)
    return any(seen)


def parse_keyguard_secure(dumpsys_window: str, sdk: int = 0, maker: str = "") -> bool | None:
    """Whether the phone's lock is secure (PIN, password, pattern), from ``secure=`` in the keyguard service's
    state (``KeyguardServiceDelegate`` in ``dumpsys window`` / ``dumpsys window policy``); None when absent."""
    match = _KEYGUARD_SECURE.search(dumpsys_window)
    return None if match is None else match.group(1) == "true"


def parse_boot_id(text: str, sdk: int = 0, maker: str = "") -> str:
    """``/proc/sys/kernel/random/boot_id``: a UUID that changes with every boot."""
    value = text.strip()
    if not _BOOT_ID.fullmatch(value):
        raise UnknownFormat("cat /proc/sys/kernel/random/boot_id", "boot UUID", sdk, maker)
    return value


def parse_boot_completed(text: str, sdk: int = 0, maker: str = "") -> bool:
    """``getprop sys.boot_completed``: ``1`` once booted, empty (or ``0``) before."""
    value = text.strip()
    if value not in ("", "0", "1"):
        raise UnknownFormat("getprop sys.boot_completed", "0, 1 or empty value", sdk, maker)
    return value == "1"


# --- properties and settings -------------------------------------------------------------------------------------

def parse_getprop(text: str, sdk: int = 0, maker: str = "") -> dict[str, str]:
    """Every property of a ``getprop`` listing (``[name]: [value]``; a value may span lines)."""
    props: dict[str, str] = {}
    pending: list[str] = []
    for line in text.splitlines():
        if pending:
            pending.append(line)
            joined = "\n".join(pending)
            match = _GETPROP_LINE.match(joined)
            if match:
                props[match.group(1)] = match.group(2)
                pending = []
            continue
        if not line.strip():
            continue
        match = _GETPROP_LINE.match(line)
        if match:
            props[match.group(1)] = match.group(2)
        elif line.startswith("["):
            pending = [line]
        else:
            raise UnknownFormat("getprop", f"'[name]: [value]' line (got {line[:40]!r})", sdk, maker)
    if pending:
        raise UnknownFormat("getprop", "end of a multi-line value", sdk, maker)
    if not props:
        raise UnknownFormat("getprop", "property", sdk, maker)
    return props


def release_of(props: dict[str, str]) -> tuple[int, str]:
    """(SDK level, maker) from a phone's properties: what every other parser is told."""
    sdk_text = props.get("ro.build.version.sdk", "")
    sdk = int(sdk_text) if sdk_text.isdigit() else 0
    return sdk, props.get("ro.product.manufacturer", "").strip().lower()


def parse_serial(text: str, sdk: int = 0, maker: str = "") -> str | None:
    """``getprop ro.serialno``: None when unset or a board's placeholder, which would match every such phone."""
    value = text.strip()
    if not value or value.lower() in PLACEHOLDER_SERIALS:
        return None
    if not re.fullmatch(r"[\w.\-:]{4,64}", value):
        raise UnknownFormat("getprop ro.serialno", "serial number", sdk, maker)
    return value


def parse_settings_list(text: str, sdk: int = 0, maker: str = "") -> dict[str, str]:
    """``settings list NAMESPACE``: ``key=value`` lines."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise UnknownFormat("settings list", f"'key=value' line (got {line[:40]!r})", sdk, maker)
        values[key] = value
    return values


def parse_android_id(text: str, sdk: int = 0, maker: str = "") -> str | None:
    """``settings get secure android_id``: a 64-bit hex number (Android drops leading zeros); None if ``null``."""
    value = text.strip()
    if value in ("", "null"):
        return None
    if not re.fullmatch(r"[0-9a-fA-F]{1,16}", value):
        raise UnknownFormat("settings get secure android_id", "hex android_id", sdk, maker)
    if int(value, 16) == 0:
        return None
    return value.lower()


# --- MAC addresses -----------------------------------------------------------------------------------------------

def checked_mac(value: str, *, factory_only: bool = False) -> str | None:
    """A MAC as ``aa:bb:cc:dd:ee:ff``, or None for a placeholder or, with ``factory_only``, a locally
    administered one. Since Android 10 wlan0 carries a per-network random MAC: it is not the factory MAC, but it
    is the one the phone uses on the lab's network (what a capture filter needs), so it is read by default."""
    mac = value.strip().lower().replace("-", ":")
    if not _MAC.fullmatch(mac) or mac in PLACEHOLDER_MACS:
        return None
    if factory_only and int(mac[:2], 16) & 0x02:
        return None
    return mac


def parse_mac(text: str, sdk: int = 0, maker: str = "", *, command: str = "cat /sys/class/net/wlan0/address",
              factory_only: bool = False) -> str | None:
    """A MAC printed alone (``/sys/class/net/wlan0/address``, ``settings get secure bluetooth_address``)."""
    value = text.strip()
    if value in ("", "null"):
        return None
    if not _MAC.fullmatch(value):
        raise UnknownFormat(command, "MAC address", sdk, maker)
    return checked_mac(value, factory_only=factory_only)


def parse_ip_link_mac(text: str, sdk: int = 0, maker: str = "", *, interface: str = "wlan0",
                      factory_only: bool = False) -> str | None:
    """The ``link/ether`` MAC of one interface in ``ip link`` output; None when absent or a placeholder."""
    links = dict(_IP_LINK.findall(text))
    if not links and not re.search(r"^\d+:\s+\S+:", text, re.MULTILINE):
        raise UnknownFormat("ip link", "interface", sdk, maker)
    value = links.get(interface)
    return checked_mac(value, factory_only=factory_only) if value else None


# --- phone subscriber info ---------------------------------------------------------------------------------------

def iphonesubinfo_code(name: str, sdk: int, maker: str = "") -> int:
    """The ``service call iphonesubinfo`` transaction code of ``name`` (imei, imsi, iccid, phone) on this release."""
    pie, ten, later = IPHONESUBINFO_CODES[name]
    if sdk >= IPHONESUBINFO_FEATURE_SDK:
        return later
    return ten if sdk >= IPHONESUBINFO_RENUMBERED_SDK else pie


def iphonesubinfo_command(name: str, sdk: int, maker: str = "") -> list[str]:
    """The whole ``service call iphonesubinfo CODE s16 com.android.shell`` of ``name`` on this release (a method
    that takes no package, before Android 6, ignores the argument)."""
    return ["service", "call", "iphonesubinfo", str(iphonesubinfo_code(name, sdk, maker)), "s16",
            IPHONESUBINFO_CALLER]


def _parcel_words(service_call_output: str, sdk: int, maker: str) -> list[int] | None:
    """The 32-bit words of a ``service call`` reply; None when the service does not exist on this phone."""
    if "does not exist" in service_call_output or "Can't find service" in service_call_output:
        return None
    if "Result: Parcel(" not in service_call_output:
        raise UnknownFormat("service call", "'Result: Parcel(' reply", sdk, maker)
    words: list[int] = []
    for line in service_call_output.splitlines():
        body = line.split("'", 1)[0]
        if ":" in body:
            body = body.split(":", 1)[1]
        words.extend(int(word, 16) for word in _PARCEL_WORD.findall(body))
    return words


def _parcel_string16(words: list[int], at: int) -> str | None:
    """The String16 at word ``at``: its length (-1 for null), then UTF-16LE characters; None if absent or cut."""
    if len(words) <= at or words[at] in (0, 0xFFFFFFFF):
        return None
    length = words[at]
    data = b"".join(word.to_bytes(4, "little") for word in words[at + 1:])
    if len(data) < 2 * length:
        return None
    return data[: 2 * length].decode("utf-16-le", errors="replace")


def parse_parcel_string(service_call_output: str, sdk: int = 0, maker: str = "") -> str | None:
    """Decode the string a ``service call`` returned: status word, length, then UTF-16LE characters.

    None when the call raised (non-zero status: a SecurityException on Android 10+, said by
    :func:`parse_parcel_exception`), returned a null string, or the service does not exist on this phone (a tablet
    without telephony).
    """
    words = _parcel_words(service_call_output, sdk, maker)
    if words is None or len(words) < 2 or words[0] != 0:
        return None
    return _parcel_string16(words, 1)


def parse_parcel_exception(service_call_output: str, sdk: int = 0, maker: str = "") -> str | None:
    """What a ``service call`` that raised says: ``SecurityException: getDeviceId: The user 2000 does not meet
    the requirements to access device identifiers.`` (the exception code, then its message, as Parcel's
    writeException puts them); None when the call did not raise."""
    words = _parcel_words(service_call_output, sdk, maker)
    if not words or words[0] == 0:
        return None
    code = words[0] - (1 << 32) if words[0] & 0x80000000 else words[0]
    name = _PARCEL_EXCEPTIONS.get(code, f"exception {code}")
    message = _parcel_string16(words, 1)
    return f"{name}: {message[:MESSAGE_CHARS]}" if message else name


def luhn_ok(digits: str) -> bool:
    """The Luhn check digit of an IMEI (and of most ICCIDs)."""
    if not digits.isdigit():
        return False
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def checked_subscriber_value(name: str, value: str) -> str | None:
    """An IMEI, IMSI, ICCID or phone number if it has that identifier's shape, else None ("could not read")."""
    value = value.strip()
    if name == "imei":
        return value if len(value) == 15 and luhn_ok(value) else None
    if name == "imsi":
        return value if value.isdigit() and 14 <= len(value) <= 15 else None
    if name == "iccid":  # ITU-T E.118: 89, the telecommunications industry, then the country and issuer
        body = value[:-1] if value[-1:] in ("F", "f") else value
        return body if body.isdigit() and 18 <= len(body) <= 22 and body.startswith("89") else None
    if name == "phone":
        digits = value[1:] if value.startswith("+") else value
        return value if digits.isdigit() and 6 <= len(digits) <= 15 else None
    raise KeyError(name)


def parse_subinfo_dump(dumpsys_iphonesubinfo: str, sdk: int = 0, maker: str = "") -> dict[str, str]:
    """Identifier values from ``dumpsys iphonesubinfo``: Android 4.4 and older print ``Device ID = ...``; newer
    releases print nothing to the shell, a phone without telephony ``Can't find service: iphonesubinfo``. Only
    values of the right shape are returned."""
    text = dumpsys_iphonesubinfo.strip()
    if text.startswith(("Can't find service", "Permission Denial")):
        return {}  # no telephony on this phone (a Wi-Fi tablet), or the shell may not dump it: nothing to read
    if text and "Phone Subscriber Info" not in text and not any(
            label in text for labels in _SUBINFO_FIELDS.values() for label in labels):
        raise UnknownFormat("dumpsys iphonesubinfo", "'Phone Subscriber Info' dump", sdk, maker)
    found: dict[str, str] = {}
    for name, labels in _SUBINFO_FIELDS.items():
        for label in labels:
            match = re.search(rf"^\s*{re.escape(label)}\s*[=:]\s*(\S+)\s*$", text, re.MULTILINE)
            value = checked_subscriber_value(name, match.group(1)) if match else None
            if value:
                found[name] = value
                break
    return found


# --- location and cell -------------------------------------------------------------------------------------------

def checked_location(lat: float, lon: float) -> tuple[float, float] | None:
    """A fix in range and not (0, 0), which is where an unset location points."""
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0) or (lat == 0.0 and lon == 0.0):
        return None
    return lat, lon


def _coordinates(text: str) -> tuple[float, float] | None:
    """``lat,lon`` of one printed fix, with decimal points or (a phone's locale before Android 12) commas; None
    when it has another shape."""
    match = _COORDS_POINT.fullmatch(text)
    if match:
        return float(match.group(1)), float(match.group(2))
    match = _COORDS_COMMA.fullmatch(text)
    if match:  # float() reads any Unicode decimal digit, as Java's formatter writes them in the phone's locale
        lat_int, lat_frac, lon_int, lon_frac = match.groups()
        return float(f"{lat_int}.{lat_frac}"), float(f"{lon_int}.{lon_frac}")
    return None


def parse_last_locations(dumpsys_location: str, sdk: int = 0, maker: str = "") -> tuple[tuple[float, float], ...]:
    """Every distinct last known fix in ``dumpsys location`` (``last location=Location[fused lat,lon ...]`` on
    Android 12+, ``Last Known Locations:`` entries before), in order; empty when every provider says ``null``.

    A fix this build prints masked (``Location[gps 44******,-97******``, as some makers' builds do) or in a shape
    not read here is an :class:`UnknownFormat`: a location phonehome could not read must not pass for no location
    (the error names no coordinate).
    """
    if "Location Manager State" not in dumpsys_location and "Last Known Locations" not in dumpsys_location:
        raise UnknownFormat("dumpsys location", "'Location Manager State' dump", sdk, maker)
    found: dict[tuple[float, float], None] = {}
    for coords in _LOCATION.findall(dumpsys_location):
        if coords == "null":
            continue
        if "*" in coords:
            raise UnknownFormat("dumpsys location", "unmasked fix (this build prints coordinates masked with '*')",
                                sdk, maker)
        read = _coordinates(coords.replace("\u066b", "."))
        if read is None:
            raise UnknownFormat("dumpsys location", "fix as 'lat,lon' with decimal points or decimal commas "
                                f"(a fix has {len(coords)} characters of another shape)", sdk, maker)
        point = checked_location(*read)
        if point:
            found[point] = None
    return tuple(found)


@dataclass(frozen=True)
class CellIdentity:
    """The serving cell: radio, mobile country and network code, area code and cell id."""

    radio: str
    mcc: str
    mnc: str
    area: int
    cell: int


def parse_cell_identity(dumpsys_registry: str, sdk: int = 0, maker: str = "") -> CellIdentity | None:
    """The first ``mCellIdentity=CellIdentity*:{...}`` of ``dumpsys telephony.registry``.

    None when Android redacted it (``[****]`` on user builds of recent releases), when a field is unavailable
    (``2147483647``, ``null``) or masked: a partial cell identity is not read.
    """
    if "mCellIdentity" not in dumpsys_registry and "last known state" not in dumpsys_registry:
        raise UnknownFormat("dumpsys telephony.registry", "mCellIdentity", sdk, maker)
    match = _CELL_IDENTITY.search(dumpsys_registry)
    if not match:
        return None
    radio, body = match.group(1), match.group(2)
    fields = dict(_CELL_FIELD.findall(body))
    area_text = fields.get("mTac") or fields.get("mLac") or ""
    cell_text = fields.get("mCi") or fields.get("mNci") or fields.get("mCid") or ""
    mcc, mnc = fields.get("mMcc", ""), fields.get("mMnc", "")
    if not (area_text.isdigit() and cell_text.isdigit() and mcc.isdigit() and mnc.isdigit()):
        return None
    area, cell = int(area_text), int(cell_text)
    if CELL_UNAVAILABLE in (area, cell) or len(mcc) != 3 or len(mnc) not in (2, 3):
        return None
    return CellIdentity(radio=radio.lower(), mcc=mcc, mnc=mnc, area=area, cell=cell)


@dataclass(frozen=True)
class WifiNetwork:
    """The Wi-Fi network the phone is connected to: BSSID and SSID, either None when Android hid it."""

    bssid: str | None
    ssid: str | None


def parse_wifi_network(dumpsys_wifi: str, sdk: int = 0, maker: str = "") -> WifiNetwork | None:
    """The first ``mWifiInfo SSID: "...", BSSID: ..., ... Supplicant state: COMPLETED`` of ``dumpsys wifi``.

    None when the phone is not connected (another supplicant state) or Android hid both fields
    (``<unknown ssid>``, the ``02:00:00:00:00:00`` placeholder BSSID). The SSID is read when quoted (UTF-8); an
    unquoted one is a hex dump of a non-UTF-8 name, which is not read.
    """
    if "mWifiInfo" not in dumpsys_wifi:
        raise UnknownFormat("dumpsys wifi", "mWifiInfo", sdk, maker)
    for match in _WIFI_INFO.finditer(dumpsys_wifi):
        state = _SUPPLICANT_STATE.search(match.group("rest"))
        if state is None or state.group(1) != "COMPLETED":
            continue
        ssid_text = match.group("ssid")
        quoted = len(ssid_text) >= 2 and ssid_text[0] == ssid_text[-1] == '"'
        ssid = ssid_text[1:-1] if quoted and ssid_text[1:-1] else None
        bssid = checked_mac(match.group("bssid"))
        return WifiNetwork(bssid=bssid, ssid=ssid) if bssid or ssid else None
    return None


# --- where the phone is, as identifier blocks ------------------------------------------------------------------

def location_block(dumpsys_location: str, sdk: int = 0, maker: str = "") -> list[dict[str, float]] | None:
    """``dumpsys location`` as the identifiers schema's ``location`` (a list of points), None when there is none."""
    points = parse_last_locations(dumpsys_location, sdk, maker)
    return [{"lat": lat, "lon": lon} for lat, lon in points] or None


def cell_block(dumpsys_registry: str, sdk: int = 0, maker: str = "") -> dict[str, object] | None:
    """``dumpsys telephony.registry`` as the schema's ``cell``, None when Android redacted or lacks it."""
    cell = parse_cell_identity(dumpsys_registry, sdk, maker)
    if cell is None:
        return None
    return {"mcc": cell.mcc, "mnc": cell.mnc, "lac": cell.area, "cid": cell.cell}


def wifi_block(dumpsys_wifi: str, sdk: int = 0, maker: str = "") -> dict[str, str] | None:
    """``dumpsys wifi`` as the schema's ``wifi`` (only the fields Android showed), None when not connected."""
    network = parse_wifi_network(dumpsys_wifi, sdk, maker)
    if network is None:
        return None
    return {name: value for name, value in (("bssid", network.bssid), ("ssid", network.ssid)) if value}


#: structured identifiers a phone reveals about where it is: name -> (reader of a dumpsys output into the
#: identifiers schema, the dumpsys service, what None means)
WHERE_READERS: dict[str, tuple[Callable[[str, int, str], object | None], str, str]] = {
    "location": (location_block, "location", "shows no last known location"),
    "cell": (cell_block, "telephony.registry", "shows no serving cell (none, or redacted on a user build)"),
    "wifi": (wifi_block, "wifi", "shows no connected Wi-Fi network (or Android hid its BSSID and SSID)"),
}


# --- attribution: sockets and packages ---------------------------------------------------------------------------

@dataclass(frozen=True)
class TcpSocket:
    """One line of ``/proc/net/tcp`` or ``tcp6``: endpoints as (address, port), state, owner uid, inode."""

    local: tuple[str, int]
    remote: tuple[str, int]
    state: int
    uid: int
    inode: int


def _proc_address(hex_address: str) -> str:
    """``/proc/net/tcp`` addresses are the kernel's 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hex_address)
    data = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if len(data) == 4:
        return ".".join(str(b) for b in data)
    if data[:12] == b"\x00" * 10 + b"\xff\xff":
        return ".".join(str(b) for b in data[12:])
    groups = [f"{int.from_bytes(data[i:i + 2], 'big'):x}" for i in range(0, 16, 2)]
    return ":".join(groups)


def parse_proc_net_tcp(text: str, sdk: int = 0, maker: str = "") -> list[TcpSocket]:
    """Sockets of ``cat /proc/net/tcp`` (or ``tcp6``); IPv4-mapped IPv6 addresses are given as IPv4."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not _TCP_HEADER.match(lines[0]):
        raise UnknownFormat("cat /proc/net/tcp", "'sl local_address rem_address st' header", sdk, maker)
    sockets: list[TcpSocket] = []
    for line in lines[1:]:
        match = _TCP_LINE.match(line)
        if not match:
            raise UnknownFormat("cat /proc/net/tcp", f"socket line (got {line[:40]!r})", sdk, maker)
        local, lport, remote, rport, state, uid, inode = match.groups()
        sockets.append(TcpSocket(local=(_proc_address(local), int(lport, 16)),
                                 remote=(_proc_address(remote), int(rport, 16)), state=int(state, 16),
                                 uid=int(uid), inode=int(inode)))
    return sockets


def parse_package_list(text: str, sdk: int = 0, maker: str = "") -> list[str]:
    """Package names of ``pm list packages`` (also with ``-f``: ``package:/path/base.apk=name``, ``-U``)."""
    packages: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _PACKAGE_LINE.match(line.strip())
        if not match:
            raise UnknownFormat("pm list packages", f"'package:NAME' line (got {line[:40]!r})", sdk, maker)
        packages.append(match.group(2))
    return packages
