"""Decodes a TensorBoard event file with no help from pstrain's C code: its own
CRC-32C, TFRecord framing read by hand, and Python classes that protoc made
from proto/tensorboard.proto (run as: check_events.py PB_DIR FILE STEPS).
Checks every length and data CRC, the version record, and each step's scalars
as tests/formats_tool.c writes them. Exits non-zero with a message on the
first difference."""
import struct
import sys

sys.path.insert(0, sys.argv[1])
sys.path.insert(0, __import__("os").path.dirname(__file__))
import tensorboard_pb2  # noqa: E402  (generated into PB_DIR by protoc)


from tfevents import crc32c, f32, masked, records  # noqa: E402  (tests/lib)


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
