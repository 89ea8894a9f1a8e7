"""Cleartext handshake fields of encrypted flows: TLS 1.2 client certificates and PSK identities, DTLS
ClientHellos (SNI, PSK identity), SSH banners. Found, named as handshake leaks on an encrypted flow, and nothing
after the handshake is scanned. tshark reads every capture (checked here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from phonehome.identifiers import Identifiers, parse_identifiers
from phonehome.scan.handshakes import TlsHandshakeDecoder, dtls_cleartext
from phonehome.scan.scanner import ScanResult, scan_capture
from phonehome.testing.captures import (
    CaptureBuilder,
    dtls_client_hello,
    dtls_record,
    ssh_banner,
    tls_application_data,
    tls_certificate,
    tls_change_cipher_spec,
    tls_client_hello,
    tls_client_key_exchange_psk,
    tls_handshake_record,
    tls_server_hello,
    x509_certificate,
)

IMEI = "356938035643809"
SERIAL = "R58M12ABCDE"
ANDROID_ID = "9774d56d682e549c"
PHONE_IP = "10.0.0.2"
SERVER_IP = "93.184.216.34"
TSHARK_TIMEOUT_S = 60


def _ids() -> Identifiers:
    return parse_identifiers({"imei": IMEI, "serial": SERIAL, "android_id": ANDROID_ID}, source="test")


def _tshark(path: Path, *fields: str) -> list[str]:
    proc = subprocess.run([shutil.which("tshark") or "tshark", "-r", str(path), "-T", "fields",
                           *(arg for f in fields for arg in ("-e", f))],
                          capture_output=True, text=True, timeout=TSHARK_TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.replace(",", " ").split()  # several occurrences of a field are comma-separated


def _tls12_with_client_certificate(cap: CaptureBuilder, *, psk: bytes | None = None) -> None:
    conn = cap.tcp(PHONE_IP, SERVER_IP, 8883)
    conn.send(tls_client_hello("mqtt.vendor.example"))
    conn.reply(tls_server_hello() + tls_handshake_record(13, b"\x01\x40\x00\x00")  # CertificateRequest
               + tls_handshake_record(14, b""))  # ServerHelloDone
    second_flight = tls_certificate([x509_certificate(IMEI)])
    second_flight += tls_client_key_exchange_psk(psk) if psk else tls_handshake_record(16, b"\x41" + bytes(65))
    conn.send(second_flight + tls_change_cipher_spec() + tls_handshake_record(20, bytes(40)), segment_size=300)
    conn.reply(tls_change_cipher_spec())
    conn.send(tls_application_data(f"android_id={ANDROID_ID}".encode()))  # stands in for ciphertext
    conn.close()


def _scan(tmp_path: Path, cap: CaptureBuilder) -> tuple[Path, ScanResult]:
    path = cap.write_pcap(tmp_path / "c.pcap")
    return path, scan_capture(path, _ids())


def test_tls12_client_certificate_subject_is_a_cleartext_leak(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    _tls12_with_client_certificate(cap)
    _path, result = _scan(tmp_path, cap)
    assert [(f.identifier, f.protocol, f.encrypted, f.host) for f in result.findings] == [
        ("imei", "tls-handshake", False, "mqtt.vendor.example")]
    (flow,) = result.flows
    assert flow.encrypted and flow.protocol == "tls"
    # the frames cited are the ones carrying the certificate, not the whole flight
    assert len(result.findings[0].frames) == 1


def test_tls_psk_identity_in_the_client_key_exchange_is_found(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    _tls12_with_client_certificate(cap, psk=f"dev-{SERIAL}".encode())
    _path, result = _scan(tmp_path, cap)
    assert {(f.identifier, f.protocol) for f in result.findings} == {("imei", "tls-handshake"),
                                                                      ("serial", "tls-handshake")}


def test_tls13_after_the_client_hello_nothing_is_scanned(tmp_path: Path) -> None:
    """TLS 1.3: the client's next record is ChangeCipherSpec or encrypted; an identifier-like ciphertext (here a
    plain application_data record) is no finding, and the flow is encrypted."""
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 443)
    conn.send(tls_client_hello("a.example"))
    conn.reply(tls_server_hello() + tls_application_data(SERIAL.encode()))
    conn.send(tls_change_cipher_spec() + tls_application_data(IMEI.encode()))
    conn.send(tls_handshake_record(11, IMEI.encode()))  # after encryption started: ciphertext, never scanned
    conn.close()
    _path, result = _scan(tmp_path, cap)
    assert result.findings == ()
    assert result.flows[0].encrypted


def test_tls_handshake_decoder_waits_for_whole_records_and_stops_at_encryption() -> None:
    decoder = TlsHandshakeDecoder()
    record = tls_handshake_record(11, b"A" * 100)
    assert decoder.feed(record[:50]) == []
    (unit,) = decoder.feed(record[50:] + tls_change_cipher_spec() + tls_handshake_record(11, b"B" * 10))
    assert unit.data == record[5:] and (unit.start, unit.end) == (5, len(record))
    assert decoder.switch_to == "tls"
    assert decoder.feed(tls_handshake_record(11, b"C" * 10)) == []


def _dtls(cap: CaptureBuilder) -> None:
    hello = dtls_client_hello(f"{IMEI}.coap.example", psk_identity=f"lwm2m-{SERIAL}".encode())
    cap.udp(PHONE_IP, SERVER_IP, 50000, 5684, hello)
    cap.udp(SERVER_IP, PHONE_IP, 5684, 50000, dtls_record(b"\x03" + bytes(20), content_type=22))
    cap.udp(PHONE_IP, SERVER_IP, 50000, 5684, dtls_record(b"\x01", content_type=20)
            + dtls_record(f"android_id={ANDROID_ID}".encode(), content_type=22, epoch=1))
    cap.udp(SERVER_IP, PHONE_IP, 5684, 50000, dtls_record(b"\x01", content_type=20))
    cap.udp(PHONE_IP, SERVER_IP, 50000, 5684, dtls_record(f"android_id={ANDROID_ID}".encode(), epoch=1))


def test_dtls_client_hello_sni_and_psk_identity_are_cleartext_leaks(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    _dtls(cap)
    _path, result = _scan(tmp_path, cap)
    found = {(f.identifier, f.protocol, f.encrypted) for f in result.findings}
    assert found == {("imei", "dtls-handshake", False), ("serial", "dtls-handshake", False)}
    (flow,) = result.flows
    assert flow.encrypted and flow.protocol == "dtls" and flow.frames == 5
    assert flow.host is not None and flow.host.endswith(".coap.example") and IMEI not in flow.host


def test_dtls_cleartext_spans() -> None:
    hello = dtls_client_hello("a.example")
    spans, started, record = dtls_cleartext(hello + dtls_record(b"\x01", content_type=20))
    assert spans == [(25, len(hello))] and started and record.startswith(b"\x16\x03\x03")


def test_ssh_banner_is_scanned_and_the_rest_is_not(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 22)
    conn.send(ssh_banner().replace(b"Debian-2", f"device-{SERIAL}".encode()) + IMEI.encode())
    conn.reply(b"SSH-2.0-OpenSSH_9.2\r\n")
    conn.close()
    _path, result = _scan(tmp_path, cap)
    assert [(f.identifier, f.protocol) for f in result.findings] == [("serial", "ssh")]


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_reads_the_handshake_captures(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    _tls12_with_client_certificate(cap, psk=f"dev-{SERIAL}".encode())
    _dtls(cap)
    path = cap.write_pcap(tmp_path / "h.pcap")
    fields = _tshark(path, "x509sat.uTF8String", "tls.handshake.type", "dtls.handshake.extensions_server_name")
    assert IMEI in fields  # the client certificate's subject
    assert "11" in fields  # a Certificate handshake message
    assert f"{IMEI}.coap.example" in fields
