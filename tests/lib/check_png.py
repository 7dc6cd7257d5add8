"""PIL's side of tests/formats_png.sh (run as: check_png.py DIR).
Writes PNGs of every kind PIL makes, each with the command line of
`pstrain_formats_tool png-load` that must load it and the floats it must
print, computed here from the pixels with PIL and numpy:
DIR/cases holds lines "NAME H W C", DIR/NAME.png the image, DIR/NAME.want the
values. Gray is PIL's convert("L"); alpha is composited over black; shrinking
averages exact areas (computed by repeating pixels: PIL's BOX filter weighs
whole pixels, not fractions); enlarging is PIL's BILINEAR filter on a float
image."""
import sys

import numpy as np
from PIL import Image

d = sys.argv[1]
rng = np.random.default_rng(11)
cases = []


def add(name, img, h, w, c, want):
    img.save("%s/%s.png" % (d, name))
    want = np.asarray(want, dtype=np.float64).reshape(h, w, c) / 255.0
    with open("%s/%s.want" % (d, name), "w") as f:
        f.write(" ".join("%.9g" % v for v in want.astype(np.float32).ravel()) + "\n")
    cases.append("%s %d %d %d" % (name, h, w, c))


def area(plane, h, w):
    """Exact area averages: each pixel repeated h (w) times along its axis,
    then the mean of each block of (source size) repeats."""
    sh, sw = plane.shape
    big = np.repeat(np.repeat(plane.astype(np.float64), h, axis=0), w, axis=1)
    return big.reshape(h, sh, w, sw).mean(axis=(1, 3))


def bilinear(plane, h, w):
    """PIL's BILINEAR filter on a float image (for enlarging)."""
    f = Image.fromarray(plane.astype(np.float32), mode="F")
    return np.asarray(f.resize((w, h), Image.BILINEAR))


rgb = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
alpha = rng.integers(0, 256, (7, 9), dtype=np.uint8)
gray = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float64)
over = alpha.astype(np.float64) / 255.0

add("rgb_as_rgb", Image.fromarray(rgb), 7, 9, 3, rgb)
add("rgb_as_gray", Image.fromarray(rgb), 7, 9, 1, gray)
rgba = np.dstack([rgb, alpha])
add("rgba_as_rgb", Image.fromarray(rgba, "RGBA"), 7, 9, 3, rgb * over[:, :, None])
add("rgba_as_gray", Image.fromarray(rgba, "RGBA"), 7, 9, 1, gray * over)
l8 = rgb[:, :, 0]
add("l_as_gray", Image.fromarray(l8), 7, 9, 1, l8)
add("l_as_rgb", Image.fromarray(l8), 7, 9, 3, np.dstack([l8, l8, l8]))
add("la_as_gray", Image.fromarray(np.dstack([l8, alpha]), "LA"), 7, 9, 1, l8 * over)
pal = Image.fromarray(rgb).quantize(16)
pal_rgb = np.asarray(pal.convert("RGB"), dtype=np.float64)
add("palette_as_rgb", pal, 7, 9, 3, pal_rgb)
add("palette_as_gray", pal, 7, 9, 1, np.asarray(pal.convert("RGB").convert("L")))
# 16-bit gray: levels 257 * k plus noise that rounds away when scaled to 8 bits.
k = rng.integers(0, 256, (7, 9))
l16 = (k * 257 + rng.integers(-100, 101, (7, 9))).clip(0, 65535).astype(np.uint16)
add("l16_as_gray", Image.fromarray(l16, "I;16"), 7, 9, 1, k)
bits = rng.integers(0, 2, (7, 9)).astype(bool)
add("bilevel_as_gray", Image.fromarray(bits), 7, 9, 1, bits * 255.0)

# Resizing: down to 28 x 28 from 61 x 47 (area), up from 10 x 6 (bilinear).
big = rng.integers(0, 256, (61, 47), dtype=np.uint8)
add("shrink", Image.fromarray(big), 28, 28, 1, area(big, 28, 28))
small = rng.integers(0, 256, (10, 6, 3), dtype=np.uint8)
up = np.dstack([bilinear(small[:, :, ch], 28, 28) for ch in range(3)])
add("enlarge", Image.fromarray(small), 28, 28, 3, up)

# Each axis by its own rule: 40 rows shrink to 28, 9 columns grow to 20.
mixed = rng.integers(0, 256, (40, 9), dtype=np.uint8)
add("mixed", Image.fromarray(mixed), 28, 20, 1, bilinear(area(mixed, 28, 9), 28, 20))

open(d + "/cases", "w").write("\n".join(cases) + "\n")
print("png: %d images written by PIL" % len(cases))
