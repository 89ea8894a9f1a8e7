"""What the parsers refuse: values of the wrong shape are "could not read", formats nobody knows are errors naming
the command and the release. The real outputs are in test_android_outputs.py; these are the edges."""

from __future__ import annotations

import pytest

from phonehome.devices.android import (
    CellIdentity,
    UnknownFormat,
    WifiNetwork,
    checked_location,
    checked_subscriber_value,
    iphonesubinfo_code,
    iphonesubinfo_command,
    parse_android_id,
    parse_boot_completed,
    parse_boot_id,
    parse_cell_identity,
    parse_getprop,
    parse_keyguard_showing,
    parse_last_locations,
    parse_mac,
    parse_parcel_exception,
    parse_parcel_string,
    parse_screen_state,
    parse_serial,
    parse_subinfo_dump,
    parse_wifi_network,
    release_name,
)


@pytest.mark.parametrize(("name", "value", "read"), [
    ("imei", "352099001761481", "352099001761481"),
    ("imei", "352099001761482", None),          # check digit wrong: another number a wrong code returned
    ("imei", "35209900176148", None),           # 14 digits
    ("imsi", "310260000000000", "310260000000000"),
    ("imsi", "31026000000", None),
    ("imsi", "3102600000000x0", None),
    ("iccid", "8901260000000000001", "8901260000000000001"),
    ("iccid", "89014103211118510720F", "89014103211118510720"),  # a trailing F pads odd lengths
    ("iccid", "8901260000", None),
    ("iccid", "3102600000000000001", None),      # an ICCID starts with 89 (ITU-T E.118)
    ("phone", "+4930123456", "+4930123456"),
    ("phone", "12345", None),
    ("phone", "+49 30 123", None),
])
def test_subscriber_values_are_read_only_with_their_shape(name: str, value: str, read: str | None) -> None:
    assert checked_subscriber_value(name, value) == read


@pytest.mark.parametrize(("lat", "lon", "read"), [
    (52.5163, 13.3777, (52.5163, 13.3777)), (0.0, 0.0, None), (91.0, 13.0, None), (52.0, -180.5, None)])
def test_coordinates_are_checked(lat: float, lon: float, read: tuple[float, float] | None) -> None:
    assert checked_location(lat, lon) == read


@pytest.mark.parametrize(("text", "read"), [
    ("9774d56d682e549c\n", "9774d56d682e549c"), ("null", None), ("0000000000000000", None),
    ("12AB", "12ab")])
def test_android_id(text: str, read: str | None) -> None:
    assert parse_android_id(text, 34, "google") == read


@pytest.mark.parametrize(("text", "read"), [
    ("R58M12ABCDE", "R58M12ABCDE"), ("0123456789ABCDEF", None), ("unknown", None), ("", None)])
def test_board_placeholder_serials_are_not_read(text: str, read: str | None) -> None:
    assert parse_serial(text) == read


@pytest.mark.parametrize(("text", "read"), [
    ("AC:37:43:4D:5E:6F", "ac:37:43:4d:5e:6f"), ("02:00:00:00:00:00", None), ("null", None)])
def test_macs(text: str, read: str | None) -> None:
    assert parse_mac(text, 30, "") == read


def test_a_random_mac_is_not_the_factory_one() -> None:
    assert parse_mac("9e:85:0a:46:18:68", 33, "") == "9e:85:0a:46:18:68"
    assert parse_mac("9e:85:0a:46:18:68", 33, "", factory_only=True) is None


@pytest.mark.parametrize(("parse", "text", "message"), [
    (parse_keyguard_showing, "WINDOW MANAGER WINDOWS (dumpsys window windows)\n",
     "no keyguard field (mShowingLockscreen, isStatusBarKeyguard, isKeyguardShowing, KeyguardStateMonitor "
     "mIsShowing, KeyguardServiceDelegate showing) in dumpsys window on SDK 34 (samsung)"),
    (parse_boot_id, "", "no boot UUID in cat /proc/sys/kernel/random/boot_id on SDK 34 (samsung)"),
    (parse_boot_completed, "yes", "no 0, 1 or empty value in getprop sys.boot_completed on SDK 34 (samsung)"),
    (parse_android_id, "Error: no such key", "no hex android_id in settings get secure android_id on SDK 34 "
                                            "(samsung)"),
    (parse_mac, "wlan0: no such device", "no MAC address in cat /sys/class/net/wlan0/address on SDK 34 (samsung)"),
    (parse_parcel_string, "Permission denied", "no 'Result: Parcel(' reply in service call on SDK 34 (samsung)"),
    (parse_subinfo_dump, "Can not dump", "no 'Phone Subscriber Info' dump in dumpsys iphonesubinfo on SDK 34 "
                                         "(samsung)"),
    (parse_cell_identity, "Permission Denial", "no mCellIdentity in dumpsys telephony.registry on SDK 34 (samsung)"),
    # what an app without DUMP gets (SecTrollz/files dumpsys_wifi.txt); adb's shell has DUMP
    (parse_wifi_network, "Permission Denial: can't dump WifiService from from pid=22120, uid=10318\n",
     "no mWifiInfo in dumpsys wifi on SDK 34 (samsung)"),
    (parse_getprop, "ro.serialno=R58M", "no '[name]: [value]' line (got 'ro.serialno=R58M') in getprop on SDK 34 "
                                        "(samsung)"),
])
def test_an_unknown_format_names_the_command_and_the_release(parse: object, text: str, message: str) -> None:
    with pytest.raises(UnknownFormat) as info:
        parse(text, 34, "Samsung")  # type: ignore[operator]
    assert str(info.value) == message


def test_an_unknown_release_is_said_so() -> None:
    assert release_name(0) == "an unknown SDK"
    with pytest.raises(UnknownFormat) as info:
        parse_screen_state("nothing")
    assert str(info.value).endswith("in dumpsys power on an unknown SDK")


def test_the_iphonesubinfo_code_follows_the_release() -> None:
    """The getters that take the calling package, FIRST_CALL_TRANSACTION + n in each release's generated
    IPhoneSubInfo stub: Android 8/9 (code-search index id 36122978707), 10 (id 1270161066: getGroupIdLevel1
    gone), 11+ (AOSP IPhoneSubInfo.aidl, id 292563319: a ``*WithFeature`` twin after each getter)."""
    names = ("imei", "imsi", "iccid", "phone")
    assert [iphonesubinfo_code(name, 28) for name in names] == [1, 7, 11, 13]
    assert [iphonesubinfo_code(name, 29) for name in names] == [1, 7, 10, 12]
    assert [iphonesubinfo_code(name, 30) for name in names] == [1, 8, 12, 15]
    assert [iphonesubinfo_code(name, 35) for name in names] == [1, 8, 12, 15]


def test_the_iphonesubinfo_call_names_the_shell_as_caller() -> None:
    """Without a calling package Android 10+ refuses the call before its permission check; the shell's own
    package is what ``service call iphonesubinfo 1 s16 com.android.shell`` (the usual form) passes."""
    assert iphonesubinfo_command("imei", 34) == ["service", "call", "iphonesubinfo", "1", "s16",
                                                 "com.android.shell"]
    assert iphonesubinfo_command("phone", 29)[3] == "12"


def test_a_service_the_phone_lacks_is_no_value_not_an_error() -> None:
    assert parse_parcel_string("service: Service iphonesubinfo does not exist\n", 33, "axxs") is None
    assert parse_parcel_exception("service: Service iphonesubinfo does not exist\n", 33, "axxs") is None
    # what `dumpsys` prints for a service the phone lacks (a Wi-Fi-only tablet has no iphonesubinfo)
    assert parse_subinfo_dump("Can't find service: iphonesubinfo\n", 33, "axxs") == {}
    assert parse_subinfo_dump("Permission Denial: can't dump iphonesubinfo from from pid=1, uid=2000\n") == {}


def test_a_refused_call_is_said_with_the_phones_own_message() -> None:
    # the 0x00000000 offset of a multi-line reply is not a status word; a thrown reply is no value
    refused = ("Result: Parcel(\n"
               "  0x00000000: ffffffff 0000004a 00740041 00650074 '....J...A.t.t.e.'\n"
               "  0x00000010: 0070006d 00200074 006f0074 00720020 'm.p.t. .t.o. .r.')")
    assert parse_parcel_string(refused) is None
    assert parse_parcel_exception(refused) == "SecurityException"  # the message is cut: only its kind is said
    assert parse_parcel_exception("Result: Parcel(00000000 00000001   '........')") is None
    assert parse_parcel_exception("Result: Parcel(fffffffc 00000000   '........')") == "NullPointerException"


def test_a_fix_in_a_decimal_comma_locale_is_read() -> None:
    """Before Android 12 Location.toString formats ``" %.6f,%.6f"`` in the phone's default locale (AOSP
    Location.java of 8-11, code-search index ids 33953741361, 52268244317; Locale.ROOT from 12, id 70151966986):
    a German phone writes decimal commas, an Arabic one Arabic-Indic digits and U+066B. Taken for decimal points,
    "48,858370,2,294481" would read as (48, 858370) and the fix be dropped as out of range."""
    head = "Location Manager State:\n  Last Known Locations:\n    gps: "
    german = head + "Location[gps 48,858370,2,294481 hAcc=20 et=+1d2h mock alt=35.0 vel=0.0]\n"
    assert parse_last_locations(german, 28, "samsung") == ((48.85837, 2.294481),)
    west = head + "Location[network -33,868820,-151,209296 hAcc=800 et=+5m]\n"
    assert parse_last_locations(west) == ((-33.86882, -151.209296),)
    arabic = head + "Location[gps \u0664\u0668\u066b\u0668\u0665\u0668\u0663\u0667\u0660," \
                    "\u0662\u066b\u0662\u0669\u0664\u0664\u0668\u0661 hAcc=5]\n"
    assert parse_last_locations(arabic) == ((48.85837, 2.294481),)
    assert parse_last_locations(head + "Location[gps 48.858370,2.294481 hAcc=5]\n") == ((48.85837, 2.294481),)
    assert parse_last_locations(head + "null\n") == ()


def test_a_masked_or_unreadable_fix_is_an_error_that_names_no_coordinate() -> None:
    # the masked form as a real phone logged it ("Known Location : Location[gps 44****** ,-97******  hAcc=1.06",
    # a logcat line quoted in code-search index id 66495437635); some builds' Location.toString prints
    # " %.0f******,%.0f******" (ids 28688931629, 10941410211), and dumpsys location prints that toString
    head = "Location Manager State:\n  Last Known Locations:\n    gps: "
    masked = head + "Location[gps 44****** ,-97******  hAcc=1.06 et=+11d4h38m54s2ms alt=416.5 vAcc=0.0]\n"
    with pytest.raises(UnknownFormat) as info:
        parse_last_locations(masked, 30, "vivo")
    assert str(info.value) == ("no unmasked fix (this build prints coordinates masked with '*') in dumpsys location "
                               "on SDK 30 (vivo)")
    with pytest.raises(UnknownFormat) as info:
        parse_last_locations(head + "Location[gps 48\u00b051'N,2\u00b017'E hAcc=5]\n", 30, "vivo")
    assert "48" not in str(info.value) and "dumpsys location on SDK 30 (vivo)" in str(info.value)


def test_an_nr_cell_identity_is_read_with_its_spaced_fields() -> None:
    """CellIdentityNr.toString writes ``mTac = 1`` with blanks on every release that has it (AOSP, code-search
    index ids 96641539, 156396711); the NR block as a OnePlus 10 Pro (NE2215, Android 15) printed it (quoted, line
    wrapped, in index id 67155718939), on one line as dumpsys prints it."""
    line = ("    mCellIdentity=CellIdentityNr:{ mPci = 269 mTac = 5767433 mNrArfcn = 396030 mBands = [2] mMcc = 311 "
            "mMnc = 480 mNci = 14567084500 mAlphaLong = Verizon mAlphaShort = Verizon mAdditionalPlmns = {} }")
    assert parse_cell_identity(line, 35, "oneplus") == CellIdentity(radio="nr", mcc="311", mnc="480", area=5767433,
                                                                    cell=14567084500)
    # Huawei's build prints "mTac = *** ... mNci = ***" (index id 28757514174): not read
    huawei = line.replace("mTac = 5767433", "mTac = ***").replace("mNci = 14567084500", "mNci = ***")
    assert parse_cell_identity(huawei, 29, "huawei") is None


def test_a_getprop_value_may_span_lines() -> None:
    props = parse_getprop("[ro.a]: [1]\n[persist.b]: [first\nsecond]\n[ro.c]: []\n")
    assert props == {"ro.a": "1", "persist.b": "first\nsecond", "ro.c": ""}


def test_a_readable_cell_identity_and_the_unavailable_ones() -> None:
    line = ("    mCellIdentity=CellIdentityLte:{ mCi=19695115 mPci=132 mTac=4136 mEarfcn=39148 mBands=[40] "
            "mBandwidth=20000 mMcc=460 mMnc=00 mAlphaLong=CMCC mAlphaShort=CMCC mAdditionalPlmns={} mCsgInfo=null}")
    assert parse_cell_identity(line) == CellIdentity(radio="lte", mcc="460", mnc="00", area=4136, cell=19695115)
    assert parse_cell_identity(line.replace("mCi=19695115", "mCi=2147483647")) is None
    assert parse_cell_identity(line.replace("mTac=4136", "mTac=3**4")) is None  # masked by hand
    assert parse_cell_identity("last known state:\n  Phone Id=0\n    mCellIdentity=null\n") is None


def test_the_connected_wifi_network_and_the_hidden_ones() -> None:
    line = ('mWifiInfo SSID: "Cafe, Bar", BSSID: 70:3a:73:80:ab:af, MAC: 02:00:00:00:00:00, Supplicant state: '
            "COMPLETED, RSSI: -49, Link speed: 72Mbps, Frequency: 5805MHz, Net ID: 2, Metered hint: false, score: 60")
    assert parse_wifi_network(line) == WifiNetwork(bssid="70:3a:73:80:ab:af", ssid="Cafe, Bar")
    assert parse_wifi_network(line.replace("COMPLETED", "ASSOCIATING")) is None  # not connected yet
    hidden = line.replace('"Cafe, Bar"', "<unknown ssid>").replace("70:3a:73:80:ab:af", "02:00:00:00:00:00")
    assert parse_wifi_network(hidden) is None
    assert parse_wifi_network(line.replace('"Cafe, Bar"', "<unknown ssid>")) == WifiNetwork("70:3a:73:80:ab:af",
                                                                                          None)
    assert parse_wifi_network(line.replace('"Cafe, Bar"', "0xc3a9")) == WifiNetwork("70:3a:73:80:ab:af", None)


@pytest.mark.parametrize(("text", "awake", "raw"), [
    # Samsung's builds: flutter/flutter dev/devicelab/test/adb_test.dart (commit c624967, pretendAwakeSamsung)
    ("Power Manager State:\n  getWakefulnessLocked()=Awake\n", True, "getWakefulnessLocked()=Awake"),
    ("Power Manager State:\n  getWakefulnessLocked()=Dozing\n", False, "getWakefulnessLocked()=Dozing"),
    # the number some ROMs print (PowerManagerInternal.WAKEFULNESS_AWAKE = 1, WAKEFULNESS_ASLEEP = 0)
    ("Power Manager State:\n  getWakefulnessLocked()=1\n", True, "getWakefulnessLocked()=1"),
    ("Power Manager State:\n  mWakefulness=0\n", False, "mWakefulness=0"),
    # the raw state alone, which screen-state scripts fall back to (code-search index ids 56361306274, 68587299510)
    ("Power Manager State:\n  mWakefulnessRaw=Awake\n", True, "mWakefulnessRaw=Awake"),
    ("Power Manager State:\n  mWakefulnessRaw=Dozing\n  mWakefulness=Awake\n", True, "mWakefulness=Awake"),
])
def test_every_spelling_of_wakefulness_is_read(text: str, awake: bool, raw: str) -> None:
    state = parse_screen_state(text, 31, "samsung")
    assert (state.awake, state.raw) == (awake, raw)


def test_a_wakefulness_android_does_not_have_is_an_error_not_off() -> None:
    with pytest.raises(UnknownFormat) as info:
        parse_screen_state("Power Manager State:\n  mWakefulness=Unknown\n", 31, "samsung")
    assert str(info.value) == ("no wakefulness Awake, Asleep, Dreaming or Dozing (mWakefulness=Unknown) in dumpsys "
                               "power on SDK 31 (samsung)")
