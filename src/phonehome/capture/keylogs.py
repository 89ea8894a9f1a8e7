"""TLS key logs of a device's traffic (devices.yaml ``tls_keys:``): fetched after each test, kept as secrets.

A key log decrypts every TLS session it names, so it is handled like the most sensitive evidence: the copy kept
beside the capture (``<capture>.keys.log``, so a kept capture can be decrypted again after the lab is gone) is
created 0600 before a byte is written, never attached to reports or printed, and deleted with the capture
(``--phonehome-keep-pcaps``). A ``file`` source's own file belongs to the lab: phonehome copies it and never
deletes it.

Where the keys come from on a bench (docs/tls-keys.md): eCapture's ``-m keylog`` or friTap's ``-k`` on a
rooted phone (source ``adb-pull``), PCAPdroid's key-log export (``pcapdroid``), or a TLS server the lab owns
(``file``). A pcapng capture carrying Decryption Secrets Blocks needs no source at all.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import subprocess
from pathlib import Path

from phonehome.capture.base import CONTROL_TIMEOUT_S, PULL_TIMEOUT_S, _run
from phonehome.capture.remote import adb_prefix
from phonehome.errors import CaptureError, InputError
from phonehome.inventory import AUTO_KEYLOG, TlsKeysSpec

log = logging.getLogger(__name__)

#: a pulled key log sits beside its capture: ``<capture>.keys.log``
KEYLOG_SUFFIX = ".keys.log"


def keylog_path(pcap: Path) -> Path:
    """Where the key log pulled for capture ``pcap`` is written."""
    return pcap.with_name(pcap.name + KEYLOG_SUFFIX)


class KeylogSource:
    """One device's key-log source for one test's capture."""

    def __init__(self, spec: TlsKeysSpec, pcap: Path, *, serial: str, server_port: int | None = None,
                 label: str | None = None, auto_path: str | None = None) -> None:
        if spec.path == AUTO_KEYLOG:
            if not auto_path:
                raise InputError(f"device {label or serial}", "tls_keys path: auto names the virtual lab's TLS key "
                                 "log, and this phone is not in a virtual lab",
                                 fix="give the key log's path, or use auto only for backend: virtual")
            spec = dataclasses.replace(spec, path=auto_path)
        self.spec = spec
        self.pcap = pcap
        self.serial = serial
        self.server_port = server_port
        self.label = label or serial
        self.pulled: Path | None = None  # the copy phonehome made beside the capture (deleted with it)

    @property
    def require(self) -> bool:
        return self.spec.require

    def fetch(self) -> list[Path]:
        """The key logs to scan this test's capture with (none when the source has none yet)."""
        source, where = self.spec.source, self.spec.path
        if source is None or where is None:
            return []
        if source == "file":
            path = Path(where)
            if not path.is_file():
                log.warning("%s: tls_keys file %s does not exist (yet): TLS flows are scanned without keys",
                            self.label, path)
                return []
            return [self._copy(path)]
        return [self._pull(where)] if self._exists_on_phone(where) else []

    def _copy(self, path: Path) -> Path:
        target = keylog_path(self.pcap)
        fd = self._create(target)
        try:
            with path.open("rb") as source:
                while chunk := source.read(1 << 20):
                    os.write(fd, chunk)
        except OSError as exc:
            raise CaptureError(f"{self.label}: cannot copy the TLS key log {path}: {exc.strerror}") from None
        finally:
            os.close(fd)
        return target

    def _create(self, target: Path) -> int:
        """Open ``target`` for writing, 0600 from its first byte (an existing file keeps its mode on O_CREAT)."""
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        self.pulled = target
        return fd

    def _exists_on_phone(self, where: str) -> bool:
        adb = adb_prefix(self.serial, server_port=self.server_port)
        # toybox ls (not test, which some shells lack); the last word says it
        out = _run([*adb, "shell", f"ls {shlex.quote(where)} && echo present || echo absent"],
                   timeout_s=CONTROL_TIMEOUT_S, what=f"{self.label}: look for the TLS key log {where}")
        if out.split()[-1:] != ["present"]:
            log.warning("%s: no TLS key log at %s on the phone (%s): TLS flows are scanned without keys",
                        self.label, where, self.spec.source)
            return False
        return True

    def _pull(self, where: str) -> Path:
        """``adb exec-out cat`` into a file created 0600 (``adb pull`` would create it world-readable first)."""
        target = keylog_path(self.pcap)
        command = [*adb_prefix(self.serial, server_port=self.server_port), "exec-out", "cat", where]
        fd = self._create(target)
        try:
            done = subprocess.run(command, stdout=fd, stderr=subprocess.PIPE, timeout=PULL_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise CaptureError(f"{self.label}: pulling the TLS key log timed out after {PULL_TIMEOUT_S:g} s",
                               command=command) from None
        except OSError as exc:
            raise CaptureError(f"{self.label}: cannot pull the TLS key log: {exc}", command=command) from None
        finally:
            os.close(fd)
        if done.returncode != 0:
            raise CaptureError(f"{self.label}: pulling the TLS key log failed", command=command,
                               returncode=done.returncode, stderr=done.stderr.decode(errors="replace"))
        return target

    def delete(self) -> None:
        """Delete the copy phonehome made (never a ``file`` source's own file). Never raises."""
        if self.pulled is None:
            return
        try:
            self.pulled.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("%s: could not delete the TLS key log %s: %s", self.label, self.pulled, exc)
