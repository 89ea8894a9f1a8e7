# The C extension phonehome.scan._runs (_runs.c): the base64/base64url/base32/hex run decoders and the trigger
# search of layers.py, and the XOR differentials of obfuscation.py.

BASE64: int
BASE64URL: int
BASE32: int
HEX: int
MIN_RUN_CHARS: int
TRIGGER_COUNT: int

def decode_runs(data: bytes | bytearray | memoryview, kind: int, budget: int, cut: int, /) -> tuple[bytes, int]: ...
def decode_every_run(data: bytes | bytearray | memoryview, cut: int, /) -> tuple[bytes, bytes, bytes, bytes]: ...
def layer_marks(data: bytes | bytearray | memoryview, cut: int, /) -> int: ...
def xor_differentials(data: bytes | bytearray | memoryview, periods: tuple[int, ...], gap: int, /) -> bytes: ...
