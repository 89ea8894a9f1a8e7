"""devices.yaml ``tls_keys:`` and ``policy.identifier_hosts`` (issue 11): loading, validation, the key-log source."""

from __future__ import annotations

import json
import os
import stat
import textwrap
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

from phonehome.capture.keylogs import KeylogSource, keylog_path
from phonehome.errors import InputError
from phonehome.inventory import Policy, TlsKeysSpec, load_inventory

HEAD = """\
version: 1
devices:
  - label: lab1
    model: Pixel 7
    serial: 2A031FDH2005LX
    backend: uiautomator2
    identifiers: {imei: "352099001761481"}
"""


def _load(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "devices.yaml"
    path.write_text(HEAD + textwrap.indent(textwrap.dedent(extra), "    "), encoding="utf-8")
    return path


def _schema_ok(path: Path) -> bool:
    schema = json.loads(resources.files("phonehome").joinpath("data/devices.schema.json").read_text())
    return bool(jsonschema.Draft202012Validator(schema).is_valid(yaml.safe_load(path.read_text())))


def test_tls_keys_sources_load(tmp_path: Path) -> None:
    path = _load(tmp_path, """\
        tls_keys: {source: file, path: keys/lab1.log, require: true}
        policy: {identifier_hosts: ["*.hmd-services.example", "203.0.113.*"]}
    """)
    (entry,) = load_inventory(path).devices
    assert entry.tls_keys == TlsKeysSpec("file", str((tmp_path / "keys/lab1.log").resolve()), True)
    assert entry.policy.identifier_hosts == ("*.hmd-services.example", "203.0.113.*")
    assert entry.info()["tls_keys"] == {"source": "file", "path": entry.tls_keys.path, "require": True}
    assert _schema_ok(path)
    path = _load(tmp_path, "tls_keys: {source: adb-pull, path: /data/local/tmp/keys.log}\n")
    assert load_inventory(path).devices[0].tls_keys == TlsKeysSpec("adb-pull", "/data/local/tmp/keys.log", False)
    path = _load(tmp_path, "tls_keys: {require: true}\n")  # keys only from the capture's own secrets blocks
    assert load_inventory(path).devices[0].tls_keys == TlsKeysSpec(None, None, True)
    assert _schema_ok(path)


@pytest.mark.parametrize(("extra", "field", "problem", "schema_rejects"), [
    ("tls_keys: {source: ecapture, path: /x}\n", "devices[0].tls_keys.source", "is not one of file, adb-pull", True),
    ("tls_keys: {source: adb-pull}\n", "devices[0].tls_keys", "tls_keys source adb-pull needs path", True),
    ("tls_keys: {path: /x}\n", "devices[0].tls_keys.path", "tls_keys path needs a source", True),
    ("tls_keys: {source: pcapdroid, path: sdcard/keys.log}\n", "devices[0].tls_keys.path", "must be absolute",
     False),
    ("tls_keys: {require: yes please}\n", "devices[0].tls_keys.require", "require must be true or false", True),
    ("tls_keys: {source: file, path: k.log, keep: true}\n", "devices[0].tls_keys.keep", "unknown key 'keep'", True),
    ("policy: {identifier_hosts: [\"\"]}\n", "devices[0].policy.identifier_hosts[0]", "non-empty string", True),
])
def test_tls_keys_errors_name_the_field(tmp_path: Path, extra: str, field: str, problem: str,
                                        schema_rejects: bool) -> None:
    path = _load(tmp_path, extra)
    with pytest.raises(InputError) as info:
        load_inventory(path)
    message = str(info.value)
    assert message.startswith(f"{path}: line "), message
    assert f", {field}: " in message and problem in message and info.value.fix, message
    assert _schema_ok(path) is not schema_rejects  # editors flag the same mistakes, where a schema can


@pytest.mark.parametrize(("policy", "host", "ip", "allowed"), [
    (Policy(), "anything.example", "192.0.2.1", True),
    (Policy(identifier_hosts=("*.hmd-services.example",)), "fota.hmd-services.example", "192.0.2.1", True),
    (Policy(identifier_hosts=("*.hmd-services.example",)), "zzhc.vnet-cn.example", "192.0.2.1", False),
    (Policy(identifier_hosts=("*.hmd-services.example",)), None, "192.0.2.1", False),
    (Policy(identifier_hosts=("192.0.2.*",)), None, "192.0.2.1", True),
    (Policy(identifier_hosts=("*.EXAMPLE",)), "Push.Example.", "198.51.100.1", True),
])
def test_identifier_hosts(policy: Policy, host: str | None, ip: str, allowed: bool) -> None:
    assert policy.may_receive_identifiers(host, ip) is allowed


def test_file_source_is_copied_0600_beside_the_capture_and_never_deleted(tmp_path: Path) -> None:
    """The copy lets a kept capture be decrypted after the lab (and its key log) is gone; it goes with the capture,
    the lab's own file stays."""
    keys = tmp_path / "server.keys.log"
    pcap = tmp_path / "lab1-test.pcapng"
    source = KeylogSource(TlsKeysSpec("file", str(keys)), pcap, serial="X")
    assert source.fetch() == []  # not written yet (no TLS yet): no keys, no error
    keys.write_text("CLIENT_RANDOM " + "ab" * 32 + " " + "cd" * 48 + "\n")
    keys.chmod(0o644)
    old_umask = os.umask(0)
    try:
        (copy,) = source.fetch()
    finally:
        os.umask(old_umask)
    assert copy == keylog_path(pcap) and copy.read_text() == keys.read_text()
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    source.delete()
    assert not copy.exists() and keys.exists()
