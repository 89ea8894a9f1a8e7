"""The ``Phone`` protocol: what the fixtures need from any phone backend.

Fixtures and hooks depend on this protocol, never on a backend, so a farm can plug in its own controller
through the ``pytest_phonehome_make_phone`` hook. Every method that changes the phone verifies the change from the
phone's own state and raises :class:`~phonehome.errors.DeviceError` (naming the device) when it did not happen.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from phonehome.identifiers import Identifiers

#: identifier name -> where its value came from (``"getprop ro.serialno"``, ``"inventory"``, ...)
IdentifierSources = Mapping[str, str]


@runtime_checkable
class Phone(Protocol):
    """One phone under test, connected for the whole session."""

    @property
    def serial(self) -> str:
        """The adb serial (USB serial or ``host:port``)."""
        ...

    @property
    def label(self) -> str:
        """The inventory label: how reports and errors name this phone."""
        ...

    def info(self) -> dict[str, Any]:
        """Serializable facts for the report: model, Android release, build fingerprint, backend."""
        ...

    def power_on(self) -> None:
        """Bring the phone up from a fresh boot (reboot or power cycle) and wait until it has booted."""
        ...

    def handle_reboot(self) -> AbstractContextManager[None]:
        """Context manager around anything that reboots the phone: on exit, waits for the new boot and
        reconnects, so that callers never talk to a half-booted phone."""
        ...

    def screen_off(self) -> bool:
        """Turn the display off; verified from the phone's power state. True when it was on (the phone may
        react with traffic), False when there was nothing to do."""
        ...

    def screen_on(self) -> bool:
        """Turn the display on; verified from the phone's power state. True when it was off."""
        ...

    def unlock(self) -> bool:
        """Wake the phone if needed and dismiss the keyguard (swipe, PIN or password); verified gone. True when
        the phone was asleep or locked, False when it already was awake and unlocked."""
        ...

    def read_identifiers(self) -> tuple[Identifiers, IdentifierSources]:
        """Identifiers the phone reveals about itself, and where each came from."""
        ...

    def screenshot(self, path: Path) -> Path:
        """Save a screenshot (evidence for a failed test) and return its path."""
        ...

    def logcat_since(self, since: float) -> str:
        """The phone's log from ``since`` (host epoch seconds) on: evidence for the failed phase."""
        ...

    def dumpsys_window(self) -> str:
        """``dumpsys window`` output: shows what was on screen (keyguard, dialogs) when a step failed."""
        ...

    def close(self) -> None:
        """Release the connection. Never raises: teardown must not hide a test's result."""
        ...

