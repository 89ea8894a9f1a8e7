"""The plugin's options: one group, ini keys and env vars, resolution order, validation, markers, header."""

from __future__ import annotations

from pathlib import Path

import pytest

from phonehome.plugin import OPTIONS, SETTINGS_KEY, Settings, resolve_settings

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
