"""Decodes a TensorBoard event file with no help from pstrain's C code: its own
CRC-32C, TFRecord framing read by hand, and Python classes that protoc made
from proto/tensorboard.proto (run as: check_events.py PB_DIR FILE STEPS).
Checks every length and data CRC, the version record, and each step's scalars
as tests/formats_tool.c writes them. Exits non-zero with a message on the
first difference."""
import struct
import sys

sys.path.insert(0, sys.argv[1])
import tensorboard_pb2  # noqa: E402  (generated into PB_DIR by protoc)


def crc32c_table():
    table = []
    for b in range(256):
        c = b
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


TABLE = crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked(data):
    c = crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def records(blob):
    """Yields each record's data; raises ValueError on any framing damage."""
    off = 0
    while off < len(blob):
        if len(blob) - off < 12:
            raise ValueError("truncated length at offset %d" % off)
        head = blob[off:off + 8]
        (length,) = struct.unpack("<Q", head)
        (length_crc,) = struct.unpack("<I", blob[off + 8:off + 12])
        if masked(head) != length_crc:
            raise ValueError("length CRC mismatch at offset %d" % off)
        end = off + 12 + length
        if end + 4 > len(blob):
            raise ValueError("truncated record at offset %d" % off)
        data = blob[off + 12:end]
        (data_crc,) = struct.unpack("<I", blob[end:end + 4])
        if masked(data) != data_crc:
            raise ValueError("data CRC mismatch at offset %d" % off)
        yield data
        off = end + 4


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def check(blob, steps):
    events = []
    for data in records(blob):
        ev = tensorboard_pb2.Event()
        ev.ParseFromString(data)
        events.append(ev)
    assert len(events) == steps + 1, "%d records, want %d" % (len(events), steps + 1)
    first = events[0]
    assert first.WhichOneof("what") == "file_version", first
    assert first.file_version == "brain.Event:2", first.file_version
    assert first.wall_time > 1.5e9, first.wall_time
    for s, ev in enumerate(events[1:]):
        assert ev.WhichOneof("what") == "summary", ev
        assert ev.step == s * 100, (s, ev.step)
        assert ev.wall_time == 1.7e9 + s, (s, ev.wall_time)
        want = [("loss", f32(1.0 / (s + 1))), ("accuracy", s / 8.0), ("zero", 0.0)]
        got = [(v.tag, v.simple_value) for v in ev.summary.value]
        assert got == want, (s, got, want)
        for v in ev.summary.value:
            assert v.WhichOneof("value") == "simple_value", v


def main():
    pb_dir, path, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    assert crc32c(b"123456789") == 0xE3069283, "the test's own CRC-32C is wrong"
    blob = open(path, "rb").read()
    check(blob, steps)
    # The decoder must notice damage, or the CRC checks above prove nothing.
    for pos in (3, 10, len(blob) // 2, len(blob) - 2):
        bad = bytearray(blob)
        bad[pos] ^= 0x01
        try:
            check(bytes(bad), steps)
        except (ValueError, AssertionError):
            continue
        raise AssertionError("a flipped bit at %d went unnoticed" % pos)
    print("events: %d records, CRCs and scalars as written" % (steps + 1))


main()
