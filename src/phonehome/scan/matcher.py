"""Multi-pattern matching of needles over big buffers: the scanner's hot path.

hyperscan (block mode) when its wheel is installed, else a pure-Python engine (ARM has no wheel) that gives the
same matches, slower. Raw hits are then verified here: digit boundaries for short numeric forms, and
coordinates parsed, checked against the true point and paired (a latitude alone is not a location).

Compiling the hyperscan database is most of a small scan's start-up, so compiled databases are cached on disk
(:class:`DatabaseCache`). A compiled database holds its literals (the identifiers' spellings) in the clear, so
each cache file is encrypted with a key derived from the needles themselves: only someone who already knows the
identifiers can read it back.
"""

from __future__ import annotations

import array
import bisect
import contextlib
import hashlib
import math
import os
import re
import stat
import struct
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from phonehome.identifiers import Identifiers, Location
from phonehome.scan.forms import (
    LOCATION_RADIUS_M,
    LOCATION_WINDOW_BYTES,
    Needle,
    distance_m,
    tolerance_deg,
)
from phonehome.scan.serialised import scaled_int32_value

#: environment variable that forces the pure-Python engine (``PHONEHOME_MATCHER=python``)
ENGINE_ENV = "PHONEHOME_MATCHER"
#: environment variable naming the directory of cached hyperscan databases (else $XDG_CACHE_HOME/phonehome)
CACHE_DIR_ENV = "PHONEHOME_CACHE_DIR"
#: cached databases kept (one per identifiers set); the least recently written go first
MAX_CACHED_DATABASES = 32
#: bumped whenever the way expressions are made or the file layout changes: old entries then simply miss
CACHE_FORMAT = b"phonehome-hsdb-1"
_CACHE_SUFFIX = ".hsdb"
_NONCE_BYTES = 12
#: bytes read around a coordinate hit to parse the whole number
NUMBER_CONTEXT_BYTES = 24
#: a binary latitude and longitude must be this close (struct fields), at a multiple of 4 bytes
BINARY_PAIR_BYTES = 16
#: or, in a serialisation (protobuf, CBOR, MessagePack, BSON), at most this much framing between the two values
SERIALISED_FRAMING_BYTES = 12
#: upper bound for a regex needle whose width Python cannot compute
DEFAULT_REGEX_WIDTH = 256
_DIGITS = frozenset(b"0123456789")
_WILDCARD = rb"[\x00-\xff]"
_BINARY_ENCODINGS = ("e7-int32", "e6-int32", "e5-int32", "float32", "float64")


@dataclass(frozen=True)
class Match:
    """A verified occurrence of a needle: ``data[start:end]`` (a location spans its lat and its lon)."""

    needle: Needle
    start: int
    end: int


@dataclass(frozen=True)
class _Coordinate:
    """A coordinate hit that passed its own checks and waits for its partner."""

    needle: Needle
    location: Location
    axis: str
    value: float
    start: int
    end: int
    binary: bool


_BYTE_TOKENS = re.compile(rb"(?:\\x[0-9a-fA-F]{2}|\[\\x[0-9a-fA-F]{2}-\\x[0-9a-fA-F]{2}\])+")


def _regex_width(pattern: bytes) -> tuple[int, int]:
    if _BYTE_TOKENS.fullmatch(pattern):  # binary numbers: one byte per token, no need for re's parser
        width = pattern.count(b"\\x") - pattern.count(b"-\\x")
        return width, width
    try:
        low, high = re._parser.parse(pattern).getwidth()  # type: ignore[attr-defined]
    except Exception:  # pragma: no cover - private API guard
        return 0, DEFAULT_REGEX_WIDTH
    return int(low), int(min(high, DEFAULT_REGEX_WIDTH))


class Matcher:
    """Finds every needle in a buffer, verified.

    ``engine`` is ``"hyperscan"``, ``"python"`` or None (hyperscan when importable, unless
    ``PHONEHOME_MATCHER=python``). Build once per identifiers set (see :func:`build_matcher`): compiling
    thousands of patterns takes a moment, scanning does not. One matcher serves one thread at a time
    (hyperscan's scratch space belongs to the database); processes each build their own.
    """

    def __init__(self, needles: Sequence[Needle], *, engine: str | None = None) -> None:
        self.needles: tuple[Needle, ...] = tuple(needles)
        widths = [_regex_width(n.pattern) if n.regex else (len(n.pattern), len(n.pattern)) for n in self.needles]
        longest = max((high for _, high in widths), default=0)
        has_location = any(n.location is not None for n in self.needles)
        self._overlap = longest + NUMBER_CONTEXT_BYTES + (LOCATION_WINDOW_BYTES if has_location else 0)
        self.engine = _choose_engine(engine)
        self._scan: Callable[[bytes], list[tuple[int, int, int]]]
        #: True when the hyperscan database came from the on-disk cache (None: no database to cache)
        self.cache_hit: bool | None = None
        if not self.needles:
            self._scan = _no_hits
        elif self.engine == "hyperscan":
            hs_engine = _HyperscanEngine([(n.pattern, n.caseless, n.regex) for n in self.needles], widths)
            self.cache_hit = hs_engine.cache_hit
            self._scan = hs_engine.scan
        else:
            self._scan = _PythonEngine(self.needles).scan

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restored from the cache of prepared matchers (:mod:`.prepared`): its database too."""
        self.__dict__.update(state)
        if self.cache_hit is not None:
            self.cache_hit = True

    @property
    def overlap(self) -> int:
        """Bytes of context a caller must carry from one chunk of a stream into the next (matches that lie
        entirely inside the carried bytes are found twice: deduplicate by finding)."""
        return self._overlap

    def find(self, data: bytes | memoryview) -> list[Match]:
        """All verified matches in ``data``, ordered by start offset."""
        buffer = data if isinstance(data, bytes) else bytes(data)
        hits = self._scan(buffer)
        if not hits:  # most buffers: nothing to verify, sort or pair
            return []
        matches: dict[tuple[str, str, int, int], Match] = {}
        coordinates: list[_Coordinate] = []
        # sorted, so that both engines keep the same needle when two spell the same match
        for index, start, end in sorted(hits, key=lambda hit: (hit[1], hit[2], hit[0])):
            needle = self.needles[index]
            if needle.location is not None:
                coordinate = _verify_coordinate(buffer, needle, start, end)
                if coordinate is not None:
                    coordinates.append(coordinate)
                continue
            if needle.digit_boundary and not _at_digit_boundary(buffer, start, end):
                continue
            matches.setdefault((needle.identifier, needle.encoding, start, end), Match(needle, start, end))
        for match in _pair_coordinates(coordinates) if coordinates else ():
            matches.setdefault((match.needle.identifier, match.needle.encoding, match.start, match.end), match)
        return sorted(matches.values(), key=lambda m: (m.start, m.end, m.needle.identifier))


class LiteralMatcher:
    """Many plain literals, hyperscan only, no :class:`Needle` per literal and no verification: ``scan(data)``
    gives raw ``(index, start, end)`` hits. For the XOR finder's 255 spellings of each needle, where making and
    checking one :class:`Needle` each would be most of a scan's start-up. Its database is cached like a
    :class:`Matcher`'s."""

    def __init__(self, literals: Sequence[bytes]) -> None:
        engine = _HyperscanEngine([(literal, False, False) for literal in literals],
                                  [(len(literal), len(literal)) for literal in literals])
        self.cache_hit = engine.cache_hit
        self.scan: Callable[[bytes], list[tuple[int, int, int]]] = engine.scan


@lru_cache(maxsize=16)
def _cached_matcher(ids: Identifiers, engine: str) -> Matcher:
    from phonehome.scan.prepared import prepared_matcher  # it imports this module

    return prepared_matcher(ids, engine)


def build_matcher(ids: Identifiers, *, engine: str | None = None) -> Matcher:
    """The matcher for one identifiers set, built once per process (a scan per phase reuses it) and cached on
    disk with its XOR finder (:mod:`.prepared`)."""
    return _cached_matcher(ids, _choose_engine(engine))


def _no_hits(data: bytes) -> list[tuple[int, int, int]]:
    return []


def hyperscan_available() -> bool:
    """True when the hyperscan wheel imports (x86_64); the pure-Python engine is used otherwise."""
    try:
        import hyperscan  # noqa: F401
    except ImportError:
        return False
    return True


def _choose_engine(engine: str | None) -> str:
    if engine is None:
        wanted = os.environ.get(ENGINE_ENV, "").strip().lower()
        engine = wanted or ("hyperscan" if hyperscan_available() else "python")
    if engine not in ("hyperscan", "python"):
        raise ValueError(f"unknown matcher engine {engine!r}: use 'hyperscan' or 'python'")
    if engine == "hyperscan" and not hyperscan_available():
        return "python"
    return engine


class PatternSet:
    """Which of a few regexes occur in a buffer, found in one hyperscan pass (one match per pattern at most).

    The nested decoders ask it which of their layers could be present at all, instead of each making its own
    pass over every buffer. Build with :func:`pattern_set`, which gives None when hyperscan is not installed or
    ``PHONEHOME_MATCHER=python`` (the callers then test each pattern their own way).
    """

    def __init__(self, patterns: Sequence[bytes]) -> None:
        import hyperscan

        flags = [hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_DOTALL] * len(patterns)
        self._db, _ = _compiled_database(patterns, flags, bytes(len(patterns)))
        self._callback = _hs_on_pattern

    def present(self, data: bytes) -> set[int]:
        """The indexes of the patterns that occur in ``data``."""
        found: set[int] = set()
        self._db.scan(data, match_event_handler=self._callback, context=found)
        return found


def pattern_set(patterns: Sequence[bytes]) -> PatternSet | None:
    """A :class:`PatternSet` of ``patterns`` on the hyperscan engine, or None on the pure-Python engine."""
    if _choose_engine(None) != "hyperscan":
        return None
    return PatternSet(patterns)


def _hs_on_pattern(index: int, start: int, end: int, flags: int, context: object) -> None:
    assert isinstance(context, set)
    context.add(index)


def _at_digit_boundary(data: bytes, start: int, end: int) -> bool:
    before = data[start - 1] if start > 0 else None
    after = data[end] if end < len(data) else None
    return before not in _DIGITS and after not in _DIGITS


# --- engines -------------------------------------------------------------------------------------------------


def _hs_on_match(index: int, start: int, end: int, flags: int, context: object) -> None:
    """hyperscan's callback: a plain function (a bound method as callback crashed the binding)."""
    assert isinstance(context, list)
    context.append((index, start, end))


_HEX_ESCAPES = tuple(b"\\x%02x" % byte for byte in range(256))


def escape_literal(pattern: bytes) -> bytes:
    """A literal as a regex of ``\\xHH`` escapes: hyperscan's literal mode mishandles NUL bytes."""
    return b"".join(map(_HEX_ESCAPES.__getitem__, pattern))


def _database_material(expressions: Sequence[bytes], flags: Sequence[int], literals: bytes) -> bytes:
    """Everything a compiled database depends on, as bytes: the cache key and the cache file's key derive from
    it. Counts, lengths, flags and kinds come first as fixed-width arrays, so that two different needle lists
    can never give the same bytes."""
    import hyperscan

    header = b"\n".join([CACHE_FORMAT, str(getattr(hyperscan, "__version__", "?")).encode(),
                         b"%d" % hyperscan.HS_MODE_BLOCK, os.uname().machine.encode(), b"%d" % len(expressions)])
    return b"".join([header, b"\n", array.array("Q", map(len, expressions)).tobytes(),
                     array.array("Q", flags).tobytes(), literals, *expressions])


@dataclass(frozen=True)
class DatabaseCache:
    """Compiled hyperscan databases on disk, so a scan does not recompile the same needles every run.

    The file name is a hash of the needles (with hyperscan's version and the engine's flags); the content is the
    serialized database encrypted with AES-GCM under another hash of the same needles. A compiled database holds
    its literals in the clear, so without that a cache file would reveal the identifiers; with it, reading one
    back takes the identifiers it was built from. Files are 0600 in a 0700 directory, and are read only from a
    directory and as files of this user's that nobody else may write (entries are unpickled). Anything wrong with an
    entry (unreadable, truncated, tampered, another hyperscan build) makes it a miss that is rebuilt and
    rewritten; a cache that cannot be written only costs the compile time, never the scan.
    """

    directory: Path

    @classmethod
    def default(cls) -> DatabaseCache | None:
        """$PHONEHOME_CACHE_DIR, else $XDG_CACHE_HOME/phonehome, else ~/.cache/phonehome (None when no home)."""
        configured = os.environ.get(CACHE_DIR_ENV, "").strip()
        if configured:
            return cls(Path(configured))
        xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
        if xdg:
            return cls(Path(xdg) / "phonehome")
        try:
            return cls(Path.home() / ".cache" / "phonehome")
        except RuntimeError:  # no home directory to be found
            return None

    def path_for(self, material: bytes, suffix: str = _CACHE_SUFFIX) -> Path:
        name = hashlib.sha256(b"name\n" + material).hexdigest()
        return self.directory / (name + suffix)

    def load(self, material: bytes) -> Any:
        """The cached database for ``material`` (scratch space allocated), or None on any miss."""
        import hyperscan

        serialized = self.read(material)
        if serialized is None:
            return None
        try:
            db = hyperscan.loadb(serialized, hyperscan.HS_MODE_BLOCK)
            db.scratch = hyperscan.Scratch(db)
        except (hyperscan.error, TypeError, ValueError):
            return None
        return db

    def read(self, material: bytes, suffix: str = _CACHE_SUFFIX) -> bytes | None:
        """The decrypted content of the entry for ``material``, or None on any miss (absent, unreadable,
        truncated, tampered, written under other material)."""
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        blob = self._read_private(self.path_for(material, suffix))
        if blob is None:
            return None
        nonce, sealed = blob[:_NONCE_BYTES], blob[_NONCE_BYTES:]
        if len(nonce) != _NONCE_BYTES:
            return None
        try:
            return AESGCM(_file_key(material)).decrypt(nonce, sealed, CACHE_FORMAT)
        except (InvalidTag, TypeError, ValueError):
            return None

    def write(self, material: bytes, content: bytes, suffix: str = _CACHE_SUFFIX) -> None:
        """Write one entry atomically (0600), encrypted, then drop the oldest entries of its kind (``suffix``)
        beyond :data:`MAX_CACHED_DATABASES`. Errors are ignored: the cache only saves time."""
        import tempfile

        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(_NONCE_BYTES)
        blob = nonce + AESGCM(_file_key(material)).encrypt(nonce, content, CACHE_FORMAT)
        target = self.path_for(material, suffix)
        temporary: str | None = None
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not self._private_directory():
                return
            # a fresh name opened with O_EXCL (mkstemp): no planted file or symlink is written through
            fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=self.directory)
            with os.fdopen(fd, "wb") as handle:
                handle.write(blob)
                os.fchmod(handle.fileno(), 0o600)  # exactly 0600 whatever the umask
            os.replace(temporary, target)
        except OSError:
            if temporary is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
            return
        self._evict(suffix)

    def _private_directory(self) -> bool:
        """True when the cache directory is this user's and nobody else may write in it: an entry written by
        someone else is never read (entries are unpickled), and none is written where others could swap it."""
        try:
            st = os.stat(self.directory)
        except OSError:
            return False
        return st.st_uid == os.geteuid() and not st.st_mode & 0o022

    def _read_private(self, path: Path) -> bytes | None:
        """The bytes of an entry that is a regular file of this user's, not writable by others, in a private
        directory (else None: a miss)."""
        if not self._private_directory():
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
                return None
            with os.fdopen(fd, "rb", closefd=False) as handle:
                return handle.read()
        except OSError:
            return None
        finally:
            os.close(fd)

    def _evict(self, suffix: str) -> None:
        try:
            entries = sorted(self.directory.glob("*" + suffix), key=lambda p: p.stat().st_mtime)
            for stale in entries[:-MAX_CACHED_DATABASES]:
                stale.unlink(missing_ok=True)
        except OSError:
            return


def _compiled_database(expressions: Sequence[bytes], flags: Sequence[int], literals: bytes) -> tuple[Any, bool]:
    """A block-mode database of ``expressions`` (``literals[i]`` true: expression ``i`` is a literal, escaped
    only when compiling) with their ``flags`` and ids 0..n-1: from the database cache, else compiled and cached.
    Returns it and whether it came from the cache."""
    import hyperscan

    cache = DatabaseCache.default()
    material = _database_material(expressions, flags, literals)
    db = cache.load(material) if cache is not None else None
    if db is not None:
        return db, True
    escaped = [escape_literal(e) if literal else e for e, literal in zip(expressions, literals, strict=True)]
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(expressions=escaped, ids=list(range(len(escaped))), elements=len(escaped), flags=list(flags))
    if cache is not None:
        cache.write(material, hyperscan.dumpb(db))
    return db, False


def _file_key(material: bytes) -> bytes:
    """AES-256 key of a cache file: derived from the needles, never stored."""
    return hashlib.sha256(b"key\n" + material).digest()


class _HyperscanEngine:
    """All needles in one hyperscan block-mode database.

    No start-of-match tracking (it slows every scan): literal and fixed-width starts follow from the end;
    leading and trailing ``[\\x00-\\xff]`` of binary patterns are cut off before compiling (they give hyperscan
    nothing to anchor on) and added back; the rare hits of variable-width regexes get their start from
    :mod:`re`.
    """

    def __init__(self, patterns: Sequence[tuple[bytes, bool, bool]], widths: Sequence[tuple[int, int]]) -> None:
        """``patterns``: (pattern, caseless, regex) per needle, in needle order; ``widths``: their (low, high)."""
        import hyperscan

        self._shapes: list[tuple[int, int, int, re.Pattern[bytes] | None]] = []  # lead, width, trail, regex
        expressions: list[bytes] = []
        flags: list[int] = []
        literals = bytearray()  # escaped only when compiling: a cache hit needs no expressions
        for (pattern, caseless, regex), (low, high) in zip(patterns, widths, strict=True):
            flag = hyperscan.HS_FLAG_CASELESS if caseless else 0
            literals.append(not regex)
            if not regex:
                expressions.append(pattern)
                self._shapes.append((0, len(pattern), 0, None))
            elif low == high:
                lead, core = _strip_wildcards(pattern)
                trail, core = _strip_trailing_wildcards(core)
                if not core:  # all wildcards: keep as is
                    lead, trail, core = 0, 0, pattern
                expressions.append(core)
                self._shapes.append((lead, low - lead - trail, trail, None))
            else:
                expressions.append(pattern)
                compiled = re.compile(pattern, re.DOTALL | (re.IGNORECASE if caseless else 0))
                self._shapes.append((low, high, -1, compiled))
            flags.append(flag)
        self._db, self.cache_hit = _compiled_database(expressions, flags, bytes(literals))
        self._callback = _hs_on_match  # referenced for the database's whole life

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (for :mod:`.prepared`): the database serialized, as the database cache holds it."""
        import hyperscan

        return {"shapes": self._shapes, "database": hyperscan.dumpb(self._db)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        import hyperscan

        db = hyperscan.loadb(state["database"], hyperscan.HS_MODE_BLOCK)
        db.scratch = hyperscan.Scratch(db)
        self._shapes = state["shapes"]
        self._db = db
        self.cache_hit = True
        self._callback = _hs_on_match

    def scan(self, data: bytes) -> list[tuple[int, int, int]]:
        hits: list[tuple[int, int, int]] = []
        self._db.scan(data, match_event_handler=self._callback, context=hits)
        shapes = self._shapes
        size = len(data)
        out: list[tuple[int, int, int]] = []
        for index, _, end in hits:
            lead, width, trail, regex = shapes[index]
            if regex is not None:
                start = _leftmost_start(regex, data, end, lead, width)
                if start is not None:
                    out.append((index, start, end))
                continue
            start, stop = end - width - lead, end + trail
            if start >= 0 and stop <= size:
                out.append((index, start, stop))
        return out


def _leftmost_start(regex: re.Pattern[bytes], data: bytes, end: int, low: int, high: int) -> int | None:
    for start in range(max(0, end - high), end - low + 1):
        if regex.fullmatch(data, start, end):
            return start
    return None


def _strip_trailing_wildcards(pattern: bytes) -> tuple[int, bytes]:
    trail = 0
    while pattern.endswith(_WILDCARD):
        pattern = pattern[: -len(_WILDCARD)]
        trail += 1
    return trail, pattern


class _PythonEngine:
    """Pure Python, without a per-byte Python loop.

    Literals of 7 bytes or more are indexed by their (lower-cased) 4-byte grams at offsets 0-3: any occurrence
    contains one of them at a 4-aligned offset of the buffer, so intersecting the set of aligned grams of the
    lower-cased buffer (a C-speed set operation over ``memoryview.cast('I')``) with the index leaves only real
    candidates, which are then compared. Shorter literals use ``bytes.find``. Fixed-width regexes (binary
    numbers) are found by their longest literal run and checked with :mod:`re`; the few variable-width ones
    run as they are.
    """

    GRAM = 4
    MIN_INDEXED = 2 * GRAM - 1
    #: above this many distinct grams present, one pass over all aligned grams beats a find per gram
    FEW_GRAMS = 16

    def __init__(self, needles: Sequence[Needle]) -> None:
        self._index: dict[int, list[tuple[int, int, bytes, bool]]] = {}
        self._short: list[tuple[int, bytes, bool]] = []
        self._anchored: list[tuple[int, re.Pattern[bytes], bytes, int]] = []  # index, regex, literal, offset
        self._regexes: list[tuple[int, re.Pattern[bytes]]] = []
        for index, needle in enumerate(needles):
            if needle.regex:
                flags = re.DOTALL | (re.IGNORECASE if needle.caseless else 0)
                compiled = re.compile(needle.pattern, flags)
                anchor = _literal_anchor(needle.pattern)
                if anchor is not None and not needle.caseless:
                    self._anchored.append((index, compiled, anchor[0], anchor[1]))
                else:
                    self._regexes.append((index, compiled))
                continue
            pattern = needle.pattern.lower() if needle.caseless else needle.pattern
            lowered = pattern.lower()
            first = _distinctive_window(lowered, self.GRAM) if len(pattern) >= self.MIN_INDEXED else -1
            if first < 0 or any(lowered[i:i + self.GRAM].count(0) >= self.GRAM - 1
                                for i in range(first, first + self.GRAM)):
                # short, or mostly zero bytes (a TBCD IMSI): its grams are everywhere, bytes.find is faster
                self._short.append((index, pattern, needle.caseless))
                continue
            for offset in range(first, first + self.GRAM):
                key = int.from_bytes(lowered[offset:offset + self.GRAM], sys.byteorder)
                self._index.setdefault(key, []).append((index, offset, pattern, needle.caseless))

    def scan(self, data: bytes) -> list[tuple[int, int, int]]:
        hits: list[tuple[int, int, int]] = []
        lowered = data.lower()
        if self._index:
            self._scan_grams(data, lowered, hits)
        for index, pattern, caseless in self._short:
            haystack = lowered if caseless else data
            position = haystack.find(pattern)
            while position >= 0:
                hits.append((index, position, position + len(pattern)))
                position = haystack.find(pattern, position + 1)
        for index, regex, literal, offset in self._anchored:
            position = data.find(literal)
            while position >= 0:
                start = position - offset
                found = regex.match(data, start) if start >= 0 else None
                if found is not None:
                    hits.append((index, start, found.end()))
                position = data.find(literal, position + 1)
        for index, regex in self._regexes:
            position = 0
            while (match := regex.search(data, position)) is not None:
                hits.append((index, match.start(), match.end()))
                position = match.start() + 1
        return hits

    def _scan_grams(self, data: bytes, lowered: bytes, hits: list[tuple[int, int, int]]) -> None:
        aligned = len(data) // self.GRAM * self.GRAM
        grams = memoryview(lowered)[:aligned].cast("I")
        present = self._index.keys() & set(grams)
        if not present:
            return
        if len(present) <= self.FEW_GRAMS:  # usual case: find the few grams' aligned occurrences directly
            candidates: Iterable[tuple[int, int]] = (
                (position, key) for key in present for position in _aligned_occurrences(lowered, key, aligned))
        else:  # hex or base64 text shares many grams with digests: one pass over the aligned grams
            candidates = ((i * self.GRAM, key) for i, key in enumerate(grams) if key in present)
        index = self._index
        for position, key in candidates:
            for needle_index, offset, pattern, caseless in index[key]:
                start = position - offset
                if start >= 0 and (lowered if caseless else data).startswith(pattern, start):
                    hits.append((needle_index, start, start + len(pattern)))


def _distinctive_window(pattern: bytes, gram: int) -> int:
    """Where the ``gram`` consecutive grams of a needle are least common in traffic (zero bytes and repeats
    are everywhere: a TBCD IMSI full of zeros must not be indexed by ``00000000``)."""
    def commonness(start: int) -> int:
        window = pattern[start:start + 2 * gram - 1]
        return sum(2 * window[i:i + gram].count(0) + gram - len(set(window[i:i + gram])) for i in range(gram))
    return min(range(len(pattern) - 2 * gram + 2), key=commonness)


def _aligned_occurrences(haystack: bytes, key: int, limit: int) -> Iterator[int]:
    gram = key.to_bytes(_PythonEngine.GRAM, sys.byteorder)
    position = haystack.find(gram, 0, limit)
    while position >= 0:
        if position % _PythonEngine.GRAM == 0:
            yield position
        position = haystack.find(gram, position + 1, limit)


_TOKEN = re.compile(rb"\\x([0-9a-fA-F]{2})|\[\\x[0-9a-fA-F]{2}-\\x[0-9a-fA-F]{2}\]")


def _literal_anchor(pattern: bytes) -> tuple[bytes, int] | None:
    """For a pattern made only of ``\\xHH`` bytes and ``[\\xHH-\\xHH]`` classes: its longest literal run and
    that run's offset, so it can be found with ``bytes.find``; None for any other pattern."""
    position = 0
    runs: list[tuple[bytes, int]] = []
    current = bytearray()
    width = 0
    while position < len(pattern):
        token = _TOKEN.match(pattern, position)
        if token is None:
            return None
        position = token.end()
        if token.group(1) is not None:
            if not current:
                runs.append((b"", width))
            current.append(int(token.group(1), 16))
            runs[-1] = (bytes(current), runs[-1][1])
        else:
            current = bytearray()
        width += 1
    best = max(runs, key=lambda run: len(run[0]), default=None)
    return best if best is not None and len(best[0]) >= 2 else None


def _strip_wildcards(pattern: bytes) -> tuple[int, bytes]:
    lead = 0
    while pattern.startswith(_WILDCARD):
        pattern = pattern[len(_WILDCARD):]
        lead += 1
    return lead, pattern


# --- coordinates ---------------------------------------------------------------------------------------------

_NUMBER_TAIL = re.compile(rb"[0-9]*")


def _axis_of(needle: Needle) -> str:
    return needle.form.split("-", 1)[0]


def _verify_coordinate(data: bytes, needle: Needle, start: int, end: int) -> _Coordinate | None:
    """Parse the number the hit is part of; None unless it is the needle's coordinate (within tolerance)."""
    location = needle.location
    assert location is not None
    axis = _axis_of(needle)
    target = location.lat if axis == "lat" else location.lon
    tolerance = tolerance_deg(location)[0 if axis == "lat" else 1]
    encoding = needle.encoding
    value: float | None
    if encoding.startswith(_BINARY_ENCODINGS):
        value = _binary_value(data[start:end], encoding)
        if value is None or abs(value - target) > tolerance:
            return None
        return _Coordinate(needle, location, axis, value, start, end, True)
    if start > 0 and (data[start - 1] in _DIGITS or (data[start - 1] in b".-" and not needle.pattern.startswith(b"-"))):
        return None  # part of a longer number (or a negative one)
    tail = _NUMBER_TAIL.match(data, end, min(len(data), end + NUMBER_CONTEXT_BYTES))
    tail_end = tail.end() if tail else end
    text = data[start:tail_end].decode("ascii")
    if encoding == "plain":
        value = float(text)
    elif encoding == "e6":
        number = int(text)
        for scale, name in ((1e6, "e6"), (1e7, "e7"), (1e5, "e5")):
            if abs(number / scale - target) <= tolerance:
                return _Coordinate(replace(needle, encoding=name, form=f"{axis}-{name}"), location, axis,
                                   number / scale, start, tail_end, False)
        return None
    elif encoding == "nmea":
        value = _nmea_value(data, text, tail_end)
    else:  # pragma: no cover - forms only makes the encodings above
        return None
    if value is None or abs(value - target) > tolerance:
        return None
    return _Coordinate(needle, location, axis, value, start, tail_end, False)


def _binary_value(raw: bytes, encoding: str) -> float | None:
    order = ">" if encoding.endswith("be") else "<"
    if encoding.startswith("e7-int32"):
        return float(struct.unpack(order + "i", raw)[0]) / 1e7
    if encoding.startswith(("e6-int32", "e5-int32")):
        return scaled_int32_value(raw, encoding)
    fmt = "f" if encoding.startswith("float32") else "d"
    value = float(struct.unpack(order + fmt, raw)[0])
    return value if math.isfinite(value) else None


def _nmea_value(data: bytes, text: str, end: int) -> float | None:
    """``ddmm.mmmm`` plus the hemisphere letter right after it (``,N``/``S``/``E``/``W``) -> signed degrees."""
    hemisphere = data[end:end + 2].lstrip(b",")[:1]
    if hemisphere not in (b"N", b"S", b"E", b"W"):
        return None  # without its hemisphere it is just a number
    whole, _, fraction = text.partition(".")
    if len(whole) < 3:
        return None
    degrees = int(whole[:-2]) + float(f"{whole[-2:]}.{fraction}") / 60
    return -degrees if hemisphere in (b"S", b"W") else degrees


def _pair_coordinates(coordinates: list[_Coordinate]) -> list[Match]:
    """A location is a latitude and a longitude of the same point close to each other, in either order."""
    lats = [c for c in coordinates if c.axis == "lat"]
    # in start order (they come so; a stable sort keeps ties as they were): a latitude's possible partners are a
    # slice, not every longitude (random binary data holds thousands of coordinate-like numbers)
    lons = sorted((c for c in coordinates if c.axis == "lon"), key=_start)
    starts = [c.start for c in lons]
    # no pair is farther apart than this (see _close): text within the window, binary values within their
    # struct distance or their width plus a serialisation's framing
    widest = max((c.end - c.start for c in coordinates), default=0)
    window = max(LOCATION_WINDOW_BYTES, BINARY_PAIR_BYTES, widest + SERIALISED_FRAMING_BYTES)
    matches: list[Match] = []
    for lat in lats:
        near = lons[bisect.bisect_left(starts, lat.start - window):bisect.bisect_right(starts, lat.start + window)]
        partners = [lon for lon in near if lon.location == lat.location and _close(lat, lon)
                    and distance_m(Location(lat.value, lon.value), lat.location) <= LOCATION_RADIUS_M]
        if not partners:
            continue
        # the same encoding nearby is the likeliest partner ("lat":..,"lon":.. ; N..,E..)
        lon = min(partners, key=lambda c: (c.needle.encoding != lat.needle.encoding, abs(c.start - lat.start)))
        first = lat if lat.start <= lon.start else lon
        matches.append(Match(first.needle, min(lat.start, lon.start), max(lat.end, lon.end)))
    return matches


def _start(coordinate: _Coordinate) -> int:
    return coordinate.start


def _close(a: _Coordinate, b: _Coordinate) -> bool:
    if a.end > b.start and b.end > a.start:
        return False  # one number cannot be both
    if a.binary or b.binary:
        gap = b.start - a.start
        framing = abs(gap) - (a.end - a.start)  # bytes between them: a protobuf tag, a CBOR/BSON key...
        return (a.binary and b.binary and a.needle.encoding == b.needle.encoding
                and ((abs(gap) <= BINARY_PAIR_BYTES and gap % 4 == 0) or 0 <= framing <= SERIALISED_FRAMING_BYTES))
    return abs(b.start - a.start) <= LOCATION_WINDOW_BYTES
