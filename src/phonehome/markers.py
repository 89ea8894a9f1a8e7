"""phonehome's markers, with the signatures users write; checked by binding to these functions."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest

# --- markers -------------------------------------------------------------------------------------------------


def phonehome_device(*labels: str) -> tuple[str, ...]:
    """Run this test only on the devices with these inventory labels."""
    return labels


def phonehome_model(*models: str) -> tuple[str, ...]:
    """Run this test only on devices of these models (the inventory's ``model``)."""
    return models


MARKERS: dict[str, Callable[..., tuple[str, ...]]] = {
    "phonehome_device": phonehome_device, "phonehome_model": phonehome_model,
}


def marker_signature(name: str) -> str:
    """``phonehome_device(*labels)``: the signature users write, for ``pytest --markers`` and errors."""
    parameters = inspect.signature(MARKERS[name]).parameters.values()
    rendered = [f"*{p.name}" if p.kind is p.VAR_POSITIONAL else p.name for p in parameters]
    return f"{name}({', '.join(rendered)})"


def marker_values(marker: pytest.Mark) -> tuple[str, ...]:
    """Check a phonehome marker by binding it to its signature; its values, or a one-line failure."""
    function = MARKERS[marker.name]
    try:
        inspect.signature(function).bind(*marker.args, **marker.kwargs)
    except TypeError as exc:
        pytest.fail(f"@pytest.mark.{marker_signature(marker.name)}: {exc}", pytrace=False)
    values = function(*marker.args, **marker.kwargs)
    if not values or not all(isinstance(value, str) and value for value in values):
        pytest.fail(f"@pytest.mark.{marker.name} needs one or more non-empty strings, got {values!r}",
                    pytrace=False)
    return values


