"""report.diff with app attribution: a new app sending an identifier is a change; a sender that attribution
missed one night (unknown app) is not."""

from __future__ import annotations

import json
from pathlib import Path

from phonehome.report.diff import Baseline, Observations, compare, findings_html, load_observed

LEAK = {"identifier": "imei", "encoding": "plain", "host": "zzhc.vnet-cn.example", "dport": 80,
        "transport": "tcp", "protocol": "http", "encrypted": False}


def _snapshot(*findings: dict[str, object]) -> Observations:
    observed = Observations()
    observed.add("phone", [], findings)
    return observed


def test_a_new_app_sending_the_same_identifier_is_a_change() -> None:
    before = Baseline(taken_at=1.0, devices=_snapshot({**LEAK, "app": "com.qualcomm.qti.autoregistration"}).devices)
    (change,) = compare(before, _snapshot({**LEAK, "app": "com.qualcomm.qti.autoregistration"},
                                          {**LEAK, "app": "com.example.flashlight"}).devices)
    assert [f.app for f in change.new_findings] == ["com.example.flashlight"]
    assert "com.example.flashlight" in findings_html(change.new_findings)


def test_an_unattributed_sender_matches_the_known_one() -> None:
    before = Baseline(taken_at=1.0, devices=_snapshot({**LEAK, "app": "com.qualcomm.qti.autoregistration"}).devices)
    (change,) = compare(before, _snapshot({**LEAK, "app": None}).devices)
    assert change.new_findings == ()
    older = Baseline(taken_at=1.0, devices=_snapshot(LEAK).devices)  # a baseline from before attribution
    (change,) = compare(older, _snapshot({**LEAK, "app": "com.qualcomm.qti.autoregistration"}).devices)
    assert change.new_findings == ()


def test_the_app_survives_the_observed_file(tmp_path: Path) -> None:
    path = _snapshot({**LEAK, "app": "com.example.flashlight"}).write(tmp_path)
    assert path is not None and json.loads(path.read_text())["devices"]["phone"]["findings"][0]["app"] == \
        "com.example.flashlight"
    (kind,) = load_observed([tmp_path])["phone"].findings
    assert kind.app == "com.example.flashlight"
