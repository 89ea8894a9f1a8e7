"""A scan's matcher and XOR finder for one identifiers set, restored whole from one cache file.

Making them is most of a small scan's start-up even when their hyperscan databases come from the database cache
(:class:`~phonehome.scan.matcher.DatabaseCache`): the needles of every encoding (~20 ms), the XOR finder's
spellings and differentials, every pattern's shape. So the finished objects are pickled, with their databases,
into one entry of the same cache directory, encrypted the same way (AES-GCM, key derived from what it was built
from: here the identifiers themselves, so reading an entry back takes knowing them; the entry also holds the
identifiers' spellings).

An entry is found by the identifiers, the engine, hyperscan's version, this machine, the Python version, and the
source of every module whose code decides what the objects hold (:data:`SOURCE_MODULES`): a change to how
needles are made is a miss, rebuilt and rewritten, never a stale matcher. Anything wrong with an entry is a
miss too. Unpickling runs only on an entry that decrypted and authenticated with that key: forging one takes
the identifiers and write access to the user's own 0700 cache directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import sys
from pathlib import Path

from phonehome.identifiers import Identifiers
from phonehome.scan import obfuscation
from phonehome.scan.forms import build_needles
from phonehome.scan.matcher import DatabaseCache, Matcher
from phonehome.scan.obfuscation import XorFinder

#: bumped whenever what an entry holds changes shape in a way the source hashes would not show
PREPARED_FORMAT = b"phonehome-prepared-1"
#: the modules whose source decides the needles, their shapes and the XOR finder (and this one)
SOURCE_MODULES = (
    "phonehome.identifiers",
    "phonehome.scan.forms",
    "phonehome.scan.serialised",
    "phonehome.scan.matcher",
    "phonehome.scan.obfuscation",
    "phonehome.scan.prepared",
)
_SUFFIX = ".scan"


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
        except (pickle.PicklingError, TypeError, AttributeError):  # pragma: no cover - an unpicklable part
            return matcher
        cache.write(material, content, _SUFFIX)
    return matcher


def _restore(cache: DatabaseCache, material: bytes) -> tuple[Matcher, XorFinder] | None:
    content = cache.read(material, _SUFFIX)
    if content is None:
        return None
    try:
        restored = pickle.loads(content)
    except Exception:  # noqa: BLE001 - an entry of another build of the code, or a database hyperscan refuses
        return None
    if (not isinstance(restored, tuple) or len(restored) != 2 or not isinstance(restored[0], Matcher)
            or not isinstance(restored[1], XorFinder)):
        return None
    return restored[0], restored[1]


def _material(ids: Identifiers, engine: str) -> bytes | None:
    """What an entry depends on, as bytes (its name and its key derive from it); None when a source module
    cannot be read (then nothing is cached: a stale entry could not be told apart)."""
    sources = hashlib.sha256()
    for name in SOURCE_MODULES:
        path = getattr(sys.modules.get(name), "__file__", None)
        if path is None:
            return None
        try:
            sources.update(Path(path).read_bytes())
        except OSError:
            return None
    hyperscan_version = b"-"
    if engine == "hyperscan":
        import hyperscan

        hyperscan_version = str(getattr(hyperscan, "__version__", "?")).encode()
    return b"\n".join([PREPARED_FORMAT, engine.encode(), hyperscan_version, os.uname().machine.encode(),
                       sys.version.encode(), sources.digest(), repr(dataclasses.astuple(ids)).encode()])
