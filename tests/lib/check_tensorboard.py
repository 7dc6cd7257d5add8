"""Optional: loads an event directory with TensorBoard's own EventAccumulator
(run as: check_tensorboard.py DIR STEPS). Exits 3 where tensorboard is not
importable, so the caller can say it skipped."""
import struct
import sys

try:
    from tensorboard.backend.event_processing import event_accumulator
except ImportError:
    sys.exit(3)

path, steps = sys.argv[1], int(sys.argv[2])
acc = event_accumulator.EventAccumulator(path, size_guidance={"scalars": 0})
acc.Reload()
tags = sorted(acc.Tags()["scalars"])
assert tags == ["accuracy", "loss", "zero"], tags
loss = acc.Scalars("loss")
assert [e.step for e in loss] == [s * 100 for s in range(steps)], loss
for s, e in enumerate(loss):
    want = struct.unpack("<f", struct.pack("<f", 1.0 / (s + 1)))[0]
    assert e.value == want and e.wall_time == 1.7e9 + s, (s, e)
print("tensorboard: EventAccumulator read %d steps of %s" % (len(loss), tags))
