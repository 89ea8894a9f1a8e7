"""The on-disk cache of compiled hyperscan databases: a hit skips the compile, anything wrong with an entry is a
miss that is rebuilt, and no entry reveals the identifiers it was built from."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from phonehome.identifiers import Identifiers, parse_identifiers
from phonehome.scan import matcher as matcher_module
from phonehome.scan.forms import build_needles
from phonehome.scan.matcher import CACHE_DIR_ENV, DatabaseCache, Matcher, hyperscan_available

pytestmark = pytest.mark.skipif(not hyperscan_available(), reason="no hyperscan wheel: nothing to cache")

IMEI = "352099001761481"
SERIAL = "R58M12ABCDE"
DEVICE = parse_identifiers({"imei": IMEI, "serial": SERIAL, "location": {"lat": 52.5163, "lon": 13.3777}},
                           source="test")
OTHER = parse_identifiers({"imei": "490154203237518"}, source="test")
SAMPLE = b"GET /a?imei=" + IMEI.encode() + b"&sn=" + SERIAL.lower().encode() + b" HTTP/1.1\r\n"


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "cache"
    monkeypatch.setenv(CACHE_DIR_ENV, str(directory))
    return directory


def _matcher(ids: Identifiers = DEVICE) -> Matcher:
    return Matcher(build_needles(ids), engine="hyperscan")


def _found(m: Matcher) -> list[tuple[str, str, int, int]]:
    return [(x.needle.identifier, x.needle.encoding, x.start, x.end) for x in m.find(SAMPLE)]


def _entries(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.hsdb"))


def test_miss_writes_a_private_entry_then_hit_finds_the_same(cache_dir: Path) -> None:
    first = _matcher()
    assert first.cache_hit is False
    (entry,) = _entries(cache_dir)
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    second = _matcher()
    assert second.cache_hit is True
    assert _found(second) == _found(first)
    assert ("imei", "plain", 12, 27) in _found(second)


def test_entry_does_not_reveal_identifiers(cache_dir: Path) -> None:
    """A compiled database holds its literals in the clear; the cache entry must not."""
    import hyperscan

    m = _matcher()
    serialized = hyperscan.dumpb(m._scan.__self__._db)  # type: ignore[attr-defined]
    assert IMEI.encode() in serialized  # why the entry is encrypted
    blob = _entries(cache_dir)[0].read_bytes()
    for secret in (IMEI.encode(), IMEI[:14].encode(), SERIAL.encode(), SERIAL.lower().encode()):
        assert secret not in blob


def test_other_identifiers_miss(cache_dir: Path) -> None:
    _matcher()
    assert _matcher(OTHER).cache_hit is False
    assert len(_entries(cache_dir)) == 2


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "garbage"])
def test_corrupt_entry_is_rebuilt(cache_dir: Path, damage: str) -> None:
    expected = _found(_matcher())
    (entry,) = _entries(cache_dir)
    blob = entry.read_bytes()
    if damage == "flip":
        middle = len(blob) // 2
        entry.write_bytes(blob[:middle] + bytes([blob[middle] ^ 0xFF]) + blob[middle + 1:])
    elif damage == "truncate":
        entry.write_bytes(blob[: len(blob) // 3])
    elif damage == "empty":
        entry.write_bytes(b"")
    else:
        entry.write_bytes(b"\x00" * 5000)
    rebuilt = _matcher()
    assert rebuilt.cache_hit is False
    assert _found(rebuilt) == expected
    assert _matcher().cache_hit is True  # rewritten


def test_unreadable_entry_is_rebuilt(cache_dir: Path) -> None:
    _matcher()
    (entry,) = _entries(cache_dir)
    entry.unlink()
    entry.mkdir()  # reading it fails with an OSError, and so does replacing it
    m = _matcher()
    assert m.cache_hit is False
    assert ("imei", "plain", 12, 27) in _found(m)


def test_unwritable_cache_only_costs_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv(CACHE_DIR_ENV, str(blocker / "cache"))
    for _ in range(2):
        m = _matcher()
        assert m.cache_hit is False
        assert ("imei", "plain", 12, 27) in _found(m)


def test_oldest_entries_are_evicted(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(matcher_module, "MAX_CACHED_DATABASES", 2)
    third = parse_identifiers({"imei": "356938035643809"}, source="test")
    for ids in (DEVICE, OTHER, third):
        _matcher(ids)
    assert len(_entries(cache_dir)) == 2


def test_default_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert DatabaseCache.default() == DatabaseCache(tmp_path / "explicit")
    monkeypatch.delenv(CACHE_DIR_ENV)
    assert DatabaseCache.default() == DatabaseCache(tmp_path / "xdg" / "phonehome")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert DatabaseCache.default() == DatabaseCache(tmp_path / "home" / ".cache" / "phonehome")


def test_a_cache_directory_others_may_write_is_neither_read_nor_written(tmp_path: Path) -> None:
    """Entries are unpickled: one planted by another user (or anyone, in a world-writable directory) must never
    be read, and nothing is written where others could replace it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    cache = DatabaseCache(shared)
    cache.write(b"material", b"content")
    assert cache.read(b"material") == b"content"
    shared.chmod(0o777)
    assert cache.read(b"material") is None
    cache.write(b"other", b"content")
    assert sorted(shared.iterdir()) == [cache.path_for(b"material")]  # nothing new, no temporary file left
    shared.chmod(0o700)
    entry = cache.path_for(b"material")
    entry.chmod(0o666)  # an entry others may write is not read either
    assert cache.read(b"material") is None
    entry.chmod(0o600)
    link = cache.path_for(b"linked")
    link.symlink_to(entry)  # nor one reached through a symlink
    assert cache.read(b"linked") is None
    assert cache.read(b"material") == b"content"
