"""The C run decoders (``phonehome.scan._runs``) give what the Python ones in ``layers`` give: the same bytes and
the same budget left, for any input, budget and cut. The Python decoders are the reference."""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import os
import subprocess
import sys
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phonehome.scan import layers, obfuscation
from phonehome.scan.layers import Budget

with contextlib.suppress(ImportError):  # not built: the tests that need it are skipped (needs_speedups)
    from phonehome.scan import _runs

#: (layer name, Python reference decoder, kind constant's name in _runs)
KINDS: tuple[tuple[str, Callable[[bytes, Budget], bytes], str], ...] = (
    ("base64", layers._python_base64, "BASE64"),
    ("base64url", layers._python_base64url, "BASE64URL"),
    ("base32", layers._python_base32, "BASE32"),
    ("hex", layers._python_hex, "HEX"),
)

needs_speedups = pytest.mark.skipif(
    not layers.ACCELERATED, reason="phonehome.scan._runs is not built (no C compiler when phonehome was installed): "
    "the Python run decoders are in use; `pip install -e .` with gcc and Python's headers builds it")


def test_speedups_are_built_where_required() -> None:
    """CI (ci/selftest.sh) sets PHONEHOME_REQUIRE_SPEEDUPS=1: there a missing extension is a failure, not a skip."""
    if os.environ.get("PHONEHOME_REQUIRE_SPEEDUPS") != "1":
        pytest.skip("PHONEHOME_REQUIRE_SPEEDUPS=1 not set (ci/selftest.sh sets it)")
    assert layers.ACCELERATED, ("phonehome.scan._runs did not import: the C extension was not built "
                                "(ci/setup.sh installs gcc and python3-dev, then `pip install -e .` builds it)")


def _both(kind: str, data: bytes, left: int, cut: int | None = None) -> tuple[tuple[bytes, int], tuple[bytes, int]]:
    """(Python's (bytes, budget left), C's) for one run kind on ``data`` with ``left`` bytes of budget."""
    reference = next(decode for name, decode, _ in KINDS if name == kind)
    accelerated = layers._accelerated(getattr(_runs, next(c for name, _, c in KINDS if name == kind)))
    with pytest.MonkeyPatch.context() as patch:
        if cut is not None:
            patch.setattr(layers, "MAX_TEXT_DECODE_BYTES", cut)
        results = []
        for decode in (reference, accelerated):
            layers._base64_runs.cache_clear()  # keyed by data only: a cut changed under it would be stale
            layers._base64_kinds.cache_clear()
            layers._EVERY_RUN.clear()
            budget = Budget(left)
            results.append((decode(data, budget), budget.left))
    return results[0], results[1]


#: pieces that make runs of every kind, break them, pad them and mix their alphabets
_ALPHABETS = [b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz", b"0123456789", b"234567",
              b"ABCDEFabcdef0123456789", b"+/", b"-_", b"=", b" \"{}:,.\n\x00\x80\xff"]


def _runny() -> st.SearchStrategy[bytes]:
    alphabet_runs = st.builds(lambda chosen, size, seed: bytes(chosen[(seed * 7 + i * (seed | 1)) % len(chosen)]
                                                               for i in range(size)),
                              st.lists(st.sampled_from(_ALPHABETS), min_size=1, max_size=3).map(b"".join),
                              st.integers(0, 48), st.integers(0, 1000))
    encoded = st.builds(lambda raw, how: how(raw), st.binary(min_size=8, max_size=60),
                        st.sampled_from([base64.b64encode, base64.urlsafe_b64encode, base64.b32encode,
                                         binascii.hexlify, lambda raw: base64.b64encode(raw).rstrip(b"=")]))
    pieces = st.one_of(st.binary(max_size=8), alphabet_runs, encoded,
                       st.text(alphabet="AZaz09+/_-=27GgFf \"", max_size=40).map(str.encode))
    return st.lists(pieces, max_size=14).map(b"".join)


_BUDGETS = st.one_of(st.integers(-2, 8), st.integers(0, 300), st.just(1 << 20), st.just(1 << 70))


@needs_speedups
@pytest.mark.timeout(120)
@settings(max_examples=400, deadline=None)
@given(data=_runny(), left=_BUDGETS, cut=st.one_of(st.none(), st.integers(0, 200)))
@pytest.mark.parametrize("kind", [name for name, _, _ in KINDS])
def test_c_and_python_decode_the_same(kind: str, data: bytes, left: int, cut: int | None) -> None:
    python, c = _both(kind, data, left, cut)
    assert c == python


@needs_speedups
@pytest.mark.parametrize(("kind", "data"), [
    ("base64", b"QUJDREVGR0hJSktMTU5PUFFS"),             # 24 characters: 18 bytes
    ("base64", b"QUJDREVGR0hJSktMTU5PUQ"),               # 4k+2, trailing bits not zero
    ("base64", b"QUJDREVGR0hJSktMTU5PUFFSU=="),          # 4k+3 with its padding
    ("base64", b"QUJDREVGR0hJSktMTU5PUFFSUx"),           # 4k+2 ending in a non-zero 'x'
    ("base64", b"QUJDREVGR0hJSktMTU5PUFFSUTx===="),      # 4k+1: the last character is dropped; extra '='
    ("base64", b"x " + b"A" * 15 + b" " + b"B" * 16 + b"=" + b"C" * 16),  # 15: too short; '=' between runs
    ("base64url", b"-_-_-_-_-_-_-_-_-_-_"),
    ("base64url", b"ab-cdefghijklmnopq+rs"),             # mixed alphabets: skipped
    ("base64url", b"ab-cdefghijklmnop rst+uvwxyz0123456789"),  # the '+' is another run's
    ("base64", b"ab-cdefghijklmnop rst+uvwxyz0123456789"),
    ("base32", b"MZXW6YTBOI======"),
    *[("base32", b"MZXW6YTBOJRGC4TBMFRGC3DBNVQWY3DBOJWWC3TB"[:n]) for n in range(16, 41)],  # every length mod 8
    ("base32", b"mzxw6ytboiMZXW6YTBOJRGC4TB0MZXW6YTBOJRGC4TBMFRG"),  # lower case and '0' break runs
    ("hex", b"0123456789abcdefABCDEF0"),                  # odd: the last digit is dropped
    ("hex", b"0123456789abcdeg0123456789abcdef"),
    ("hex", b"uuid 3f2504e0-4f89-11d3-9a0c-0305e82c3301 md5 d41d8cd98f00b204e9800998ecf8427e"),
])
def test_fixed_runs(kind: str, data: bytes) -> None:
    python, c = _both(kind, data, 1 << 20)
    assert c == python
    python, c = _both(kind, data + b"\n" + data, 1 << 20)  # and twice: joined
    assert c == python


@needs_speedups
@pytest.mark.parametrize("kind", [name for name, _, _ in KINDS])
def test_the_budget_runs_out_anywhere(kind: str) -> None:
    """Every budget from nothing to more than enough: mid-run, mid-separator, exactly at a separator's end."""
    data = b" ".join([base64.b64encode(b"first value!"), base64.urlsafe_b64encode(b"\xfb\xff second value"),
                      base64.b32encode(b"third value"), b"0123456789abcdef0123", base64.b64encode(b"\xff" * 20)])
    whole = _both(kind, data, 1 << 20)[0][0]
    assert whole, f"no {kind} run in the test data"
    for left in range(-1, len(whole) + 8):
        python, c = _both(kind, data, left)
        assert c == python, f"budget {left}"


@needs_speedups
def test_runs_cut_where_the_text_decoders_stop() -> None:
    """Only data[:MAX_TEXT_DECODE_BYTES] is searched: a run across the cut is cut with it (at any cut)."""
    data = b"{" + base64.b64encode(bytes(range(60))) + b'", "' + bytes(range(40)).hex().encode() + b"}"
    for cut in range(len(data) + 2):
        for kind, _, _ in KINDS:
            python, c = _both(kind, data, 1 << 20, cut)
            assert c == python, f"{kind} cut at {cut}"


@needs_speedups
def test_a_run_longer_than_the_cut() -> None:
    """9 MiB of one run (hostile input): cut at 8 MiB, decoded within the budget, as in Python."""
    data = b"A" * (9 << 20)
    for left in (4 << 20, 1 << 30):
        python, c = _both("base64", data, left)
        assert c == python
        assert len(c[0]) == min(left, (8 << 20) // 4 * 3)


@needs_speedups
def test_any_buffer_and_bad_arguments() -> None:
    decode_runs, kind = _runs.decode_runs, _runs.BASE64
    data = b"x " + base64.b64encode(b"a value of twenty bytes!")
    expected = decode_runs(data, kind, 1000, 1000)
    assert expected[0] == b"a value of twenty bytes!"
    assert decode_runs(bytearray(data), kind, 1000, 1000) == expected
    assert decode_runs(memoryview(b"..." + data)[3:], kind, 1000, 1000) == expected
    assert decode_runs(data, kind, 1000, -1) == (b"", 0)
    with pytest.raises(BufferError):
        decode_runs(memoryview(data + data)[::2], kind, 1000, 1000)
    with pytest.raises(ValueError, match="kind must be"):
        decode_runs(data, 4, 1000, 1000)
    with pytest.raises(TypeError):
        decode_runs(data.decode(), kind, 1000, 1000)  # type: ignore[arg-type]  # the wrong type on purpose
    assert _runs.decode_every_run(memoryview(b"..." + data)[3:], 1000)[0] == expected[0]
    assert _runs.decode_every_run(data, -1) == (b"", b"", b"", b"")
    with pytest.raises(BufferError):
        _runs.decode_every_run(memoryview(data + data)[::2], 1000)
    assert _runs.MIN_RUN_CHARS == layers.MIN_RUN_CHARS
    budget = Budget(1 << 80)  # larger than any C size: the wrapper passes sys.maxsize, and takes what was used
    assert layers._base64(data, budget) == expected[0]
    assert budget.left == (1 << 80) - len(expected[0]) and sys.maxsize < 1 << 80


@needs_speedups
@pytest.mark.timeout(120)
@settings(max_examples=400, deadline=None)
@given(data=_runny(), cut=st.integers(0, 200))
def test_every_run_in_one_pass_is_each_decoder_unbounded(data: bytes, cut: int) -> None:
    """decode_every_run (the four kinds in one pass, the base32 and hex runs searched inside the base64 ones) gives
    each Python decoder's bytes with a budget that does not bind."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(layers, "MAX_TEXT_DECODE_BYTES", cut)
        layers._base64_runs.cache_clear()
        layers._base64_kinds.cache_clear()
        expected = tuple(decode(data, Budget(1 << 70)) for _, decode, _ in KINDS)
        layers._base64_runs.cache_clear()
        layers._base64_kinds.cache_clear()
    assert _runs.decode_every_run(data, cut) == expected
    assert _runs.decode_every_run(bytearray(data), cut) == expected


def _layered() -> st.SearchStrategy[bytes]:
    """Runs of every kind, and layers of them (base64 of gzip of runs, hex of base64): peel's recursion."""
    wrappers: list[Callable[[bytes], bytes]] = [
        base64.b64encode, binascii.hexlify, lambda raw: base64.b64encode(gzip.compress(raw, mtime=0)),
        base64.b32encode, base64.urlsafe_b64encode]

    def wrap(inner: bytes, how: int) -> bytes:
        return wrappers[how](inner)
    return st.recursive(_runny(), lambda inner: st.builds(lambda a, how, b: a + b" " + wrap(a, how) + b" " + b,
                                                          inner, st.integers(0, 4), inner), max_leaves=4)


@needs_speedups
@pytest.mark.timeout(120)
@settings(max_examples=300, deadline=None)
@given(data=_layered(), budget=st.one_of(st.integers(0, 400), st.just(1 << 20)), depth=st.integers(1, 4))
def test_peel_with_the_c_decoders_is_peel_with_the_python_ones(data: bytes, budget: int, depth: int) -> None:
    """Through peel (the decoders of a buffer sharing one pass, layers decoded in between, budgets that run out
    at any point), the C run decoders yield what the Python ones yield."""
    accelerated = list(layers.peel(data, max_depth=depth, max_output=budget))
    python = dict(layers.DECODERS) | {name: decode for name, decode, _ in KINDS}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(layers, "DECODERS", tuple(python.items()))
        reference = list(layers.peel(data, max_depth=depth, max_output=budget))
    assert accelerated == reference
    assert not layers._EVERY_RUN  # nothing held after a peel


_STALE_BUILD = """
import base64, sys, types
from phonehome.scan import _runs
old = types.ModuleType("phonehome.scan._runs")  # what a build of an older _runs.c has
for name in ("decode_runs", "xor_differentials", "BASE64", "BASE64URL", "BASE32", "HEX", "MIN_RUN_CHARS"):
    setattr(old, name, getattr(_runs, name))
sys.modules["phonehome.scan._runs"] = old
import phonehome.scan
phonehome.scan._runs = old
from phonehome.scan import layers
print(layers.ACCELERATED, list(layers.peel(b'{"v":"' + base64.b64encode(b"a value of twenty bytes!") + b'"}')))
"""


@needs_speedups
def test_a_build_of_an_older_runs_c_is_not_used() -> None:
    """An editable install not rebuilt since a pull has a _runs module without the newer functions: the Python
    decoders are used then (and every layer still found), not C calls that raise on every buffer."""
    proc = subprocess.run([sys.executable, "-c", _STALE_BUILD], capture_output=True, text=True, check=True,
                          timeout=60)
    assert proc.stdout.strip() == "False [('base64', b'a value of twenty bytes!')]"


@needs_speedups
@pytest.mark.timeout(120)
@settings(max_examples=400, deadline=None)
@given(data=_runny(), cut=st.integers(0, 200))
def test_the_run_mark_is_set_exactly_when_a_decoder_has_a_run(data: bytes, cut: int) -> None:
    """layer_marks' run bit lets peel skip all four run decoders: it must be clear only where each of them finds
    nothing."""
    has_run = bool(_runs.layer_marks(data, cut) >> _runs.TRIGGER_COUNT & 1)
    assert has_run == bool(layers._BASE64_RUN.runs(data[:cut]))
    if not has_run:
        for name, _, _ in KINDS:
            python, c = _both(name, data, 1 << 20, cut)
            assert python == c == (b"", 1 << 20)


@needs_speedups
@pytest.mark.timeout(60)
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), periods=st.lists(st.integers(1, 8), min_size=1, max_size=4))
def test_xor_differentials_are_the_python_reference(data: bytes, periods: list[int]) -> None:
    """The XOR finder's differentials in C are its big-integer reference's bytes, for every period below the
    length (the only ones it asks for); a period at or beyond the length is an empty differential."""
    chosen = tuple(periods)
    if len(data) > max(chosen):
        assert _runs.xor_differentials(data, chosen, 16) == obfuscation.python_differentials(data, chosen)
    expected = b"\0\0".join(bytes(a ^ b for a, b in zip(data[p:], data, strict=False)) for p in chosen)
    assert _runs.xor_differentials(data, chosen, 2) == expected


@needs_speedups
def test_xor_differentials_bad_arguments() -> None:
    assert _runs.xor_differentials(memoryview(b"abcd"), (1,), 0) == bytes((3, 1, 7))
    assert _runs.xor_differentials(b"abcd", (), 5) == b""
    with pytest.raises(ValueError, match="at least 1"):
        _runs.xor_differentials(b"abcd", (0,), 0)
    with pytest.raises(ValueError, match="negative"):
        _runs.xor_differentials(b"abcd", (1,), -1)
    with pytest.raises(TypeError):
        _runs.xor_differentials(b"abcd", [1], 0)  # type: ignore[arg-type]  # a list, not a tuple, on purpose
    with pytest.raises(OverflowError):  # a size that would wrap around: refused, never a short buffer
        _runs.xor_differentials(b"0123456789", (1, 1, 1), sys.maxsize - 10)


@needs_speedups
def test_a_layer_larger_than_the_budget_left_is_decoded_within_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A gzip bomb's 4 MiB layer with a few bytes of budget left: each run decoder decodes within those bytes,
    never all four kinds of the whole layer, unbounded, to throw them away (2.5x the time of a bomb's unit)."""
    asked: list[int] = []
    every_run = _runs.decode_every_run

    def spy(data: bytes, cut: int) -> tuple[bytes, bytes, bytes, bytes]:
        asked.append(len(data))
        return every_run(data, cut)

    monkeypatch.setattr(_runs, "decode_every_run", spy)
    body = b"QUFB" * ((4 << 20) // 4 - 16)
    out = list(layers.peel(gzip.compress(body, 9), max_depth=3, max_output=4 << 20))
    assert [(chain, len(decoded)) for chain, decoded in out] == [("gzip", len(body)), ("gzip>base64", 64)]
    assert all(size < 1 << 20 for size in asked), asked
