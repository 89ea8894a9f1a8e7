"""The scan's memory budget: each cap that grows with concurrent flows is shared and bounded, and their sum (with
the process baseline) stays under the 100 MiB the README promises, whatever the traffic (docs/architecture.md,
"Memory"). Counted by the scanner's own counters, never by RSS in a test."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from phonehome.identifiers import parse_identifiers
from phonehome.scan import layers, pcapfile, protocols, reassembly, scanner
from phonehome.scan.reassembly import Budget, Stream
from phonehome.scan.scanner import Scanner
from phonehome.testing.captures import (
    CaptureBuilder,
    Packet,
    http_request,
    http_response,
    tls_application_data,
    tls_client_hello,
    tls_server_hello,
)

IMEI = "356938035643809"
LEAK = f"imei={IMEI}".encode()
#: measured: `phonehome scan` of a capture of one flow (Python, hyperscan databases, the prepared matcher)
BASELINE_MIB = 41
#: measured: what an open flow holds besides the shared buffers (its objects, frame maps, decoder), with slack
LIVE_FLOW_KIB = 5
LIMIT_MIB = 100


def test_the_caps_and_the_baseline_fit_the_limit() -> None:
    """The budget table of docs/architecture.md: the shared caps, plus one message finished at a time (its body
    copied out of the buffer, its Content-Encoding undone, its sample peeled)."""
    shared = (scanner.MAX_DECODER_BYTES_TOTAL + reassembly.MAX_PENDING_BYTES_TOTAL + reassembly.RECENT_BYTES_TOTAL
              + scanner.PEEL_CACHE_BYTES + pcapfile.CHUNK_BYTES + pcapfile.RELEASE_BYTES)
    flows = scanner.MAX_LIVE_FLOWS * LIVE_FLOW_KIB << 10
    one_message = protocols.MAX_MESSAGE_BYTES + layers.MAX_CONTENT_BYTES + scanner.PEEL_OUTPUT_BYTES
    assert BASELINE_MIB + (shared + flows + one_message) / (1 << 20) < LIMIT_MIB
    assert Budget().cap == reassembly.MAX_PENDING_BYTES_TOTAL and Budget().recent_cap == reassembly.RECENT_BYTES_TOTAL


def _deliver_in_order(stream: Stream, data: bytes, size: int, start: int) -> None:
    for offset in range(0, len(data), size):
        stream.add((start + offset) % (1 << 32), data[offset:offset + size], 1, 0.0)


def test_bytes_kept_for_retransmissions_are_shared_and_bounded() -> None:
    budget = Budget(recent_cap=100_000)
    streams = [Stream(budget) for _ in range(40)]
    for stream in streams:
        stream.syn(0)
    for round_ in range(10):  # 40 directions x 30 KB: 1.2 MB delivered, interleaved
        for stream in streams:
            _deliver_in_order(stream, bytes([round_]) * 3000, 1000, 1 + round_ * 3000)
            assert budget.recent <= budget.recent_cap
            assert budget.recent == sum(s.recent_bytes for s in streams)
    assert budget.recent > budget.recent_cap // 2
    # a direction under pressure kept less: a copy of bytes it let go of is handed out to be scanned (it cannot
    # be shown to be the same), never dropped unseen
    last = streams[-1]
    assert last.recent_bytes < 30_000
    last.add(1, b"\x00" * 1000, 3, 0.0)
    assert last.conflicts == [(b"\x00" * 1000, 3, 0.0)] and budget.conflicting_bytes == 1000


def test_one_direction_keeps_its_share_when_alone() -> None:
    budget = Budget()
    stream = Stream(budget)
    stream.syn(0)
    _deliver_in_order(stream, bytes(range(256)) * 4096, 1000, 1)  # 1 MiB
    assert reassembly.RECENT_BYTES_PER_STREAM <= stream.recent_bytes <= reassembly.RECENT_TRIM_BYTES
    assert budget.recent == stream.recent_bytes


def test_close_gives_back_what_a_direction_held() -> None:
    budget = Budget()
    stream = Stream(budget)
    stream.syn(0)
    _deliver_in_order(stream, b"a" * 5000, 1000, 1)
    stream.add(10_001, b"b" * 1000, 2, 0.0)  # held, waiting for the hole before it
    assert budget.recent == 5000 and budget.held == 1000
    stream.close()
    assert budget.recent == 0 and budget.held == 0 and not stream.pending


def test_gzip_body_of_one_member_and_of_two() -> None:
    import gzip

    body = b'{"imei":"%s"}' % IMEI.encode()
    assert layers.decode_content(gzip.compress(body), "gzip") == (body, None)
    assert layers.decode_content(gzip.compress(body) + gzip.compress(body), "gzip") == (body + body, None)
    decoded, problem = layers.decode_content(gzip.compress(b"z" * 10_000), "gzip", max_output=1000)
    assert decoded == b"z" * 1000 and problem is not None
    # the default bound: one decoded body is part of the budget; what is past it is said, not decoded
    decoded, problem = layers.decode_content(gzip.compress(b"z" * (layers.MAX_CONTENT_BYTES + 1)), "gzip")
    assert len(decoded) == layers.MAX_CONTENT_BYTES and problem is not None and "truncated or over" in problem


class _MeasuredScanner(Scanner):
    """A real scanner that notes, after every TCP segment, the largest its shared memory counters reached."""

    most: dict[str, int]

    def _note(self) -> None:
        most = self.most
        for name, value in (("decoders", self.decoder_held), ("pending", self.budget.held),
                            ("recent", self.budget.recent), ("peel cache", self.peel_cache_bytes)):
            most[name] = max(most.get(name, 0), value)

    def _tcp(self, *args: Any) -> None:
        super()._tcp(*args)
        self._note()

    def _in_order_segment(self, *args: Any) -> None:
        super()._in_order_segment(*args)
        self._note()


def _reordered(packets: list[Packet], rng: random.Random, window: int = 16) -> list[Packet]:
    out: list[Packet] = []
    for start in range(0, len(packets), window):
        chunk = packets[start:start + window]
        chunk += [p for p in chunk if rng.random() < 0.05]  # some sent twice
        rng.shuffle(chunk)
        out += chunk
    return out


@pytest.mark.parametrize("fast_path", [True, False])
def test_many_concurrent_large_reordered_flows_stay_within_the_budget(tmp_path: Path, fast_path: bool,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """60 downloads at once, each body 120 KB, segments shuffled and resent: with caps scaled down (so a small
    capture crosses them), every shared counter stays within its cap and every leak is still found."""
    monkeypatch.setattr(scanner, "MAX_DECODER_BYTES_TOTAL", 1 << 20)
    monkeypatch.setattr(scanner, "SHED_DIRECTION_BYTES", 64 << 10)
    monkeypatch.setattr(scanner, "PEEL_CACHE_BYTES", 256 << 10)
    rng = random.Random(5)
    cap = CaptureBuilder()
    flows: list[list[Packet]] = []
    fins: list[Packet] = []
    for n in range(60):
        conn = cap.tcp("10.0.0.2", f"198.51.100.{n + 1}", 80)
        conn.send(http_request("GET", f"/fw{n}.bin", host="fw.example"))
        body = rng.randbytes(60_000) + LEAK + rng.randbytes(60_000)
        flows.append(_reordered(conn.reply(http_response(body), segment_size=1400), rng))
        fins += conn.close()
    later = {id(p) for p in fins} | {id(p) for flow in flows for p in flow}
    head = [p for p in cap.packets if id(p) not in later]  # handshakes and requests first, FINs last
    rows = [iter(flow) for flow in flows]
    interleaved: list[Packet] = []
    while rows:  # round robin: every download in flight at once
        for row in list(rows):
            packet = next(row, None)
            if packet is None:
                rows.remove(row)
            else:
                interleaved.append(packet)
    cap.packets = head + interleaved + fins
    path = cap.write_pcap(tmp_path / "many.pcap")
    scan = _MeasuredScanner(parse_identifiers({"imei": IMEI}, source="test"), fast_path=fast_path)
    scan.most = {}
    scan.budget.cap = 256 << 10
    scan.budget.recent_cap = 512 << 10
    result = scan.scan(path)
    assert scan.most["decoders"] <= scanner.MAX_DECODER_BYTES_TOTAL
    assert scan.most["pending"] <= 256 << 10 and scan.most["recent"] <= 512 << 10
    assert scan.most["peel cache"] <= scanner.PEEL_CACHE_BYTES
    assert scan.most["recent"] > 256 << 10  # the bounds were reached, not just respected by a light load
    assert scan.budget.held == 0 and scan.budget.recent == 0 and scan.decoder_held == 0  # all given back
    assert not scan.budget.streams
    leaks = {f.src for f in result.findings if f.identifier == "imei"}
    assert len(leaks) == 60, "a leak was lost"
    assert any("to keep memory bounded" in w for w in result.warnings)  # what could not be held is said


def test_squeeze_cuts_every_direction_to_its_floor() -> None:
    """Over the cap, the directions that filled it first give their share back: the one delivering now still
    keeps its last segments (a retransmission of them is compared, not handed out)."""
    floor = reassembly.RECENT_FLOOR_BYTES
    budget = Budget(recent_cap=4 * floor)
    first, second = Stream(budget), Stream(budget)
    for stream in (first, second):
        stream.syn(0)
    _deliver_in_order(first, b"a" * (3 * floor), 1000, 1)
    _deliver_in_order(second, b"b" * (3 * floor), 1000, 1)
    assert budget.recent <= budget.recent_cap
    assert first.recent_bytes <= floor + 1000 and second.recent_bytes >= floor
    second.add(1 + 3 * floor - 1000, b"b" * 1000, 2, 0.0)
    assert budget.retransmitted_bytes == 1000 and not second.conflicts


def test_squeeze_again_after_connections_closed() -> None:
    """A squeeze is not blocked by the level the budget had after an earlier one: once connections closed and
    new ones filled the budget again, they are cut down again (the one delivering keeps its last segments)."""
    floor = reassembly.RECENT_FLOOR_BYTES
    budget = Budget(recent_cap=4 * floor)
    for round_ in range(3):
        streams = [Stream(budget) for _ in range(3)]
        for stream in streams:
            stream.syn(0)
            _deliver_in_order(stream, bytes([round_]) * (2 * floor), 1000, 1)
        assert budget.recent <= budget.recent_cap
        assert streams[-1].recent_bytes >= floor
        for stream in streams:
            stream.close()
        assert budget.recent == 0 and not budget.streams


def test_an_encrypted_connection_gives_its_reassembly_budget_back(tmp_path: Path) -> None:
    """A direction found encrypted (TLS) with segments still held out of order: their bytes, and those kept to
    compare retransmissions with, go back to the shared budgets at once."""
    cap = CaptureBuilder()
    conn = cap.tcp("10.0.0.2", "198.51.100.1", 443)
    hello = conn.send(tls_client_hello("api.example"))
    conn.reply(tls_server_hello())
    records = conn.send(tls_application_data(b"z" * 5000), segment_size=1000)
    cap.packets.remove(records[0])  # the rest wait for it
    cap.packets.insert(cap.packets.index(hello[-1]) + 1, records[-1])
    scan = _MeasuredScanner(parse_identifiers({"imei": IMEI}, source="test"))
    scan.most = {}
    scan.scan(cap.write_pcap(tmp_path / "tls.pcap"))
    assert scan.most["pending"] > 0  # segments were held when the direction was found encrypted
    assert scan.budget.held == 0 and scan.budget.recent == 0 and not scan.budget.streams
