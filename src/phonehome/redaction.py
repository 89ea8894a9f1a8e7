"""Masking of identifiers and secrets in everything phonehome writes (messages, logs, reports), pcaps excepted.

Two passes. The plain pass replaces every known value, in every common spelling (with and without separators,
any case), by its mask: cheap, for any amount of text. The deep pass runs the scanner's own matcher over the text
(every form the scanner knows: base64 at any alignment, hex, digests, ...) and peels encoded runs (base64, hex,
url, compressed) to mask a run whose decoded content holds an identifier: what the scanner can find in a capture
must not be findable in phonehome's own output. Unlock secrets are replaced by stars whole, never partly shown.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from phonehome.identifiers import SCHEMA_KEYS, Identifiers, mask

if TYPE_CHECKING:
    from phonehome.scan.matcher import Matcher

#: identifier values shorter than this are not searched for in free text (they would mask random digits)
MIN_REDACT_LENGTH = 4
#: a run of encoding alphabet this long may hide an identifier (base64 of 6 bytes is 8 characters)
MIN_ENCODED_RUN = 8
#: bytes looked at beyond a window's edges, so that an encoded run the window cuts still decodes whole
RUN_CONTEXT_BYTES = 4096
_SEPARATORS = re.compile(r"[\s:.\-()/]")
#: a run of lowercase letters (a word, a path segment) decodes to no identifier: not worth peeling
_PLAIN_WORD = re.compile(rb"[a-z_\-]+")
_ENCODED_RUN = re.compile(rb"[A-Za-z0-9+/_\-=%]{" + str(MIN_ENCODED_RUN).encode() + rb",}")


@dataclass(frozen=True)
class Redactor:
    """Replaces identifier values (and secrets) in free text by their masks. Immutable: ``with_values`` and
    ``with_identifiers`` return a new one, so a copy held by a reporter never changes behind its back."""

    values: frozenset[str] = frozenset()
    show: bool = False
    secrets: frozenset[str] = frozenset()
    identifiers: Identifiers = field(default_factory=lambda: Identifiers(values=()), compare=False)

    def __repr__(self) -> str:
        return f"Redactor({len(self.values)} values, {len(self.secrets)} secrets, show={self.show})"

    def with_values(self, values: Iterable[str]) -> Redactor:
        added = {v for v in values if len(v) >= MIN_REDACT_LENGTH} - self.values
        if not added:
            return self
        return Redactor(self.values | added, self.show, self.secrets, self.identifiers)

    def with_identifiers(self, ids: Identifiers) -> Redactor:
        """Plain values and the deep pass both learn ``ids``."""
        merged = self.identifiers.merged(ids)
        if merged == self.identifiers:
            return self
        return Redactor(self.values | {v for v in identifier_values(ids) if len(v) >= MIN_REDACT_LENGTH},
                        self.show, self.secrets, merged)

    def with_secrets(self, secrets: Iterable[str]) -> Redactor:
        added = {s for s in secrets if s} - self.secrets
        if not added:
            return self
        return Redactor(self.values, self.show, self.secrets | added, self.identifiers)

    def merged(self, other: Redactor) -> Redactor:
        return Redactor(self.values | other.values, self.show and other.show, self.secrets | other.secrets,
                        self.identifiers.merged(other.identifiers))

    @functools.cached_property
    def _pattern(self) -> re.Pattern[str] | None:
        """One alternation of every spelling, compiled once per set of values (reports mask a lot of text)."""
        spellings: dict[str, str] = {}
        for value in self.values:
            spellings.setdefault(value.lower(), value)
            bare = _SEPARATORS.sub("", value)
            if len(bare) >= MIN_REDACT_LENGTH:
                spellings.setdefault(bare.lower(), value)
        if not spellings:
            return None
        ordered = sorted(spellings, key=len, reverse=True)  # longest first: a value inside another stays hidden
        return re.compile("|".join(re.escape(s) for s in ordered), re.IGNORECASE)

    @functools.cached_property
    def _matcher(self) -> Matcher | None:
        if self.identifiers.is_empty():
            return None
        from phonehome.scan.matcher import build_matcher

        return build_matcher(self.identifiers)

    def __call__(self, text: str) -> str:
        """The plain pass (and secrets): every spelling of every known value."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            # whole tokens only: a PIN 2019 must not star the label nokia7plus-2019 (and so give itself away)
            text = re.sub(rf"(?<![0-9A-Za-z]){re.escape(secret)}(?![0-9A-Za-z])", "*" * len(secret), text)
        if self.show:
            return text
        pattern = self._pattern
        return pattern.sub(lambda m: mask(m.group(0)), text) if pattern else text

    def deep(self, text: str) -> str:
        """Both passes: for text that may quote payloads (tracebacks, excerpts, dissected frames, logcat)."""
        text = self(text)
        if self.show or self._matcher is None or not text:
            return text
        data = text.encode("utf-8", "surrogateescape")
        spans = leak_spans(data, self._matcher)
        if not spans:
            return text
        return mask_spans(data, spans).decode("utf-8", "surrogateescape")


def leak_spans(data: bytes, matcher: Matcher, lo: int = 0, hi: int | None = None) -> list[tuple[int, int]]:
    """Byte spans of ``data[lo:hi]`` that hold an identifier: the matcher's own hits, and every encoded run
    (base64, hex, url-escaped, ...) whose peeled content holds one. Sorted, possibly overlapping."""
    from phonehome.scan.layers import peel

    hi = len(data) if hi is None else hi
    # a run cut by the window's edge must still decode: look a little beyond it
    base = max(lo - RUN_CONTEXT_BYTES, 0)
    region = data[base:hi + RUN_CONTEXT_BYTES]
    spans = []
    for m in matcher.find(region):
        start, end = base + m.start, base + m.end
        if start < hi and end > lo:
            spans.append((max(start, lo), min(end, hi)))
    for run in _ENCODED_RUN.finditer(region):
        start, end = base + run.start(), base + run.end()
        if end <= lo or start >= hi or _PLAIN_WORD.fullmatch(run.group()):
            continue
        if any(matcher.find(decoded) for chain, decoded in peel(run.group()) if chain):
            spans.append((max(start, lo), min(end, hi)))
    return sorted(spans)


def merge_spans(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping or touching spans as one: masking two overlapping spans apart would show inner characters."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def mask_spans(data: bytes, spans: Iterable[tuple[int, int]]) -> bytes:
    """``data`` with each span replaced by the mask of its text (same length: offsets elsewhere stay valid)."""
    out = bytearray(data)
    for start, end in merge_spans(spans):
        piece = bytes(out[start:end]).decode("latin-1")
        out[start:end] = mask(piece).encode("latin-1")
    return bytes(out)


def identifier_values(source: Any) -> list[str]:
    """Every identifier value held by ``source``: a ``phonehome.identifiers.Identifiers``, a mapping in the
    identifiers schema (only its schema keys count: ``serial`` in device info is one, ``model`` is not), or an
    object with an ``identifiers`` attribute or key (an inventory entry, a phone, device info)."""
    if source is None or isinstance(source, str | bytes | int | float):
        return []
    if isinstance(source, Identifiers):
        found = [str(value) for _, value in source.values]
        for loc in source.locations:
            found.extend((f"{loc.lat}", f"{loc.lon}"))
        # a short MCC or area code alone is dropped by length where the values are used
        found.extend(value for cell in source.cells for _, value in cell.fields())
        found.extend(value for wifi in source.wifis for _, value in wifi.fields())
        return found
    found = []
    nested = source.get("identifiers") if isinstance(source, Mapping) else getattr(source, "identifiers", None)
    if nested is not None and nested is not source:
        found.extend(identifier_values(nested))
    if isinstance(source, Mapping):
        for key in SCHEMA_KEYS:
            found.extend(_scalars(source.get(key)))
    return found


def _scalars(value: object) -> list[str]:
    """The leaf values of one schema entry (a string, a list, ``{lat, lon}``, a custom mapping)."""
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, str | int | float):
        return [str(value)]
    if isinstance(value, Mapping):
        return [leaf for item in value.values() for leaf in _scalars(item)]
    if isinstance(value, list | tuple):
        return [leaf for item in value for leaf in _scalars(item)]
    return []
