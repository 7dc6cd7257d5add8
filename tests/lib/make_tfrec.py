"""Writes Fashion-MNIST as TFRecord files of tf.train.Example with
TensorFlow's own writer, the way the Estimator template's make_tfrec script
did (and TensorFlow's convert_to_records before it): one Example per image
with the raw pixels under "image", the label (int64) under "label" and the
shape as int64 "height", "width", "depth".

  make_tfrec.py IDX_DIR OUT_DIR

OUT_DIR gets:
  train.tfrecords, test.tfrecords    every image, raw pixels, file order
  small.tfrecords                    the first 2000 training images, raw
  small-png-0000{0,1}.tfrecord.gz    the same 2000 as PNG (tf.io.encode_png)
                                     under "image_png", gzip, in two shards
  small.jpg.tfrecords                the first 200 as JPEG (tf.io.encode_jpeg)
and bad files, each good up to one record:
  label12.tfrecords                  record 3 has label 12
  badpng.tfrecords                   record 1's image is a PNG signature and junk
  cutjpeg.tfrecords                  record 2's image is half a JPEG
  junk.tfrecords                     record 1 is not an Example
"""
import gzip
import os
import sys

import numpy as np
import tensorflow as tf


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def int64(v):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))


def raw(b):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[b]))


def example(image_key, image_bytes, label, shape=None):
    f = {image_key: raw(image_bytes), "label": int64(label)}
    if shape is not None:
        f.update(height=int64(shape[0]), width=int64(shape[1]), depth=int64(shape[2]))
    return tf.train.Example(features=tf.train.Features(feature=f))


def write_raw(path, images, labels):
    with tf.io.TFRecordWriter(path) as w:
        for img, lab in zip(images, labels):
            w.write(example("image", img.tobytes(), lab, (28, 28, 1)).SerializeToString())


def main():
    src, out = sys.argv[1], sys.argv[2]
    tr_x = read_idx(os.path.join(src, "train-images-idx3-ubyte.gz"))
    tr_y = read_idx(os.path.join(src, "train-labels-idx1-ubyte.gz"))
    te_x = read_idx(os.path.join(src, "t10k-images-idx3-ubyte.gz"))
    te_y = read_idx(os.path.join(src, "t10k-labels-idx1-ubyte.gz"))
    write_raw(os.path.join(out, "train.tfrecords"), tr_x, tr_y)
    write_raw(os.path.join(out, "test.tfrecords"), te_x, te_y)
    write_raw(os.path.join(out, "small.tfrecords"), tr_x[:2000], tr_y[:2000])
    gz = tf.io.TFRecordOptions(compression_type="GZIP")
    for shard in range(2):
        path = os.path.join(out, "small-png-%05d.tfrecord.gz" % shard)
        with tf.io.TFRecordWriter(path, gz) as w:
            for i in range(1000 * shard, 1000 * (shard + 1)):
                png = tf.io.encode_png(tr_x[i][:, :, None]).numpy()
                w.write(example("image_png", png, tr_y[i]).SerializeToString())
    with tf.io.TFRecordWriter(os.path.join(out, "small.jpg.tfrecords")) as w:
        for i in range(200):
            jpg = tf.io.encode_jpeg(tr_x[i][:, :, None], quality=95).numpy()
            w.write(example("image", jpg, tr_y[i]).SerializeToString())
    write_bad(out, tr_x, tr_y)


def write_bad(out, x, y):
    def good(i):
        return example("image", x[i].tobytes(), y[i], (28, 28, 1)).SerializeToString()

    def write(name, records):
        with tf.io.TFRecordWriter(os.path.join(out, name)) as w:
            for r in records:
                w.write(r)

    bad_label = example("image", x[3].tobytes(), 12, (28, 28, 1)).SerializeToString()
    write("label12.tfrecords", [good(0), good(1), good(2), bad_label, good(4)])
    junk_png = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
    write("badpng.tfrecords", [good(0), example("image", junk_png, 1).SerializeToString()])
    jpg = tf.io.encode_jpeg(x[2][:, :, None]).numpy()
    cut = example("image", jpg[: len(jpg) // 2], y[2]).SerializeToString()
    write("cutjpeg.tfrecords", [good(0), good(1), cut])
    write("junk.tfrecords", [good(0), b"\xff\xff\xff\xff"])


if __name__ == "__main__":
    main()
