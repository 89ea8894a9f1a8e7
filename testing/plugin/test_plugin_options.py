"""The plugin's options: one group, ini keys and env vars, resolution order, validation, markers, header."""

from __future__ import annotations

from pathlib import Path

import pytest

from phonehome.plugin import OPTIONS, resolve_settings
from phonehome.runstate import SETTINGS_KEY, Settings

pytestmark = pytest.mark.timeout(60)

ENV_VARS = [option.env for option in OPTIONS] + ["PHONEHOME_LAB"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own PHONEHOME_* variables must not leak into these tests."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


def settings_of(pytester: pytest.Pytester, *args: str) -> Settings:
    config = pytester.parseconfigure(*args)
    return config.stash[SETTINGS_KEY]


def test_help_shows_every_option_with_its_env_var_and_ini_key(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    out = result.stdout.str()
    assert "phonehome: catch phones phoning home" in out
    for option in OPTIONS:
        assert option.flag in out
        assert option.env in out
        assert option.ini in out
    assert "PHONEHOME_LAB" in out


def test_defaults_without_any_configuration(pytester: pytest.Pytester) -> None:
    settings = settings_of(pytester)
    assert settings.inventory == pytester.path / "devices.yaml"
    assert settings.capture_dir == pytester.path / "results" / "captures"
    assert settings.keep_pcaps == "failed"
    assert settings.devices == ()
    assert settings.models == ()
    assert settings.show_identifiers is False
    assert settings.lab is False
    assert settings.inventory_given is False


def test_command_line_beats_env_beats_ini_beats_default(pytester: pytest.Pytester,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeini("[pytest]\nphonehome_keep_pcaps = none\nphonehome_show_identifiers = true\n")
    assert settings_of(pytester).keep_pcaps == "none"
    assert settings_of(pytester).show_identifiers is True
    monkeypatch.setenv("PHONEHOME_KEEP_PCAPS", "all")
    monkeypatch.setenv("PHONEHOME_SHOW_IDENTIFIERS", "no")
    assert settings_of(pytester).keep_pcaps == "all"
    assert settings_of(pytester).show_identifiers is False
    settings = settings_of(pytester, "--phonehome-keep-pcaps=failed", "--phonehome-show-identifiers")
    assert settings.keep_pcaps == "failed"
    assert settings.show_identifiers is True


def test_lists_repeat_on_the_command_line_and_split_on_commas_in_env(pytester: pytest.Pytester,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeini("[pytest]\nphonehome_model =\n    Nokia 7 Plus\n    Pixel 7\n")
    assert settings_of(pytester).models == ("Nokia 7 Plus", "Pixel 7")
    monkeypatch.setenv("PHONEHOME_DEVICE", "nokia, pixel ,")
    assert settings_of(pytester).devices == ("nokia", "pixel")
    settings = settings_of(pytester, "--phonehome-device", "a", "--phonehome-device", "b,c")
    assert settings.devices == ("a", "b", "c")


def test_relative_paths_resolve_against_where_they_were_given(pytester: pytest.Pytester,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeini("[pytest]\nphonehome_capture_dir = caps\n")
    sub = pytester.mkdir("sub")
    assert settings_of(pytester).capture_dir == pytester.path / "caps"
    monkeypatch.chdir(sub)
    # the ini value stays relative to the ini file, the command line is relative to the invocation directory
    config = pytester.parseconfigure(str(pytester.path), "--rootdir", str(pytester.path))
    assert config.stash[SETTINGS_KEY].capture_dir == pytester.path / "caps"
    config = pytester.parseconfigure(str(pytester.path), "--rootdir", str(pytester.path),
                                     "--phonehome-capture-dir", "here")
    assert config.stash[SETTINGS_KEY].capture_dir == Path(sub) / "here"


@pytest.mark.parametrize(("args", "env", "expected"), [
    (["--phonehome-keep-pcaps=some"], {}, "'some' is not a valid value for --phonehome-keep-pcaps; "
                                          "choose one of: all, failed, none"),
    ([], {"PHONEHOME_KEEP_PCAPS": "everything"}, "PHONEHOME_KEEP_PCAPS: 'everything' is not a valid value"),
    ([], {"PHONEHOME_SHOW_IDENTIFIERS": "maybe"}, "PHONEHOME_SHOW_IDENTIFIERS: 'maybe' is not a boolean"),
    (["--phonehome-inventory", "nowhere.yaml"], {}, "nowhere.yaml: device inventory not found"),
])
def test_bad_values_are_one_usage_error_line(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                            args: list[str], env: dict[str, str], expected: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    pytester.makepyfile("def test_nothing():\n    assert True\n")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: *{expected}*"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_bad_ini_value_names_the_ini_file(pytester: pytest.Pytester) -> None:
    ini = pytester.makeini("[pytest]\nphonehome_keep_pcaps = sometimes\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: ini phonehome_keep_pcaps in {ini}: 'sometimes' is not a valid value*"])


def test_markers_are_registered_with_their_signatures(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines([
        "@pytest.mark.phonehome_device(*labels): Run this test only on the devices with these inventory labels.",
        "@pytest.mark.phonehome_model(*models): Run this test only on devices of these models*",
    ])


def test_without_an_inventory_the_plugin_stays_out_of_the_way(pytester: pytest.Pytester) -> None:
    """Projects that install phonehome but run unrelated tests see no header, no lab, no error."""
    pytester.makepyfile("def test_plain():\n    assert 1 + 1 == 2\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    assert "phonehome:" not in result.stdout.str()


def test_an_inventory_given_as_a_test_path_is_named(pytester: pytest.Pytester) -> None:
    """``--phonehome-inventory`` written without '=' in front of a bench.yaml lets pytest take the file as a test
    path: the run says so, with the spelling that works."""
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    (pytester.path / "bench.yaml").write_text("devices: []\n")
    result = pytester.runpytest("bench.yaml", "test_plain.py", "-W", "default")
    result.stdout.fnmatch_lines(["*phonehome: bench.yaml was given as a test path (rootdir *); an inventory is "
                                 "passed as --phonehome-inventory=bench.yaml (with '=')*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # pytest's own "not found: bench.yaml" follows


def test_phone_tests_without_an_inventory_say_what_to_do(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_needs_phone(phone):\n    assert phone.label\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*devices.yaml: device inventory not found (create devices.yaml or pass "
                                 "--phonehome-inventory PATH)*"])
    assert "Traceback" not in result.stdout.str()


def test_resolve_settings_reads_the_given_environment(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfigure()
    settings = resolve_settings(config, {"PHONEHOME_DEVICE": "x", "PHONEHOME_LAB": "1"})
    assert settings.devices == ("x",)
    assert settings.lab is True


# --- with an inventory ---------------------------------------------------------------------------------------

FIRMWARE_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "firmware"


def write_inventory(pytester: pytest.Pytester, devices: list[tuple[str, str]]) -> Path:
    """A devices.yaml of virtual phones: (label, model) pairs."""
    lines = ["version: 1", "devices:"]
    for index, (label, model) in enumerate(devices, start=1):
        lines += [f"  - label: {label}", f"    model: {model}", f"    serial: VTEST{index:07d}",
                  "    backend: virtual", f"    firmware: {FIRMWARE_DIR / 'clean.yaml'}",
                  f"    identifiers: {{serial: VTEST{index:07d}, wifi_mac: '02:1a:11:f0:99:{index:02x}'}}"]
    return pytester.makefile(".yaml", devices="\n".join(lines) + "\n")


PHONE_TEST = """
import pytest

def test_on_every_phone(phone):
    pass

@pytest.mark.phonehome_device("beta")
def test_only_beta(phone):
    pass

@pytest.mark.phonehome_model("Model A")
def test_only_model_a(phone):
    pass

def test_without_phone():
    pass
"""


def test_collect_only_lists_one_test_per_device_with_labels_as_ids(pytester: pytest.Pytester) -> None:
    """Collecting needs no adb, no lab and no phone."""
    write_inventory(pytester, [("alpha", "Model A"), ("beta", "Model B")])
    pytester.makepyfile(test_phones=PHONE_TEST)
    result = pytester.runpytest("--collect-only", "-q")
    lines = result.stdout.lines
    collected = [line for line in lines if line.startswith("test_phones.py::")]
    assert sorted(collected) == [
        "test_phones.py::test_on_every_phone[alpha]",
        "test_phones.py::test_on_every_phone[beta]",
        "test_phones.py::test_only_beta[beta]",
        "test_phones.py::test_only_model_a[alpha]",
        "test_phones.py::test_without_phone",
    ]
    result.stdout.fnmatch_lines(["5 tests collected*"])


def test_device_and_model_options_select_devices(pytester: pytest.Pytester) -> None:
    write_inventory(pytester, [("alpha", "Model A"), ("beta", "Model B"), ("gamma", "Model A")])
    pytester.makepyfile(test_phones="def test_x(phone):\n    pass\n")
    result = pytester.runpytest("--collect-only", "-q", "--phonehome-model", "model a")
    result.stdout.fnmatch_lines(["*test_x[[]alpha[]]", "*test_x[[]gamma[]]", "2 tests collected*"])
    result = pytester.runpytest("--collect-only", "-q", "--phonehome-device", "gamma")
    result.stdout.fnmatch_lines(["*test_x[[]gamma[]]", "1 test collected*"])


def test_marker_matching_no_selected_device_skips_with_a_reason(pytester: pytest.Pytester) -> None:
    write_inventory(pytester, [("alpha", "Model A"), ("beta", "Model B")])
    pytester.makepyfile(test_phones=PHONE_TEST)
    result = pytester.runpytest("-rs", "--phonehome-device", "alpha", "-k", "only_beta")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no selected device matches this test's phonehome_device/phonehome_model*"])


def test_unknown_label_is_a_usage_error_listing_the_labels(pytester: pytest.Pytester) -> None:
    write_inventory(pytester, [("alpha", "Model A"), ("beta", "Model B")])
    result = pytester.runpytest("--phonehome-device", "gamma")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *devices.yaml: no device labelled 'gamma' (use one of: alpha, beta)"])


def test_a_broken_inventory_is_one_line(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", devices="version: 1\ndevices:\n  - label: x\n    model: M\n    serial: S1\n"
                                       "    backend: telepathy\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *devices.yaml: line 6*backend*telepathy*"])
    assert "Traceback" not in result.stderr.str()


@pytest.mark.parametrize(("marker", "problem"), [
    ('phonehome_device(labels=["alpha"])', "*phonehome_device(*labels): got an unexpected keyword argument*"),
    ("phonehome_model()", "*phonehome_model needs one or more non-empty strings, got ()*"),
    ("phonehome_device(7)", "*phonehome_device needs one or more non-empty strings, got (7,)*"),
])
def test_misused_markers_fail_collection_with_their_signature(pytester: pytest.Pytester, marker: str,
                                                              problem: str) -> None:
    write_inventory(pytester, [("alpha", "Model A")])
    pytester.makepyfile(test_bad=f"import pytest\n\n@pytest.mark.{marker}\ndef test_x(phone):\n    pass\n")
    result = pytester.runpytest("--collect-only")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([problem])


def test_report_header_shows_inventory_devices_and_tools(pytester: pytest.Pytester) -> None:
    inventory = write_inventory(pytester, [("alpha", "Model A"), ("beta", "Model B")])
    result = pytester.runpytest("--collect-only", "--phonehome-device", "beta")
    result.stdout.fnmatch_lines([
        f"phonehome: inventory {inventory} (2 devices)",
        "phonehome: devices beta (Model B, virtual, capture interface auto)",
        "phonehome: captures in *results/captures, keep failed; identifiers masked",
        "phonehome: tools *umpcap*, Android Debug Bridge*, uiautomator2 3.7.1, adbutils 2.12.0",
    ])


def test_xdist_modes_that_could_share_a_phone_are_refused(pytester: pytest.Pytester) -> None:
    write_inventory(pytester, [("alpha", "Model A")])
    result = pytester.runpytest("-n", "2", "--dist", "loadfile", "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: phonehome: --dist loadfile could give one phone to two workers*"])
