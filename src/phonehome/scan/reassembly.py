"""Per-direction TCP reassembly by sequence number, with bounded buffers.

A leak split across two segments, sent out of order, retransmitted or overlapping must still be found exactly
once, so each direction of a TCP connection is rebuilt into one byte stream before matching. Memory is bounded
against adversarial captures (huge sequence gaps, thousands of half-open flows): out-of-order data is held up to
:data:`MAX_PENDING_BYTES_PER_STREAM` per direction and :data:`MAX_PENDING_BYTES_TOTAL` overall; past that the
stream gives up waiting for the missing bytes, skips the hole and counts it (``Budget.gaps``/``gap_bytes``), so
the scan can report what it could not see instead of silently passing.

Without a SYN (capture started mid-connection) the first segment seen fixes the start; earlier bytes that arrive
later are treated as retransmissions.
"""

from __future__ import annotations

from dataclasses import dataclass

#: out-of-order bytes one direction may hold while waiting for a missing segment
MAX_PENDING_BYTES_PER_STREAM = 4 << 20
#: out-of-order bytes all streams together may hold
MAX_PENDING_BYTES_TOTAL = 32 << 20
#: a segment this far (or further) ahead of the expected sequence number is nonsense, not a gap to wait for
MAX_SEQUENCE_JUMP = 1 << 30

_MOD = 1 << 32
_HALF = 1 << 31

#: (bytes in stream order, frame number that carried them, capture time, a hole precedes these bytes)
Piece = tuple[bytes, int, float, bool]


@dataclass
class Budget:
    """Out-of-order memory shared by all streams of a scan, and what was given up."""

    held: int = 0
    cap: int = MAX_PENDING_BYTES_TOTAL
    gaps: int = 0
    gap_bytes: int = 0
    retransmitted_bytes: int = 0


class Stream:
    """One direction of a TCP connection, rebuilt in sequence order."""

    __slots__ = ("budget", "held", "next_seq", "pending")

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.next_seq = -1
        self.pending: dict[int, tuple[bytes, int, float]] = {}
        self.held = 0

    def syn(self, seq: int) -> None:
        """A SYN fixes the initial sequence number: data starts at ``seq + 1``."""
        if self.next_seq < 0:
            self.next_seq = (seq + 1) % _MOD

    def add(self, seq: int, data: bytes, frame: int, time: float) -> list[Piece]:
        """Add one segment's payload; returns the bytes that became contiguous, in order."""
        if self.next_seq < 0:
            self.next_seq = seq
        ahead = (seq - self.next_seq) % _MOD
        if ahead == 0 and not self.pending:
            self.next_seq = (seq + len(data)) % _MOD
            return [(data, frame, time, False)]
        if ahead >= _HALF:  # starts before what we already have: retransmission or overlap
            behind = _MOD - ahead
            if behind >= len(data):
                self.budget.retransmitted_bytes += len(data)
                return []
            self.budget.retransmitted_bytes += behind
            data = data[behind:]
            seq = self.next_seq
            ahead = 0
        if ahead == 0:
            self.next_seq = (seq + len(data)) % _MOD
            out: list[Piece] = [(data, frame, time, False)]
            self._drain(out)
            return out
        if ahead >= MAX_SEQUENCE_JUMP:
            self.budget.gaps += 1
            self.budget.gap_bytes += len(data)
            return []
        known = self.pending.get(seq)
        if known is not None:
            if len(known[0]) >= len(data):
                self.budget.retransmitted_bytes += len(data)
                return []
            self._release(len(known[0]))
        self.pending[seq] = (data, frame, time)
        self.held += len(data)
        self.budget.held += len(data)
        if self.held > MAX_PENDING_BYTES_PER_STREAM or self.budget.held > self.budget.cap:
            return self.skip_gap()
        return []

    def _release(self, n: int) -> None:
        self.held -= n
        self.budget.held -= n

    def _drain(self, out: list[Piece]) -> None:
        """Move pending segments that are now contiguous (trimming overlaps) to ``out``."""
        pending = self.pending
        while pending:
            progressed = False
            for seq in list(pending):
                ahead = (seq - self.next_seq) % _MOD
                data, frame, time = pending[seq]
                if ahead >= _HALF:  # starts at or before next_seq: overlaps what we have
                    del pending[seq]
                    self._release(len(data))
                    behind = _MOD - ahead
                    if behind < len(data):
                        out.append((data[behind:], frame, time, False))
                        self.next_seq = (self.next_seq + len(data) - behind) % _MOD
                    else:
                        self.budget.retransmitted_bytes += len(data)
                    progressed = True
                elif ahead == 0:
                    del pending[seq]
                    self._release(len(data))
                    out.append((data, frame, time, False))
                    self.next_seq = (seq + len(data)) % _MOD
                    progressed = True
            if not progressed:
                return

    def skip_gap(self) -> list[Piece]:
        """Stop waiting for missing bytes: continue from the earliest held segment, count the hole."""
        if not self.pending:
            return []
        first = min(self.pending, key=lambda s: (s - self.next_seq) % _MOD)
        hole = (first - self.next_seq) % _MOD
        self.budget.gaps += 1
        self.budget.gap_bytes += hole
        self.next_seq = first
        data, frame, time = self.pending.pop(first)
        self._release(len(data))
        self.next_seq = (first + len(data)) % _MOD
        out: list[Piece] = [(data, frame, time, True)]
        self._drain(out)
        return out

    def flush(self) -> list[Piece]:
        """End of capture (or connection): deliver everything held, across holes."""
        out: list[Piece] = []
        while self.pending:
            out.extend(self.skip_gap())
        return out
