"""The flow table: records written in any order, read back as Flows, in memory or spilled to a file."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from phonehome.errors import PhonehomeError
from phonehome.scan import flowtable
from phonehome.scan.flowtable import RECORD_BYTES, FlowTable
from phonehome.scan.scanner import Flow


def _add(table: FlowTable, ident: int, *, named: str | None = None, raw_dst: bytes = b"\x5d\xb8\xd8\x22",
         decryption: str = "") -> None:
    table.add(ident, transport="tcp" if ident % 2 else "udp", src=b"\x0a\x00\x00\x02", sport=40000 + ident,
              dst=raw_dst, dport=443, named=named, protocol="tls", encrypted=bool(ident % 3),
              decryption=decryption, size=1000 + ident, frames=ident + 1, first_frame=ident * 10,
              first_time=1.5 + ident, last_time=2.25 + ident)


def _expected(ident: int, host: str | None, decryption: str = "") -> Flow:
    return Flow(transport="tcp" if ident % 2 else "udp", src="10.0.0.2", sport=40000 + ident, dst="93.184.216.34",
                dport=443, host=host, protocol="tls", encrypted=bool(ident % 3), bytes=1000 + ident,
                frames=ident + 1, first_frame=ident * 10, first_time=1.5 + ident, last_time=2.25 + ident,
                decryption=decryption)


@pytest.mark.parametrize("spill_bytes", [1 << 20, 3 * RECORD_BYTES])
def test_records_read_back_in_flow_order_whatever_order_they_were_written(
        monkeypatch: pytest.MonkeyPatch, spill_bytes: int) -> None:
    monkeypatch.setattr(flowtable, "SPILL_BYTES", spill_bytes)
    table = FlowTable()
    order = [5, 0, 3, 1, 4, 2, 7, 6]
    for ident in order:
        _add(table, ident, named="api.example" if ident == 3 else None, decryption="no-key" if ident == 4 else "")
    asked: list[tuple[str | None, bytes]] = []

    def host_of(named: str | None, raw_dst: bytes) -> str | None:
        asked.append((named, raw_dst))
        return named or f"dns-of-{raw_dst.hex()}"

    table.finish(host_of)
    assert table.spilled == (spill_bytes < len(order) * RECORD_BYTES)
    expected = [_expected(i, "api.example" if i == 3 else "dns-of-5db8d822", "no-key" if i == 4 else "")
                for i in range(8)]
    assert list(table) == expected and len(table) == 8
    assert table[3] == expected[3] and table[-1] == expected[7] and table[1:3] == tuple(expected[1:3])
    assert table == expected and table != expected[:7]
    assert set(asked) == {(None, b"\x5d\xb8\xd8\x22"), ("api.example", b"\x5d\xb8\xd8\x22")}
    assert table.named_hosts == {"api.example"}
    with pytest.raises(IndexError):
        table[8]


def test_a_spilled_table_iterates_past_one_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flowtable, "SPILL_BYTES", 0)
    monkeypatch.setattr(flowtable, "_READ_RECORDS", 3)
    table = FlowTable()
    for ident in range(10):
        _add(table, ident)
    table.finish(lambda named, raw: None)
    assert table.spilled and [flow.sport for flow in table] == [40000 + i for i in range(10)]


def test_a_temporary_directory_that_cannot_be_written_is_one_clear_error(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(flowtable, "SPILL_BYTES", 0)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    table = FlowTable()
    with pytest.raises(PhonehomeError, match="cannot keep the scan's flow table in a temporary file in .*missing: "
                                             r"No such file or directory \(set TMPDIR"):
        _add(table, 0)


def test_addresses_are_kept_as_they_were_sent_not_interned() -> None:
    """IPv4 and IPv6 side by side, every one different (a port scan): each record holds its own addresses."""
    table = FlowTable()
    table.add(0, transport="tcp", src=bytes(15) + b"\x01", sport=1, dst=bytes.fromhex("20010db8" + "00" * 11 + "02"),
              dport=2, named=None, protocol="tcp", encrypted=False, decryption="", size=1, frames=1, first_frame=1,
              first_time=0.0, last_time=0.0)
    table.add(1, transport="udp", src=b"\x0a\x00\x00\x02", sport=3, dst=b"\xc0\xa8\x01\x01", dport=4, named=None,
              protocol="dns", encrypted=False, decryption="", size=1, frames=1, first_frame=2, first_time=0.0,
              last_time=0.0)
    assert [(f.src, f.dst) for f in table] == [("::1", "2001:db8::2"), ("10.0.0.2", "192.168.1.1")]


def test_before_finish_no_host_is_shown() -> None:
    """A host name may hold an identifier (``<imei>.tracker.example``): until the scan names hosts, masked,
    a flow read from the table has none, never the name as sent."""
    table = FlowTable()
    _add(table, 0, named="356938035643809.tracker.example")
    assert table[0].host is None
    table.finish(lambda named, raw: "35***********09.tracker.example" if named else None)
    assert table[0].host == "35***********09.tracker.example"
