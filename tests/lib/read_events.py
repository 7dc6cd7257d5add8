"""Prints every scalar of TensorBoard event files as JSON lines
{"file", "step", "tag", "value"}, after checking every record's CRCs and the
version record (run as: read_events.py PB_DIR FILE...)."""
import json
import os
import sys

sys.path.insert(0, sys.argv[1])
sys.path.insert(0, os.path.dirname(__file__))
import tensorboard_pb2  # noqa: E402  (generated into PB_DIR by protoc)
from tfevents import records  # noqa: E402

for path in sys.argv[2:]:
    blob = open(path, "rb").read()
    for i, data in enumerate(records(blob)):
        ev = tensorboard_pb2.Event()
        ev.ParseFromString(data)
        if i == 0:
            assert ev.file_version == "brain.Event:2", (path, ev)
            continue
        for v in ev.summary.value:
            print(json.dumps({"file": path, "step": ev.step, "tag": v.tag,
                              "value": v.simple_value, "wall_time": ev.wall_time}))
