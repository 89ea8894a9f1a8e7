"""Binary serialisations apps and SDKs send: which byte patterns an identifier becomes in them.

Most of what protobuf, CBOR, MessagePack and BSON do to a value is already a needle of :mod:`.forms`:

- strings are length-prefixed but otherwise as they are (protobuf field 2, CBOR major type 3, MessagePack str,
  BSON string): the plain needles find them;
- fixed-width integers are big-endian in CBOR (``0x1b`` + 8 bytes) and MessagePack (``0xcf``/``0xd3``), and
  little-endian in BSON (int64) and protobuf (fixed64/sfixed64): the ``int64be``/``int64le`` needles;
- floats: float32/float64 coordinates, big-endian in CBOR/MessagePack, little-endian in BSON/protobuf, are the
  ``float32``/``float64`` regex needles, matched at any byte offset.

What is added here: protobuf's variable-length integers (``varint``: LEB128, as int64/uint64 fields carry a
number; ``zigzag``: sint64), and coordinates scaled to E5/E6 integers (text and int32, both byte orders) beside
the E7 ones. The needles are built in :mod:`.forms`; this module only encodes.
"""

from __future__ import annotations

#: scaled-integer coordinate encodings beside E7 (name, scale)
SCALED_INT32 = (("e6-int32", 1e6), ("e5-int32", 1e5))


def varint(value: int) -> bytes:
    """Protobuf base-128 varint (LEB128) of a non-negative integer."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def zigzag(value: int) -> int:
    """Protobuf's zigzag mapping of a signed integer (sint64) to an unsigned one."""
    return (value << 1) ^ (value >> 63)


def integer_encodings(number: int) -> list[tuple[bytes, str]]:
    """Varint spellings of a non-negative identifier number: (pattern, encoding name)."""
    return [(varint(number), "varint"), (varint(zigzag(number)), "zigzag")]


def scaled_int32_value(raw: bytes, encoding: str) -> float | None:
    """The coordinate a 4-byte scaled integer (``e6-int32be``...) stands for."""
    for name, scale in SCALED_INT32:
        if encoding.startswith(name):
            return int.from_bytes(raw, "big" if encoding.endswith("be") else "little", signed=True) / scale
    return None
