"""devices.yaml: loading, defaults, and errors that name the file, the line, the field and the fix."""

from __future__ import annotations

import json
import re
import tempfile
import textwrap
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from phonehome.errors import InputError
from phonehome.identifiers import Identifiers, parse_identifiers
from phonehome.inventory import (
    DEFAULT_SETTLE_S,
    CaptureSpec,
    Inventory,
    Policy,
    UnlockSpec,
    deep_merge,
    load_inventory,
)

REPO = Path(__file__).resolve().parents[2]

REAL_PHONE = """\
version: 1
devices:
  - label: lab1
    model: Pixel 7
    serial: 2A031FDH2005LX
    backend: uiautomator2
    identifiers: {imei: "352099001761481", wifi_mac: "AC:37:43:4D:5E:6F"}
"""


def write(tmp_path: Path, text: str, name: str = "devices.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> InputError:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as info:
        load_inventory(path)
    return info.value


def assert_points_at(error: InputError, path: Path, line: int, field: str) -> None:
    """Every inventory error names the file, the line and the field, and says how to fix it."""
    message = str(error)
    assert message.startswith(f"{path}: line {line}, {field}: "), message
    assert error.fix, message
    assert "\n" not in message


# --- the default inventory -----------------------------------------------------------------------------------


def test_default_inventory_lists_the_five_virtual_phones() -> None:
    inventory = load_inventory(REPO / "devices.yaml")
    assert inventory.labels() == ("nokia7plus-2019", "nokia7plus-fixed", "adsdk-phone", "clean-phone",
                                  "nokia7plus-tls")
    by_label = {entry.label: entry for entry in inventory.devices}
    assert {entry.backend for entry in inventory.devices} == {"virtual"}
    assert by_label["nokia7plus-2019"].unlock == UnlockSpec("pin", "PHONEHOME_PIN_NOKIA7PLUS_2019")
    assert by_label["nokia7plus-fixed"].unlock.method == "swipe"
    assert by_label["adsdk-phone"].unlock.method in ("password", "none")
    assert by_label["clean-phone"].unlock.method == "none"
    for entry in inventory.devices:
        assert entry.firmware is not None and entry.firmware.is_file()
        assert entry.firmware.parent == REPO / "fixtures" / "firmware"
        assert entry.capture.source == "interface" and entry.capture.interface == "auto"
        mac = entry.identifiers.get("wifi_mac")[0]
        assert entry.capture.bpf(entry.identifiers) == f"ether host {mac}"
    firmware = {entry.label: entry.firmware.stem for entry in inventory.devices if entry.firmware}
    assert firmware == {"nokia7plus-2019": "nokia7plus-2019", "nokia7plus-fixed": "nokia7plus-fixed",
                        "adsdk-phone": "adsdk", "clean-phone": "clean", "nokia7plus-tls": "nokia7plus-tls"}
    macs = [entry.identifiers.get("wifi_mac") for entry in inventory.devices]
    assert len(set(macs)) == 5, "each phone needs its own capture filter"
    assert by_label["nokia7plus-tls"].tls_keys.path == "auto" and by_label["nokia7plus-tls"].tls_keys.require


def test_default_inventory_matches_the_shipped_json_schema() -> None:
    schema = json.loads(resources.files("phonehome").joinpath("data/devices.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    data = yaml.safe_load((REPO / "devices.yaml").read_text())
    jsonschema.Draft202012Validator(schema).validate(data)


def test_schema_rejects_what_the_loader_rejects(tmp_path: Path) -> None:
    schema = json.loads(resources.files("phonehome").joinpath("data/devices.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    typo = yaml.safe_load(REAL_PHONE.replace("serial:", "serail:"))
    secret_in_file = yaml.safe_load(REAL_PHONE + "    unlock: {method: pin, secret: '1234'}\n")
    for data in (typo, secret_in_file):
        assert list(validator.iter_errors(data)), data
        with pytest.raises(InputError):
            load_inventory(write(tmp_path, yaml.safe_dump(data)))


# --- values and defaults -------------------------------------------------------------------------------------


def test_a_minimal_real_phone_gets_builtin_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, REAL_PHONE)
    [entry] = load_inventory(path).devices
    assert entry.label == "lab1" and entry.serial == "2A031FDH2005LX" and entry.model == "Pixel 7"
    assert entry.line == 3 and entry.key == "devices[0]" and entry.source == str(path)
    assert entry.firmware is None and entry.unlock == UnlockSpec("none")
    assert dict(entry.settle_s) == dict(DEFAULT_SETTLE_S)
    assert entry.capture == CaptureSpec(source="interface", interface="auto")
    assert entry.identifiers.get("wifi_mac") == ("ac:37:43:4d:5e:6f",)
    assert entry.policy == Policy()


def test_defaults_are_deep_merged_and_the_device_wins(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        version: 1
        defaults:
          capture: {source: interface, interface: wlan0-ap, filter: "ether host {wifi_mac}"}
          settle_s: {power_on: 20, idle: 30}
          policy: {denied_hosts: ["*.tracker.example"]}
        devices:
          - label: lab1
            model: Pixel 7
            serial: S1
            backend: uiautomator2
            identifiers: {wifi_mac: "02:00:00:00:00:01"}
            settle_s: {idle: 5}
            capture: {interface: wlan1-ap}
          - label: lab2
            model: Pixel 8
            serial: 10.0.0.7:5555
            backend: uiautomator2
            identifiers: {wifi_mac: "02:00:00:00:00:02"}
            capture: {filter: null}
            policy: {denied_hosts: [], allowed_hosts: ["*.google.com", "10.0.0.1"]}
        """)
    lab1, lab2 = load_inventory(path).devices
    assert lab1.capture.interface == "wlan1-ap" and lab1.capture.filter == "ether host {wifi_mac}"
    assert lab1.settle("power_on") == 20 and lab1.settle("idle") == 5 and lab1.settle("unlock") == 3
    assert lab1.policy.denied_hosts == ("*.tracker.example",)
    assert lab2.capture.interface == "wlan0-ap" and lab2.capture.bpf(lab2.identifiers) is None
    assert lab2.policy.allowed_hosts == ("*.google.com", "10.0.0.1") and lab2.policy.denied_hosts == ()


def test_deep_merge_replaces_lists_and_keeps_base_untouched() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    merged = deep_merge(base, {"a": {"c": [3]}, "e": 2})
    assert merged == {"a": {"b": 1, "c": [3]}, "d": 1, "e": 2}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}


def test_select_by_label_and_model(tmp_path: Path) -> None:
    inventory = load_inventory(REPO / "devices.yaml")
    assert [e.label for e in inventory.select(labels=["clean-phone"])] == ["clean-phone"]
    assert [e.label for e in inventory.select(models=["nokia 7 plus"])] == [
        "nokia7plus-2019", "nokia7plus-fixed", "nokia7plus-tls"]
    assert [e.label for e in inventory.select(labels=["nokia*"], models=["*"])] == [
        "nokia7plus-2019", "nokia7plus-fixed", "nokia7plus-tls"]
    assert inventory.select() == inventory.devices
    with pytest.raises(InputError, match=r"no device labelled 'nokia7'.*use one of: nokia7plus-2019"):
        inventory.select(labels=["nokia7"])
    with pytest.raises(InputError, match="no device of model 'iphone'"):
        inventory.select(models=["iPhone"])
    assert inventory.get("adsdk-phone").serial == "VADSDK000003"


def test_bpf_template_fills_every_value() -> None:
    ids = parse_identifiers({"wifi_mac": ["02:00:00:00:00:01", "02-00-00-00-00-02"], "imei": "352099001761481"},
                            source="test")
    spec = CaptureSpec(source="interface", interface="auto", filter="ether host {wifi_mac}")
    assert spec.bpf(ids) == "(ether host 02:00:00:00:00:01) or (ether host 02:00:00:00:00:02)"
    spec = CaptureSpec(source="interface", filter="not port 22", origin_file="d.yaml", origin_where="line 4, f")
    assert spec.bpf(ids) == "not port 22"
    missing = CaptureSpec(source="interface", filter="ether host {bt_mac}", origin_file="d.yaml",
                          origin_where="line 4, defaults.capture.filter")
    with pytest.raises(InputError, match=r"^d\.yaml: line 4, defaults\.capture\.filter: filter uses \{bt_mac\}"):
        missing.bpf(ids)


@pytest.mark.parametrize(("policy", "host", "ip", "denied"), [
    (Policy(denied_hosts=("*.vnet-cn.example",)), "zzhc.vnet-cn.example", "198.18.0.5", True),
    (Policy(denied_hosts=("*.vnet-cn.example",)), "ZZHC.VNET-CN.EXAMPLE.", "198.18.0.5", True),
    (Policy(denied_hosts=("*.vnet-cn.example",)), "fota.hmd-update.example", "198.18.0.6", False),
    (Policy(denied_hosts=("*.vnet-cn.example",)), None, "198.18.0.5", False),
    (Policy(denied_hosts=("198.18.0.*",)), None, "198.18.0.5", True),
    (Policy(allowed_hosts=("*.google.com",)), "android.clients.google.com", "142.250.1.1", False),
    (Policy(allowed_hosts=("*.google.com",)), "tracker.example", "203.0.113.9", True),
    (Policy(allowed_hosts=("*.google.com",)), None, "203.0.113.9", True),
    (Policy(denied_hosts=("ads.google.com",), allowed_hosts=("*.google.com",)), "ads.google.com", "1.1.1.1", True),
    (Policy(), "anything.example", "192.0.2.1", False),
])
def test_policy(policy: Policy, host: str | None, ip: str, denied: bool) -> None:
    assert policy.is_denied(host, ip) is denied


# --- unlock secrets ------------------------------------------------------------------------------------------


def test_secret_comes_from_the_environment_and_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = UnlockSpec("pin", "PHONEHOME_PIN_TEST", device="lab1")
    monkeypatch.delenv("PHONEHOME_PIN_TEST", raising=False)
    with pytest.raises(InputError, match=r"^device lab1: environment variable PHONEHOME_PIN_TEST is not set"):
        spec.secret()
    monkeypatch.setenv("PHONEHOME_PIN_TEST", "84736251")
    assert spec.secret() == "84736251"
    monkeypatch.setenv("PHONEHOME_PIN_TEST", "84x36251")
    with pytest.raises(InputError) as info:
        spec.secret()
    assert "84x36251" not in str(info.value) and "PHONEHOME_PIN_TEST" in str(info.value)
    assert UnlockSpec("swipe").secret() is None and UnlockSpec("none").secret() is None
    monkeypatch.setenv("PHONEHOME_PW", "correct horse")
    assert UnlockSpec("password", "PHONEHOME_PW").secret() == "correct horse"


def test_the_secret_value_never_reaches_the_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHONEHOME_PIN_LAB1", "90817263")
    path = write(tmp_path, REAL_PHONE + "    unlock: {method: pin, secret_env: PHONEHOME_PIN_LAB1}\n")
    [entry] = load_inventory(path).devices
    assert "90817263" not in repr(entry) and "90817263" not in json.dumps(entry.info())
    assert entry.unlock.secret() == "90817263"


# --- every error names the file, the line, the field and the fix ---------------------------------------------


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    error = load_error(tmp_path, "version: 1\ndevices:\n  - label: [unclosed\n    model: x\n")
    assert re.match(rf"{re.escape(str(tmp_path))}/devices\.yaml: line \d+: YAML syntax error", str(error))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="inventory file not found"):
        load_inventory(tmp_path / "nope.yaml")


@pytest.mark.parametrize(("change", "line", "field", "problem"), [
    (("serial:", "serail:"), 5, "devices[0].serail", "unknown key 'serail'.*did you mean 'serial'"),
    (("backend: uiautomator2", "backend: adb"), 6, "devices[0].backend",
     "backend 'adb' is not one of virtual, uiautomator2"),
    (("label: lab1", "label: lab 1"), 3, "devices[0].label", "pytest ids"),
    (("model: Pixel 7", "model: ''"), 4, "devices[0].model", "model must be a non-empty string"),
    (('imei: "352099001761481"', 'imei: "35209900176148"'), 7, "devices[0].identifiers.imei",
     "IMEI must be 15 digits"),
    (('wifi_mac: "AC:37:43:4D:5E:6F"', 'wifi_mac: "AC:37:43"'), 7, "devices[0].identifiers.wifi_mac",
     "MAC address"),
    (("version: 1", "version: 2"), 1, "version", "unsupported version"),
])
def test_bad_field(tmp_path: Path, change: tuple[str, str], line: int, field: str, problem: str) -> None:
    path = tmp_path / "devices.yaml"
    error = load_error(tmp_path, REAL_PHONE.replace(*change))
    assert_points_at(error, path, line, field)
    assert re.search(problem, str(error)), str(error)


@pytest.mark.parametrize(("extra", "line", "field", "problem"), [
    ("    unlock: {method: pin}\n", 8, "devices[0].unlock", "needs secret_env.*PHONEHOME_PIN_LAB1"),
    ("    unlock: {method: face}\n", 8, "devices[0].unlock.method", "unlock method 'face' is not one of"),
    ("    unlock: {method: pin, secret: '1234'}\n", 8, "devices[0].unlock.secret", "unknown key 'secret'"),
    ("    unlock: {method: swipe, secret_env: PIN}\n", 8, "devices[0].unlock.secret_env", "uses no secret"),
    ("    unlock: {method: pin, secret_env: '1234 5'}\n", 8, "devices[0].unlock.secret_env",
     "environment variable name"),
    ("    firmware: nokia7plus-2019\n", 8, "devices[0].firmware", "only for virtual phones"),
    ("    read_identifiers: [imei, password]\n", 8, "devices[0].read_identifiers[1]",
     "'password' cannot be read"),
    ("    settle_s: {unlok: 3}\n", 8, "devices[0].settle_s.unlok", "did you mean 'unlock'"),
    ("    settle_s: {unlock: -1}\n", 8, "devices[0].settle_s.unlock", "number >= 0"),
    ("    settle_s: {stop_delay: 0.1}\n", 8, "devices[0].settle_s.stop_delay", "too short"),
    ("    boot_timeout_s: soon\n", 8, "devices[0].boot_timeout_s", "number >= 1"),
    ("    capture: {source: wifi}\n", 8, "devices[0].capture.source", "capture source 'wifi'"),
    ("    capture: {source: ssh, interface: wlan0}\n", 8, "devices[0].capture", "needs host"),
    ("    capture: {source: ssh, host: ap}\n", 8, "devices[0].capture.interface", "remote interface"),
    ("    capture: {source: file}\n", 8, "devices[0].capture", "needs file"),
    ("    capture: {source: file, file: missing.pcapng}\n", 8, "devices[0].capture.file", "not found"),
    ("    capture: {source: interface, command: [tcpdump]}\n", 8, "devices[0].capture.command",
     "only used by source adb-tcpdump"),
    ("    capture: {filter: 'ether host {bt_mac}'}\n", 8, "devices[0].capture.filter",
     r"uses \{bt_mac\} but this device has no bt_mac"),
    ("    capture: {filter: 'ether host {mac}'}\n", 8, "devices[0].capture.filter", r"unknown placeholder \{mac\}"),
    ("    capture: {filter: 'ether host {wifi_mac'}\n", 8, "devices[0].capture.filter", "not a valid template"),
    ("    policy: {denied_hosts: tracker.example}\n", 8, "devices[0].policy.denied_hosts", "must be a list"),
    ("    policy: {blocked: []}\n", 8, "devices[0].policy.blocked", "unknown key"),
    ("    serial: S2\n", 8, "devices[0].serial", "duplicate key 'serial'"),
])
def test_bad_device_field(tmp_path: Path, extra: str, line: int, field: str, problem: str) -> None:
    error = load_error(tmp_path, REAL_PHONE + extra)
    assert_points_at(error, tmp_path / "devices.yaml", line, field)
    assert re.search(problem, str(error)), str(error)


def test_a_filter_placeholder_may_be_read_from_the_phone(tmp_path: Path) -> None:
    path = write(tmp_path, REAL_PHONE + "    read_identifiers: [bt_mac]\n    capture: {filter: 'ether host {bt_mac}'}\n")
    [entry] = load_inventory(path).devices
    with pytest.raises(InputError, match=r"line 9, devices\[0\]\.capture\.filter: filter uses \{bt_mac\}"):
        entry.capture.bpf(entry.identifiers)
    read = entry.identifiers.merged(parse_identifiers({"bt_mac": "02:00:00:00:00:0b"}, source="phone"))
    assert entry.capture.bpf(read) == "ether host 02:00:00:00:00:0b"


def test_an_error_in_defaults_points_at_the_defaults(tmp_path: Path) -> None:
    text = "version: 1\ndefaults:\n  settle_s: {idle: forever}\n" + REAL_PHONE.removeprefix("version: 1\n")
    error = load_error(tmp_path, text)
    assert_points_at(error, tmp_path / "devices.yaml", 3, "defaults.settle_s.idle")
    text = "version: 1\ndefaults:\n  serial: X\n" + REAL_PHONE.removeprefix("version: 1\n")
    assert_points_at(load_error(tmp_path, text), tmp_path / "devices.yaml", 3, "defaults.serial")


def test_duplicate_labels_and_serials(tmp_path: Path) -> None:
    second = REAL_PHONE.removeprefix("version: 1\ndevices:\n")
    error = load_error(tmp_path, REAL_PHONE + second)
    assert_points_at(error, tmp_path / "devices.yaml", 8, "devices[1].label")
    assert "also used by devices[0] (line 3)" in str(error)
    error = load_error(tmp_path, REAL_PHONE + second.replace("lab1", "lab2"))
    assert_points_at(error, tmp_path / "devices.yaml", 10, "devices[1].serial")
    assert "2A031FDH2005LX" not in str(error) and "'2A**********LX'" in str(error)


def test_virtual_phone_firmware(tmp_path: Path) -> None:
    virtual = REAL_PHONE.replace("backend: uiautomator2", "backend: virtual")
    error = load_error(tmp_path, virtual)
    assert_points_at(error, tmp_path / "devices.yaml", 3, "devices[0]")
    assert "needs a firmware profile" in str(error)
    (tmp_path / "fixtures" / "firmware").mkdir(parents=True)
    (tmp_path / "fixtures" / "firmware" / "mine.yaml").write_text("profile: 1\n")
    error = load_error(tmp_path, virtual + "    firmware: theirs\n")
    assert_points_at(error, tmp_path / "devices.yaml", 8, "devices[0].firmware")
    assert "use one of: mine" in str(error)
    [entry] = load_inventory(write(tmp_path, virtual + "    firmware: mine\n    transport: tcp\n")).devices
    assert entry.firmware == (tmp_path / "fixtures" / "firmware" / "mine.yaml").resolve()
    assert entry.transport == "tcp"
    (tmp_path / "elsewhere.yaml").write_text("profile: 1\n")
    [entry] = load_inventory(write(tmp_path, virtual + "    firmware: elsewhere.yaml\n")).devices
    assert entry.firmware == (tmp_path / "elsewhere.yaml").resolve()


@pytest.mark.parametrize(("text", "problem"), [
    ("", "inventory is empty"),
    ("- a\n", "must be a mapping"),
    ("devices: []\n", "missing 'version'"),
    ("version: 1\ndevices: []\n", "'devices' must be a non-empty list"),
    ("version: 1\nphones: []\n", "unknown key 'phones'"),
    ("version: 1\ndevices:\n  - label: a\n", "device is missing 'model'"),
])
def test_bad_top_level(tmp_path: Path, text: str, problem: str) -> None:
    error = load_error(tmp_path, text)
    assert str(error).startswith(str(tmp_path / "devices.yaml")) and problem in str(error)
    assert error.fix


def test_file_source_resolves_relative_to_the_inventory(tmp_path: Path) -> None:
    (tmp_path / "caps").mkdir()
    (tmp_path / "caps" / "boot.pcapng").write_bytes(b"")
    (tmp_path / "caps" / "boot.json").write_text("[]")
    path = write(tmp_path, REAL_PHONE + "    capture: {source: file, file: caps/boot.pcapng, phases: caps/boot.json}\n")
    [entry] = load_inventory(path).devices
    assert entry.capture.file == (tmp_path / "caps" / "boot.pcapng").resolve()
    assert entry.capture.phases == (tmp_path / "caps" / "boot.json").resolve()


def test_other_sources_keep_what_they_need(tmp_path: Path) -> None:
    path = write(tmp_path, REAL_PHONE + textwrap.indent(textwrap.dedent("""\
        capture:
          source: adb-tcpdump
          filter: "not port 5555"
          buffer_mib: 32
        """), "    "))
    [entry] = load_inventory(path).devices
    assert entry.capture.interface == "wlan0" and entry.capture.buffer_mib == 32
    path = write(tmp_path, REAL_PHONE + "    capture: {source: pcapdroid, extras: {app_filter: com.example, "
                                        "root_capture: true, snaplen: 1500}}\n")
    [entry] = load_inventory(path).devices
    assert dict(entry.capture.extras) == {"app_filter": "com.example", "root_capture": "true", "snaplen": "1500"}
    path = write(tmp_path, REAL_PHONE + "    capture: {source: ssh, host: root@ap.lab, interface: wlan0}\n")
    [entry] = load_inventory(path).devices
    assert (entry.capture.host, entry.capture.interface) == ("root@ap.lab", "wlan0")


def test_identifiers_block_is_optional_and_info_is_masked(tmp_path: Path) -> None:
    path = write(tmp_path, REAL_PHONE.replace('    identifiers: {imei: "352099001761481", wifi_mac: "AC:37:43:4D:5E:6F"}\n',
                                              ""))
    inventory = load_inventory(path)
    assert isinstance(inventory, Inventory)
    [entry] = inventory.devices
    assert entry.identifiers == Identifiers(values=())
    entry = load_inventory(write(tmp_path, REAL_PHONE)).devices[0]
    info = entry.info()
    assert "352099001761481" not in json.dumps(info) and info["identifiers"] == ["imei", "wifi_mac"]
    assert info["serial"] == "2A**********LX", "a USB serial is the hardware serial: masked"
    assert entry.info(show_identifiers=True)["serial"] == "2A031FDH2005LX"
    tcp = load_inventory(write(tmp_path, REAL_PHONE.replace("2A031FDH2005LX", "10.0.0.7:5555"))).devices[0]
    assert tcp.info()["serial"] == "10.0.0.7:5555"


def test_the_example_in_docs_devices_md_is_valid(tmp_path: Path) -> None:
    """The format doc's example must stay a working inventory."""
    doc = (REPO / "docs" / "devices.md").read_text(encoding="utf-8")
    layout = doc.split("## Layout", 1)[1]
    example = re.search(r"```yaml\n(.*?)```", layout, re.DOTALL)
    assert example is not None
    (tmp_path / "fixtures").symlink_to(REPO / "fixtures")
    [entry] = load_inventory(write(tmp_path, example.group(1))).devices
    assert entry.label == "nokia7plus-2019" and entry.unlock.secret_env == "PHONEHOME_PIN_NOKIA7PLUS_2019"
    assert entry.capture.bpf(entry.identifiers) == "ether host 02:1a:11:f0:00:01"
    assert entry.policy.is_denied("edge.ctlcdn.example", "198.18.0.9")


def test_the_bench_example_in_the_readme_is_valid(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    guide = readme.split("## Testing real phones", 1)[1]
    example = re.search(r"```yaml\n(.*?)```", guide, re.DOTALL)
    assert example is not None
    [entry] = load_inventory(write(tmp_path, example.group(1))).devices
    assert entry.backend == "uiautomator2" and entry.capture.interface == "wlan0-ap"
    assert entry.capture.bpf(entry.identifiers) == "ether host ac:37:43:4d:5e:6f"


_labels = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_serials = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9:._-]{3,20}", fullmatch=True)
_seconds = st.one_of(st.integers(0, 600), st.floats(0, 600, allow_nan=False).map(lambda x: round(x, 3)))
_patterns = st.lists(st.from_regex(r"[a-z0-9*.?-]{1,30}", fullmatch=True), max_size=3)


@st.composite
def _devices(draw: st.DrawFn) -> list[dict[str, object]]:
    labels = draw(st.lists(_labels, min_size=1, max_size=4, unique=True))
    serials = draw(st.lists(_serials, min_size=len(labels), max_size=len(labels), unique=True))
    devices: list[dict[str, object]] = []
    for label, serial in zip(labels, serials, strict=True):
        method = draw(st.sampled_from(["none", "swipe", "pin", "password"]))
        unlock: dict[str, object] = {"method": method}
        if method in ("pin", "password"):
            unlock["secret_env"] = "PHONEHOME_" + re.sub(r"[^A-Za-z0-9]", "_", label).upper()
        devices.append({
            "label": label, "model": draw(st.sampled_from(["Pixel 7", "Nokia 7 Plus", "SM-G991B"])),
            "serial": serial, "backend": "uiautomator2", "unlock": unlock,
            "settle_s": {"idle": draw(_seconds), "unlock": draw(_seconds),
                         "stop_delay": draw(st.floats(0.5, 10, allow_nan=False).map(lambda x: round(x, 3)))},
            "boot_timeout_s": draw(st.integers(1, 900)),
            "policy": {"denied_hosts": draw(_patterns), "allowed_hosts": draw(_patterns)},
        })
    return devices


@settings(max_examples=40, deadline=None)
@given(devices=_devices())
def test_what_is_written_is_what_is_loaded(devices: list[dict[str, object]]) -> None:
    """Round trip: any valid inventory, dumped by a YAML library, loads back to the same values."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "devices.yaml"
        path.write_text(yaml.safe_dump({"version": 1, "devices": devices}, sort_keys=False), encoding="utf-8")
        loaded = load_inventory(path).devices
    assert [entry.label for entry in loaded] == [device["label"] for device in devices]
    for entry, device in zip(loaded, devices, strict=True):
        assert (entry.serial, entry.model) == (device["serial"], device["model"])
        assert entry.unlock == UnlockSpec(**device["unlock"])  # type: ignore[arg-type]
        settle = device["settle_s"]
        assert isinstance(settle, dict)
        for key, value in settle.items():
            assert entry.settle(key) == pytest.approx(float(value))
        assert entry.boot_timeout_s == device["boot_timeout_s"]
        policy = device["policy"]
        assert isinstance(policy, dict)
        assert entry.policy == Policy(tuple(policy["denied_hosts"]), tuple(policy["allowed_hosts"]))
