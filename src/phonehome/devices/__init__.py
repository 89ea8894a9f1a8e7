"""Phone control: the :class:`~phonehome.devices.base.Phone` protocol and its backends.

Only :mod:`phonehome.devices.u2` imports uiautomator2 and adbutils, and only when a phone is built.
"""

from __future__ import annotations

from phonehome.devices.base import IdentifierSources, Phone

__all__ = ["IdentifierSources", "Phone"]
