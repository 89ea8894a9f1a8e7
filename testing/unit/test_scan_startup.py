"""``phonehome scan``'s start-up: what a warm run restores from the cache instead of making (the matcher with its
XOR finder, the identifiers of a file read before), and what it must not import at all.

The import guard runs the command in a fresh interpreter: a module-level import added anywhere on the scan path
(hpack, yaml, a subcommand's package, a heavy dependency of the pytest side) shows up in its ``sys.modules``."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from phonehome.errors import InputError
from phonehome.identifiers import Identifiers, load_identifiers, parse_identifiers
from phonehome.scan import prepared
from phonehome.scan.matcher import CACHE_DIR_ENV, DatabaseCache, Matcher, hyperscan_available
from phonehome.scan.obfuscation import xor_bytes, xor_finder
from phonehome.testing.captures import CaptureBuilder, http_request

IMEI = "356938035643809"
SERIAL = "R58M12ABCDE"
IDS = parse_identifiers({"imei": IMEI, "serial": SERIAL, "location": {"lat": 52.5163, "lon": 13.3777}},
                        source="test")
SAMPLE = (b"GET /a?imei=" + IMEI.encode() + b"&sn=" + SERIAL.lower().encode() + b"&ll=52.51634,13.37771 HTTP/1.1\r\n"
          + xor_bytes(b"##" + IMEI.encode(), b"\x5a\xa5"))
ENGINES = ["python", pytest.param("hyperscan", marks=pytest.mark.skipif(not hyperscan_available(),
                                                                        reason="no hyperscan wheel"))]
CLI_TIMEOUT_S = 120
#: never imported by `phonehome scan` of a capture without HTTP/2, nor by any warm run (yaml)
NOT_IMPORTED = ("yaml", "hpack", "brotli", "allure", "pytest", "uiautomator2", "adbutils", "pyshark",
                "phonehome.scan.attribution", "phonehome.scan.evidence", "phonehome.virtual", "phonehome.manifest",
                "phonehome.check", "phonehome.plugin")
_RUN = """\
import json, sys
from phonehome.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "cache"
    monkeypatch.setenv(CACHE_DIR_ENV, str(directory))
    return directory


def _found(m: Matcher) -> list[tuple[str, str, int, int]]:
    return [(x.needle.identifier, x.needle.encoding, x.start, x.end) for x in m.find(SAMPLE)]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_restored_matcher_finds_the_same_with_its_xor_finder(cache_dir: Path, engine: str) -> None:
    built = prepared.prepared_matcher(IDS, engine)
    (entry,) = cache_dir.glob("*.scan")
    restored = prepared.prepared_matcher(IDS, engine)
    assert restored is not built
    assert restored.engine == engine
    assert restored.cache_hit is (True if engine == "hyperscan" else None)
    assert _found(restored) == _found(built) == [("imei", "plain", 12, 27), ("serial", "plain", 31, 42),
                                                 ("location", "plain", 46, 63)]
    assert xor_finder(restored) is not xor_finder(built)  # the finder restored with it, not a new one
    assert xor_finder(restored).keys(SAMPLE[-17:]) == xor_finder(built).keys(SAMPLE[-17:]) == [b"\x5a\xa5"]
    one_byte = xor_bytes(b"imei=" + IMEI.encode(), b"\x33")
    assert xor_finder(restored).keys(one_byte) == xor_finder(built).keys(one_byte) == [b"\x33"]
    assert [p.name for p in cache_dir.glob("*.scan")] == [entry.name]


def test_entries_do_not_reveal_identifiers(cache_dir: Path, tmp_path: Path) -> None:
    ids_file = tmp_path / "ids.yaml"
    ids_file.write_text(f'imei: "{IMEI}"\nserial: {SERIAL}\n')
    prepared.prepared_matcher(prepared.cached_identifiers(ids_file), "python")
    entries = [*cache_dir.glob("*.scan"), *cache_dir.glob("*.ids")]
    assert len(entries) == 2
    for entry in entries:
        blob = entry.read_bytes()
        for secret in (IMEI.encode(), IMEI[:14].encode(), SERIAL.encode(), SERIAL.lower().encode()):
            assert secret not in blob


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_a_damaged_entry_is_rebuilt(cache_dir: Path, damage: str) -> None:
    expected = _found(prepared.prepared_matcher(IDS, "python"))
    (entry,) = cache_dir.glob("*.scan")
    blob = entry.read_bytes()
    if damage == "flip":
        entry.write_bytes(blob[:40] + bytes([blob[40] ^ 1]) + blob[41:])
    elif damage == "truncate":
        entry.write_bytes(blob[: len(blob) // 2])
    else:
        entry.write_bytes(b"")
    assert _found(prepared.prepared_matcher(IDS, "python")) == expected
    cache = DatabaseCache.default()
    material = prepared._material(IDS, "python")
    assert cache is not None and material is not None
    assert prepared._restore(cache, material) is not None  # rewritten whole


def test_changed_code_or_identifiers_are_a_miss(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prepared.prepared_matcher(IDS, "python")
    prepared.prepared_matcher(parse_identifiers({"imei": "490154203237518"}, source="test"), "python")
    assert len(list(cache_dir.glob("*.scan"))) == 2
    # another module's source in the key stands for an edit of the code that makes needles: a new entry
    importlib.import_module("phonehome.cli")
    monkeypatch.setattr(prepared, "SOURCE_MODULES", (*prepared.SOURCE_MODULES, "phonehome.cli"))
    prepared.prepared_matcher(IDS, "python")
    assert len(list(cache_dir.glob("*.scan"))) == 3


def _phonehome_uses(name: str) -> set[str]:
    """The phonehome modules whose functions, classes or constants module ``name`` holds."""
    used = set()
    for value in vars(sys.modules[name]).values():
        origin = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
        if isinstance(origin, str) and origin.startswith("phonehome.") and origin != name:
            used.add(origin)
    return used


def test_the_cache_keys_cover_every_module_the_cached_objects_come_from() -> None:
    """An edit of any phonehome module that makes needles (or parses identifiers) changes the key: never a
    stale entry."""
    for name in prepared.SOURCE_MODULES:
        if name in sys.modules:  # an optional extension that is not built holds nothing
            assert _phonehome_uses(name) <= set(prepared.SOURCE_MODULES), name
    assert _phonehome_uses("phonehome.identifiers") <= set(prepared.IDENTIFIERS_SOURCE_MODULES)
    assert "phonehome.identifiers" in prepared.IDENTIFIERS_SOURCE_MODULES


def test_identifiers_from_the_cache_are_the_files(cache_dir: Path, tmp_path: Path) -> None:
    ids_file = tmp_path / "ids.yaml"
    ids_file.write_bytes(b'imei: "356938035643809"\r\nlocation: {lat: 52.5163, lon: 13.3777}\r\ncustom:\r\n'
                         b'  token: "abcd\r\n    efgh"\r\n')  # CRLF, also inside a folded string
    first = prepared.cached_identifiers(ids_file)
    assert len(list(cache_dir.glob("*.ids"))) == 1
    second = prepared.cached_identifiers(ids_file)
    assert isinstance(second, Identifiers)
    assert second == first == load_identifiers(ids_file)
    assert second.get("token") == ("abcd efgh",)
    ids_file.write_text('imei: "490154203237518"\n')
    assert prepared.cached_identifiers(ids_file).get("imei") == ("490154203237518",)
    assert len(list(cache_dir.glob("*.ids"))) == 2


def test_a_file_that_does_not_load_is_never_cached(cache_dir: Path, tmp_path: Path) -> None:
    ids_file = tmp_path / "ids.yaml"
    ids_file.write_text("imei: [unclosed\n")
    for _ in range(2):
        with pytest.raises(InputError, match="YAML syntax error"):
            prepared.cached_identifiers(ids_file)
    with pytest.raises(InputError, match="identifiers file not found"):
        prepared.cached_identifiers(tmp_path / "absent.yaml")
    assert list(cache_dir.glob("*.ids")) == []


def _scan(capture: Path, ids_file: Path, out: Path, cache: Path) -> tuple[int, list[str]]:
    env = {**os.environ, CACHE_DIR_ENV: str(cache), "PYTHONPATH": str(Path(prepared.__file__).parents[2])}
    proc = subprocess.run([sys.executable, "-c", _RUN, "scan", str(capture), "-i", str(ids_file), "--json", str(out)],
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["code"], result["modules"]


def test_scan_imports_nothing_it_does_not_use(tmp_path: Path) -> None:
    """Cold (empty cache) and warm: same findings; neither imports what a cleartext HTTP/1.1 capture does not
    need; the warm run does not even import yaml."""
    cap = CaptureBuilder()
    cap.tcp("10.0.0.2", "93.184.216.34", 80).send(http_request("GET", f"/?imei={IMEI}", host="leak.example"))
    capture = cap.write_pcap(tmp_path / "leaky.pcap")
    ids_file = tmp_path / "ids.yaml"
    ids_file.write_text(f'imei: "{IMEI}"\n')
    outputs = []
    for run in ("cold", "warm"):
        out = tmp_path / f"{run}.json"
        code, modules = _scan(capture, ids_file, out, tmp_path / "cache")
        assert code == 1
        forbidden = [name for name in NOT_IMPORTED if not (run == "cold" and name == "yaml")]
        assert [m for m in modules if any(m == name or m.startswith(name + ".") for name in forbidden)] == [], run
        document = json.loads(out.read_text())
        document["capture"].pop("scan_seconds")
        outputs.append(document)
    assert outputs[0] == outputs[1]
    assert [f["identifier"] for f in outputs[1]["findings"]] == ["imei"]


def test_an_optional_extension_not_built_is_part_of_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the C extension the cache still works (a key of its own), it is not switched off."""
    digest = prepared._source_digest(prepared.SOURCE_MODULES)
    assert digest is not None
    if "phonehome.scan._runs" in sys.modules:  # built: without it, another key
        monkeypatch.delitem(sys.modules, "phonehome.scan._runs")
        absent = prepared._source_digest(prepared.SOURCE_MODULES)
        assert absent is not None and absent != digest
