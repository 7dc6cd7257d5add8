"""compare_floats.py GOT WANT TOL: two files of whitespace-separated numbers
are equal within TOL (absolute); prints the first differences otherwise."""
import sys

got = [float(x) for x in open(sys.argv[1]).read().split()]
want = [float(x) for x in open(sys.argv[2]).read().split()]
tol = float(sys.argv[3])
if len(got) != len(want):
    sys.exit("%d values, want %d" % (len(got), len(want)))
bad = [(i, g, w) for i, (g, w) in enumerate(zip(got, want)) if abs(g - w) > tol]
if bad:
    sys.exit("%d of %d values differ, first %s" % (len(bad), len(want), bad[:4]))
