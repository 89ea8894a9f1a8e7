"""Every parser of the phone backend on every real output of its command, Android 5 to 16, nine makers.

The outputs are under ``testing/android_outputs/<release>-<maker>/``: one file per command, its first line a
``# SOURCE:`` naming where it was copied from, identifiers masked with their format kept. Each folder's
``expected.json`` says what the phone showed (read from the output by a person, not by these parsers): the
screen, the keyguard, the properties, the identifiers, or the error an output with no reading must give.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from phonehome.devices.android import (
    UnknownFormat,
    checked_subscriber_value,
    parse_android_id,
    parse_boot_completed,
    parse_cell_identity,
    parse_getprop,
    parse_ip_link_mac,
    parse_keyguard_secure,
    parse_keyguard_showing,
    parse_last_locations,
    parse_mac,
    parse_package_list,
    parse_parcel_exception,
    parse_parcel_string,
    parse_proc_net_tcp,
    parse_screen_state,
    parse_serial,
    parse_settings_list,
    parse_subinfo_dump,
    parse_wifi_network,
    release_of,
)

OUTPUTS = Path(__file__).resolve().parent.parent / "android_outputs"


def _getprop(text: str, sdk: int, maker: str) -> dict[str, Any]:
    props = parse_getprop(text, sdk, maker)
    found_sdk, found_maker = release_of(props)
    read: dict[str, Any] = {"sdk": found_sdk, "maker": found_maker, "model": props.get("ro.product.model"),
                            "serial": parse_serial(props.get("ro.serialno", ""), sdk, maker)}
    if "sys.boot_completed" in props:
        read["boot_completed"] = parse_boot_completed(props["sys.boot_completed"], sdk, maker)
    return read


def _settings_list(text: str, sdk: int, maker: str) -> dict[str, Any]:
    values = parse_settings_list(text, sdk, maker)
    return {"android_id": parse_android_id(values["android_id"], sdk, maker),
            "bt_mac": parse_mac(values["bluetooth_address"], sdk, maker,
                                command="settings get secure bluetooth_address")}


def _service_call(text: str, sdk: int, maker: str) -> dict[str, Any]:
    value = parse_parcel_string(text, sdk, maker)
    return {"imei": checked_subscriber_value("imei", value) if value else None,
            "refusal": parse_parcel_exception(text, sdk, maker)}


def _any_service_call(text: str, sdk: int, maker: str) -> dict[str, Any]:
    """A reply of another service: the Parcel and its exceptions are the same for every service."""
    return {"value": parse_parcel_string(text, sdk, maker), "refusal": parse_parcel_exception(text, sdk, maker)}


def _proc_net_tcp(text: str, sdk: int, maker: str) -> dict[str, Any]:
    return {"sockets": [[s.local[0], s.local[1], s.remote[0], s.remote[1], s.state, s.uid]
                        for s in parse_proc_net_tcp(text, sdk, maker)]}


def _wifi(text: str, sdk: int, maker: str) -> dict[str, Any]:
    network = parse_wifi_network(text, sdk, maker)
    return {"wifi": None if network is None else {"bssid": network.bssid, "ssid": network.ssid}}


def _packages(text: str, sdk: int, maker: str) -> dict[str, Any]:
    packages = parse_package_list(text, sdk, maker)
    return {"count": len(packages), "first": packages[0]}


#: command file name (without ``@state`` and ``.txt``) -> the parser of that command's output
READERS: dict[str, Callable[[str, int, str], dict[str, Any]]] = {
    "dumpsys_power": lambda text, sdk, maker: {"awake": parse_screen_state(text, sdk, maker).awake},
    "dumpsys_window": lambda text, sdk, maker: {"keyguard_showing": parse_keyguard_showing(text, sdk, maker),
                                                "keyguard_secure": parse_keyguard_secure(text, sdk, maker)},
    # the keyguard is read from `dumpsys window`; its `windows` section alone must not pass for it
    "dumpsys_window_windows": lambda text, sdk, maker: {"keyguard_showing": parse_keyguard_showing(text, sdk,
                                                                                                   maker)},
    "getprop": _getprop,
    "settings_get_secure_android_id": lambda text, sdk, maker: {"android_id": parse_android_id(text, sdk, maker)},
    "settings_list_secure": _settings_list,
    "cat_sys_class_net_wlan0_address": lambda text, sdk, maker: {"wifi_mac": parse_mac(text, sdk, maker)},
    "ip_link": lambda text, sdk, maker: {"wifi_mac": parse_ip_link_mac(text, sdk, maker),
                                         "factory_mac": parse_ip_link_mac(text, sdk, maker, factory_only=True)},
    "service_call_iphonesubinfo_1": _service_call,
    "service_call_bluetooth_manager_5": _any_service_call,
    "dumpsys_iphonesubinfo": lambda text, sdk, maker: {"subscriber": parse_subinfo_dump(text, sdk, maker)},
    "dumpsys_location": lambda text, sdk, maker: {"locations": [list(p) for p in parse_last_locations(text, sdk,
                                                                                                      maker)]},
    "dumpsys_telephony_registry": lambda text, sdk, maker: {"cell": parse_cell_identity(text, sdk, maker)},
    "dumpsys_wifi": _wifi,
    "cat_proc_net_tcp": _proc_net_tcp,
    "pm_list_packages_3": _packages,
    "pm_list_packages_f": _packages,
}


def _cases() -> list[Any]:
    cases = []
    for folder in sorted(p for p in OUTPUTS.iterdir() if p.is_dir()):
        for output in sorted(folder.glob("*.txt")):
            cases.append(pytest.param(folder, output, id=f"{folder.name}/{output.stem}"))
    return cases


def _output(path: Path) -> str:
    source, _, text = path.read_text(encoding="utf-8").partition("\n")
    assert source.startswith("# SOURCE: ") and len(source) > 30, f"{path} has no SOURCE line"
    return text


@pytest.mark.parametrize(("folder", "output"), _cases())
def test_every_parser_reads_every_real_output_of_its_command(folder: Path, output: Path) -> None:
    device = json.loads((folder / "expected.json").read_text(encoding="utf-8"))
    expected = device["expect"][output.name]
    read = READERS[output.stem.split("@")[0]]
    text = _output(output)
    if "error" in expected:
        with pytest.raises(UnknownFormat) as info:
            read(text, device["sdk"], device["maker"])
        assert all(part in str(info.value) for part in expected["error"]), str(info.value)
    else:
        assert read(text, device["sdk"], device["maker"]) == expected


def test_every_output_has_an_expectation_and_every_expectation_an_output() -> None:
    for folder in (p for p in OUTPUTS.iterdir() if p.is_dir()):
        expected = json.loads((folder / "expected.json").read_text(encoding="utf-8"))["expect"]
        assert sorted(expected) == sorted(p.name for p in folder.glob("*.txt")), folder.name


def test_the_outputs_cover_android_8_to_15_and_three_makers() -> None:
    devices = [json.loads((p / "expected.json").read_text(encoding="utf-8")) for p in OUTPUTS.iterdir()
               if p.is_dir()]
    releases = {d["release"].split(".")[0] for d in devices if d["release"]}
    makers = {d["maker"] for d in devices if d["maker"]}
    assert {"8", "9", "10", "11", "12", "13", "14", "15"} <= releases
    assert len(makers) >= 3
