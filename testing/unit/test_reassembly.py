"""Per-direction TCP reassembly: order, retransmissions, overlaps, gaps, bounded memory."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from phonehome.scan.reassembly import MAX_PENDING_BYTES_PER_STREAM, Budget, Stream

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
    rng = random.Random(seed)
    segments = _segments(data, size)
    segments += [s for s in segments if rng.random() < dup]
    rng.shuffle(segments)
    assert _run(_stream(), segments)[0] == data
