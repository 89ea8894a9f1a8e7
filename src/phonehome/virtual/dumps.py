"""``dumpsys`` of the virtual phone in the style of its Android release: the same formats as real phones print.

A harness is only proven on a release if the virtual phone speaks that release: field names, sections and
placeholders move between releases, and a parser tried on one style only may misread the next phone. Each
format here follows a real output under ``testing/android_outputs/`` (named per style below), so the privacy
suite on a virtual phone exercises the same parsing as on the real phone of that release.

Styles, chosen from the SDK level of the phone's firmware profile (``android:``):

- ``9`` (SDK 28 and older): no ``mShowingLockscreen`` any more (gone since 8.0, see ``android8-google``);
  ``mShowingDream ... mDreamingLockscreen`` and ``isStatusBarKeyguard`` in the policy section;
  ``Last Known Locations:`` in ``dumpsys location``; ``Device ID =`` in ``dumpsys iphonesubinfo``.
- ``11`` (SDK 29 to 32): the policy section has ``KeyguardServiceDelegate`` with ``KeyguardStateMonitor`` and no
  ``mDreamingLockscreen``; device identifiers are refused to the shell (Android 10+).
- ``13`` (SDK 33): as ``android13-mediatek``: a ``Settings power_manager_constants`` block in ``dumpsys power``,
  ``KeyguardServiceDelegate`` in the policy section and a ``DisplayPolicy`` with ``mDreamingLockscreen`` and
  ``isKeyguardShowing`` in the display contents; per-provider ``last location=`` lines (Android 12+, see
  ``android13-motorola``); an empty ``dumpsys iphonesubinfo``.
- ``14`` (SDK 34 and newer): as 13, with the power fields of ``android14-xiaomi`` (``mDreamsBatteryLevelDrain``).

``dumpsys telephony.registry`` prints the phone's first ``cell`` as ``mCellIdentity=CellIdentityLte:{...}``; styles
13 and 14 redact its cell id and area code as ``[****]``, as the one real output of a recent release does
(``android16-google``, a user build) — the release where redaction began is not proven by a real output, so 9 and
11 print them. ``dumpsys wifi`` prints the first ``wifi`` network as the ``mWifiInfo`` line of
``unknown-emulator`` (an SSID in quotes, ``<unknown ssid>`` when none is set).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from phonehome.virtual.phone import VirtualPhone

STYLES = (9, 11, 13, 14)


def release_style(sdk: int) -> int:
    """The release whose formats a phone of this SDK level prints: 9, 11, 13 or 14."""
    if sdk >= 34:
        return 14
    if sdk >= 33:
        return 13
    if sdk >= 29:
        return 11
    return 9


def _b(value: bool) -> str:
    return "true" if value else "false"


def dump_power(phone: VirtualPhone, args: list[str]) -> list[str]:
    style = release_style(phone.spec.sdk)
    on = phone.screen_on
    stay_on = phone.settings_get("global", "stay_on_while_plugged_in") not in (None, "0")
    lines = ["POWER MANAGER (dumpsys power)", "", "Power Manager State:"]
    if style >= 13:
        lines += ["  Settings power_manager_constants:", "    no_cached_wake_locks=true"]
    lines += [
        "  mDirty=0x0",
        f"  mWakefulness={'Awake' if on else 'Asleep'}",
        "  mWakefulnessChanging=false",
        "  mIsPowered=true",
        "  mPlugType=2",
        "  mBatteryLevel=87",
        "  mDreamsBatteryLevelDrain=0" if style >= 14 else "  mBatteryLevelWhenDreamStarted=0",
        "  mDockState=0",
        f"  mStayOn={_b(stay_on)}",
        "  mProximityPositive=false",
        f"  mBootCompleted={_b(phone.boot_completed)}",
        "  mSystemReady=true",
    ]
    lines += [
        f"  mHalAutoSuspendModeEnabled={_b(not on)}",
        f"  mHalInteractiveModeEnabled={_b(on)}",
        "  mWakeLockSummary=0x0",
        f"  mLastWakeTime={int(phone.uptime_s * 1000)}",
        f"  mHoldingWakeLockSuspendBlocker={_b(on)}",
        f"  mHoldingDisplaySuspendBlocker={_b(on)}",
        "",
        "Display Power: com.android.server.power.PowerManagerService$1@dfdf384",
    ]
    return lines


def _keyguard_delegate(phone: VirtualPhone) -> list[str]:
    """The ``KeyguardServiceDelegate`` block of the policy section (Android 6+; as in ``android13-mediatek``)."""
    locked, on = phone.locked, phone.screen_on
    method = phone.spec.unlock_method
    return [
        "    KeyguardServiceDelegate",
        f"      showing={_b(locked)}",
        f"      showingAndNotOccluded={_b(locked)}",
        f"      inputRestricted={_b(locked)}",
        "      occluded=false",
        f"      secure={_b(method in ('pin', 'password'))}",
        f"      dreaming={_b(locked and not on)}",
        "      systemIsReady=true",
        f"      deviceHasKeyguard={_b(method != 'none')}",
        f"      enabled={_b(method != 'none')}",
        "      offReason=OFF_BECAUSE_OF_USER",
        "      currentUser=-10000",
        f"      bootCompleted={_b(phone.boot_completed)}",
        f"      screenState={'SCREEN_STATE_ON' if on else 'SCREEN_STATE_OFF'}",
        f"      interactiveState={'INTERACTIVE_STATE_AWAKE' if on else 'INTERACTIVE_STATE_SLEEP'}",
        "      KeyguardStateMonitor",
        f"        mIsShowing={_b(locked)}",
        "        mSimSecure=false",
        f"        mInputRestricted={_b(locked)}",
        "        mTrusted=false",
        "        mCurrentUserId=0",
    ]


def dump_window(phone: VirtualPhone, args: list[str]) -> list[str]:
    style = release_style(phone.spec.sdk)
    package, activity = phone.foreground_activity
    locked, on = phone.locked, phone.screen_on
    width, height = phone.display_size
    short = activity[len(package):] if activity.startswith(package + ".") else activity
    focus = f"Window{{7c1e2a5 u0 {package}/{activity}}}"
    resumed_pkg, resumed_act = phone.resumed_activity
    policy = [
        "WINDOW MANAGER POLICY STATE (dumpsys window policy)",
        f"    mSafeMode=false mSystemReady=true mSystemBooted={_b(phone.boot_completed)}",
    ]
    if style <= 9:
        policy += [
            "    mLidState=-1 mLidOpenRotation=-1 mCameraLensCoverState=-1 mHdmiPlugged=false",
            f"    mAwake={_b(on)}",
            f"    mScreenOnEarly={_b(on)} mScreenOnFully={_b(on)}",
            "    mKeyguardDrawComplete=true mWindowManagerDrawComplete=true",
            f"    mShowingDream=false mDreamingLockscreen={_b(locked)} mDreamingSleepToken=null",
            f"    mStatusBar=Window{{2b3c4d5 u0 StatusBar}} isStatusBarKeyguard={_b(locked and on)}",
        ]
    else:
        policy += [
            "    mCameraLensCoverState=CAMERA_LENS_COVER_ABSENT",
            "    mWakeGestureEnabledSetting=true",
            "    mKeyguardOccluded=false mKeyguardOccludedChanged=false mPendingKeyguardOccluded=false",
            "    mAllowLockscreenWhenOnDisplays=false mLockScreenTimeout=60000 mLockScreenTimerActive=false",
        ]
    policy += _keyguard_delegate(phone)
    display_policy: list[str] = []
    if style >= 13:
        display_policy = [
            "  DisplayPolicy",
            f"    mAwake={_b(on)} mScreenOnEarly={_b(on)} mScreenOnFully={_b(on)}",
            "    mKeyguardDrawComplete=true mWindowManagerDrawComplete=true",
            f"    mShowingDream=false mDreamingLockscreen={_b(locked)}",
            "    mStatusBar=Window{2b3c4d5 u0 StatusBar}",
            "    mExpandedPanel=Window{1651cd4 u0 NotificationShade}",
            f"    isKeyguardShowing={_b(locked)}",
        ]
    windows = [
        "WINDOW MANAGER WINDOWS (dumpsys window windows)",
        "  Window #0 Window{2b3c4d5 u0 StatusBar}:",
        "    mDisplayId=0 stackId=0 mSession=Session{1a2b3c 1234:u0a10023} mClient=android.os.BinderProxy@1",
        f"    mHasSurface={_b(on)} isReadyForDisplay()={_b(on)}",
        f"  Window #1 Window{{8d9e0f1 u0 {resumed_pkg}/{resumed_act}}}:",
        "    mDisplayId=0 stackId=1",
        "",
        f"  mCurrentFocus={focus}",
        f"  mFocusedApp=AppWindowToken{{5f6a7b8 token=Token{{9c0d1e2 ActivityRecord{{3f4a5b6 u0 "
        f"{package}/{short} t{17 if package != resumed_pkg else 5}}}}}}}",
    ]
    displays = [
        "WINDOW MANAGER DISPLAY CONTENTS (dumpsys window displays)",
        "  Display: mDisplayId=0",
        f"    init={phone.spec.screen[0]}x{phone.spec.screen[1]} {phone.spec.density}dpi "
        f"cur={width}x{height} app={width}x{height} rng={width}x{width}-{height}x{height}",
        f"    mCurrentFocus={focus}",
        *display_policy,
    ]
    section = args[0] if args else ""
    if section == "policy":
        return policy
    if section in ("windows", "w"):
        return windows
    if section in ("displays", "d"):
        return displays
    return [*policy, "", *displays, "", *windows]


def dump_location(phone: VirtualPhone, args: list[str]) -> list[str]:
    style = release_style(phone.spec.sdk)
    fixes = [f"Location[gps {loc.lat:.6f},{loc.lon:.6f} hAcc=12.0 et=+{int(phone.uptime_s)}s0ms alt=34.0 vAcc=4.0]"
             for loc in phone.spec.identifiers.locations[:1]]
    mode = phone.settings_get("secure", "location_mode") or "0"
    if style <= 11:
        lines = ["Location Manager State:", "  Location Listeners:", "  Active Records by Provider:",
                 "  Last Known Locations:"]
        for fix in fixes:
            lines += [f"    passive: {fix}", f"    gps: {fix}"]
        return [*lines, f"  Location mode: {mode}"]
    last = fixes[0] if fixes else "null"
    lines = ["Location Manager State:", "  User Info:", "    current users: u[0]", "  Location Settings:",
             f"    Location Setting: {_b(mode != '0')}", "  Location Providers:"]
    for provider, identity in (("passive", "1000/android[LocationService]"),
                               ("fused", "1000/com.android.location.fused"),
                               ("gps", "1000/android[GnssService]")):
        lines += [f"    {provider} provider:", "      service: ProviderRequest[OFF]",
                  f"      last location={last.replace('[gps ', f'[{provider} ') if provider == 'fused' else last}",
                  "      enabled=true", "      allowed=true", f"      identity={identity}"]
    return lines


def dump_iphonesubinfo(phone: VirtualPhone, args: list[str]) -> list[str]:
    """Style 9 and 11 print the subscriber header, with ``Device ID`` where the shell may read it (9, or a
    rooted 11); a 13 build prints nothing to the shell (``android13-mediatek``)."""
    style = release_style(phone.spec.sdk)
    if style >= 13:
        return []
    lines = ["Phone Subscriber Info:", "  Phone Type = GSM"]
    imei = phone.identifier("imei")
    if imei and (style <= 9 or phone.spec.rooted):
        lines.append(f"  Device ID = {imei}")
    return lines


def dump_telephony_registry(phone: VirtualPhone, args: list[str]) -> list[str]:
    """The serving cell of the phone's first ``cell`` identifier (``mCellIdentity=null`` without one)."""
    style = release_style(phone.spec.sdk)
    cells = [cell for cell in phone.spec.identifiers.cells
             if None not in (cell.mcc, cell.mnc, cell.lac, cell.cid)][:1]
    lines = ["last known state:", "  Phone Id=0", "    mCallState=0"]
    if not cells:
        return [*lines, "    mCellIdentity=null"]
    cell = cells[0]

    def shown(value: object) -> str:
        return "[****]" if style >= 13 else str(value)

    return [*lines, f"    mCellIdentity=CellIdentityLte:{{ mCi={shown(cell.cid)} mPci={shown(132)} "
                    f"mTac={shown(cell.lac)} mEarfcn={shown(1650)} mBands=[3] mBandwidth=20000 mMcc={cell.mcc} "
                    f"mMnc={cell.mnc} mAlphaLong=Virtual Telecom mAlphaShort=Virtual mAdditionalPlmns={{}} "
                    "mCsgInfo=null}"]


def dump_wifi(phone: VirtualPhone, args: list[str]) -> list[str]:
    """``ClientModeImpl``'s ``mWifiInfo`` line for the phone's first ``wifi`` network (disconnected without one)."""
    networks = phone.spec.identifiers.wifis[:1]
    mac = phone.identifier("wifi_mac") or "02:00:00:00:00:00"
    lines = ["Wi-Fi is enabled", "Dump of ClientModeImpl id=1", "WifiClientModeImpl:", ""]
    if not networks:
        return [*lines, 'mWifiInfo SSID: <unknown ssid>, BSSID: <none>, MAC: 02:00:00:00:00:00, '
                        "Supplicant state: DISCONNECTED, RSSI: -127, Link speed: -1Mbps, Net ID: -1"]
    network = networks[0]
    ssid = f'"{network.ssid}"' if network.ssid is not None else "<unknown ssid>"
    bssid = network.bssid or "02:00:00:00:00:00"
    return [*lines, f"mWifiInfo SSID: {ssid}, BSSID: {bssid}, MAC: {mac}, IP: /10.0.2.16, Security type: 2, "
                    "Supplicant state: COMPLETED, Wi-Fi standard: 5, RSSI: -50, Link speed: 433Mbps, "
                    "Frequency: 5180MHz, Net ID: 0, Metered hint: false, score: 60",
            f"mLastBssid {bssid}", "mLastNetworkId 0"]
