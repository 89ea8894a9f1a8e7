"""The lab's log names why a lab stopped, and carries no identifier of its phones."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import pytest

from phonehome.identifiers import mask, parse_identifiers
from phonehome.virtual import netlab
from phonehome.virtual.lab import (
    LOG_FORMAT,
    LabDevice,
    _Child,
    _MaskingFormatter,
    lab_redactor,
    log_causes,
)
from phonehome.virtual.phone import VirtualPhoneSpec

CHILD_EXIT_TIMEOUT_S = 20.0

IDS = parse_identifiers({"imei": "352099001761481", "serial": "B2NGAA8801234567", "wifi_mac": "02:1a:11:f0:00:01"},
                        source="test")
DEVICE = LabDevice(VirtualPhoneSpec(serial="VNOKIA0001", label="nokia", model="Nokia 7 Plus", identifiers=IDS))

# the shape of a lab log: records, a child's output lines, a logged traceback, a raw traceback at the end
LOG = """\
2026-12-03 13:22:05,668 INFO __main__: firmware[nokia]: {"profile": "nokia7plus-2019", "ready": true}
2026-12-03 13:22:05,700 INFO __main__: phonehome lab t1: ready, adb on 127.0.0.1:46311
2026-12-03 13:22:09,001 ERROR phonehome.virtual.adbserver: virtual adb server: client-3 failed
Traceback (most recent call last):
  File "/x/adbserver.py", line 210, in run
    target(*args)
ConnectionResetError: [Errno 104] Connection reset by peer
2026-12-03 13:22:10,100 ERROR __main__: phonehome lab t1: firmware[nokia] was killed by SIGKILL; tearing the lab down
2026-12-03 13:22:10,200 WARNING __main__: phonehome lab t1: stopping fakenet took over 5.0 s; carrying on
2026-12-03 13:22:11,000 INFO __main__: phonehome lab t1: stopped
Traceback (most recent call last):
  File "/x/lab.py", line 1, in <module>
KeyError: 'lab'
"""


def test_the_causes_are_error_records_and_the_ends_of_tracebacks_in_order() -> None:
    assert log_causes(LOG) == [
        "phonehome.virtual.adbserver: virtual adb server: client-3 failed",
        "ConnectionResetError: [Errno 104] Connection reset by peer",
        "__main__: phonehome lab t1: firmware[nokia] was killed by SIGKILL; tearing the lab down",
        "KeyError: 'lab'",
    ]


def test_a_clean_log_names_no_cause() -> None:
    assert log_causes("2026-12-03 13:22:05,700 INFO __main__: phonehome lab t1: ready\n") == []
    assert log_causes("") == []


def test_every_identifier_of_the_lab_phones_is_masked_in_every_spelling() -> None:
    redact = lab_redactor([DEVICE])
    words = ["VNOKIA0001", "vnokia0001", "352099001761481", "02:1A:11:F0:00:01", "021a11f00001", "B2NGAA8801234567",
             "b2ngaa8801234567"]
    assert redact(" ".join(words)).split() == [mask(word) for word in words]
    assert redact("pid 4711 on 127.0.0.1:5037") == "pid 4711 on 127.0.0.1:5037", "nothing else is touched"


def test_the_daemons_log_formatter_masks_what_it_writes() -> None:
    formatter = _MaskingFormatter(LOG_FORMAT, lab_redactor([DEVICE]))
    record = logging.LogRecord("phonehome.virtual.firmware", logging.ERROR, __file__, 1,
                               "request to %s failed for %s", ("http://x.example/?imei=352099001761481",
                                                               "VNOKIA0001"), None)
    line = formatter.format(record)
    assert "352099001761481" not in line and "VNOKIA0001" not in line
    assert line.endswith(f"ERROR phonehome.virtual.firmware: request to http://x.example/?imei="
                         f"{mask('352099001761481')} failed for {mask('VNOKIA0001')}")


def test_a_child_that_dies_says_how_it_ended_and_its_last_words(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHONEHOME_RUN_DIR", str(tmp_path))
    ledger = netlab.StateFile(instance="t-unit", owner_pid=os.getpid(), owner_start=None)
    script = "print('{\"ready\": true}', flush=True)\nraise ValueError('the profile broke')\n"
    child = _Child("firmware[nokia]", [sys.executable, "-c", script], ledger)
    try:
        child.wait_ready()
        child.proc.wait(CHILD_EXIT_TIMEOUT_S)
        deadline = time.monotonic() + CHILD_EXIT_TIMEOUT_S
        while child.tail[-1:] != ["ValueError: the profile broke"] and time.monotonic() < deadline:
            time.sleep(0.05)  # the log pump reads the last lines after the exit
        assert child.ending() == "firmware[nokia] exited (rc=1); its last output: ValueError: the profile broke"
    finally:
        if child.proc.poll() is None:
            child.proc.kill()
            child.proc.wait()
        for stream in (child.proc.stdout, child.proc.stdin):
            if stream is not None:
                stream.close()
