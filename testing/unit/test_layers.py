"""Nested decoders: layered encodings are found with their chain, bombs and garbage are bounded, nothing raises."""

from __future__ import annotations

import base64
import binascii
import bz2
import gzip
import html
import json
import lzma
import quopri
import random
import re
import urllib.parse
import zlib
from collections.abc import Callable
from unittest.mock import patch

import brotli
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phonehome.identifiers import parse_identifiers
from phonehome.scan import layers
from phonehome.scan.layers import DECODERS, Budget, decode_content, peel
from phonehome.scan.matcher import build_matcher

IMEI = "352099001761481"
DEVICE = parse_identifiers({"imei": IMEI, "wifi_mac": "ac:37:43:4d:5e:6f",
                            "location": {"lat": 52.5163, "lon": 13.3777}}, source="test")


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


#: (name in the chain, encoder), each written with the standard library
WRAPPERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "zlib": zlib.compress,
    "bzip2": bz2.compress,
    "lzma": lzma.compress,
    "base64": base64.b64encode,
    "base64url": lambda d: base64.urlsafe_b64encode(b"\xfb\xff" + d),  # force '-'/'_' into the run
    "base32": base64.b32encode,
    "hex": lambda d: binascii.hexlify(d),
    "url": lambda d: urllib.parse.quote_from_bytes(d, safe="").encode(),
    "html": lambda d: "".join(f"&#{b};" for b in d).encode(),
    "json": lambda d: json.dumps(d.decode("latin-1"), ensure_ascii=True).encode()
    .replace(b'"', b"").replace(b"3", b"\\u0033"),
    "qp": lambda d: quopri.encodestring(d[:25]) + b"=\r\n" + quopri.encodestring(d[25:]),  # a soft break
    "utf16le": lambda d: d.decode("latin-1").encode("utf-16-le"),
    "utf16be": lambda d: d.decode("latin-1").encode("utf-16-be"),
}
#: wrappers whose output is text and may contain the next layer's raw bytes only as text
BINARY_SAFE = ("gzip", "zlib", "bzip2", "lzma", "base64", "base64url", "base32", "hex", "url")


def chains_found(data: bytes) -> set[str]:
    """Every '<chain>><needle encoding>' the scanner would report for the IMEI in data."""
    matcher = build_matcher(DEVICE)
    out = {m.needle.encoding for m in matcher.find(data) if m.needle.identifier == "imei"}
    for chain, decoded in peel(data):
        out |= {f"{chain}>{m.needle.encoding}" for m in matcher.find(decoded) if m.needle.identifier == "imei"}
    return out


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(WRAPPERS))
def test_each_layer_round_trips(name: str) -> None:
    payload = json.dumps({"device": {"imei": IMEI}}).encode()
    data = b"POST /collect HTTP/1.1\r\n\r\nd=" + WRAPPERS[name](payload) + b"&v=2"
    assert f"{name}>plain" in chains_found(data)


@pytest.mark.timeout(120)
@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(BINARY_SAFE), min_size=2, max_size=3), st.binary(max_size=40),
       st.binary(max_size=40))
def test_nested_layers_round_trip(names: list[str], before: bytes, after: bytes) -> None:
    payload = b'{"imei":"' + IMEI.encode() + b'"}'
    applied = []
    for name in names:  # innermost first
        wrapped = WRAPPERS[name](payload)
        if wrapped != payload:  # url-encoding hex or base32 text changes nothing: no layer to find
            applied.append(name)
        payload = wrapped
    chain = ">".join(reversed(applied))
    data = before + b" " + payload + b" " + after
    found = chains_found(data)
    assert f"{chain}>plain" in found, (chain, found)


@pytest.mark.timeout(60)
def test_three_deep_base64_of_gzip_of_json() -> None:
    payload = base64.b64encode(gzip.compress(json.dumps({"imei": IMEI}).encode()))
    assert "base64>gzip>plain" in chains_found(b"data=" + payload)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("binary_runs", [0, 1, 3])
def test_quoted_printable_in_base64_beside_binary_base64_runs(binary_runs: int) -> None:
    """The base64 layer joins every run of a JSON body: a quoted-printable one with a soft break in the IMEI
    among binary ones is no longer mostly text, and is still decoded."""
    rng = random.Random(binary_runs)
    qp = b"imei=3D" + IMEI[:7].encode() + b"=\r\n" + IMEI[7:].encode() + b"&model=7+Plus"
    values = [base64.b64encode(rng.randbytes(300)) for _ in range(binary_runs)] + [base64.b64encode(qp)]
    body = json.dumps({f"k{i}": value.decode() for i, value in enumerate(values)}).encode()
    assert "base64>qp>plain" in chains_found(body)


@pytest.mark.timeout(60)
def test_hex_of_md5_is_found_directly_and_as_a_layer() -> None:
    import hashlib

    digest = hashlib.md5(IMEI.encode()).digest()
    found = chains_found(b"h=" + base64.b64encode(digest.hex().encode()))
    assert "base64>md5" in found


@pytest.mark.timeout(60)
def test_decode_content() -> None:
    body = b'{"imei":"' + IMEI.encode() + b'"}'
    assert decode_content(gzip.compress(body), "gzip") == (body, None)
    assert decode_content(gzip.compress(body), "x-gzip") == (body, None)
    assert decode_content(zlib.compress(body), "deflate") == (body, None)
    assert decode_content(raw_deflate(body), "deflate") == (body, None)
    assert decode_content(brotli.compress(body), "br") == (body, None)
    assert decode_content(body, "identity") == (body, None)
    assert decode_content(gzip.compress(brotli.compress(body)), "br, gzip") == (body, None)
    assert decode_content(gzip.compress(body) + gzip.compress(body), "gzip") == (body + body, None)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("data", "coding", "warning"), [
    (b"not gzip at all", "gzip", "could not be decoded"),
    (gzip.compress(bytes(range(256)) * 8)[:200], "gzip", "truncated"),
    (b"abc", "zstd", "unknown Content-Encoding 'zstd'"),
    (b"\xff\xfe garbage", "br", "br"),
])
def test_decode_content_problems_are_warnings(data: bytes, coding: str, warning: str) -> None:
    decoded, message = decode_content(data, coding)
    assert message is not None and warning in message
    assert isinstance(decoded, bytes)


@pytest.mark.timeout(60)
def test_zip_bombs_are_bounded() -> None:
    bomb = gzip.compress(b"\x00" * (64 << 20))
    total = sum(len(d) for _, d in peel(bomb, max_output=1 << 20))
    assert total <= 1 << 20
    decoded, warning = decode_content(bomb, "gzip", max_output=1 << 20)
    assert len(decoded) <= 1 << 20 and warning
    decoded, warning = decode_content(brotli.compress(b"\x00" * (16 << 20)), "br", max_output=1 << 20)
    assert len(decoded) <= 1 << 20 and warning


@pytest.mark.timeout(60)
def test_depth_is_bounded() -> None:
    payload = IMEI.encode()
    for _ in range(6):
        payload = base64.b64encode(payload)
    chains = [chain for chain, _ in peel(payload, max_depth=3)]
    assert chains and max(chain.count(">") + 1 for chain in chains) <= 3


@pytest.mark.timeout(60)
def test_html_entities_named() -> None:
    text = html.escape(f"<imei>{IMEI}</imei>").encode().replace(b"3", b"&#51;")
    assert "html>plain" in chains_found(text)


# --- fuzz: never raises, bounded output, no hang --------------------------------------------------------------


def _mutations() -> st.SearchStrategy[bytes]:
    seeds = [gzip.compress(b"hello " * 50), zlib.compress(b"x" * 100), bz2.compress(b"y" * 100),
             lzma.compress(b"z" * 100), base64.b64encode(b"q" * 60), b"%41%42%4" * 5, b"&#x41;&amp;&#99999999;",
             b"\\u0041\\ud800\\u00", b"=41=4=\r\n", ("t" * 20).encode("utf-16-le"), brotli.compress(b"b" * 100)]
    return st.builds(lambda seed, cut, junk, pos: seed[:cut] + junk + seed[pos:],
                     st.sampled_from(seeds), st.integers(0, 200), st.binary(max_size=30), st.integers(0, 200))


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("name", "decoder"), DECODERS, ids=[name for name, _ in DECODERS])
@settings(max_examples=150, deadline=None)
@given(data=st.one_of(st.binary(max_size=2000), _mutations()), limit=st.integers(0, 1 << 14))
def test_fuzz_each_decoder(name: str, decoder: Callable[[bytes, Budget], bytes], data: bytes, limit: int) -> None:
    """Each decoder on its own (peel would hide an exception): no exception, output within its budget."""
    budget = Budget(limit)
    out = decoder(data, budget)
    assert isinstance(out, bytes)
    assert len(out) <= limit and budget.left >= 0


@pytest.mark.timeout(120)
@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=2000), _mutations()), st.integers(1, 4), st.integers(0, 1 << 16))
def test_fuzz_peel(data: bytes, depth: int, budget: int) -> None:
    layers = list(peel(data, max_depth=depth, max_output=budget))
    assert sum(len(decoded) for _, decoded in layers) <= budget
    assert all(chain.count(">") < depth for chain, _ in layers)


@pytest.mark.timeout(120)
@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=2000), _mutations()),
       st.lists(st.sampled_from(["gzip", "deflate", "br", "identity", "x-gzip", "bzip2", "weird", ""]),
                max_size=3))
def test_fuzz_decode_content(data: bytes, codings: list[str]) -> None:
    decoded, warning = decode_content(data, ", ".join(codings), max_output=1 << 16)
    assert isinstance(decoded, bytes) and len(decoded) <= max(len(data), 1 << 16)
    assert warning is None or "\n" not in warning


@pytest.mark.timeout(60)
def test_large_random_input_is_quick() -> None:
    data = random.Random(3).randbytes(2 << 20)
    layers = list(peel(data))
    assert sum(len(d) for _, d in layers) <= 4 << 20


# --- the fast paths find what the plain definitions find ------------------------------------------------------

#: the run definitions the fast finders stand for (what `re` would find, slowly, on a JSON body)
REFERENCE_RUNS = {
    "base64": re.compile(rb"[A-Za-z0-9+/_-]{16,}={0,2}"),
    "base32": re.compile(rb"[A-Z2-7]{16,}=*"),
    "hex": re.compile(rb"[0-9A-Fa-f]{16,}"),
    "utf16le": re.compile(rb"(?:[\x09\x0a\x0d\x20-\x7e]\x00){8,}"),
    "utf16be": re.compile(rb"(?:\x00[\x09\x0a\x0d\x20-\x7e]){8,}"),
}
#: bytes that make runs and break them: every alphabet's edges, padding, NUL, text and non-text
_RUN_BYTES = b"AZaz09+/_-=27GgFf%\\\x00\x00\x00\t\n\r \x7f\x80\xff{}\":,."


def _runny() -> st.SearchStrategy[bytes]:
    """Bytes with many runs of every alphabet, long and short, next to each other."""
    pieces = st.one_of(st.binary(max_size=8), st.text(alphabet=_RUN_BYTES.decode("latin-1"), max_size=40)
                       .map(lambda t: t.encode("latin-1")),
                       st.sampled_from([base64.b64encode(bytes(range(40))), base64.b32encode(b"0123456789"),
                                        bytes(range(32)).hex().encode(), "utf16 text!".encode("utf-16-le"),
                                        "utf16 text!".encode("utf-16-be")]))
    return st.lists(pieces, max_size=12).map(b"".join)


@pytest.mark.timeout(120)
@settings(max_examples=300, deadline=None)
@given(_runny())
def test_run_finders_find_the_runs_of_their_definition(data: bytes) -> None:
    assert layers._BASE64_RUN.runs(data) == REFERENCE_RUNS["base64"].findall(data)
    assert layers._UTF16LE_RUN.runs(data) == REFERENCE_RUNS["utf16le"].findall(data)
    assert layers._UTF16BE_RUN.runs(data) == REFERENCE_RUNS["utf16be"].findall(data)
    # hex and base32 runs are searched inside the base64 runs only: the same runs, in the same order
    inside = layers._base64_text(data)
    assert layers._HEX_RUN.runs(inside) == REFERENCE_RUNS["hex"].findall(data)
    assert [r.rstrip(b"=") for r in layers._BASE32_RUN.runs(inside)] == [
        r.rstrip(b"=") for r in REFERENCE_RUNS["base32"].findall(data)]  # padding past two '=' is stripped anyway


@pytest.mark.timeout(120)
@settings(max_examples=200, deadline=None)
@given(_runny(), st.integers(0, 400))
def test_run_layers_within_a_small_budget_are_a_prefix_of_the_whole(data: bytes, limit: int) -> None:
    """With room for everything the runs are decoded in one batch; with less, one by one until the budget is
    spent: the same bytes, cut where the budget ends."""
    for name, decoder in DECODERS:
        whole = decoder(data, Budget(1 << 20))
        budget = Budget(limit)
        part = decoder(data, budget)
        if name in ("base64", "base64url", "base32", "hex", "utf16le", "utf16be"):
            assert whole.startswith(part), name
            if budget.left > 0:  # it all fitted: all of it, charged exactly
                assert part == whole and len(part) == limit - budget.left, name
            else:  # cut (a separator that did not fit is charged, not written)
                assert len(part) <= limit, name


JSON_NOISE = json.dumps([{"id": f"{i:016x}{i:08x}", "uuid": f"38400000-8cf0-11bd-b23e-{i:012x}",
                          "score": i / 7, "token": base64.b64encode(bytes([i]) * 24).decode(),
                          "at": f"2026-01-01T00:00:{i % 60:02d}Z", "name": "deviceConfigurationSnapshot"}
                         for i in range(60)]).encode()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("chain", "value"), [
    ("base64>gzip>plain", lambda p: base64.b64encode(gzip.compress(p))),
    ("base64>zlib>plain", lambda p: base64.b64encode(zlib.compress(p))),
    ("base64url>gzip>plain", lambda p: base64.urlsafe_b64encode(b"\xfb\xff" + gzip.compress(p))),
    ("url>base64>plain", lambda p: urllib.parse.quote(base64.b64encode(b"\xfb" + p), safe="").encode()),
    ("hex>gzip>plain", lambda p: gzip.compress(p).hex().encode()),
    ("base64>hex>plain", lambda p: base64.b64encode(p.hex().encode())),
    ("base64>base32>plain", lambda p: base64.b64encode(base64.b32encode(p))),
    ("base64>utf16le>plain", lambda p: base64.b64encode(p.decode().encode("utf-16-le"))),
    ("base64>json>plain", lambda p: base64.b64encode(p.replace(b"3", b"\\u0033"))),
    ("gzip>base64>plain", lambda p: gzip.compress(base64.b64encode(p))),
])
def test_nested_layers_inside_a_json_body_full_of_runs(chain: str, value: Callable[[bytes], bytes]) -> None:
    """The runs a JSON body is full of (ids, UUIDs, tokens, words) do not hide a layered value among them."""
    payload = json.dumps({"device": {"imei": IMEI}}).encode()
    data = JSON_NOISE[:2000] + b'"blob":"' + value(payload) + b'",' + JSON_NOISE[2000:]
    assert f"{chain}" in chains_found(data)


def _every_trigger() -> st.SearchStrategy[bytes]:
    """Bytes holding, among noise, pieces that start each decoder's work: magics, escapes, runs, UTF-16 text."""
    payload = b'{"imei":"' + IMEI.encode() + b'"}'
    pieces = st.one_of(st.binary(max_size=12), st.sampled_from([WRAPPERS[name](payload) for name in sorted(WRAPPERS)]),
                       st.sampled_from([b"%4", b"&#5", b"&amp", b"\\u00", b"=\n", b"=\r\n", b"=3", b"x\x9c",
                                        b"\x1f\x8b", b"BZh91AY&S", b"\xfd7zXZ"]))
    return st.lists(pieces, max_size=10).map(b"".join)


@pytest.mark.skipif(layers._trigger_set() is None and not layers.ACCELERATED,
                    reason="the triggers need hyperscan (x86_64) or the C module")
@pytest.mark.timeout(120)
@settings(max_examples=300, deadline=None)
@given(_every_trigger())
def test_triggers_skip_only_decoders_that_would_find_nothing(data: bytes) -> None:
    """peel with the one-pass triggers yields exactly what running every decoder on every layer yields."""
    with_triggers = list(peel(data))
    with patch.object(layers, "_absent_layers", lambda data: frozenset()):  # every decoder on every layer
        every_decoder = list(peel(data))
    assert with_triggers == every_decoder
    for name, _ in layers._TRIGGERS:  # and each trigger is what its decoder needs: present <=> searchable
        decoder = dict(DECODERS)[name]
        if decoder(data, Budget(1 << 20)):
            assert name not in layers._absent_layers(data), name


def _near_triggers() -> st.SearchStrategy[bytes]:
    """Each trigger's pattern at and around its bounds (entities of 1-7 digits and more, names of 31 and 32
    characters, escapes cut short, UTF-16 runs of 7 and 8 characters), among noise and at the buffer's ends."""
    pieces = st.one_of(
        st.binary(max_size=6),
        st.builds(lambda kind, size, end: {0: b"&#" + b"1" * size, 1: b"&#x" + b"a" * size, 2: b"&X#" + b"f" * size,
                                           3: b"&q" + b"Z9" * size, 4: b"&#X" + b"F" * size}[kind] + end,
                  st.integers(0, 4), st.integers(0, 17), st.sampled_from([b";", b"", b" ;", b"x;"])),
        st.builds(lambda text, le, size: b"".join((c + b"\x00") if le else (b"\x00" + c) for c in
                                                  (bytes((b,)) for b in text[:size])),
                  st.binary(min_size=9, max_size=9), st.booleans(), st.integers(6, 9)),
        st.sampled_from([b"\\u00e9", b"\\u00", b"\\U00e9", b"=\r\n", b"=\r", b"=\n", b"=3D", b"=3d", b"%4", b"%4G",
                         b"%af", b"x\x9c", b"x\x00", b"\x1f\x8b\x08", b"\x1f\x8b", b"BZh91AY&SY", b"BZh01AY&SY",
                         b"\xfd7zXZ\x00", b"\xfd7zXZ", b"A" * 16, b"A" * 15]))
    return st.lists(pieces, max_size=12).map(b"".join)


#: each trigger's bounds, met and passed by one
_TRIGGER_EDGES = [b"&#" + b"1" * n + b";" for n in (0, 1, 7, 8)] + [b"&#x" + b"a" * n + b";" for n in (0, 1, 6, 7)] + [
    b"&a" + b"b" * n + b";" for n in (0, 1, 31, 32)] + [b"&#X1;", b"&X#1;", b"&1a;", b"&#;", b"\\u12", b"\\u123g",
                                                     b"\\u1234", b"=", b"=\r", b"=\r\n", b"=3D", b"=3", b"%1", b"%1f",
                                                     b"BZh91AY&S", b"BZh91AY&SY", b"\xfd7zXZ", b"\xfd7zXZ\x00", b"x",
                                                     b"x\xda", b"\x1f\x8b", b"\x1f\x8b\x08", b"a\x00" * 7,
                                                     b"a\x00" * 8, b"\x00a" * 7, b"\x00a" * 8, b"\x00a" * 7 + b"\x00"]


@pytest.mark.skipif(not layers.ACCELERATED, reason="phonehome.scan._runs is not built")
@pytest.mark.parametrize("edge", _TRIGGER_EDGES)
def test_layer_marks_at_each_triggers_bounds(edge: bytes) -> None:
    for data in (edge, b"." + edge + b".", edge + edge[:-1]):
        _check_layer_marks(data, len(data))


@pytest.mark.skipif(not layers.ACCELERATED, reason="phonehome.scan._runs is not built")
@pytest.mark.timeout(120)
@settings(max_examples=500, deadline=None)
@given(st.one_of(_every_trigger(), _near_triggers()), st.integers(0, 200))
def test_layer_marks_are_the_trigger_regexes(data: bytes, cut: int) -> None:
    _check_layer_marks(data, cut)


def _check_layer_marks(data: bytes, cut: int) -> None:
    """The C module's one-call trigger search (``layer_marks``) says exactly which trigger regexes occur, and
    whether data[:cut] holds a base64 run: peel skips a decoder on its word."""
    from phonehome.scan import _runs

    expected = sum(1 << index for index, (_, pattern) in enumerate(layers._TRIGGERS)
                   if re.search(pattern, data, re.DOTALL))
    if layers._BASE64_RUN.runs(data[:cut]):
        expected |= 1 << len(layers._TRIGGERS)
    assert len(layers._TRIGGERS) == _runs.TRIGGER_COUNT
    assert _runs.layer_marks(data, cut) == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 5000), st.sampled_from([b"a", b"\x00", b"\xff", b" "]))
def test_mostly_text_is_its_definition(noise: bytes, size: int, filler: bytes) -> None:
    data = (noise + filler * size)[:5000]
    head = data[:4096]
    expected = sum(byte in layers._TEXT_BYTES for byte in head) >= 0.95 * len(head)
    assert layers._mostly_text(data) == expected
