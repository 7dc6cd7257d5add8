"""numpy's side of tests/formats_npz.sh.
  check_npz.py load FILE      checks the npz that `pstrain_formats_tool npz-write` made
  check_npz.py make DIR       writes npz files as numpy users do, and what the
                              tool's npz-read must print for each (DIR/NAME.want)
"""
import io
import sys
import zipfile

import numpy as np

# What tests/formats_tool.c writes, in its order.
SHAPES = [("conv2d/kernel", (3, 3, 1, 2)), ("conv2d/bias", (2,)), ("dense/kernel", (4, 3)),
          ("dense/bias", (3,)), ("step", ()), ("empty", (0, 5))]


def expected(k, shape):
    n = int(np.prod(shape))
    return (np.float32(k * 1000) + np.arange(n, dtype=np.float32) / 4 - 3).reshape(shape)


def load(path):
    z = np.load(path)
    assert z.files == [name for name, _ in SHAPES], z.files
    # What a Keras user does: the values in the file's order.
    values = list(z.values())
    for k, (name, shape) in enumerate(SHAPES):
        a = values[k]
        assert a.dtype == np.float32 and a.shape == shape, (name, a.dtype, a.shape)
        assert np.array_equal(a, expected(k, shape)), (name, a)
        assert np.array_equal(z[name], a)
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        for info, (name, _) in zip(zf.infolist(), SHAPES):
            assert info.filename == name + ".npy", info.filename
            assert info.compress_type == zipfile.ZIP_STORED, info
            # Each entry is byte for byte what np.save writes for its array.
            buf = io.BytesIO()
            np.save(buf, z[name])
            assert zf.read(info) == buf.getvalue(), name
    print("npz: numpy reads %d arrays in order, entries identical to np.save's" % len(SHAPES))


def want_lines(arrays):
    """The tool's npz-read output for these arrays (float64 -> float32)."""
    out = []
    for name, a in arrays:
        vals = " ".join("%.9g" % v for v in a.astype(np.float32).ravel())
        out.append("%s\t%s\t%s" % (name, ",".join(str(d) for d in a.shape), vals))
    return "\n".join(out) + "\n"


def make(d):
    rng = np.random.default_rng(7)
    w = rng.standard_normal((3, 3, 1, 4)).astype(np.float32)
    b = np.linspace(-1, 1, 4, dtype=np.float32)
    d64 = rng.standard_normal((5, 2))  # float64, as np.random gives
    named = [("conv2d/kernel", w), ("conv2d/bias", b), ("dense/kernel", d64)]
    np.savez(d + "/named.npz", **dict(named))
    np.savez_compressed(d + "/compressed.npz", **dict(named))
    open(d + "/named.want", "w").write(want_lines(named))
    open(d + "/compressed.want", "w").write(want_lines(named))
    # keras_model.get_weights() saved positionally: arr_0, arr_1, ...
    np.savez(d + "/positional.npz", w, b, np.float32(2.5))
    open(d + "/positional.want", "w").write(
        want_lines([("arr_0", w), ("arr_1", b), ("arr_2", np.float32(2.5))]))
    np.savez(d + "/ints.npz", labels=np.arange(4, dtype=np.int32))
    np.savez(d + "/fortran.npz", w=np.asfortranarray(rng.standard_normal((3, 2))))


if sys.argv[1] == "load":
    load(sys.argv[2])
else:
    make(sys.argv[2])
