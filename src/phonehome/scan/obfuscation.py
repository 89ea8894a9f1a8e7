"""Trivial obfuscation firmware uses to look encrypted: XOR with a repeating key of 1 to 4 bytes.

Trying every key is 255 decodings for one-byte keys and billions for four-byte ones. Instead, the scanner looks
at the XOR of the bytes with themselves shifted by the key's period ``p``: ``c[i] ^ c[i+p]`` equals
``m[i] ^ m[i+p]`` whatever the key, because the key cancels out. So each plain needle becomes one *differential*
needle per period, matched once over the differential of the bytes (one pass per period, not per key). A hit
gives the key back (``c[i] ^ m[i]``); the bytes are then decoded with it and matched with every needle, and the
finding's encoding names the key: ``xor(0x5a)>plain``, ``xor(0x1f2e)>plain``.

Reversed strings and ROT-N are needles of :mod:`.forms` (``reversed``, ``rotN``).

Cost, on the bytes the nested decoders look at (their budget), never on bulk transfers: one-byte keys are one
more hyperscan pass of 255 literals per needle (~1.2 GB/s here); keys of 2-4 bytes need the differentials,
computed in C (:mod:`._runs`; with Python big integers, ~150 MB/s, where it is not built), and looked for only
in units up to
:data:`XOR_MULTI_BYTE_UNIT_BYTES` and the first :data:`XOR_MULTI_BYTE_PER_DIRECTION` of each direction.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from phonehome.scan.forms import Needle
from phonehome.scan.matcher import LiteralMatcher, Matcher

try:
    from phonehome.scan import _runs as _c_runs
except ImportError:  # the C extension is optional (see layers.ACCELERATED): the Python reference below
    _c_runs = None  # type: ignore[assignment]

#: key lengths tried (the issue's 1 byte, and repeating keys of 2-4 bytes)
XOR_PERIODS = (1, 2, 3, 4)
#: a needle shorter than this gives a differential needle too short to mean anything
MIN_XOR_NEEDLE_BYTES = 10
#: a differential needle needs this many distinct byte values: "0000000000" differs into zeros, which any run of
#: equal bytes (padding) would match
MIN_DISTINCT_DIFFERENCES = 4
#: keys tried per unit at most (each is a decoding and a match)
MAX_KEYS_PER_UNIT = 8
#: keys of 2-4 bytes are looked for in units up to this size (firmware's obfuscated beacons are small)...
XOR_MULTI_BYTE_UNIT_BYTES = 4 << 10
#: ...within the first bytes peeled per flow direction (bulk transfers are not searched beyond it): the cost bound
XOR_MULTI_BYTE_PER_DIRECTION = 64 << 10


def xor_bytes(data: bytes, key: bytes) -> bytes:
    """``data`` XOR ``key`` repeated from ``data[0]``."""
    stream = (key * (len(data) // len(key) + 1))[:len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(len(data), "big")


def differential(data: bytes, period: int) -> bytes:
    """``data[i] ^ data[i + period]`` for every i (the key of a period-``period`` XOR cancels out)."""
    n = len(data) - period
    if n <= 0:
        return b""
    return (int.from_bytes(data[:n], "big") ^ int.from_bytes(data[period:], "big")).to_bytes(n, "big")


def _minimal_period(key: bytes) -> bytes:
    for size in range(1, len(key)):
        if len(key) % size == 0 and key[:size] * (len(key) // size) == key:
            return key[:size]
    return key


class XorFinder:
    """Finds the XOR keys (1-4 bytes, repeating) under which a plain needle appears in some bytes.

    One-byte keys: with hyperscan, every needle XOR every key (255 literals per needle) is matched over the bytes
    as they are, at the speed of one more hyperscan pass (no transform). Longer keys (and one-byte keys with the
    pure-Python engine): one matcher holds the differential needles of every period, matched once over the
    differentials of all periods laid end to end.
    """

    def __init__(self, needles: Sequence[Needle], *, engine: str | None = None) -> None:
        plains: list[Needle] = [n for n in needles if not n.regex and n.location is None and n.encoding == "plain"
                                and len(n.pattern) >= MIN_XOR_NEEDLE_BYTES]
        variants: list[tuple[Needle, bytes]] = []
        for needle in plains:
            cased = {needle.pattern}
            if needle.caseless:
                cased |= {needle.pattern.lower(), needle.pattern.upper()}
            variants += [(needle, plain) for plain in sorted(cased)]
        #: literal ``i`` is variant ``i // 255`` under the key ``i % 255 + 1``
        self.single: LiteralMatcher | None = None
        self._single_identifiers = tuple(needle.identifier for needle, _ in variants)
        periods: tuple[int, ...] = XOR_PERIODS
        probe = Matcher((), engine=engine)
        if probe.engine == "hyperscan" and variants:
            tables = _xor_tables()
            self.single = LiteralMatcher([plain.translate(tables[key]) for _, plain in variants
                                          for key in range(1, 256)])
            periods = tuple(p for p in XOR_PERIODS if p > 1)
        self.periods = periods
        diffs: list[Needle] = []
        items: list[tuple[int, bytes]] = []
        for period in periods:
            for needle, plain in variants:
                diff = differential(plain, period)
                if len(set(diff)) >= MIN_DISTINCT_DIFFERENCES:
                    diffs.append(Needle(diff, needle.identifier, f"xor{period}", needle.form))
                    items.append((period, plain))
        self.matcher = Matcher(diffs, engine=engine) if diffs else None
        self._items = items
        self._index_plains()

    def _index_plains(self) -> None:
        #: id(differential needle) -> (period, plain pattern)
        self.plains = {id(n): item for n, item in zip(self.matcher.needles if self.matcher else (), self._items,
                                                      strict=True)}

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (for :mod:`.prepared`): ``plains`` is keyed by object ids, so it is made again."""
        state = dict(self.__dict__)
        del state["plains"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._index_plains()

    def keys(self, data: bytes, *, multi_byte: bool = True) -> list[bytes]:
        """Keys (aligned to ``data[0]``) under which some needle appears; never the zero key (plain text).
        ``multi_byte=False`` looks for one-byte keys only (the cheap search)."""
        found: dict[bytes, None] = {}
        if self.single is not None:
            hits = self.single.scan(data)
            if hits:  # in the order a Matcher of these literals would give them: start, end, identifier
                identifiers = self._single_identifiers
                hits.sort(key=lambda hit: (hit[1], hit[2], identifiers[hit[0] // 255], hit[0]))
                for index, _, _ in hits:
                    found.setdefault(bytes((index % 255 + 1,)), None)
        periods = self.periods if multi_byte else (1,) if 1 in self.periods else ()
        n = len(data)
        if self.matcher is None or not periods or n <= periods[-1]:  # periods ascend (XOR_PERIODS)
            return list(found)[:MAX_KEYS_PER_UNIT]
        matches = self.matcher.find(differentials(data, periods))
        if not matches:  # nearly always
            return list(found)[:MAX_KEYS_PER_UNIT]
        bounds = []
        pos = 0
        for p in periods:
            bounds.append((pos, pos + n - p, p))
            pos += n - p + len(_SEPARATOR)
        for match in matches:
            period, plain = self.plains[id(match.needle)]
            seg_start, seg_end, seg_period = next(b for b in bounds if b[0] <= match.start < b[1] + len(_SEPARATOR))
            if seg_period != period or match.end > seg_end:
                continue  # a differential of another period, or across two of them
            start = match.start - seg_start
            stream = bytes(a ^ b for a, b in zip(data[start:start + period], plain[:period], strict=False))
            if len(stream) < period:
                continue
            shift = start % period
            key = _minimal_period(stream[-shift:] + stream[:-shift] if shift else stream)
            if any(key) and key not in found:
                found[key] = None
                if len(found) >= MAX_KEYS_PER_UNIT:
                    break
        return list(found)[:MAX_KEYS_PER_UNIT]


def differentials(data: bytes, periods: tuple[int, ...]) -> bytes:
    """For each period ``p`` (each below ``len(data)``), ``data[i] ^ data[i - p]`` for ``i >= p``, laid end to end
    with :data:`_SEPARATOR` between two: in C when it is built, else :func:`python_differentials`."""
    if _c_runs is not None:
        return _c_runs.xor_differentials(data, periods, len(_SEPARATOR))
    return python_differentials(data, periods)


def python_differentials(data: bytes, periods: tuple[int, ...]) -> bytes:
    """The reference of :func:`differentials`: ``x ^ (x >> 8p)`` of the bytes as one big integer is
    ``data[i] ^ data[i - p]`` at ``i >= p``, the period-``p`` differential after ``p`` untouched bytes."""
    n = len(data)
    value = int.from_bytes(data, "big")
    return _SEPARATOR.join((value ^ (value >> (8 * p))).to_bytes(n, "big")[p:] for p in periods)


def _xor_tables() -> list[bytes]:
    """byte -> byte XOR key, for bytes.translate (one per one-byte key): each byte of ``0..255`` XOR ``key``,
    as one big-integer XOR per key (a table per key from a generator is 2 ms of every scan's start-up)."""
    identity = int.from_bytes(bytes(range(256)), "big")
    ones = int.from_bytes(bytes((1,)) * 256, "big")
    return [(identity ^ key * ones).to_bytes(256, "big") for key in range(256)]

#: between the differentials of two periods: no differential needle fits in it (they have 4+ distinct values)
_SEPARATOR = bytes(16)


_FINDERS: weakref.WeakKeyDictionary[Matcher, XorFinder] = weakref.WeakKeyDictionary()


def xor_finder(matcher: Matcher) -> XorFinder:
    """The XOR finder for a matcher's needles, built once per matcher (a scan per phase reuses it), or the one
    restored with it from the cache (:func:`remember`)."""
    finder = _FINDERS.get(matcher)
    if finder is None:
        finder = _FINDERS[matcher] = XorFinder(matcher.needles, engine=matcher.engine)
    return finder


def remember(matcher: Matcher, finder: XorFinder) -> None:
    """``finder`` is ``matcher``'s XOR finder (both restored from the cache by :mod:`.prepared`)."""
    _FINDERS[matcher] = finder
