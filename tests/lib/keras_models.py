"""Real Keras models for the Keras interop tests.

`keras_models.py json NAME FILE` writes model NAME's to_json() to FILE.
`keras_models.py fit NAME DATA_DIR OUT` trains model NAME in Keras briefly
and saves OUT.keras and OUT.weights.h5.
`keras_models.py predict MODEL.keras PREDICT_OUT IMAGES.gz` loads a .keras
file pstrain exported with keras.models.load_model, predicts the IDX images
(or a CSV file's rows, the label last) and compares every probability with `pstrain predict --probs`'s output
(within 1e-4), and prints the accuracy pstrain's lines report.
`keras_models.py summary PSTRAIN DIR` builds each model below in Keras,
writes model.to_json() to DIR/NAME.json, runs `PSTRAIN summary --model` on it
and compares every layer's name, class, output shape and parameter count,
and the total, with Keras's own. Then it writes models pstrain must refuse and
checks that the one error line names the layer, the key and what is supported.
Exits non-zero on the first difference.
"""
import os
import re
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402
from keras import layers  # noqa: E402


def cnn():
    """The Keras MNIST CNN (pstrain's builtin "cnn")."""
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Dropout(0.25),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(10, activation="softmax"),
    ])


def mlp():
    """A Functional MLP, as the Keras guide writes one."""
    inp = keras.Input((28, 28, 1))
    x = layers.Flatten()(inp)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dense(64, activation="relu", name="hidden")(x)
    out = layers.Dense(10, activation="softmax")(x)
    return keras.Model(inp, out)


def strided():
    """Conv2D options: strides, valid padding, no bias, rectangular kernels."""
    return keras.Sequential([
        keras.Input((32, 30, 3)),
        layers.Conv2D(8, (5, 3), strides=2, use_bias=False, activation="relu"),
        layers.MaxPooling2D(3, strides=1, padding="same"),
        layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ])


def extra():
    """The layers beyond the builtin models, and every activation."""
    return keras.Sequential([
        keras.Input((12, 10, 3)),
        layers.Rescaling(2.0, offset=-1.0),
        layers.Conv2D(6, 3, padding="same", activation="gelu"),
        layers.AveragePooling2D(2),
        layers.Conv2D(8, 3, activation="silu"),
        layers.Activation("tanh"),
        layers.Reshape((4, 6, 4)),
        layers.AveragePooling2D(3, strides=1, padding="same"),
        layers.GlobalMaxPooling2D(),
        layers.Dense(16, activation="sigmoid"),
        layers.Reshape((2, 2, 4)),
        layers.GlobalAveragePooling2D(),
        layers.Dense(10, activation="swish"),
        layers.Dense(5, activation="softmax"),
    ])


def small():
    """A small CNN of the new layers for 28x28 gray images, quick to train."""
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(8, 3, padding="same", activation="gelu", name="features"),
        layers.AveragePooling2D(2),
        layers.Conv2D(16, 3, strides=2, activation="silu"),
        layers.Activation("tanh"),
        layers.Reshape((6, 12, 8)),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(32, activation="sigmoid"),
        layers.Dropout(0.2),
        layers.Dense(10, activation="softmax"),
    ])


def residual():
    """A small residual network (Functional): a center crop, two residual
    blocks with Add, a gate with Multiply, and a Concatenate of two branches."""
    inp = keras.Input((28, 28, 1))
    x = layers.CenterCrop(25, 24)(inp)  # odd margins: Keras rounds the offset down
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    for _ in range(2):
        y = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
        y = layers.Conv2D(16, 3, padding="same")(y)
        x = layers.Add()([x, y])
        x = layers.Activation("relu")(x)
    gate = layers.Conv2D(16, 1, activation="sigmoid")(x)
    x = layers.Multiply()([x, gate])
    a = layers.AveragePooling2D(2)(x)
    b = layers.MaxPooling2D(2)(x)
    x = layers.Concatenate()([a, b])
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(10, activation="softmax")(x)
    return keras.Model(inp, out)


def binary():
    """One sigmoid unit on 8x8 images (scikit-learn's digits): binary cross-entropy."""
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        layers.Flatten(),
        layers.Dense(16, activation="relu"),
        layers.Dense(1, activation="sigmoid"),
    ])


MODELS = {"cnn": cnn, "mlp": mlp, "strided": strided, "extra": extra, "small": small,
          "residual": residual, "binary": binary}


def embedding():
    """Token ids to vectors: 196 tokens per image (a 14x14 Fashion-MNIST image,
    token = position * 16 + pixel // 16), a table of 196 * 16 rows of 16,
    pooled over the sequence, and a small head."""
    return keras.Sequential([
        keras.Input((196,)),
        layers.Embedding(196 * 16, 16),
        layers.GlobalAveragePooling1D(),
        layers.Dense(32, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])


MODELS["embedding"] = embedding

def regularized():
    """L2 regularizers (Keras 3's L2, "l2" and L1L2 with l1 0) on Conv2D,
    DepthwiseConv2D and Dense, and a head of logits (compiled with
    from_logits=True)."""
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(8, 3, padding="same", activation="relu",
                      kernel_regularizer=keras.regularizers.L2(2e-3)),
        layers.DepthwiseConv2D(3, depth_multiplier=2, strides=2, padding="same",
                               activation="relu", depthwise_regularizer="l2",
                               bias_regularizer=keras.regularizers.L2(1e-3)),
        layers.DepthwiseConv2D((3, 2), activation="tanh", use_bias=False),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(10, kernel_regularizer=keras.regularizers.L1L2(l1=0.0, l2=1e-3),
                     bias_regularizer="l2"),
    ])


MODELS["regularized"] = regularized

# The loss each model is compiled with when saved as a .keras file.
COMPILE_LOSS = {"regularized": lambda: keras.losses.SparseCategoricalCrossentropy(
    from_logits=True)}


def save(name, out):
    """Saves model NAME, compiled with its loss and untrained, as OUT (.keras)."""
    model = MODELS[name]()
    loss = COMPILE_LOSS.get(name, lambda: "sparse_categorical_crossentropy")()
    model.compile(optimizer="adam", loss=loss)
    model.save(out)


def check_export(name, keras_file, pstrain_out, images, labels, pstrain_loss):
    """Keras's load_model of pstrain's export against pstrain: predictions
    (the softmax of a logits head) within 1e-4, and Keras's evaluate, whose
    loss holds the regularizers' term, against `pstrain evaluate`'s loss
    (printed to 4 decimals)."""
    import gzip
    import numpy as np
    model = keras.models.load_model(keras_file)
    model.compile(loss=COMPILE_LOSS.get(name, lambda: "sparse_categorical_crossentropy")())
    x = read_idx_images(images).astype(np.float32) / np.float32(255)
    with gzip.open(labels) as f:
        y = np.frombuffer(f.read()[8:], np.uint8).astype(np.int32)
    logits = model.predict(x, batch_size=500, verbose=0)
    want = np.exp(logits - logits.max(axis=1, keepdims=True))
    want /= want.sum(axis=1, keepdims=True)
    got = np.array([[float(v) for v in line.split(" probs ")[1].split()[:want.shape[1]]]
                    for line in open(pstrain_out) if " probs " in line], np.float64)
    if got.shape != want.shape:
        sys.exit(f"FAIL: pstrain predicted {got.shape}, Keras {want.shape}")
    diff = np.abs(got - want).max()
    loss = model.evaluate(x, y, batch_size=500, verbose=0)
    reg = float(sum(float(v) for v in model.losses))
    ce = float(-np.log(np.maximum(want[np.arange(len(y)), y], 1e-30)).mean())
    print(f"{len(got)} images: largest |pstrain - Keras| probability {diff:.2e}; Keras evaluate "
          f"loss {loss:.6f} (cross-entropy {ce:.6f} + regularizers {reg:.6f}), pstrain "
          f"{pstrain_loss}")
    if diff > 1e-4:
        sys.exit("FAIL: predictions differ")
    if reg < 0.01 or abs(loss - (ce + reg)) > 1e-4:
        sys.exit("FAIL: Keras's loss does not hold a regularizers' term")
    if abs(loss - float(pstrain_loss)) > 1.5e-4:
        sys.exit(f"FAIL: pstrain's loss {pstrain_loss}, Keras's {loss:.6f}")


def check_categorical(keras_file, images, labels, pstrain_loss):
    """A model compiled with CategoricalCrossentropy: Keras's evaluate with
    one-hot labels (the loss from the file's compile config) against `pstrain
    evaluate`'s loss with the class indexes (printed to 4 decimals)."""
    import gzip
    import numpy as np
    model = keras.models.load_model(keras_file)
    x = read_idx_images(images).astype(np.float32) / np.float32(255)
    with gzip.open(labels) as f:
        y = np.frombuffer(f.read()[8:], np.uint8).astype(np.int32)
    loss = model.evaluate(x, np.eye(10, dtype=np.float32)[y], batch_size=500, verbose=0)
    print(f"categorical: Keras evaluate loss {loss:.6f} with one-hot labels, pstrain {pstrain_loss}")
    if abs(loss - float(pstrain_loss)) > 1.5e-4:
        sys.exit(f"FAIL: pstrain's loss {pstrain_loss}, Keras's {loss:.6f}")
def bn_residual():
    """A residual CNN with BatchNormalization (Functional): a strided stem
    conv-BN-relu, a block of two normalised convolutions added to its input,
    global average pooling and a dense head. Momentum 0.9: the moving
    statistics settle within the few hundred steps a test trains (at Keras's
    0.99 they still lag the weights, in Keras too)."""
    inp = keras.Input((28, 28, 1))
    x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(inp)
    x = layers.BatchNormalization(momentum=0.9, center=False)(x)
    x = layers.Activation("relu")(x)
    y = layers.Conv2D(16, 3, padding="same", use_bias=False)(x)
    y = layers.BatchNormalization(momentum=0.9)(y)
    y = layers.Activation("relu")(y)
    y = layers.Conv2D(16, 3, padding="same")(y)
    y = layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(y)
    x = layers.Add()([x, y])
    x = layers.Activation("relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(10, activation="softmax")(x)
    return keras.Model(inp, out)


MODELS["bn_residual"] = bn_residual


def read_idx_images(path):
    import gzip
    import numpy as np
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        raw = f.read()
    n, h, w = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(raw[16:], np.uint8).reshape(n, h, w, 1)


def fit(name, data, out):
    """Keras trains model NAME one epoch on 4000 training images and saves
    OUT.keras and OUT.weights.h5."""
    import gzip
    import numpy as np
    model = MODELS[name]()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = read_idx_images(f"{data}/train-images-idx3-ubyte.gz")[:4000].astype(np.float32) / 255
    with gzip.open(f"{data}/train-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read()[8:], np.uint8)[:4000]
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    model.save(f"{out}.keras")
    model.save_weights(f"{out}.weights.h5")


def predict(keras_file, pstrain_out, images):
    """Keras's predictions of the exported model against pstrain's."""
    import numpy as np
    model = keras.models.load_model(keras_file)
    if images.endswith(".csv"):  # token ids (or features), the label last
        x = np.loadtxt(images, delimiter=",", dtype=np.float32, ndmin=2)[:, :-1]
    else:
        x = read_idx_images(images).astype(np.float32) / np.float32(255)
    want = model.predict(x, batch_size=500, verbose=0)
    got = []
    right = 0
    for line in open(pstrain_out):
        if " probs " not in line:
            continue
        got.append([float(v) for v in line.split(" probs ")[1].split()[:want.shape[1]]])
        right += "(wrong)" not in line
    got = np.array(got, np.float64)
    if got.shape != want.shape:
        sys.exit(f"FAIL: pstrain predicted {got.shape}, Keras {want.shape}")
    diff = np.abs(got - want)
    worst = np.unravel_index(np.argmax(diff), diff.shape)
    print(f"{len(got)} images: largest |pstrain - Keras| {diff.max():.2e} at {worst}; "
          f"accuracy {right / len(got):.4f}")
    if diff.max() > 1e-4:
        sys.exit(f"FAIL: pstrain {got[worst[0]]} vs Keras {want[worst[0]]}")


def bad_models():
    """(name, model, fragments the error line must hold)."""
    dil = keras.Sequential([keras.Input((28, 28, 1)),
                            layers.Conv2D(4, 3, dilation_rate=2, name="dil"),
                            layers.Flatten(), layers.Dense(10, activation="softmax")])
    lstm = keras.Sequential([keras.Input((28, 28)), layers.LSTM(8, name="rnn"),
                             layers.Dense(10, activation="softmax")])
    elu = keras.Sequential([keras.Input((8,)), layers.Dense(8, activation="elu", name="d"),
                            layers.Dense(2, activation="softmax")])
    reg = keras.Sequential([keras.Input((8,)),
                            layers.Dense(8, kernel_regularizer="l1", name="r"),
                            layers.Dense(2, activation="softmax")])
    inp = keras.Input((8,))
    shared = layers.Dense(8, name="shared")
    c = layers.Concatenate(name="cat")([shared(inp), shared(shared(inp))])
    branch = keras.Model(inp, layers.Dense(2, activation="softmax")(c))
    return [
        ("dilated", dil, ['layer "dil" (Conv2D)', '"dilation_rate"', "it must be 1"]),
        ("lstm", lstm, ['layer "rnn"', "class LSTM is not supported", "supported: InputLayer"]),
        ("elu", elu, ['layer "d" (Dense)', 'activation "elu" is not supported', "sigmoid"]),
        ("l1", reg, ['layer "r" (Dense)', '"kernel_regularizer"', "null"]),
        ("shared", branch, ['layer "shared"', "called 3 times", "each layer called once"]),
    ]


ROW = re.compile(r"^ (\S+) \((\w+)\)\s+(\(None[^)]*\))\s+(\d+)\s*$")


def keras_rows(model):
    rows = []
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            continue  # a Functional model lists it; pstrain's summary, like Sequential's, does not
        shape = "(" + ", ".join("None" if d is None else str(d)
                                for d in layer.output.shape) + ")"
        rows.append((layer.name, type(layer).__name__, shape, layer.count_params()))
    return rows


def check_summary(pstrain, path, model):
    out = subprocess.run([pstrain, "summary", "--model", path], capture_output=True,
                         text=True)
    if out.returncode != 0:
        sys.exit(f"FAIL: pstrain summary {path}: {out.stderr.strip()}")
    got = [ROW.match(line) for line in out.stdout.splitlines()]
    got = [(m[1], m[2], m[3], int(m[4])) for m in got if m]
    want = keras_rows(model)
    if got != want:
        sys.exit(f"FAIL: {path}: pstrain's layers\n  {got}\nKeras's\n  {want}")
    total = f"Total params: {model.count_params():,}"
    if total not in out.stdout:
        sys.exit(f"FAIL: {path}: no '{total}' in\n{out.stdout}")
    print(f"{os.path.basename(path)}: {len(want)} layers, {model.count_params():,} "
          "params, as Keras")


def check_refused(pstrain, d):
    for name, model, fragments in bad_models():
        path = os.path.join(d, f"bad_{name}.json")
        with open(path, "w") as f:
            f.write(model.to_json())
        out = subprocess.run([pstrain, "summary", "--model", path], capture_output=True,
                             text=True)
        lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
        if out.returncode == 0 or len(lines) != 1:
            sys.exit(f"FAIL: {path}: exit {out.returncode}, stderr {out.stderr!r}")
        for frag in fragments:
            if frag not in lines[0]:
                sys.exit(f"FAIL: {path}: error lacks {frag!r}: {lines[0]}")
        print(f"refused {name}: {lines[0]}")


def main():
    cmd = sys.argv[1]
    if cmd == "json":
        with open(sys.argv[3], "w") as f:
            f.write(MODELS[sys.argv[2]]().to_json())
        return
    if cmd == "fit":
        fit(sys.argv[2], sys.argv[3], sys.argv[4])
        return
    if cmd == "predict":
        predict(sys.argv[2], sys.argv[3], sys.argv[4])
        return
    if cmd == "save":
        save(sys.argv[2], sys.argv[3])
        return
    if cmd == "check_categorical":
        check_categorical(*sys.argv[2:6])
        return
    if cmd == "check_export":
        check_export(*sys.argv[2:8])
        return
    if cmd != "summary":
        sys.exit(f"unknown command {cmd}")
    pstrain, d = sys.argv[2], sys.argv[3]
    for name, build in MODELS.items():
        model = build()
        path = os.path.join(d, f"{name}.json")
        with open(path, "w") as f:
            f.write(model.to_json())
        check_summary(pstrain, path, model)
    check_refused(pstrain, d)


if __name__ == "__main__":
    main()
