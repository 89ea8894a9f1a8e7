"""A scan's matcher and XOR finder for one identifiers set, restored whole from one cache file; and the
identifiers of an ``IDS.yaml`` file read before.

Making them is most of a small scan's start-up even when their hyperscan databases come from the database cache
(:class:`~phonehome.scan.matcher.DatabaseCache`): the needles of every encoding (~20 ms), the XOR finder's
spellings and differentials, every pattern's shape. So the finished objects are pickled, with their databases,
into one entry of the same cache directory, encrypted the same way (AES-GCM, key derived from what it was built
from: here the identifiers themselves, so reading an entry back takes knowing them; the entry also holds the
identifiers' spellings).

An entry is found by the identifiers, the engine, hyperscan's version, this machine, the Python version, and the
source of every module whose code decides what the objects hold (:data:`SOURCE_MODULES`): a change to how
needles are made is a miss, rebuilt and rewritten, never a stale matcher. Anything wrong with an entry is a
miss too. Unpickling runs only on an entry that decrypted and authenticated with that key, read from a regular
file of this user's in a directory of this user's that nobody else may write (:class:`DatabaseCache` checks
both, and treats anything else as a miss): forging one takes the identifiers and this user's own access.

:func:`cached_identifiers` keeps the identifiers an ``IDS.yaml`` file held, found by the file's bytes (and the
source of :mod:`phonehome.identifiers`), encrypted under a key derived from them: a warm ``phonehome scan`` does
not import yaml (~13 ms) nor parse the file. A file that does not load is never cached: its error is the same
each time.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import io
import os
import pickle
import sys
from pathlib import Path

from phonehome.identifiers import Identifiers, identifiers_from_yaml, load_identifiers
from phonehome.scan import obfuscation
from phonehome.scan.forms import build_needles
from phonehome.scan.matcher import DatabaseCache, Matcher
from phonehome.scan.obfuscation import XorFinder

#: bumped whenever what an entry holds changes shape in a way the source hashes would not show
PREPARED_FORMAT = b"phonehome-prepared-1"
#: the modules whose source decides the needles, their shapes and the XOR finder (and this one): every
#: phonehome module they import (a test keeps it so)
SOURCE_MODULES = (
    "phonehome.errors",
    "phonehome.identifiers",
    "phonehome.scan.forms",
    "phonehome.scan.serialised",
    "phonehome.scan.matcher",
    "phonehome.scan.obfuscation",
    "phonehome.scan.prepared",
    "phonehome.scan._runs",  # the C extension obfuscation uses (optional: when it is not built, that is the key)
)
#: modules of SOURCE_MODULES that may be missing (an optional C extension not built)
_OPTIONAL_MODULES = frozenset(("phonehome.scan._runs",))
#: an identifiers file's entry depends on this module's code too
IDENTIFIERS_SOURCE_MODULES = ("phonehome.errors", "phonehome.identifiers", "phonehome.scan.prepared")
#: file name suffixes of the entries (the database cache's own are ``.hsdb``); each kind is evicted on its own
_SUFFIX = ".scan"
_IDS_SUFFIX = ".ids"


def cached_identifiers(path: str | Path) -> Identifiers:
    """:func:`~phonehome.identifiers.load_identifiers`, from the cache when this very file content was loaded
    before (see the module's text)."""
    cache = DatabaseCache.default()
    try:
        raw = Path(path).read_bytes()
    except OSError:
        raw = None
    sources = _source_digest(IDENTIFIERS_SOURCE_MODULES)
    if cache is None or raw is None or sources is None:
        return load_identifiers(path)  # which says what is wrong with an unreadable file
    material = b"\n".join([PREPARED_FORMAT, b"identifiers", sources, raw])
    content = cache.read(material, _IDS_SUFFIX)
    if content is not None:
        try:
            ids = _unpickle(content)
        except Exception:  # an entry of another build of the code
            ids = None
        if isinstance(ids, Identifiers):
            return ids
    try:  # decoded as load_identifiers decodes (universal newlines), from the bytes the entry is found by
        text = io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8").read()
    except UnicodeDecodeError:
        return load_identifiers(path)
    ids = identifiers_from_yaml(text, source=str(path))
    cache.write(material, pickle.dumps(ids, protocol=pickle.HIGHEST_PROTOCOL), _IDS_SUFFIX)
    return ids


def prepared_matcher(ids: Identifiers, engine: str) -> Matcher:
    """The matcher for ``ids`` (and, registered with :func:`~phonehome.scan.obfuscation.xor_finder`, its XOR
    finder): from the cache when an entry matches, else built and cached."""
    cache = DatabaseCache.default()
    material = _material(ids, engine) if cache is not None else None
    if cache is not None and material is not None:
        restored = _restore(cache, material)
        if restored is not None:
            matcher, finder = restored
            obfuscation.remember(matcher, finder)
            return matcher
    matcher = Matcher(build_needles(ids), engine=engine)
    finder = obfuscation.xor_finder(matcher)
    if cache is not None and material is not None:
        try:
            content = pickle.dumps((matcher, finder), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # pragma: no cover - an unpicklable part, a database hyperscan cannot serialize:
            return matcher  # the cache only saves time, it never fails a scan
        cache.write(material, content, _SUFFIX)
    return matcher


def _restore(cache: DatabaseCache, material: bytes) -> tuple[Matcher, XorFinder] | None:
    content = cache.read(material, _SUFFIX)
    if content is None:
        return None
    try:
        restored = _unpickle(content)
    except Exception:  # an entry of another build of the code, or a database hyperscan refuses
        return None
    if (not isinstance(restored, tuple) or len(restored) != 2 or not isinstance(restored[0], Matcher)
            or not isinstance(restored[1], XorFinder)):
        return None
    return restored[0], restored[1]


def _unpickle(content: bytes) -> object:
    """``pickle.loads`` without the garbage collector: thousands of new objects would run it ~30 times over
    objects that are all alive (~1-5 ms of start-up)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return pickle.loads(content)
    finally:
        if enabled:
            gc.enable()


def _material(ids: Identifiers, engine: str) -> bytes | None:
    """What an entry depends on, as bytes (its name and its key derive from it); None when a source module
    cannot be read (then nothing is cached: a stale entry could not be told apart)."""
    sources = _source_digest(SOURCE_MODULES)
    if sources is None:
        return None
    hyperscan_version = b"-"
    if engine == "hyperscan":
        import hyperscan

        hyperscan_version = str(getattr(hyperscan, "__version__", "?")).encode()
    return b"\n".join([PREPARED_FORMAT, engine.encode(), hyperscan_version, os.uname().machine.encode(),
                       sys.version.encode(), sources, repr(dataclasses.astuple(ids)).encode()])


def _source_digest(modules: tuple[str, ...]) -> bytes | None:
    """SHA-256 of the modules' source files (all imported by now, or optional and absent); None when one cannot
    be read."""
    digest = hashlib.sha256()
    for name in modules:
        module = sys.modules.get(name)
        if module is None and name in _OPTIONAL_MODULES:
            digest.update(b"absent: " + name.encode())
            continue
        path = getattr(module, "__file__", None)
        if path is None:
            return None
        try:
            digest.update(Path(path).read_bytes())
        except OSError:
            return None
    return digest.digest()
