"""The progress line of a long scan: what it says, how often it redraws, where it never appears."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from phonehome.cli import main
from phonehome.scan.pcapfile import CaptureReader
from phonehome.scan.progress import PROGRESS_MIN_BYTES, REDRAW_INTERVAL_S, ProgressLine, progress_line
from phonehome.testing.captures import CaptureBuilder


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_line_says_bytes_percent_rate_and_time_left() -> None:
    line = ProgressLine(io.StringIO(), 2_000_000_000)
    assert line.render(500_000_000, 2.0) == "phonehome scan: 500 of 2,000 MB (25 %), 250 MB/s, 6 s left"
    assert "time left unknown" in line.render(0, 0.0)


def test_redraws_at_most_a_few_times_a_second_and_finish_erases_it() -> None:
    stream = io.StringIO()
    clock = Clock()
    line = ProgressLine(stream, 1_000_000_000, clock=clock)
    line(10_000_000)  # at once: no rate yet, nothing drawn
    assert stream.getvalue() == ""
    for step in range(40):  # 4 s of chunk callbacks every 0.1 s
        clock.now += 0.1
        line(10_000_000 * (step + 2))
    drawn = stream.getvalue().count("\r")
    assert 4 * 2 <= drawn <= 4 / REDRAW_INTERVAL_S  # a live line, but not one draw per chunk (40)
    line.finish()
    assert stream.getvalue().endswith("\r")
    assert stream.getvalue().rsplit("\r", 2)[-2].strip() == ""  # the last draw is blanked out


def test_only_on_a_terminal_for_large_captures_unless_quiet() -> None:
    assert progress_line(Terminal(), PROGRESS_MIN_BYTES) is not None
    assert progress_line(Terminal(), PROGRESS_MIN_BYTES, quiet=True) is None
    assert progress_line(Terminal(), PROGRESS_MIN_BYTES - 1) is None
    assert progress_line(io.StringIO(), PROGRESS_MIN_BYTES) is None  # a pipe, a CI log


def test_reader_reports_offsets_up_to_the_file_size(tmp_path: Path) -> None:
    builder = CaptureBuilder()
    for i in range(200):
        builder.udp("10.0.0.2", "10.0.0.1", 4000, 9999, b"x" * 500 + bytes([i]))
    path = tmp_path / "c.pcap"
    builder.write_pcap(path)
    seen: list[int] = []
    reader = CaptureReader(path, chunk_bytes=8192, progress=seen.append)
    assert sum(1 for _ in reader) == 200
    assert len(seen) > 5
    assert seen == sorted(seen)
    assert seen[-1] == path.stat().st_size


def test_scan_command_takes_quiet_and_prints_no_progress_off_a_terminal(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    builder = CaptureBuilder()
    builder.udp("10.0.0.2", "10.0.0.1", 4000, 9999, b"imei=352099001761481")
    path = tmp_path / "c.pcap"
    builder.write_pcap(path)
    ids = tmp_path / "ids.yaml"
    ids.write_text('imei: "352099001761481"\n')
    assert main(["scan", str(path), "-i", str(ids), "--quiet"]) == 1
    assert main(["scan", str(path), "-i", str(ids)]) == 1
    assert "MB/s" not in capsys.readouterr().err
