"""Test helpers that phonehome's own tests and users' tests share.

:mod:`phonehome.testing.captures` writes real pcap/pcapng files (any link type, IPv4 fragments, IPv6, TCP with
chosen segmentation and ordering, UDP, and DNS/HTTP/TLS/MQTT/WebSocket payload builders), so a test can plant a
leak exactly where it wants one and check the scanner finds it. Nothing here is a mock: the files are read by
tshark as well as by phonehome.
"""

from __future__ import annotations
