"""CPU seconds per pair of the `cpu` backend, importing infinet from a given source tree.

    OMP_NUM_THREADS=1 python3 benchmarks/cpu_time_per_pair.py TREE DTYPE N NET

TREE: a checkout of infinet (e.g. an old commit's `git worktree`), so two versions can be
timed back to back on the same machine; NET: gap3 (CNN-GAP depth 3), gap11 (CNTK-GAP
d11), v21 (CNTK-V d21) or myrtle5 (Myrtle-5, examples/myrtle.net), 32x32x3 images; N x N
pairs.  Prints the best of 5 process-CPU times per pair (CPU time, not wall time: less
sensitive to other jobs on a shared machine), compilation and a warm-up call excluded.
"""
import sys
import time

import numpy as np

tree, dtype, n, net = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
sys.path.insert(0, tree)
import infinet  # noqa: E402
from infinet.runtime.backends import make_executor  # noqa: E402
from infinet.runtime.evaluate import evaluate  # noqa: E402

if net == "myrtle5":             # examples/myrtle.net, blocks = 1
    block = "conv 3x3 pad=same W=sqrt(2)\nrelu\n"
    src = ("input 32x32x3\n" + block * 2 + "avgpool 2x2\n" + block + "avgpool 2x2\n" + block
           + "avgpool 8x8\nflatten\ndense W=1\n")
else:
    convs, readout = {"gap3": (3, "gap"), "gap11": (10, "gap"), "v21": (20, "flatten")}[net]
    src = (f"input 32x32x3\nrepeat {convs} {{\n conv 3x3 pad=same W=sqrt(2) b=0\n relu\n}}\n"
           f"{readout}\ndense W=1 b=0\n")
k = infinet.compile(src)
ex = make_executor(k.plan, "cpu", dtype)
rng = np.random.default_rng(0)
x1 = rng.standard_normal((n, 32, 32, 3))
x2 = rng.standard_normal((n, 32, 32, 3))
evaluate(ex, x1[:1], x2[:1])
best = float("inf")
for _ in range(5):
    t = time.process_time()
    evaluate(ex, x1, x2)
    best = min(best, time.process_time() - t)
print(f"{best / n / n:.5f}")
