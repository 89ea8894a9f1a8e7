"""phonehome's own hooks: how a lab plugs in its own phones and power relays, and how reporters see a run.

Registered by :mod:`phonehome.plugin` with ``config.pluginmanager.add_hookspecs``. Implement them in a
``conftest.py`` or a plugin. Their names carry pytest's ``pytest_`` prefix because pytest collects hook
implementations only from ``pytest_*`` names (``PytestPluginManager.parse_hookimpl_opts``), as pytest-xdist's do. Types are named in strings so that this module imports nothing heavy.
"""

from __future__ import annotations

from typing import Any

import pytest


@pytest.hookspec(firstresult=True)
def pytest_phonehome_make_phone(entry: Any, settings: Any) -> Any:
    """Build the phone controller for one inventory entry (``phonehome.inventory.DeviceEntry``).

    Return an object that satisfies ``phonehome.devices.base.Phone``, or None to let the next implementation
    (finally phonehome's own, registered ``trylast``) decide. A farm returns its own controller here.
    """


@pytest.hookspec(firstresult=True)
def pytest_phonehome_power_cycle(phone: Any) -> bool | None:
    """Power-cycle ``phone`` for the power-on phase instead of ``adb reboot``.

    Return True when this implementation cut and restored power (USB hub, relay command); None to fall back to
    a reboot over adb. The harness then waits for the new boot as usual.
    """


@pytest.hookspec(firstresult=True)
def pytest_phonehome_step(name: str, device: str) -> Any:
    """Return a context manager that wraps one lifecycle step (connect, power-on, wait for boot, screen-on,
    unlock, settle, scan) of ``device``; None for no wrapping. The Allure reporter opens an Allure step here."""


@pytest.hookspec
def pytest_phonehome_phase_finished(item: pytest.Item, device: str, phase: Any) -> None:
    """Called when a phase window closed and was scanned.

    ``phase`` is a ``phonehome.capture.PhaseRecord``-like object: ``name``, ``start``, ``end`` (capture time),
    ``findings``, ``flows`` (as in ``phonehome scan --json``) and ``pcap`` (a path to the phase's slice, or None).
    """


@pytest.hookspec
def pytest_phonehome_failure_evidence(item: pytest.Item, device: str, evidence: dict[str, Any]) -> None:
    """Called when a test on ``device`` failed or errored, with what the harness collected: paths or text under
    keys such as ``screenshot`` (PNG/JPEG path), ``logcat`` (text), ``dumpsys_window`` (text), ``frames`` (text
    dissection of the frames findings cite)."""


@pytest.hookspec
def pytest_phonehome_device_info(device: str, info: dict[str, Any]) -> None:
    """Called once per device per session with its serializable info: model, Android build, fingerprint,
    identifier sources (and those that could not be read), tool versions; and again with ``{"quarantined":
    cause}`` when the phone is quarantined. Reporters merge it into their environment section."""


@pytest.hookspec
def pytest_phonehome_capture_finished(item: pytest.Item, device: str, capture: Any, files: list[tuple[Any, str]],
                                      kept: bool) -> None:
    """Called when a test's capture of ``device`` stopped, before ``--phonehome-keep-pcaps`` deletes anything.

    ``capture`` satisfies ``phonehome.capture.Capture`` (``pcap``, ``phases``, ``info()``); ``files`` are its
    files as ``(path, role)`` (``capture``, ``phases``, ``slice``) that exist now; ``kept`` says whether they
    stay after the test. The evidence manifest hashes them here.
    """
