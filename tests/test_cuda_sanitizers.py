"""A small net's generated CUDA under ThreadSanitizer and AddressSanitizer (cuda-emu).

Every CUDA thread is a ThreadSanitizer thread of its own (a fiber), ordered only by
__syncthreads/__syncwarp, so an access pair no barrier orders is reported as a data
race; every device array is an AddressSanitizer heap block, so an access past one is
reported.  Each test runs in a subprocess (the sanitizer runtime is preloaded).
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

import cuda_emu
import infinet
import infinet.runtime.kernel
from infinet.errors import NumericalError
from cuda_emu import sanitize
from infinet.runtime.evaluate import evaluate
from infinet.runtime.reference import ReferenceExecutor

pytestmark = pytest.mark.cuda

# a uniform stage (same-padded convs) then a strided one, a GAP readout with shuffles
NET = """net small
input 6x6x2
conv 3x3 pad=same W=sqrt(2) b=0.1
relu
conv 3x3 stride=2 pad=same W=sqrt(2)
erf
gap
dense W=1
"""

RUN_NET = r"""
import json, sys
import numpy as np
import cuda_emu, infinet
from infinet.runtime.evaluate import evaluate
from infinet.runtime.reference import ReferenceExecutor
net, drop = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
x1, x2 = rng.standard_normal((3, 6, 6, 2)), rng.standard_normal((2, 6, 6, 2))
with cuda_emu.activated(emulator=True), cuda_emu.configured(drop_barrier_line=drop, workers=2):
    k = infinet.compile(net)
    errors = {}
    for dtype in ("float64", "float32"):
        gpu = infinet.runtime.kernel.CompiledKernel.from_plan(k.plan).executor("cuda", dtype)
        ref = ReferenceExecutor(k.plan, dtype)
        for tag, b in (("x1x2", x2), ("x1x1", None)):
            want = evaluate(ref, x1, b)
            try:
                got = evaluate(gpu, x1, b)
            except infinet.errors.NumericalError:     # NaN from an unwritten buffer
                errors[dtype + tag] = float("nan")
                continue
            errors[dtype + tag] = float(np.nanmax(np.abs(got.ntk - want.ntk)) /
                                        np.abs(want.ntk).max())
print(json.dumps(errors))
"""


def _reports(stderr: str, tool: str) -> list[str]:
    return re.findall(rf"(?:WARNING|ERROR): {tool}: ([^\n]*)", stderr)


def _net_errors(proc) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_threadsanitizer_finds_no_race_in_a_small_net():
    proc = sanitize.run("tsan", RUN_NET, NET, "-1")
    assert _reports(proc.stderr, "ThreadSanitizer") == [], proc.stderr[-3000:]
    assert proc.returncode == 0, proc.stderr[-3000:]
    errors = _net_errors(proc)
    assert max(v for k, v in errors.items() if k.startswith("float64")) <= 1e-12, errors
    assert max(v for k, v in errors.items() if k.startswith("float32")) <= 1e-5, errors


def test_threadsanitizer_reports_the_race_of_a_removed_barrier():
    """The first barrier whose removal the fiber emulation notices (wrong numbers) is
    removed in the ThreadSanitizer build: it must report the race, in the generated
    source."""
    k = infinet.compile(NET)
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((3, 6, 6, 2)), rng.standard_normal((2, 6, 6, 2))
    want = evaluate(ReferenceExecutor(k.plan, "float64"), x1, x2)
    with cuda_emu.activated(emulator=True):
        gpu = infinet.runtime.kernel.CompiledKernel.from_plan(k.plan).executor("cuda", "float64")
        cuda_emu.barrier_sites.clear()
        evaluate(gpu, x1, x2)
        for line in sorted(cuda_emu.barrier_sites):
            with cuda_emu.configured(drop_barrier_line=line):
                try:
                    got = evaluate(gpu, x1, x2)
                except NumericalError:        # NaN read from an unwritten buffer
                    break
            if not np.allclose(got.ntk, want.ntk, rtol=1e-12, atol=0):
                break
        else:
            pytest.fail("no barrier removal changed the numbers")
    proc = sanitize.run("tsan", RUN_NET, NET, str(line))
    races = _reports(proc.stderr, "ThreadSanitizer")
    assert races and all(r.startswith("data race") for r in races), proc.stderr[-3000:]
    assert re.search(r"module\.cu:\d+", proc.stderr)
    assert "cuda-thread-" in proc.stderr            # the racing threads are CUDA threads
    assert proc.returncode == 66


def test_addresssanitizer_finds_nothing_in_a_small_net():
    proc = sanitize.run("asan", RUN_NET, NET, "-1")
    assert _reports(proc.stderr, "AddressSanitizer") == [], proc.stderr[-3000:]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert max(v for k, v in _net_errors(proc).items() if k.startswith("float64")) <= 1e-12


OUT_OF_BOUNDS = r"""
import sys
import numpy as np
from cuda_emu.cupy_standin import cupy as cp
src = '''
extern "C" __global__ void k(float* out, long long n, int past) {
    extern __shared__ float dyn[];
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n && past >= 0) out[i + past] = 1.0f;    // global
    if (i == 0 && past < 0) dyn[-past] = 2.0f;   // dynamic shared
}
'''
k = cp.RawModule(code=src, options=("--std=c++17",)).get_function("k")
out = cp.empty(100, cp.float32)
past = int(sys.argv[1])
k((4,), (32,), (out, np.int64(100), np.int32(past)), shared_mem=64)
print("ran", int(np.isnan(cp.asnumpy(out)).sum()))
"""


def test_addresssanitizer_catches_an_out_of_bounds_write():
    src_line = OUT_OF_BOUNDS.split("'''")[1].splitlines()
    global_line = next(i for i, t in enumerate(src_line, 1) if "// global" in t)
    ok = sanitize.run("asan", OUT_OF_BOUNDS, "0")
    assert ok.returncode == 0 and ok.stdout.strip() == "ran 0", ok.stderr[-3000:]
    bad = sanitize.run("asan", OUT_OF_BOUNDS, "1")        # writes out[100]
    assert _reports(bad.stderr, "AddressSanitizer")[0].startswith("heap-buffer-overflow")
    assert "WRITE of size 4" in bad.stderr
    assert re.search(rf"module\.cu:{global_line}\b", bad.stderr), bad.stderr[-3000:]
    assert bad.returncode == 67


def test_addresssanitizer_catches_a_write_past_the_dynamic_shared_memory():
    bad = sanitize.run("asan", OUT_OF_BOUNDS, "-16")      # dyn[16] of 64 bytes
    assert _reports(bad.stderr, "AddressSanitizer")[0].startswith("use-after-poison"), \
        bad.stderr[-3000:]
    assert bad.returncode == 67
