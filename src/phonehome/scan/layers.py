"""Nested decoders: everything an app may have wrapped an identifier in before sending it.

:func:`peel` finds decodable layers *inside* a buffer (a gzip member in a raw TCP payload, a base64 run in a
JSON value, percent-encoding in a query string) and decodes them recursively, so that ``base64(gzip(json))``
is matched as ``base64>gzip>plain``. :func:`decode_content` undoes an HTTP ``Content-Encoding``.

Both are hostile-input code: every decoder is bounded in output (zip bombs), in depth, and in the number of
attempts; neither ever raises. Layer names (``gzip``, ``zlib``, ``deflate``, ``brotli``, ``bzip2``, ``lzma``,
``base64``, ``base64url``, ``base32``, ``hex``, ``url``, ``html``, ``json``, ``qp``, ``utf16le``, ``utf16be``)
are joined outermost first with ``>``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import html
import re
import sys
import urllib.parse
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from phonehome.scan.matcher import PatternSet, escape_literal, pattern_set

#: ``ACCELERATED``: the base64/base64url/base32/hex run decoders are the C ones of :mod:`phonehome.scan._runs`
#: (built at install when a C compiler is there); else the ``_python_*`` ones below, the same bytes, slower
try:
    from phonehome.scan import _runs as _c_runs
except ImportError:
    ACCELERATED = False
else:
    # a module built from an older _runs.c (an editable install not rebuilt since a pull) lacks the newer
    # functions: then the Python decoders, not a C call that raises on every buffer (and a layer lost each time)
    ACCELERATED = all(hasattr(_c_runs, name) for name in ("decode_runs", "decode_every_run", "layer_marks"))

#: default bounds of :func:`peel`
MAX_DEPTH = 3
MAX_OUTPUT_BYTES = 4 << 20
#: default bound of one :func:`decode_content` call (one message's decoded body: part of the scan's memory budget,
#: docs/architecture.md "Memory"; past it the rest is not decoded, and said)
MAX_CONTENT_BYTES = 8 << 20
#: shortest base64/base32/hex run worth decoding (shorter ones are mostly words and numbers)
MIN_RUN_CHARS = 16
#: compressed members tried per buffer and layer (each try is cheap but a buffer can hold many magics)
MAX_COMPRESSED_TRIES = 32
#: text decoders only look at buffers up to this size per layer (the matcher sees the raw bytes anyway)
MAX_TEXT_DECODE_BYTES = 8 << 20
_CHUNK = 64 << 10
#: escaped tokens decoded one by one; beyond that the whole buffer is decoded in one pass
MAX_TOKENS = 4096


class _RunFinder:
    """Maximal runs of one alphabet, the same spans as a character-class regex finds, several times faster.

    ``re`` tries a character-class pattern such as ``[0-9A-Fa-f]{16,}`` at every offset; JSON is so full of short
    runs (numbers, words, ids) that this made the run search most of a scan's time. Instead the buffer is first
    translated (in C) to a marker alphabet, ``a`` for every byte of the class, ``keep`` bytes as themselves and
    anything else to a space, and ``marked`` (a pattern over that alphabet that starts with a literal, which
    ``re`` searches for with a fast prefix scan) yields exactly the same spans.
    """

    def __init__(self, members: bytes, keep: bytes, marked: bytes) -> None:
        table = bytearray(b" " * 256)
        for byte in members:
            table[byte] = ord("a")
        for byte in keep:
            table[byte] = byte
        self.table = bytes(table)
        self.pattern = re.compile(marked)

    def runs(self, data: bytes) -> list[bytes]:
        return [data[start:end] for start, end in map(re.Match.span, self.pattern.finditer(data.translate(self.table)))]


def _alphabet(*spans: bytes) -> bytes:
    """The bytes of ``spans``, each one byte or a ``first-last`` range: ``_alphabet(b"A-Z", b"+")``."""
    return b"".join(bytes(range(span[0], span[-1] + 1)) for span in spans)


_A = b"a" * MIN_RUN_CHARS
#: the same runs as ``[A-Za-z0-9+/_-]{16,}={0,2}``
_BASE64_RUN = _RunFinder(_alphabet(b"A-Z", b"a-z", b"0-9", b"+", b"/", b"_", b"-"), b"=", _A + b"a*={0,2}")
#: ``[A-Z2-7]{16,}=*``
_BASE32_RUN = _RunFinder(_alphabet(b"A-Z", b"2-7"), b"=", _A + b"a*=*")
#: ``[0-9A-Fa-f]{16,}``
_HEX_RUN = _RunFinder(_alphabet(b"0-9", b"A-F", b"a-f"), b"", _A + b"a*")
_TEXT_BYTES = _alphabet(b"\t", b"\n", b"\r", b" -~")
#: ``(?:[\x09\x0a\x0d\x20-\x7e]\x00){8,}`` and ``(?:\x00[\x09\x0a\x0d\x20-\x7e]){8,}``
_UTF16LE_RUN = _RunFinder(_TEXT_BYTES, b"\x00", b"a\x00" * 8 + b"(?:a\x00)*")
_UTF16BE_RUN = _RunFinder(_TEXT_BYTES, b"\x00", b"\x00a" * 8 + b"(?:\x00a)*")
#: text bytes to ``a`` and every other byte to a space: the ends of a stretch of text are a find() away
_TEXT_MARKS = bytes(ord("a") if byte in _TEXT_BYTES else ord(" ") for byte in range(256))
#: bytes that are not text, deleted to count the text bytes in :func:`_mostly_text`
_NOT_TEXT = bytes(byte for byte in range(256) if byte not in _TEXT_BYTES)
_PERCENT = re.compile(rb"%[0-9A-Fa-f]{2}")
_ENTITY = re.compile(rb"&(?:#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_JSON_ESCAPE = re.compile(rb"\\u([0-9A-Fa-f]{4})")
_QP_EQUALS = re.compile(rb"=3D")
#: between decoded runs joined into one layer: no digit, no base64 character, so nothing matches across it
_JOIN = b"\n\x00\n"

_GZIP_MAGIC = b"\x1f\x8b\x08"
_ZLIB_MAGICS = (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda")
_BZIP2_MAGIC = re.compile(rb"BZh[1-9]1AY&SY")
_XZ_MAGIC = b"\xfd7zXZ\x00"
_ZLIB_ANY = re.compile(b"x[" + re.escape(b"".join(magic[1:] for magic in _ZLIB_MAGICS)) + b"]")
#: anything quoted-printable could decode (see :func:`_quoted_printable`)
_QP_ANY = re.compile(rb"=(?:\r?\n|3D)")
#: a soft line break
_QP_SOFT_BREAK = re.compile(rb"=\r?\n")


@dataclass
class Budget:
    """Output bytes left for one :func:`peel`: shared by every layer so a bomb anywhere stops everything."""

    left: int

    def take(self, size: int) -> int:
        granted = max(0, min(size, self.left))
        self.left -= granted
        return granted


def peel(data: bytes, *, max_depth: int = MAX_DEPTH, max_output: int = MAX_OUTPUT_BYTES) -> Iterator[tuple[str, bytes]]:
    """Yield ``(chain, decoded)`` for every layer decodable inside ``data``, recursively (outermost first).

    ``data`` itself is not yielded: the caller matches it directly. Total decoded output is at most
    ``max_output`` bytes and chains at most ``max_depth`` long. Never raises.
    """
    budget = Budget(max(0, max_output))
    try:
        yield from _peel(bytes(data), "", max_depth, budget)
    except Exception:  # pragma: no cover - every decoder guards itself; this is the last line of defence
        return
    finally:
        _base64_runs.cache_clear()
        _base64_kinds.cache_clear()
        _EVERY_RUN.clear()


def _peel(data: bytes, chain: str, depth: int, budget: Budget) -> Iterator[tuple[str, bytes]]:
    if depth <= 0 or budget.left <= 0 or not data:
        return
    try:
        absent = _absent_layers(data)
    except Exception:  # a trigger pass that failed skips nothing: every decoder makes its own search
        absent = _NONE_ABSENT
    if _RUNNING_OF[0] is not DECODERS:  # DECODERS replaced (a test): what was worked out from it is not
        _RUNNING.clear()
        _RUNNING_OF[0] = DECODERS
    running = _RUNNING.get(absent)
    if running is None:
        running = _RUNNING[absent] = tuple(item for item in DECODERS if item[0] not in absent)
    for name, decoder in running:
        if budget.left <= 0:
            return
        try:
            decoded = decoder(data, budget)
        except Exception:
            decoded = None
        if not decoded or decoded == data:
            continue
        layer = f"{chain}>{name}" if chain else name
        yield layer, decoded
        yield from _peel(decoded, layer, depth - 1, budget)


#: for each decoder that begins by searching its buffer, a pattern it cannot do without (its magic, its escape):
#: all are looked for in one hyperscan pass per buffer, and a decoder whose pattern is absent is not run. The run
#: decoders (base64, base64url, base32, hex) are not here: finding their runs is already one pass.
_TEXT_CLASS = b"[" + escape_literal(_TEXT_BYTES) + b"]"
_TRIGGERS: tuple[tuple[str, bytes], ...] = (
    ("gzip", escape_literal(_GZIP_MAGIC)),
    ("zlib", b"x[" + escape_literal(b"".join(magic[1:] for magic in _ZLIB_MAGICS)) + b"]"),
    ("bzip2", _BZIP2_MAGIC.pattern),
    ("lzma", escape_literal(_XZ_MAGIC)),
    ("url", _PERCENT.pattern),
    ("html", _ENTITY.pattern),
    ("json", _JSON_ESCAPE.pattern),
    ("qp", _QP_ANY.pattern),
    ("utf16le", b"(?:" + _TEXT_CLASS + rb"\x00){8}"),  # the first 8 characters of a _UTF16LE_RUN
    ("utf16be", rb"(?:\x00" + _TEXT_CLASS + b"){8}"),
)
_ALL_TRIGGERED = frozenset(name for name, _ in _TRIGGERS)
_NONE_ABSENT: frozenset[str] = frozenset()
_RUN_LAYERS = frozenset(("base64", "base64url", "base32", "hex"))


@functools.cache
def _trigger_set() -> PatternSet | None:
    """The triggers compiled (once per process, from the database cache after the first), or None without
    hyperscan: then every decoder runs and makes its own search."""
    return pattern_set([pattern for _, pattern in _TRIGGERS])


def _absent_layers(data: bytes) -> frozenset[str]:
    """The decoders that would find nothing in ``data``: those whose trigger is not in it, and the four run
    decoders when it holds no base64-alphabet run (most decoded binary layers).

    With the C module, one call (``layer_marks``) says both, as a bit mask, and each mask's set is made once: a
    hyperscan pass, a run search and set arithmetic per layer were a tenth of a scan of many small messages.
    Else the triggers are one hyperscan pass (the run decoders make their own search)."""
    if ACCELERATED:
        marks = _c_runs.layer_marks(data, MAX_TEXT_DECODE_BYTES)
        absent = _MARKED_ABSENT.get(marks)
        if absent is None:
            absent = _MARKED_ABSENT[marks] = frozenset(
                [name for index, (name, _) in enumerate(_TRIGGERS) if not marks >> index & 1]
                + ([] if marks >> len(_TRIGGERS) & 1 else sorted(_RUN_LAYERS)))
        return absent
    triggers = _trigger_set()
    return (_NONE_ABSENT if triggers is None
            else _ALL_TRIGGERED.difference(_TRIGGERS[index][0] for index in triggers.present(data)))


#: ``layer_marks`` mask -> the absent layers it means (at most 2 ** 11 masks, a handful seen in practice)
_MARKED_ABSENT: dict[int, frozenset[str]] = {}
#: absent layers -> the DECODERS to run, in order (as many as there are absent sets): most buffers need none or
#: one of the fifteen, and a loop over all fifteen per layer was most of a small message's peel
_RUNNING: dict[frozenset[str], tuple[tuple[str, Callable[[bytes, Budget], bytes]], ...]] = {}
_RUNNING_OF: list[object] = [None]  # the DECODERS that _RUNNING was made from


# --- compressed members found by their magic -----------------------------------------------------------------


def _members(data: bytes, magics: tuple[bytes, ...]) -> Iterator[int]:
    tries = 0
    for magic in magics:
        position = data.find(magic)
        while position >= 0 and tries < MAX_COMPRESSED_TRIES:
            tries += 1
            yield position
            position = data.find(magic, position + 1)


def _inflate(data: bytes, wbits: int, budget: Budget) -> bytes:
    """Decompress one zlib/gzip/raw-deflate stream, at most what the budget allows; truncated input is fine."""
    decompressor = zlib.decompressobj(wbits)
    out = bytearray()
    view = memoryview(data)
    for offset in range(0, len(data), _CHUNK):
        room = budget.left - len(out)
        if room <= 0:
            break
        chunk = decompressor.decompress(view[offset:offset + _CHUNK], room)
        out += chunk
        while decompressor.unconsumed_tail and budget.left - len(out) > 0:
            out += decompressor.decompress(decompressor.unconsumed_tail, budget.left - len(out))
        if decompressor.eof:
            break
    budget.take(len(out))
    return bytes(out)


def _collect(data: bytes, starts: Iterator[int], decode: Callable[[bytes, Budget], bytes],
             budget: Budget) -> bytes:
    parts: list[bytes] = []
    view = memoryview(data)  # no copy per member tried
    for start in starts:
        if parts and budget.take(len(_JOIN)) < len(_JOIN):
            break
        try:
            decoded = decode(view[start:], budget)  # type: ignore[arg-type]  # bytes-like is enough
        except Exception:
            continue
        if decoded:
            parts.append(decoded)
        if budget.left <= 0:
            break
    return _JOIN.join(parts)


def _gzip(data: bytes, budget: Budget) -> bytes:
    return _collect(data, _members(data, (_GZIP_MAGIC,)), lambda d, b: _inflate(d, 31, b), budget)


def _zlib(data: bytes, budget: Budget) -> bytes:
    if _ZLIB_ANY.search(data) is None:  # one regex pass instead of four finds of two-byte magics
        return b""
    return _collect(data, _members(data, _ZLIB_MAGICS), lambda d, b: _inflate(d, 15, b), budget)


def _bzip2(data: bytes, budget: Budget) -> bytes:
    starts = (m.start() for _, m in zip(range(MAX_COMPRESSED_TRIES), _BZIP2_MAGIC.finditer(data), strict=False))
    return _collect(data, starts, _bunzip, budget)


def _bunzip(data: bytes, budget: Budget) -> bytes:
    import bz2  # here: rare in traffic, and each import at module level is start-up time of every scan

    decompressor = bz2.BZ2Decompressor()
    out = decompressor.decompress(data, max_length=budget.left)
    budget.take(len(out))
    return out


def _xz(data: bytes, budget: Budget) -> bytes:
    return _collect(data, _members(data, (_XZ_MAGIC,)), _unxz, budget)


def _unxz(data: bytes, budget: Budget) -> bytes:
    import lzma  # here: rare in traffic (see _bunzip)

    decompressor = lzma.LZMADecompressor()
    out = decompressor.decompress(data, max_length=budget.left)
    budget.take(len(out))
    return out


# --- text encodings found as runs ----------------------------------------------------------------------------


def _runs(data: bytes, finder: _RunFinder, decode: Callable[[bytes], bytes | None], budget: Budget) -> bytes:
    return _decode_runs(finder.runs(data[:MAX_TEXT_DECODE_BYTES]), decode, budget)


def b64decode_loose(text: bytes) -> bytes | None:
    """Decode a base64 or base64url run however it was padded or cut (a run may start mid-value)."""
    body = text.rstrip(b"=")
    if b"-" in body or b"_" in body:
        return _b64url_run(text)
    return _b64_run(text)


_PADDING = (b"", b"", b"==", b"=")
_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def _b64_run(text: bytes) -> bytes | None:
    """:func:`b64decode_loose` of a run of the standard alphabet (the hot path: one call per run of a JSON body)."""
    body = text.rstrip(b"=")
    cut = len(body) % 4
    body = body[:-1] if cut == 1 else body + _PADDING[cut]
    try:
        return binascii.a2b_base64(body, strict_mode=True)
    except (binascii.Error, ValueError):
        return None


def _b64url_run(text: bytes) -> bytes | None:
    """:func:`b64decode_loose` of a run holding ``-`` or ``_``."""
    if b"+" in text or b"/" in text:
        return None  # mixed alphabets: not one value
    return _b64_run(text.translate(_URLSAFE_TO_STANDARD))


@functools.lru_cache(maxsize=8)
def _base64_runs(data: bytes) -> tuple[bytes, ...]:
    """Runs of the base64/base64url alphabet, found once for the base64, base64url, base32 and hex decoders
    (bytes cache their hash; :func:`peel` empties the cache when it is done, so it holds no memory between
    scans of units)."""
    return tuple(_BASE64_RUN.runs(data[:MAX_TEXT_DECODE_BYTES]))


def _base64_text(data: bytes) -> bytes:
    """The base64-alphabet runs of ``data`` joined by spaces: where the hex and base32 runs are.

    Both alphabets are part of base64's, so each of their runs of :data:`MIN_RUN_CHARS` or more lies inside a base64
    run: searching the runs finds the same runs in the same order, in a fraction of a JSON body.
    """
    return b" ".join(_base64_runs(data))


def _decode_runs(runs: Iterable[bytes], decode: Callable[[bytes], bytes | None], budget: Budget) -> bytes:
    """Decode ``runs`` and join them (with :data:`_JOIN`), within the budget.

    Every run decoder here shrinks its input (base64 3/4, base32 5/8, hex and UTF-16 1/2), so when the runs and
    their separators fit the budget, so does the result: then all runs are decoded in one comprehension, without
    per-run budget bookkeeping. Otherwise one by one, stopping where the budget is spent (the same bytes).
    """
    runs = list(runs)
    if not runs:
        return b""
    if sum(map(len, runs)) + len(_JOIN) * len(runs) <= budget.left:
        out = _JOIN.join([decoded for decoded in map(decode, runs) if decoded])
        budget.left -= len(out)
        return out
    parts: list[bytes] = []
    for run in runs:
        decoded = decode(run)
        if decoded and not _add_part(parts, decoded, budget):
            break
    return _JOIN.join(parts)


def _add_part(parts: list[bytes], decoded: bytes, budget: Budget) -> bool:
    """Append ``decoded`` to ``parts`` as far as the budget allows (a separator first, if it is not the first
    part); False once the budget is spent, so the caller stops decoding what it could not keep."""
    if parts and budget.take(len(_JOIN)) < len(_JOIN):
        return False
    parts.append(decoded[:budget.take(len(decoded))])
    return budget.left > 0


@functools.lru_cache(maxsize=8)
def _base64_kinds(data: bytes) -> tuple[list[bytes], list[bytes]]:
    """The base64 runs of ``data`` split in one pass: standard alphabet, and those with ``-`` or ``_``."""
    standard: list[bytes] = []
    urlsafe: list[bytes] = []
    for run in _base64_runs(data):
        (urlsafe if b"-" in run or b"_" in run else standard).append(run)
    return standard, urlsafe


def _python_base64(data: bytes, budget: Budget) -> bytes:
    runs = _base64_kinds(data)[0]
    if runs and sum(map(len, runs)) + len(_JOIN) * len(runs) <= budget.left:
        # the hot path of a JSON body: _b64_run spelled out in one comprehension, without a call per run
        a2b = binascii.a2b_base64
        try:
            out = _JOIN.join([a2b(body[:-1] if cut == 1 else body + _PADDING[cut], strict_mode=True)
                              for run in runs for body in (run.rstrip(b"="),) for cut in (len(body) % 4,)])
        except binascii.Error:  # not expected (runs hold the alphabet only): then run by run, skipping the bad
            pass
        else:
            budget.left -= len(out)
            return out
    return _decode_runs(runs, _b64_run, budget)


def _python_base64url(data: bytes, budget: Budget) -> bytes:
    return _decode_runs(_base64_kinds(data)[1], _b64url_run, budget)


def _python_base32(data: bytes, budget: Budget) -> bytes:
    def decode(text: bytes) -> bytes | None:
        body = text.rstrip(b"=")
        body = body[: len(body) - len(body) % 8] if len(body) % 8 in (1, 3, 6) else body
        try:
            return base64.b32decode(body + b"=" * (-len(body) % 8))
        except (binascii.Error, ValueError):
            return None
    return _decode_runs(_BASE32_RUN.runs(_base64_text(data)), decode, budget)


def _hex_run(text: bytes) -> bytes:
    return binascii.a2b_hex(text[: len(text) // 2 * 2])


def _python_hex(data: bytes, budget: Budget) -> bytes:
    return _decode_runs(_HEX_RUN.runs(_base64_text(data)), _hex_run, budget)


#: the four run decoders' outputs for the buffers :func:`peel` is decoding (by ``id``, with the buffer, which
#: keeps the id its own): the first of the four to run on a buffer decodes every kind in one C pass
_EVERY_RUN: dict[int, tuple[bytes, tuple[bytes, bytes, bytes, bytes]]] = {}
#: buffers remembered at most (peel holds one per layer of its depth; a decoder called on its own adds one)
_MAX_EVERY_RUN = 16


def _accelerated(kind: int) -> Callable[[bytes, Budget], bytes]:
    """The run decoder of ``kind`` in C (:mod:`phonehome.scan._runs`): the same bytes and the same budget spent
    as its ``_python_*`` twin here, without a Python object per run.

    A JSON body holds runs of all four kinds: instead of four passes (one per decoder), the first decoder to
    run on a buffer decodes all four kinds at once, unbounded (``decode_every_run``), and each takes its output
    when it fits the budget left at its turn, which is then exactly what ``decode_runs`` within that budget
    gives; when the budget binds (a bomb spent it), it decodes again within it. A buffer larger than the budget
    left is decoded within it from the start (four unbounded decodings of a bomb's layer, thrown away, cost 2.5x).
    The hex decoder, the last of the four, lets the buffer go."""
    def decode(data: bytes, budget: Budget) -> bytes:
        key = id(data)
        known = _EVERY_RUN.get(key)
        if known is None or known[0] is not data:
            if budget.left < min(len(data), MAX_TEXT_DECODE_BYTES):
                return _within(data, kind, budget)
            if len(_EVERY_RUN) >= _MAX_EVERY_RUN:
                _EVERY_RUN.clear()
            known = _EVERY_RUN[key] = (data, _c_runs.decode_every_run(data, MAX_TEXT_DECODE_BYTES))
        if kind == _c_runs.HEX:
            _EVERY_RUN.pop(key, None)  # not del: another thread's peel may have emptied the dict meanwhile
        decoded = known[1][kind]
        if len(decoded) <= budget.left:
            budget.left -= len(decoded)
            return decoded
        return _within(data, kind, budget)
    return decode


def _within(data: bytes, kind: int, budget: Budget) -> bytes:
    """The runs of ``kind`` in ``data`` decoded in C within the budget left."""
    decoded, used = _c_runs.decode_runs(data, kind, min(budget.left, sys.maxsize), MAX_TEXT_DECODE_BYTES)
    budget.left -= used
    return decoded


if ACCELERATED:
    _base64 = _accelerated(_c_runs.BASE64)
    _base64url = _accelerated(_c_runs.BASE64URL)
    _base32 = _accelerated(_c_runs.BASE32)
    _hex = _accelerated(_c_runs.HEX)
else:
    _base64, _base64url, _base32, _hex = _python_base64, _python_base64url, _python_base32, _python_hex


def _escaped_tokens(data: bytes, marker: bytes, escape: re.Pattern[bytes], delimiters: re.Pattern[bytes],
                    decode: Callable[[bytes], bytes], budget: Budget) -> bytes:
    """Decode only the tokens (runs between delimiters) that hold an escape, joined.

    Unescaping a whole buffer would copy megabytes of text to change three bytes, and every deeper layer would
    then run on the copy; the tokens are where anything new can appear. ``marker`` is a cheap pre-check (best one
    byte: ``in`` is only fast for single bytes); token ends are found by regex search forward, and backward on
    the reversed buffer.
    """
    if marker not in data:
        return b""
    text = data[:MAX_TEXT_DECODE_BYTES]
    size = len(text)
    found = escape.search(text)
    if found is None:
        return b""
    backwards = text[::-1]
    parts: list[bytes] = []
    while found is not None:
        if len(parts) >= MAX_TOKENS:  # escapes everywhere: one pass over the whole buffer is cheaper
            budget.left += sum(len(part) for part in parts) + len(_JOIN) * (len(parts) - 1)
            decoded = decode(text)
            return decoded[: budget.take(len(decoded))]
        before = delimiters.search(backwards, size - found.start())
        start = size - before.start() if before is not None else 0
        after = delimiters.search(text, found.end())
        end = after.start() if after is not None else size
        if not _add_part(parts, decode(text[start:end]), budget):
            break
        found = escape.search(text, end)
    return _JOIN.join(parts)


_URL_DELIMITERS = re.compile(rb"[\s&?\"'<>]")
_HTML_DELIMITERS = re.compile(rb"[\s\"'<>]")
_JSON_DELIMITERS = re.compile(rb"[\s\"]")
_QP_DELIMITERS = re.compile(rb"\s")  # soft line breaks split a value: rare for identifiers


def _url(data: bytes, budget: Budget) -> bytes:
    return _escaped_tokens(data, b"%", _PERCENT, _URL_DELIMITERS, _unquote, budget)


def _unquote(token: bytes) -> bytes:
    return urllib.parse.unquote_to_bytes(token.replace(b"+", b" "))


def _html(data: bytes, budget: Budget) -> bytes:
    return _escaped_tokens(data, b"&", _ENTITY, _HTML_DELIMITERS, _unescape_entities, budget)


def _unescape_entities(token: bytes) -> bytes:
    return _ENTITY.sub(lambda m: html.unescape(m.group().decode("ascii")).encode("utf-8", "surrogatepass"), token)


def _json(data: bytes, budget: Budget) -> bytes:
    return _escaped_tokens(data, b"\\", _JSON_ESCAPE, _JSON_DELIMITERS, _unescape_json, budget)


def _unescape_json(token: bytes) -> bytes:
    return _JSON_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)).encode("utf-8", "surrogatepass"),
                            token).replace(b"\\/", b"/")


def _mostly_text(data: bytes) -> bool:
    """At least 95 % of the first 4 KiB are text bytes."""
    head = data[:4096]
    allowed = len(head) - 0.95 * len(head)  # non-text bytes
    if len(head[:512].translate(None, _TEXT_BYTES)) > allowed:  # binary shows in its first bytes: no 4 KiB pass
        return False
    return len(head.translate(None, _NOT_TEXT)) >= 0.95 * len(head)


def _quoted_printable(data: bytes, budget: Budget) -> bytes:
    """Quoted-printable only hides a value by breaking its line (``=\\r\\n``) or escaping ``=`` as ``=3D``:
    decode bodies with soft line breaks whole, elsewhere only tokens holding ``=3D``."""
    if _QP_ANY.search(data) is None:  # one regex pass: three `in` tests of short strings cost twice as much
        return b""
    # a regex search, not `in`: a search for '=' then the rest is several times faster than `in` with a
    # multi-byte string, and decoded binary layers often hold '=' before a "\n\x00\n" join
    if _QP_SOFT_BREAK.search(data) is None:
        return _escaped_tokens(data, b"=", _QP_EQUALS, _QP_DELIMITERS, binascii.a2b_qp, budget)
    if _mostly_text(data):
        decoded = binascii.a2b_qp(data[:MAX_TEXT_DECODE_BYTES])
        return decoded[: budget.take(len(decoded))]
    # text with soft breaks among binary (a decoded layer that joined a quoted-printable run with binary ones):
    # each stretch of text that holds a soft break is decoded whole, and =3D tokens outside them as tokens
    text = data[:MAX_TEXT_DECODE_BYTES]
    marks = text.translate(_TEXT_MARKS)
    parts: list[bytes] = []
    end = 0
    for soft in _QP_SOFT_BREAK.finditer(text):
        if soft.start() < end or text.startswith(_JOIN[1:], soft.end()):
            continue  # inside the stretch just decoded, or a decoded '=' before the separator of joined runs
        if len(parts) >= MAX_TOKENS:
            break
        start = marks.rfind(b" ", 0, soft.start()) + 1
        end = marks.find(b" ", soft.end())
        end = len(text) if end < 0 else end
        if not _add_part(parts, binascii.a2b_qp(text[start:end]), budget):
            return _JOIN.join(parts)
    escaped = _escaped_tokens(data, b"=", _QP_EQUALS, _QP_DELIMITERS, binascii.a2b_qp, budget)
    if escaped and (not parts or budget.take(len(_JOIN)) == len(_JOIN)):
        parts.append(escaped)
    return _JOIN.join(parts)


def _utf16(pattern: _RunFinder, codec: str) -> Callable[[bytes, Budget], bytes]:
    def decode(data: bytes, budget: Budget) -> bytes:
        if b"\x00" not in data:  # text: no UTF-16 run (a cheap test before the run search)
            return b""
        return _runs(data, pattern, lambda run: run.decode(codec).encode("ascii"), budget)
    return decode


#: every layer decoder, in the order :func:`peel` tries them: ``decoder(data, budget)`` returns the decoded
#: bytes (b"" when there is no such layer), takes what it returns from the budget, and does not raise on bad
#: input (peel guards it anyway)
DECODERS: tuple[tuple[str, Callable[[bytes, Budget], bytes]], ...] = (
    ("gzip", _gzip),
    ("zlib", _zlib),
    ("bzip2", _bzip2),
    ("lzma", _xz),
    ("url", _url),
    ("base64", _base64),
    ("base64url", _base64url),
    ("base32", _base32),
    ("hex", _hex),
    ("html", _html),
    ("json", _json),
    ("qp", _quoted_printable),
    ("utf16le", _utf16(_UTF16LE_RUN, "utf-16-le")),
    ("utf16be", _utf16(_UTF16BE_RUN, "utf-16-be")),
)


# --- HTTP Content-Encoding -----------------------------------------------------------------------------------


def decode_content(data: bytes, content_encoding: str, *,
                   max_output: int = MAX_CONTENT_BYTES) -> tuple[bytes, str | None]:
    """Undo an HTTP ``Content-Encoding`` (``gzip``, ``x-gzip``, ``deflate``, ``br``, ``bzip2``, ``identity``),
    right to left for chains like ``gzip, br``.

    Returns the decoded bytes (as much as could be decoded, at most ``max_output``) and a warning when
    something could not be decoded completely or the coding is unknown (then the body is returned as sent, so
    the scanner still matches it raw). Never raises.
    """
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    current = bytes(data)
    for coding in reversed(codings):
        if coding in ("identity", ""):
            continue
        decoder = _CONTENT_DECODERS.get(coding)
        if decoder is None:
            return current, f"unknown Content-Encoding {coding!r}: body scanned as sent"
        try:
            decoded, complete = decoder(current, max_output)
        except Exception as exc:
            return current, f"{coding} body could not be decoded ({type(exc).__name__}): body scanned as sent"
        if not complete:
            return decoded, f"{coding} body truncated or over {max_output} bytes: scanned what could be decoded"
        current = decoded
    return current, None


def _content_inflate(wbits: int) -> Callable[[bytes, int], tuple[bytes, bool]]:
    def decode(data: bytes, limit: int) -> tuple[bytes, bool]:
        decompressor = zlib.decompressobj(wbits)
        out = decompressor.decompress(data, limit)
        return out, decompressor.eof and not decompressor.unconsumed_tail
    return decode


def _content_deflate(data: bytes, limit: int) -> tuple[bytes, bool]:
    """HTTP ``deflate`` is zlib-wrapped by the RFC, raw deflate by many servers: try both."""
    try:
        return _content_inflate(15)(data, limit)
    except zlib.error:
        return _content_inflate(-15)(data, limit)


def _content_gzip(data: bytes, limit: int) -> tuple[bytes, bool]:
    """gzip, possibly several members back to back (concatenated gzip is valid)."""
    decompressor = zlib.decompressobj(31)
    first = decompressor.decompress(data, limit)  # mostly the only member: returned as it is, not copied
    if not decompressor.eof or decompressor.unconsumed_tail:
        return first, False
    rest = decompressor.unused_data
    if not rest.startswith(b"\x1f\x8b"):
        return first, True  # one member (trailing garbage after it, if any, ignored)
    out = bytearray(first)
    while rest:
        decompressor = zlib.decompressobj(31)
        out += decompressor.decompress(rest, limit - len(out))
        if not decompressor.eof or decompressor.unconsumed_tail:
            return bytes(out), False
        rest = decompressor.unused_data
        if rest and not rest.startswith(b"\x1f\x8b"):
            break  # trailing garbage after the last member: ignore it
    return bytes(out), True


def _content_brotli(data: bytes, limit: int) -> tuple[bytes, bool]:
    import brotli

    decompressor = brotli.Decompressor()
    out = bytearray(decompressor.process(data, output_buffer_limit=limit))
    while not decompressor.is_finished() and len(out) < limit and not decompressor.can_accept_more_data():
        more = decompressor.process(b"", output_buffer_limit=limit - len(out))
        if not more:
            break
        out += more
    return bytes(out[:limit]), bool(decompressor.is_finished())


def _content_bzip2(data: bytes, limit: int) -> tuple[bytes, bool]:
    import bz2  # see _bunzip

    decompressor = bz2.BZ2Decompressor()
    out = decompressor.decompress(data, max_length=limit)
    return out, decompressor.eof


_CONTENT_DECODERS: dict[str, Callable[[bytes, int], tuple[bytes, bool]]] = {
    "gzip": _content_gzip, "x-gzip": _content_gzip, "deflate": _content_deflate, "br": _content_brotli,
    "bzip2": _content_bzip2,
}
