"""One error hierarchy for phonehome, rooted in :class:`PhonehomeError`.

Every error carries the context a lab engineer needs to act on it: which file and field, which device, which
command. The command line prints ``str(error)`` as a single line; pytest shows it as the reason of an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class PhonehomeError(Exception):
    """Base of every error phonehome raises on purpose."""


class InputError(PhonehomeError):
    """Bad input from the user: a file, an option or a value. Never shown with a traceback.

    ``where`` is a line (``"line 12"``), a field (``"devices[2].unlock"``) or both; ``fix`` says what to do.
    """

    def __init__(self, source: str | Path | None, problem: str, *, where: str | None = None,
                 fix: str | None = None) -> None:
        self.source = str(source) if source is not None else None
        self.problem = problem
        self.where = where
        self.fix = fix
        super().__init__(self._render())

    def _render(self) -> str:
        head = ": ".join(part for part in (self.source, self.where) if part)
        text = f"{head}: {self.problem}" if head else self.problem
        return f"{text} ({self.fix})" if self.fix else text


class DeviceError(PhonehomeError):
    """A phone did not do what it was asked: names the device."""

    def __init__(self, device: str, problem: str) -> None:
        self.device = device
        self.problem = problem
        super().__init__(f"device {device}: {problem}")


class CredentialError(DeviceError):
    """An unlock credential was refused, or the phone's lock is not what the inventory says. Never retried: a
    real phone locks out (and some wipe) after a few wrong attempts, so the phone is quarantined instead."""


class AdbServerGone(DeviceError):
    """No adb server answers where the phone is expected: nothing to wait for, no evidence to collect."""


class CaptureError(PhonehomeError):
    """A capture could not start, stopped early, dropped packets or saw nothing: the evidence is incomplete."""

    def __init__(self, problem: str, *, command: Sequence[str] | None = None, returncode: int | None = None,
                 stderr: str | None = None) -> None:
        self.problem = problem
        self.command = list(command) if command else None
        self.returncode = returncode
        self.stderr = stderr
        parts = [problem]
        if self.command:
            parts.append(f"command: {' '.join(self.command)}")
        if returncode is not None:
            parts.append(f"rc={returncode}")
        if stderr:
            parts.append(f"stderr: {stderr.strip()[-500:]}")
        super().__init__("; ".join(parts))


class LabError(PhonehomeError):
    """The virtual device lab (namespaces, fake internet, virtual phones) could not be set up or used."""
