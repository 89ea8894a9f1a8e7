"""Per-direction TCP reassembly: order, retransmissions, overlaps, gaps, bounded memory."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phonehome.scan import reassembly
from phonehome.scan.reassembly import (
    MAX_CONFLICT_BYTES_PER_STREAM,
    MAX_PENDING_BYTES_PER_STREAM,
    RECENT_BYTES_PER_STREAM,
    Budget,
    Stream,
)

ISN = 0xFFFFFF00  # close to the wrap-around, so every test also crosses 2**32


def _segments(data: bytes, size: int, start: int = ISN + 1) -> list[tuple[int, bytes]]:
    return [((start + i) % (1 << 32), data[i:i + size]) for i in range(0, len(data), size)]


def _run(stream: Stream, segments: list[tuple[int, bytes]]) -> tuple[bytes, list[int]]:
    out = []
    frames = []
    for frame, (seq, payload) in enumerate(segments, 1):
        for data, f, _t, _hole in stream.add(seq, payload, frame, float(frame)):
            out.append(data)
            frames.append(f)
    for data, f, _t, _hole in stream.flush():
        out.append(data)
        frames.append(f)
    return b"".join(out), frames


def _stream(budget: Budget | None = None) -> Stream:
    stream = Stream(budget or Budget())
    stream.syn(ISN)
    return stream


DATA = bytes(range(256)) * 8


def test_in_order() -> None:
    assert _run(_stream(), _segments(DATA, 100))[0] == DATA


def test_out_of_order_is_put_back_in_order() -> None:
    segments = _segments(DATA, 100)
    random.Random(3).shuffle(segments)
    budget = Budget()
    assert _run(_stream(budget), segments)[0] == DATA
    assert budget.gaps == 0 and budget.held == 0


def test_held_segments_come_out_earliest_first_in_any_order() -> None:
    """Thousands held at once (a stream received backwards, or shuffled): one stream, no pass over them all per
    segment; pending is counted from a new anchor as next_seq moves far (here past a few hundred bytes)."""
    data = bytes(range(256)) * 40
    segments = _segments(data, 7)
    for order in (segments[::-1], [*random.Random(5).sample(segments[1:], len(segments) - 1), segments[0]]):
        budget = Budget()
        stream = _stream(budget)
        assert _run(stream, order)[0] == data
        assert budget.gaps == 0 and budget.held == 0 and stream.pending == {} and stream.starts == []


def test_pending_starts_are_counted_again_from_afar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reassembly, "_REANCHOR_BYTES", 50)
    segments = _segments(DATA, 10)
    # the last segment held from the start; then each pair backwards: a segment is held while others are
    order = [segments[-1]] + [s for k in range(0, len(segments) - 1, 2) for s in segments[k:k + 2][::-1]]
    stream = _stream()
    assert _run(stream, order)[0] == DATA


def test_retransmissions_are_delivered_once() -> None:
    segments = _segments(DATA, 100)
    doubled = [s for seg in segments for s in (seg, seg)]
    budget = Budget()
    data, _ = _run(_stream(budget), doubled)
    assert data == DATA
    assert budget.retransmitted_bytes == len(DATA)


def test_overlapping_segments_are_trimmed() -> None:
    # every segment resends the last 30 bytes of the one before (a repacketised retransmission)
    segments = [((ISN + 1 + max(i - 30, 0)) % (1 << 32), DATA[max(i - 30, 0):i + 100]) for i in range(0, len(DATA), 100)]
    random.Random(5).shuffle(segments)
    assert _run(_stream(), segments)[0] == DATA


def test_frames_of_delivered_bytes_are_the_original_frames() -> None:
    segments = _segments(DATA[:300], 100)
    _data, frames = _run(_stream(), [segments[1], segments[0], segments[0], segments[2]])
    assert frames == [2, 1, 4]


def test_without_syn_the_first_segment_starts_the_stream() -> None:
    stream = Stream(Budget())
    assert _run(stream, _segments(DATA, 64, start=1234))[0] == DATA


def test_a_hole_is_skipped_and_counted_at_flush() -> None:
    segments = _segments(DATA, 100)
    del segments[3]
    budget = Budget()
    stream = _stream(budget)
    pieces = []
    for frame, (seq, payload) in enumerate(segments, 1):
        pieces += stream.add(seq, payload, frame, 0.0)
    pieces += stream.flush()
    assert b"".join(p[0] for p in pieces) == DATA[:300] + DATA[400:]
    assert [p[3] for p in pieces].count(True) == 1
    assert budget.gaps == 1 and budget.gap_bytes == 100


def test_huge_sequence_jump_is_not_buffered() -> None:
    budget = Budget()
    stream = _stream(budget)
    assert stream.add((ISN + 1 + (1 << 30)) % (1 << 32), b"x" * 100, 1, 0.0) == []
    assert budget.held == 0 and budget.gaps == 1


def test_per_stream_buffer_is_bounded() -> None:
    budget = Budget()
    stream = _stream(budget)
    seg = b"y" * 60_000
    delivered = 0
    # the first segment never arrives: everything else waits until the cap forces a skip
    for i in range(1, 200):
        for data, _f, _t, _h in stream.add((ISN + 1 + i * len(seg)) % (1 << 32), seg, i, 0.0):
            delivered += len(data)
        assert stream.held <= MAX_PENDING_BYTES_PER_STREAM
    assert budget.gaps >= 1 and delivered > 0


def test_total_budget_is_shared_between_streams() -> None:
    budget = Budget(cap=1 << 20)
    streams = [_stream(budget) for _ in range(50)]
    for i, stream in enumerate(streams):
        for k in range(1, 10):
            stream.add((ISN + 1 + k * 10_000) % (1 << 32), b"z" * 10_000, i, 0.0)
        assert budget.held <= budget.cap + 10_000
    assert budget.gaps > 0


@settings(max_examples=150, deadline=None)
@given(data=st.binary(min_size=1, max_size=3000), size=st.integers(1, 400), seed=st.integers(0, 10_000),
       dup=st.floats(0, 0.5))
def test_any_order_with_duplicates_rebuilds_the_stream(data: bytes, size: int, seed: int, dup: float) -> None:
    """Duplicates and overlapping copies of the same bytes, in any order: the stream once, and never a conflict
    (identical copies are compared, not handed out to be scanned again)."""
    rng = random.Random(seed)
    segments = _segments(data, size)
    segments += [s for s in segments if rng.random() < dup]
    for _ in range(int(dup * 10)):  # repacketised copies, across the original segments' boundaries
        lo = rng.randrange(len(data))
        hi = rng.randrange(lo, len(data)) + 1
        segments.append(((ISN + 1 + lo) % (1 << 32), data[lo:hi]))
    rng.shuffle(segments)
    budget = Budget()
    stream = _stream(budget)
    assert _run(stream, segments)[0] == data
    assert stream.conflicts == [] and budget.conflicting_bytes == 0


# --- conflicting copies: the same sequence numbers, other bytes ------------------------------------------------

GOOD = b"q=harmless-value-0123456789;"
EVIL = b"q=356938035643809-leaked!!!;"  # as long as GOOD


def _delivered(stream: Stream, seq: int, payload: bytes, frame: int) -> bytes:
    return b"".join(piece[0] for piece in stream.add(seq, payload, frame, float(frame)))


def test_a_retransmission_with_other_bytes_is_a_conflict() -> None:
    """Suricata-verify's tcp-overlap "GOOD vs EVIL": a segment resent over bytes already delivered, with other
    bytes. The stream keeps the first copy; the other is handed out (its frame and time), its overlap counted."""
    budget = Budget()
    stream = _stream(budget)
    head, tail = b"POST /x HTTP/1.1\r\n", b"\r\n"
    seq = ISN + 1
    assert _delivered(stream, seq, head, 1) == head
    assert _delivered(stream, seq + len(head), GOOD, 2) == GOOD
    assert _delivered(stream, seq + len(head), EVIL, 3) == b""  # the whole copy is behind
    assert stream.conflicts == [(EVIL, 3, 3.0)]
    assert budget.conflicting_bytes == len(EVIL) and budget.retransmitted_bytes == 0
    # a copy overlapping the end of what was delivered: its new bytes are delivered, its old ones compared
    stream.conflicts.clear()
    overlap = EVIL[-5:] + tail
    assert _delivered(stream, seq + len(head) + len(GOOD) - 5, overlap, 4) == tail
    assert stream.conflicts == [(overlap, 4, 4.0)] and budget.conflicting_bytes == len(EVIL) + 5
    # the same bytes again: a retransmission, nothing handed out
    stream.conflicts.clear()
    assert _delivered(stream, seq, head + GOOD + tail, 5) == b""
    assert stream.conflicts == [] and budget.retransmitted_bytes == len(head + GOOD + tail)


def test_copies_held_out_of_order_are_compared() -> None:
    """Two copies of a range that waits for a missing segment: the one not kept is handed out, whichever it is
    (a longer copy replaces a shorter one: then the shorter, earlier one is the conflict)."""
    budget = Budget()
    stream = _stream(budget)
    first = ISN + 1
    later = (first + 10) % (1 << 32)
    assert _delivered(stream, later, GOOD, 2) == b""
    assert _delivered(stream, later, EVIL, 3) == b""
    assert stream.conflicts == [(EVIL, 3, 3.0)]
    longer = EVIL + b"and more"
    assert _delivered(stream, later, longer, 4) == b""
    assert stream.conflicts[1:] == [(GOOD, 2, 2.0)]  # replaced by the longer copy, which is delivered
    assert _delivered(stream, first, b"0123456789", 5) == b"0123456789" + longer
    assert budget.conflicting_bytes == 2 * len(GOOD)


def test_an_overlap_trimmed_when_delivered_is_compared() -> None:
    """Held segments that overlap one another are trimmed as they are delivered: the trimmed bytes are compared
    with the ones delivered before them."""
    budget = Budget()
    stream = _stream(budget)
    first = ISN + 1
    assert _delivered(stream, (first + 10) % (1 << 32), GOOD, 2) == b""
    clash = b"XX" + GOOD[12:]  # starts 10 bytes into GOOD: its first two bytes differ
    assert _delivered(stream, (first + 20) % (1 << 32), clash, 3) == b""
    assert _delivered(stream, first, b"0123456789", 4) == b"0123456789" + GOOD
    assert stream.conflicts == [(clash, 3, 3.0)] and budget.conflicting_bytes == len(clash)


def test_a_retransmission_older_than_what_is_kept_cannot_be_compared() -> None:
    """Only the last RECENT_BYTES_PER_STREAM of a direction are kept: a copy of older bytes is handed out (it
    cannot be shown to be the same); one of recent bytes is compared."""
    budget = Budget()
    stream = _stream(budget)
    segments = _segments(bytes(range(256)) * (3 * RECENT_BYTES_PER_STREAM // 256), 10_000)
    for frame, (seq, payload) in enumerate(segments, 1):
        stream.add(seq, payload, frame, 0.0)
    assert RECENT_BYTES_PER_STREAM <= stream.recent_bytes <= 2 * RECENT_BYTES_PER_STREAM
    stream.add(*segments[-3], 900, 0.0)
    assert stream.conflicts == [] and budget.retransmitted_bytes == len(segments[-3][1])
    stream.add(*segments[0], 901, 0.0)
    assert stream.conflicts == [(segments[0][1], 901, 0.0)]


def test_conflicts_handed_out_are_bounded_per_direction() -> None:
    budget = Budget()
    stream = _stream(budget)
    stream.add(ISN + 1, GOOD * 1000, 1, 0.0)
    evil = EVIL * 1000
    copies = MAX_CONFLICT_BYTES_PER_STREAM // len(evil) + 5
    for frame in range(2, 2 + copies):
        stream.add(ISN + 1, evil, frame, 0.0)
    assert sum(len(c[0]) for c in stream.conflicts) <= MAX_CONFLICT_BYTES_PER_STREAM
    assert budget.conflicting_bytes + budget.conflicting_unscanned_bytes == copies * len(evil)
    assert budget.conflicting_unscanned_bytes >= 5 * len(evil)


def test_a_keep_alive_probe_is_no_conflict() -> None:
    """A keep-alive probe (BSD, Windows) resends one garbage byte just behind the stream: not a copy to scan."""
    budget = Budget()
    stream = _stream(budget)
    stream.add(ISN + 1, GOOD, 1, 0.0)
    assert stream.add((ISN + len(GOOD)) % (1 << 32), b"\x00", 2, 0.0) == []
    assert stream.conflicts == [] and budget.retransmitted_bytes == 1


@settings(max_examples=150, deadline=None)
@given(data=st.binary(min_size=2, max_size=2000), size=st.integers(1, 300), seed=st.integers(0, 10_000),
       flip=st.booleans())
def test_a_resent_range_conflicts_exactly_when_a_byte_differs(data: bytes, size: int, seed: int,
                                                               flip: bool) -> None:
    """Any range resent after delivery, across any segment boundaries and past the end of what was delivered:
    a conflict when (and only when) one of its already delivered bytes differs (but for a keep-alive probe)."""
    rng = random.Random(seed)
    budget = Budget()
    stream = _stream(budget)
    cut = rng.randrange(1, len(data))  # delivered so far
    delivered = [stream.add(seq, payload, 1, 0.0) for seq, payload in _segments(data[:cut], size)]
    assert b"".join(p[0] for pieces in delivered for p in pieces) == data[:cut]
    lo = rng.randrange(cut)
    hi = rng.randrange(lo + 1, len(data) + 1)
    copy = bytearray(data[lo:hi])
    if flip:
        copy[rng.randrange(min(hi, cut) - lo)] ^= 0xFF  # a byte already delivered
    rest = stream.add((ISN + 1 + lo) % (1 << 32), bytes(copy), 2, 0.0)
    assert b"".join(p[0] for p in rest) == bytes(copy[cut - lo:])
    keep_alive = hi - lo == 1 and lo == cut - 1  # one byte just behind: a keep-alive probe, never compared
    assert stream.conflicts == ([(bytes(copy), 2, 0.0)] if flip and not keep_alive else [])
    assert budget.conflicting_bytes + budget.retransmitted_bytes == min(hi, cut) - lo
