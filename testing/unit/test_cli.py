from __future__ import annotations

import subprocess
import sys

import pytest

from phonehome.cli import EXIT_USAGE, main


def test_unknown_option_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["--no-such-option"])
    assert excinfo.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--no-such-option" in err
    assert "Traceback" not in err


def test_console_entry_point_runs() -> None:
    proc = subprocess.run([sys.executable, "-m", "phonehome", "--version"], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0
    assert proc.stdout.startswith("phonehome ")
