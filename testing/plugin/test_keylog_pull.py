"""``tls_keys: {source: adb-pull}``: a key log on the phone, pulled by Debian's adb through the virtual adb server
into a 0600 file beside the capture, and deleted with it."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from phonehome.capture.keylogs import KeylogSource, keylog_path
from phonehome.inventory import TlsKeysSpec
from phonehome.scan.keylog import load_keylogs
from phonehome.virtual.adbserver import AdbServer
from phonehome.virtual.phone import BootTimings, VirtualPhone, VirtualPhoneSpec

pytestmark = [pytest.mark.timeout(90),
              pytest.mark.skipif(shutil.which("adb") is None, reason="needs Debian's adb (run ci/setup.sh)")]

FAST = BootTimings(adbd_linger_s=0.3, absent_s=0.5, offline_s=0.2, booting_s=0.3)
SERIAL = "VIRTKEYS1"
PHONE_PATH = "/data/local/tmp/keys.log"
KEY_LINE = "CLIENT_RANDOM " + "ab" * 32 + " " + "cd" * 48 + "\n"


@pytest.fixture
def phones(tmp_path: Path) -> Iterator[list[VirtualPhone]]:
    phone = VirtualPhone(VirtualPhoneSpec(serial=SERIAL, label="keys1", model="Nokia 7 Plus", timings=FAST),
                         storage_dir=tmp_path / "phone")
    yield [phone]
    phone.close()


def test_adb_pull_key_log(phones: list[VirtualPhone], server: AdbServer, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    pcap = tmp_path / "keys1-test.pcapng"
    source = KeylogSource(TlsKeysSpec("adb-pull", PHONE_PATH), pcap, serial=SERIAL, server_port=server.port)
    assert source.fetch() == []  # the key logger wrote nothing yet: no keys, no error
    phones[0].fs.write(PHONE_PATH, KEY_LINE.encode())
    old_umask = os.umask(0)  # the pulled copy is 0600 whatever the umask
    try:
        (pulled,) = source.fetch()
    finally:
        os.umask(old_umask)
    assert pulled == keylog_path(pcap)
    assert stat.S_IMODE(pulled.stat().st_mode) == 0o600
    assert len(load_keylogs([pulled])) == 1
    source.delete()
    assert not pulled.exists()
