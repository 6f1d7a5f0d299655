"""Pairs per second of each backend and dtype on the networks of BENCHMARKS.md.

    PYTHONPATH=. python3 benchmarks/bench_backends.py --backends cpu --dtypes float32 \
        --nets cnn_gap3 --n1 4 --n2 4

Nets (32x32x3 inputs unless --side is given), as in BENCHMARKS.md: CNN-GAP d3 (3 x [3x3
SAME conv W=sqrt(2), relu], gap, dense), CNTK-V d21 (20 convs, flatten), CNTK-GAP d11 and
d21 (10 / 20 convs, gap); depth counts the convs plus the dense readout (Arora et al.);
Myrtle-5 (examples/myrtle.net, blocks = 1: 4 convs, two 2x2 avgpools, an 8x8 avgpool,
dense).  Each measurement is a K(x1, x2) evaluation of n1 x n2 pairs (self-variances
included, compilation not: every executor is built and warmed up first) on the inputs of
benchmarks/nt_baseline.py (``make_inputs``: the same images neural-tangents is timed on).
Prints a markdown table with the OpenMP threads and the 1-minute load average of each row.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import infinet  # noqa: E402
from infinet.runtime.backends import make_executor  # noqa: E402
from infinet.runtime.evaluate import evaluate  # noqa: E402

def _net(name: str, convs: int, readout: str, side: int) -> str:
    """The BENCHMARKS.md networks: convs x [3x3 SAME conv W=sqrt(2) + relu], readout, dense."""
    return (f"net {name}\ninput {side}x{side}x3\nrepeat {convs} {{\n"
            "  conv 3x3 pad=same W=sqrt(2) b=0\n  relu\n}\n"
            f"{readout}\ndense W=1 b=0\n")


def nets(side: int) -> dict[str, str]:
    with open(os.path.join(ROOT, "examples", "myrtle.net")) as fh:
        myrtle = fh.read().replace("input 32x32x3", f"input {side}x{side}x3")
    return {
        "myrtle5": myrtle,
        "cnn_gap3": _net("cnn_gap_d3", 3, "gap", side),       # 3 convs (as NT's baseline)
        "cntk_v21": _net("cntk_v_d21", 20, "flatten", side),  # depth = convs + readout
        "cntk_gap11": _net("cntk_gap_d11", 10, "gap", side),
        "cntk_gap21": _net("cntk_gap_d21", 20, "gap", side),
    }


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} logical cores"
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.strip()
        if gpu:
            text += f", GPU {gpu.splitlines()[0]}"
    except (OSError, subprocess.SubprocessError):
        pass
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", default="cpu", help="comma list of numpy,cpu,cuda")
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--nets", default="cnn_gap3,cntk_v21,cntk_gap11,cntk_gap21")
    ap.add_argument("--side", type=int, default=32, help="image side (default 32)")
    ap.add_argument("--n1", type=int, default=4)
    ap.add_argument("--n2", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=1, help="best of this many runs")
    args = ap.parse_args(argv)
    table = nets(args.side)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from nt_baseline import make_inputs
    threads = os.environ.get("OMP_NUM_THREADS", f"{os.cpu_count()} (default)")
    print(f"# infinet bench_backends  {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"# machine: {machine()}")
    print(f"# command: {' '.join([os.path.basename(sys.argv[0])] + (argv or sys.argv[1:]))}")
    print()
    print("| net | input | backend | dtype | pairs | seconds | pairs/s | s/pair | threads | load |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for net in args.nets.split(","):
        k = infinet.compile(table[net])
        shape = k.plan.data_shape
        x1, x2 = make_inputs(args.n1, args.n2, hw=shape[0], channels=shape[-1])
        for backend in args.backends.split(","):
            for dtype in args.dtypes.split(","):
                ex = make_executor(k.plan, backend, dtype)
                evaluate(ex, x1[:1], x2[:1])          # warm-up (and first-call costs)
                best = float("inf")
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    evaluate(ex, x1, x2)
                    best = min(best, time.perf_counter() - t0)
                pairs = args.n1 * args.n2
                print(f"| {net} | {'x'.join(map(str, shape))} | {ex.name} | {dtype} | {pairs} | "
                      f"{best:.3f} | {pairs / best:.3g} | {best / pairs:.3g} | {threads} | "
                      f"{os.getloadavg()[0]:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
