"""Per-direction TCP reassembly by sequence number, with bounded buffers.

A leak split across two segments, sent out of order, retransmitted or overlapping must still be found exactly
once, so each direction of a TCP connection is rebuilt into one byte stream before matching. Memory is bounded
against adversarial captures (huge sequence gaps, thousands of half-open flows): out-of-order data is held up to
:data:`MAX_PENDING_BYTES_PER_STREAM` per direction and :data:`MAX_PENDING_BYTES_TOTAL` overall; past that the
stream gives up waiting for the missing bytes, skips the hole and counts it (``Budget.gaps``/``gap_bytes``), so
the scan can report what it could not see instead of silently passing. :meth:`Stream.close` gives a direction's
share of both shared budgets back (a closed connection, or one found encrypted).

A retransmitted or overlapping segment is compared with the bytes already delivered for its range (the last
:data:`RECENT_BYTES_PER_STREAM` of the direction are kept for this, as references to the segments that carried
them, and :data:`RECENT_BYTES_TOTAL` over all streams: past that each keeps about :data:`RECENT_FLOOR_BYTES`)
and with a held segment of the same range: identical copies are counted (``Budget.retransmitted_bytes``) and
dropped, while a copy whose bytes differ, or that can no longer be compared (older than what is kept), is a
conflict: both copies left the phone, so the other one is handed out too (:attr:`Stream.conflicts`, to be scanned
as a unit of its own) and counted (``Budget.conflicting_bytes``), up to :data:`MAX_CONFLICT_BYTES_PER_STREAM`
per direction; past that it is only counted (``Budget.conflicting_unscanned_bytes``).

Without a SYN (capture started mid-connection) the first segment seen fixes the start; earlier bytes that arrive
later are treated as retransmissions (older than anything kept: a conflict, so they are scanned).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

#: out-of-order bytes one direction may hold while waiting for a missing segment
MAX_PENDING_BYTES_PER_STREAM = 2 << 20
#: out-of-order bytes all streams together may hold (part of the scan's memory budget: see docs/architecture.md)
MAX_PENDING_BYTES_TOTAL = 3 << 20
#: a segment this far (or further) ahead of the expected sequence number is nonsense, not a gap to wait for
MAX_SEQUENCE_JUMP = 1 << 30

#: delivered bytes kept per direction to compare retransmissions with (the most recent; at least this many, at
#: most twice as many, in the segments that carried them)
RECENT_BYTES_PER_STREAM = 256 << 10
#: conflicting copies handed out to be scanned per direction; past that they are only counted
MAX_CONFLICT_BYTES_PER_STREAM = 1 << 20
#: kept bytes past which a direction's oldest segments are let go
RECENT_TRIM_BYTES = 2 * RECENT_BYTES_PER_STREAM
#: delivered bytes all streams together keep to compare retransmissions with: past it, every direction is cut
#: down to :data:`RECENT_FLOOR_BYTES` (Budget.squeeze), and if that is still too much, the direction that just
#: delivered keeps only what fits, so thousands of concurrent connections cannot hold RECENT_TRIM_BYTES each; a
#: retransmission older than what is kept is a conflict (scanned, or counted and said), never dropped unseen
RECENT_BYTES_TOTAL = 4 << 20
#: what a direction keeps while the total is over RECENT_BYTES_TOTAL (the last segments: most retransmissions)
RECENT_FLOOR_BYTES = 64 << 10

_MOD = 1 << 32
#: how far next_seq may move from Stream.anchor before the pending starts are counted from it again (with starts
#: at most MAX_SEQUENCE_JUMP ahead, every offset stays below 2**31)
_REANCHOR_BYTES = 1 << 30
_HALF = 1 << 31

#: (bytes in stream order, frame number that carried them, capture time, a hole precedes these bytes)
Piece = tuple[bytes, int, float, bool]
#: a segment's payload whose bytes conflict with the copy delivered for the same range: (payload, frame, time)
Conflict = tuple[bytes, int, float]


@dataclass
class Budget:
    """Out-of-order memory shared by all streams of a scan, and what was given up."""

    held: int = 0
    cap: int = MAX_PENDING_BYTES_TOTAL
    #: delivered bytes all streams keep to compare retransmissions with (Stream.recent), and their bound
    recent: int = 0
    recent_cap: int = RECENT_BYTES_TOTAL
    #: the streams not closed yet (what squeeze cuts down), and the least ``recent`` has been since the last
    #: squeeze (lowered whenever bytes are let go: a squeeze is due once a quarter of the cap came in since)
    streams: set[Stream] = field(default_factory=set, repr=False, compare=False)
    squeezed: int = 0

    def squeeze(self) -> None:
        """Over ``recent_cap``: cut every stream's kept bytes down to :data:`RECENT_FLOOR_BYTES`, so the
        directions still sending keep their last segments (rather than the first to fill the budget keeping
        theirs). Not again before another quarter of the cap was delivered: a pass over every stream each time
        would make many small ones crawl."""
        for stream in self.streams:
            if stream.recent_bytes > RECENT_FLOOR_BYTES:
                stream.keep_last(RECENT_FLOOR_BYTES)
        self.squeezed = self.recent
    gaps: int = 0
    gap_bytes: int = 0
    retransmitted_bytes: int = 0
    #: bytes of retransmitted or overlapping segments that differ from the copy delivered (or could no longer
    #: be compared with it): the segments carrying them are handed out as conflicts
    conflicting_bytes: int = 0
    #: conflicting bytes past MAX_CONFLICT_BYTES_PER_STREAM in their direction: counted, not handed out
    conflicting_unscanned_bytes: int = 0


class Stream:
    """One direction of a TCP connection, rebuilt in sequence order."""

    __slots__ = ("anchor", "budget", "conflicted", "conflicts", "held", "next_seq", "pending", "recent",
                 "recent_bytes", "starts")

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        budget.streams.add(self)
        self.next_seq = -1
        self.pending: dict[int, tuple[bytes, int, float]] = {}
        #: the pending segments' starts as offsets from ``anchor`` (a next_seq of when pending was last empty),
        #: sorted: the earliest is found without a pass over them all (a shuffled stream holds thousands)
        self.starts: list[int] = []
        self.anchor = 0
        self.held = 0
        #: the segments last delivered, in order, ending at next_seq (an in-order segment taken by the scanner's
        #: fast path is appended there too): what a retransmission is compared with
        self.recent: list[bytes] = []
        self.recent_bytes = 0
        #: copies found conflicting since the caller last emptied this list, to be scanned
        self.conflicts: list[Conflict] = []
        self.conflicted = 0  # conflicting bytes handed out so far

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
            self.delivered(data)
            return [(data, frame, time, False)]
        if ahead >= _HALF:  # starts before what we already have: retransmission or overlap
            behind = _MOD - ahead
            if behind == 1 == len(data):  # a keep-alive probe (BSD, Windows): one garbage byte, not a copy
                self.budget.retransmitted_bytes += 1
                return []
            self._compare(behind, data, frame, time)
            if behind >= len(data):
                return []
            data = data[behind:]
            seq = self.next_seq
            ahead = 0
        if ahead == 0:
            self.next_seq = (seq + len(data)) % _MOD
            self.delivered(data)
            out: list[Piece] = [(data, frame, time, False)]
            self._drain(out)
            return out
        if ahead >= MAX_SEQUENCE_JUMP:
            self.budget.gaps += 1
            self.budget.gap_bytes += len(data)
            return []
        known = self.pending.get(seq)
        if known is not None:
            old = known[0]
            same = min(len(old), len(data))
            if old[:same] == data[:same]:
                self.budget.retransmitted_bytes += same
            else:  # the copy not kept is a conflict (the one kept is delivered later)
                lost = (data, frame, time) if len(old) >= len(data) else known
                self._conflict(same, *lost)
            if len(old) >= len(data):
                return []
            self._release(len(old))
        else:
            self._hold(seq)
        self.pending[seq] = (data, frame, time)
        self.held += len(data)
        self.budget.held += len(data)
        if self.held > MAX_PENDING_BYTES_PER_STREAM or self.budget.held > self.budget.cap:
            return self.skip_gap()
        return []

    def delivered(self, data: bytes) -> None:
        """``data`` was delivered, ending at next_seq: keep it to compare retransmissions with."""
        self.recent.append(data)
        self.recent_bytes += len(data)
        budget = self.budget
        budget.recent += len(data)
        if self.recent_bytes > RECENT_TRIM_BYTES or budget.recent > budget.recent_cap:
            self.trim_recent()

    def trim_recent(self) -> None:
        """Keep the fewest last segments that hold :data:`RECENT_BYTES_PER_STREAM` bytes; while all streams
        together keep more than ``Budget.recent_cap``, every stream at most about :data:`RECENT_FLOOR_BYTES`
        (Budget.squeeze), and this one no more than brings the total back under the cap (possibly nothing), so
        the total never stays over it."""
        budget = self.budget
        if budget.recent <= budget.recent_cap:
            self.keep_last(RECENT_BYTES_PER_STREAM)
            return
        if budget.recent - budget.squeezed >= budget.recent_cap // 4:
            budget.squeeze()
        if budget.recent > budget.recent_cap:  # still: even the floors are too many
            room = budget.recent_cap - (budget.recent - self.recent_bytes)
            self.keep_last(min(RECENT_FLOOR_BYTES, room))
            if budget.recent > budget.recent_cap:  # the last segment alone does not fit
                self.keep_last(0)

    def keep_last(self, keep: int) -> None:
        """Keep the fewest last segments that hold ``keep`` bytes (nothing for 0)."""
        recent = self.recent
        size = self.recent_bytes
        if keep <= 0:
            drop, size = len(recent), 0
        else:
            drop = 0
            while size - len(recent[drop]) >= keep:
                size -= len(recent[drop])
                drop += 1
        del recent[:drop]
        self._let_go(self.recent_bytes - size)
        self.recent_bytes = size

    def _let_go(self, n: int) -> None:
        budget = self.budget
        budget.recent -= n
        if budget.recent < budget.squeezed:
            budget.squeezed = budget.recent

    def close(self) -> None:
        """The connection is over (or its direction no longer scanned): let go of the bytes kept to compare
        retransmissions with, and of any still held out of order (their budget freed for other streams)."""
        self._let_go(self.recent_bytes)
        self.budget.streams.discard(self)
        self.recent, self.recent_bytes = [], 0
        self._release(self.held)
        self.pending, self.starts = {}, []

    def _compare(self, behind: int, data: bytes, frame: int, time: float) -> None:
        """``data`` starts ``behind`` bytes before next_seq: compare those bytes (or all of ``data`` when shorter)
        with the ones delivered; identical ones are a retransmission, any difference a conflict."""
        n = min(behind, len(data))
        if behind > self.recent_bytes:  # older than what is kept
            self._conflict(n, data, frame, time)
            return
        # the kept bytes from `behind` before next_seq, `n` of them: walk back from the newest segment to the one
        # holding the first (a retransmission is mostly of the last few, and mostly one whole segment)
        recent = self.recent
        lo = self.recent_bytes - behind
        index = len(recent) - 1
        start = self.recent_bytes - len(recent[index])
        while start > lo:
            index -= 1
            start -= len(recent[index])
        offset = lo - start
        piece = recent[index]
        if offset + n <= len(piece):
            kept = piece[offset:offset + n]
        else:
            parts = [piece[offset:]]
            size = len(piece) - offset
            while size < n:
                index += 1
                parts.append(recent[index])
                size += len(recent[index])
            kept = b"".join(parts)[:n]
        if kept == data[:n]:
            self.budget.retransmitted_bytes += n
        else:
            self._conflict(n, data, frame, time)

    def _conflict(self, n: int, data: bytes, frame: int, time: float) -> None:
        """``n`` bytes of the segment ``data`` conflict with the copy delivered: hand the segment out, within
        the direction's bound."""
        budget = self.budget
        if self.conflicted + len(data) > MAX_CONFLICT_BYTES_PER_STREAM:
            budget.conflicting_unscanned_bytes += n
            return
        budget.conflicting_bytes += n
        self.conflicted += len(data)
        self.conflicts.append((data, frame, time))

    def _release(self, n: int) -> None:
        self.held -= n
        self.budget.held -= n

    def _hold(self, seq: int) -> None:
        """Note a new pending segment's start (ahead of next_seq) in ``starts``."""
        if not self.pending or (self.next_seq - self.anchor) % _MOD >= _REANCHOR_BYTES:
            # offsets from next_seq: every pending start is ahead of it (or was, when pending was last drained)
            self.anchor = self.next_seq
            self.starts = sorted((start - self.anchor) % _MOD for start in self.pending)
        bisect.insort(self.starts, (seq - self.anchor) % _MOD)

    def _take_first(self) -> tuple[int, tuple[bytes, int, float]]:
        """Remove the pending segment that starts earliest: (its start, its segment)."""
        seq = (self.starts.pop(0) + self.anchor) % _MOD
        segment = self.pending.pop(seq)
        self._release(len(segment[0]))
        return seq, segment

    def _drain(self, out: list[Piece]) -> None:
        """Move pending segments that are now contiguous (trimming overlaps) to ``out``, earliest first."""
        while self.starts:
            behind = (self.next_seq - self.anchor - self.starts[0]) % _MOD
            if behind >= _HALF:  # the earliest starts after next_seq: a hole before it
                return
            _, (data, frame, time) = self._take_first()
            if behind:  # starts before next_seq: overlaps what was delivered
                self._compare(behind, data, frame, time)
                if behind >= len(data):
                    continue
                data = data[behind:]
            out.append((data, frame, time, False))
            self.next_seq = (self.next_seq + len(data)) % _MOD
            self.delivered(data)

    def skip_gap(self) -> list[Piece]:
        """Stop waiting for missing bytes: continue from the earliest held segment, count the hole."""
        if not self.pending:
            return []
        first, (data, frame, time) = self._take_first()
        hole = (first - self.next_seq) % _MOD
        self.budget.gaps += 1
        self.budget.gap_bytes += hole
        self.next_seq = (first + len(data)) % _MOD
        self._let_go(self.recent_bytes)
        self.recent, self.recent_bytes = [], 0  # what is kept ends at next_seq, with no hole inside
        self.delivered(data)
        out: list[Piece] = [(data, frame, time, True)]
        self._drain(out)
        return out

    def flush(self) -> list[Piece]:
        """End of capture (or connection): deliver everything held, across holes."""
        out: list[Piece] = []
        while self.pending:
            out.extend(self.skip_gap())
        return out
