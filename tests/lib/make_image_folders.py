"""Writes Fashion-MNIST images as PNG files in Keras's
image_dataset_from_directory layout, one folder per class named by the
class (so the sorted folder order is not the IDX label order):

  make_image_folders.py IDX_DIR OUT_DIR NTRAIN NTEST

OUT_DIR/train/<class>/<index>.png  the first NTRAIN training images
OUT_DIR/test/<class>/<index>.png   the first NTEST test images
OUT_DIR/rgb/<class>/<index>.jpg    the first 100 test images as 36x36 RGB JPEG
"""
import gzip
import os
import sys

import numpy as np
from PIL import Image

NAMES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write(out, images, labels, fmt="png", size=None, mode="L"):
    for i, (img, lab) in enumerate(zip(images, labels)):
        d = os.path.join(out, NAMES[lab])
        os.makedirs(d, exist_ok=True)
        im = Image.fromarray(img).convert(mode)
        if size:
            im = im.resize((size, size), Image.BILINEAR)
        im.save(os.path.join(d, "%05d.%s" % (i, fmt)))


def main():
    src, out, ntrain, ntest = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    tr_x = read_idx(os.path.join(src, "train-images-idx3-ubyte.gz"))[:ntrain]
    tr_y = read_idx(os.path.join(src, "train-labels-idx1-ubyte.gz"))[:ntrain]
    te_x = read_idx(os.path.join(src, "t10k-images-idx3-ubyte.gz"))[:ntest]
    te_y = read_idx(os.path.join(src, "t10k-labels-idx1-ubyte.gz"))[:ntest]
    write(os.path.join(out, "train"), tr_x, tr_y)
    write(os.path.join(out, "test"), te_x, te_y)
    write(os.path.join(out, "rgb"), te_x[:100], te_y[:100], "jpg", 36, "RGB")


if __name__ == "__main__":
    main()
