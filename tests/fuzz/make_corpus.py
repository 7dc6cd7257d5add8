#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into tests/fuzz/corpus/TARGET/
(committed; scripts/fuzz.sh replays it). Each seed is a small valid input
or a reproducer of a fault found from outside (issue 17), named after it.
Standard library only: the binary formats are written by hand here."""
import gzip
import io
import json
import os
import struct
import sys
import zipfile
import zlib

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
FORGED = "x\n2026-01-01 00:00:00.000 ps0[1] ERROR forged line\x1b[2J"


def put(target, name, data):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(crc):
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        out += bytes([b | (0x80 if v else 0)])
        if not v:
            return out


def field(num, wire, payload):
    key = varint(num << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    return key + varint(len(payload)) + payload


def tf_config():
    cluster = {"master": ["m:1"], "ps": ["127.0.0.1:31002", "h:2"], "worker": ["w:1"]}
    put("tf_config", "valid", json.dumps({"cluster": cluster, "task": {"type": "ps", "index": 1}}))
    put("tf_config", "sparse", '{"cluster": {"master": ["m:1"], "ps": {"0": "p:1"}, '
        '"worker": {"3": "w:1"}}, "task": {"type": "worker", "index": 3}, "rpc_layer": "grpc"}')
    put("tf_config", "issue17_null", "null")
    put("tf_config", "issue17_nul_address", '{"cluster": {"master": ["m:1"], "ps": '
        '["127.0.0.1:31002\\u0000junk"], "worker": ["w:1"]}, "task": {"type": "ps", "index": 0}}')
    put("tf_config", "issue17_duplicate_ps", '{"cluster": {"master": ["m:1"], "ps": ["p:1"], '
        '"worker": ["w:1"], "ps": ["evil:1"]}, "task": {"type": "ps", "index": 0}}')
    put("tf_config", "issue17_injection", json.dumps(
        {"cluster": {"master": ["m:1"], "ps": [FORGED], "worker": ["w:1"]},
         "task": {"type": "ps", "index": 0}}))


def config():
    put("config", "nested", json.dumps({"train": {"batch_size": 32, "optimizer": "adam"},
                                        "rpc": {"shm": False, "stream_allowed_uids": "1000"}}))
    put("config", "dotted", json.dumps({"train.learning_rate": 0.1, "log.level": "warn"}))
    put("config", "bad_type", '{"train": {"epochs": "three"}}')
    put("config", "issue17_injection", json.dumps({FORGED: 1}))


CNN = {"input": [28, 28, 1], "layers": [
    {"type": "conv2d", "filters": 8, "kernel_size": 3, "activation": "relu"},
    {"type": "max_pool2d", "pool_size": 2}, {"type": "flatten"},
    {"type": "dense", "units": 16, "activation": "relu"}, {"type": "dropout", "rate": 0.5},
    {"type": "dense", "units": 10, "activation": "softmax"}]}


def model():
    put("model", "cnn", json.dumps(CNN))
    put("model", "issue17_units_too_large", json.dumps({"input": [28, 28, 1], "layers": [
        {"type": "flatten"}, {"type": "dense", "units": 100000000}]}))
    put("model", "issue17_injection", json.dumps({"input": [28, 28, 1], "layers": [
        {"type": FORGED}]}))


def idx():
    images = struct.pack(">IIII", 0x803, 2, 2, 2) + bytes(range(8))
    labels = struct.pack(">II", 0x801, 2) + bytes([1, 7])
    put("idx", "valid", struct.pack(">H", len(images)) + images + labels)
    put("idx", "truncated", struct.pack(">H", len(images)) + images[:-3] + labels)


def safetensors():
    header = json.dumps({"__metadata__": {"step": "12"},
                         "dense/kernel": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                         "dense/bias": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]}})
    body = struct.pack("<6f", 1, 2, 3, 4, 0.5, -0.5)
    put("safetensors", "valid", struct.pack("<Q", len(header)) + header.encode() + body)
    put("safetensors", "truncated", struct.pack("<Q", len(header)) + header.encode() + body[:10])


def manifest():
    put("manifest", "valid", json.dumps({"latest_step": 300, "kept_steps": [100, 200, 300]}))
    put("manifest", "final", json.dumps({"latest_step": 5, "kept_steps": [5], "final": True}))
    put("manifest", "issue17_max_step", json.dumps(
        {"latest_step": 18446744073709551615, "kept_steps": [18446744073709551615]}))


def npy(shape, values):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }" % (tuple(shape),)
    header = header.ljust(117) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + \
        struct.pack("<%df" % len(values), *values)


def npz():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        # A fixed time, so that the seed is the same bytes on every run.
        z.writestr(zipfile.ZipInfo("dense/kernel.npy", (1980, 1, 1, 0, 0, 0)),
                   npy([2, 2], [1, 2, 3, 4]))
        z.writestr(zipfile.ZipInfo("dense/bias.npy", (1980, 1, 1, 0, 0, 0)), npy([2], [0.5, -0.5]))
    put("npz", "valid", buf.getvalue())


def png(w, h, color, pixels):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    channels = 3 if color == 2 else 1
    raw = b"".join(b"\x00" + pixels[y * w * channels:(y + 1) * w * channels] for y in range(h))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def pngs():
    put("png", "gray28", png(28, 28, 0, bytes((i * 7) & 255 for i in range(28 * 28))))
    put("png", "rgb4", png(4, 4, 2, bytes(range(48))))


def tensor(name, rows, data):
    return field(1, 2, name.encode()) + field(2, 0, 0) + field(3, 0, rows) + field(4, 2, data)


def push_request(name):
    caller = field(1, 2, b"worker") + field(2, 0, 1) + field(3, 0, 7)
    return field(1, 2, caller) + field(2, 0, 42) + \
        field(3, 2, tensor(name, 1, struct.pack("<4f", 1, 2, 3, 4))) + field(5, 0, 3)


def push():
    put("push", "valid", b"\x53" + push_request("dense/kernel"))
    put("push", "issue17_injection", b"\x21" + push_request(FORGED))


def tfrecord():
    out = b""
    for rec in (b"hello", b"", b"x" * 40):
        n = struct.pack("<Q", len(rec))
        out += n + struct.pack("<I", masked(crc32c(n))) + rec + struct.pack("<I", masked(crc32c(rec)))
    put("tfrecord", "valid", out)
    put("tfrecord", "truncated", out[:-5])


def request(method, body, deadline_us):
    m = method.encode()
    return struct.pack("<IIQQ", 0x31525350, len(m), deadline_us, len(body)) + m + body


def stream():
    echo = "/pstrain.Test/Echo"
    put("stream", "echo", request(echo, b"hello", 1000000))
    put("stream", "two_calls", request(echo, b"a", 1000000) + request(echo, b"bb", 0))
    put("stream", "issue17_no_deadline", request(echo, b"", 0) +
        request("/pstrain.ParameterServer/Pull", b"\x10\xff\xff\xff\xff\xff\xff\xff\xff\x01", 0))
    put("stream", "unknown_method", request("/x/" + FORGED, b"", 0))
    put("stream", "body_over_limit", struct.pack("<IIQQ", 0x31525350, len(echo), 0, 1 << 40) +
        echo.encode())
    put("stream", "hello_on_tcp", struct.pack("<IIQQ", 0x314d5350, 0, 4096, 4096))
    put("stream", "port_method", request("/pstrain.Rpc/StreamPort", b"", 0))


def log():
    put("log", "issue17_injection", FORGED)
    put("log", "utf8_and_c1", "caf\u00e9 \u20ac \u009b1m \x80\xc0".encode("utf-8", "surrogateescape"))


def keras_layer(cls, name, inbound=None, **config):
    layer = {"module": "keras.layers", "class_name": cls,
             "config": dict({"name": name, "trainable": True, "dtype": "float32"}, **config)}
    if inbound is not None:
        layer["name"] = name
        layer["inbound_nodes"] = inbound
    return layer


def keras3_node(*names):
    tensors = [{"class_name": "__keras_tensor__", "config": {"shape": [None, 4], "dtype": "float32",
                "keras_history": [n, 0, 0]}} for n in names]
    return [{"args": [tensors] if len(names) > 1 else tensors, "kwargs": {}}]


def keras_json():
    seq = {"class_name": "Sequential", "config": {"name": "sequential", "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 8, 8, 1], "dtype": "float32",
                                                "sparse": False, "name": "input_layer"}},
        keras_layer("Rescaling", "rescaling", scale=0.5, offset=0.0),
        keras_layer("Conv2D", "conv2d", filters=2, kernel_size=[3, 3], strides=[1, 1],
                    padding="valid", activation="relu", use_bias=True, data_format="channels_last",
                    dilation_rate=[1, 1], groups=1, kernel_regularizer=None,
                    kernel_initializer={"class_name": "GlorotUniform", "config": {"seed": None}},
                    bias_initializer="zeros"),
        keras_layer("MaxPooling2D", "max_pooling2d", pool_size=[2, 2], strides=None,
                    padding="valid"),
        keras_layer("Flatten", "flatten"), keras_layer("Dropout", "dropout", rate=0.5, seed=None),
        keras_layer("Dense", "dense", units=3, activation="softmax", use_bias=True)]}}
    put("keras_json", "sequential", json.dumps(seq))
    func = {"class_name": "Functional", "config": {"name": "functional", "layers": [
        {"class_name": "InputLayer", "name": "in", "inbound_nodes": [],
         "config": {"batch_shape": [None, 4], "dtype": "float32", "name": "in"}},
        keras_layer("Dense", "a", keras3_node("in"), units=4, activation="swish"),
        keras_layer("Dense", "b", keras3_node("in"), units=4, activation="tanh"),
        keras_layer("Add", "add", keras3_node("a", "b")),
        keras_layer("Concatenate", "cat", keras3_node("add", "a"), axis=-1),
        keras_layer("Dense", "out", keras3_node("cat"), units=2, activation="softmax")],
        "input_layers": [["in", 0, 0]], "output_layers": [["out", 0, 0]]}}
    put("keras_json", "functional", json.dumps(func))
    tf2 = {"class_name": "Functional", "config": {"name": "model", "layers": [
        {"class_name": "InputLayer", "name": "in", "inbound_nodes": [],
         "config": {"batch_input_shape": [None, 6], "dtype": "float32", "name": "in"}},
        keras_layer("Dense", "h", [[["in", 0, 0, {}]]], units=5, activation="relu"),
        keras_layer("Dense", "out", [[["h", 0, 0, {}]]], units=3, activation="softmax")],
        "input_layers": [["in", 0, 0]], "output_layers": [["out", 0, 0]]},
        "keras_version": "2.15.0", "backend": "tensorflow"}
    put("keras_json", "tf2_functional", json.dumps(tf2))
    # Found by fuzz_keras_json: an InputLayer without a config object.
    put("keras_json", "issue17_inputlayer_no_config",
        '{"class_name": "Sequential", "config": {"layers": [{"class_name": "InputLayer"}]}}')
    put("keras_json", "issue17_inputlayer_config_array", '{"class_name": "Sequential", '
        '"config": {"layers": [{"class_name": "InputLayer", "config": [1]}]}}')
    # Found by fuzz_keras_json: an inbound node naming its layer null.
    put("keras_json", "issue17_inbound_null_name", json.dumps({"class_name": "Functional", "config": {
        "layers": [{"class_name": "InputLayer", "config": {"batch_shape": [None, 4], "name": "in"}},
                   {"class_name": "Dense", "config": {"name": "out", "units": 2},
                    "inbound_nodes": [[[None, 0, 0, {}]]]}]}}))


def example(features):
    """A tf.train.Example of features {key: ("bytes" | "float" | "int64", [values])}."""
    feats = b""
    for key, (kind, values) in features.items():
        if kind == "bytes":
            value = field(1, 2, b"".join(field(1, 2, v) for v in values))
        elif kind == "float":
            value = field(2, 2, field(1, 2, struct.pack("<%df" % len(values), *values)))
        else:
            value = field(3, 2, field(1, 2, b"".join(varint(v & (2**64 - 1)) for v in values)))
        feats += field(1, 2, field(1, 2, key.encode()) + field(2, 2, value))
    return field(1, 2, feats)


def example_pair(mode, first, second):
    """fuzz_example's input: the mode byte, where the first record ends, both records."""
    return bytes([mode]) + struct.pack(">H", len(first)) + first + second


def examples():
    raw = example({"image": ("bytes", [bytes([1, 2, 3, 250])]), "label": ("int64", [7]),
                   "height": ("int64", [2]), "width": ("int64", [2]), "depth": ("int64", [1])})
    put("example", "raw_2x2", example_pair(0, raw, raw))
    floats = example({"image": ("float", [0.5, -1.0, 3.0]), "label": ("int64", [2])})
    put("example", "floats", example_pair(2, floats, floats))
    gray = png(28, 28, 0, bytes((i * 7) & 255 for i in range(28 * 28)))
    put("example", "png", example_pair(3, example({"image": ("bytes", [gray]),
                                                   "label": ("int64", [1])}), raw))
    put("example", "mixed_lists", example_pair(2, floats, example(
        {"image": ("bytes", [b"abc"]), "label": ("int64", [1])})))


def csv():
    put("csv", "names", b"\x00a, b ,c,label\n1,2,3,0\r\n4.5,-6e2,7,2\n\n")
    put("csv", "skip_label_first", b"\x06150,4,setosa\n0,5.1,3.5,1.4\n1,4.9,3.0,1.4\n")
    put("csv", "none", b"\x11" + b"1,2,3,1\n0,0,0,2\n")
    put("csv", "gzip", b"\x00" + gzip.compress(b"x,y,z,label\n1,2,3,1\n", mtime=0))
    put("csv", "bad_number", b"\x00a,b\n1,nan\n")


for make in (log, tf_config, config, model, idx, safetensors, manifest, npz, pngs, push, tfrecord,
             stream, keras_json, examples, csv):
    make()
print("corpus written to", root, file=sys.stderr)
