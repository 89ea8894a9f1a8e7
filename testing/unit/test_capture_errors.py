"""A capture error shows a tool's stderr as whole lines: its first lines and first error line, its last lines,
and a marker for the whole lines elided between; never a line cut mid-word or the first error line lost."""

from __future__ import annotations

import pytest

from phonehome.errors import STDERR_LINE_CHARS, CaptureError, stderr_excerpt

# SOURCE: dumpcap 4.0.17 (Debian 12) run as user nobody: `dumpcap -i lo -w /tmp/y.pcap -a duration:1`, stderr
NON_ROOT_DUMPCAP = """Capturing on 'Loopback: lo'
dumpcap: You do not have permission to capture on device "lo".
(socket: Operation not permitted)
Please check to make sure you have sufficient permissions.

On Debian and Debian derivatives such as Ubuntu, if you have installed Wireshark from a package, try running

    sudo dpkg-reconfigure wireshark-common

selecting "<Yes>" in response to the question

    Should non-superusers be able to capture packets?

adding yourself to the "wireshark" group by running

    sudo usermod -a -G wireshark {your username}

and then logging out and logging back in again.

If you did not install Wireshark from a package, ensure that Dumpcap has the needed CAP_NET_RAW and \
CAP_NET_ADMIN capabilities by running\x20

    sudo setcap cap_net_raw,cap_net_admin=ep {path/to/}dumpcap

and then restarting Wireshark.
"""

# SOURCE: dumpcap 4.0.17 (Debian 12) as root: `dumpcap -i nosuchif0 -w /tmp/x.pcap`, stderr
NO_SUCH_DEVICE = """Capturing on 'nosuchif0'
dumpcap: There is no device named "nosuchif0".
(No such device exists)
"""


def test_a_non_root_user_sees_dumpcaps_permission_line_and_its_last_lines() -> None:
    error = CaptureError("interface capture of pixel: dumpcap exited before capturing on lo",
                         command=["dumpcap", "-i", "lo"], returncode=1, stderr=NON_ROOT_DUMPCAP)
    text = str(error)
    assert 'dumpcap: You do not have permission to capture on device "lo".' in text
    assert "(socket: Operation not permitted)" in text
    assert "sudo setcap cap_net_raw,cap_net_admin=ep {path/to/}dumpcap" in text
    assert text.endswith("and then restarting Wireshark.")
    shown = stderr_excerpt(NON_ROOT_DUMPCAP)
    assert shown[:3] == ["Capturing on 'Loopback: lo'",
                         'dumpcap: You do not have permission to capture on device "lo".',
                         "(socket: Operation not permitted)"]
    assert shown[3] == "… 7 lines …"  # the 7 non-blank lines from "Please check" to "adding yourself"
    assert len(shown) == 3 + 1 + 4
    assert error.stderr == NON_ROOT_DUMPCAP, "the attribute keeps all of it"


def test_every_shown_line_is_a_whole_line_of_the_stderr() -> None:
    lines = {line.rstrip() for line in NON_ROOT_DUMPCAP.splitlines()}
    for shown in stderr_excerpt(NON_ROOT_DUMPCAP):
        assert shown in lines or (shown.startswith("… ") and shown.endswith(" lines …")), shown


def test_short_stderr_is_shown_whole_on_its_own_lines() -> None:
    error = CaptureError("dumpcap exited before capturing on nosuchif0", returncode=1, stderr=NO_SUCH_DEVICE)
    assert str(error).endswith("rc=1; stderr:\n  Capturing on 'nosuchif0'\n"
                               '  dumpcap: There is no device named "nosuchif0".\n  (No such device exists)')
    one = CaptureError("ssh failed", stderr="ssh: connect to host lab port 22: Connection refused\n")
    assert str(one) == "ssh failed; stderr: ssh: connect to host lab port 22: Connection refused"


def test_the_first_error_line_is_kept_from_the_middle_of_a_long_stderr() -> None:
    stderr = "\n".join([*(f"progress {i}" for i in range(40)), "tcpdump: pcap_loop: The interface went down",
                        "detail of the fault", *(f"noise {i}" for i in range(40)), "0 packets captured"])
    shown = stderr_excerpt(stderr)
    assert shown == ["progress 0", "progress 1", "… 38 lines …", "tcpdump: pcap_loop: The interface went down",
                     "detail of the fault", "… 37 lines …", "noise 37", "noise 38", "noise 39",
                     "0 packets captured"]


def test_a_single_elided_line_is_shown_rather_than_a_marker() -> None:
    stderr = "\n".join(f"line {i}" for i in range(7))
    assert stderr_excerpt(stderr) == [f"line {i}" for i in range(7)]


def test_progress_counters_with_carriage_returns_are_lines() -> None:
    stderr = "File: /tmp/x.pcapng\rPackets: 1 \rPackets: 2 \rPackets: 3 \n"
    assert stderr_excerpt(stderr, head=1, tail=1) == ["File: /tmp/x.pcapng", "… 2 lines …", "Packets: 3"]


@pytest.mark.parametrize("word", ["a", "supercalifragilistic"])
def test_a_long_line_is_shortened_at_a_word_boundary(word: str) -> None:
    line = " ".join([word] * 400)
    (shown,) = stderr_excerpt(line)
    assert len(shown) <= STDERR_LINE_CHARS + 2 and shown.endswith(" …")
    assert shown[:-2].split(" ") == [word] * len(shown[:-2].split(" ")), "no word is cut"


def test_one_long_word_is_kept_whole() -> None:
    word = "x" * (STDERR_LINE_CHARS * 2)
    assert stderr_excerpt(f"{word} tail") == [f"{word} …"]
    assert stderr_excerpt(word) == [word]


def test_blank_stderr_adds_nothing() -> None:
    assert str(CaptureError("failed", stderr="\n  \n")) == "failed"
