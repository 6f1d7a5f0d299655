#!/usr/bin/env python
"""neural-tangents 0.6.5 baseline: time NT's exact NNGP + NTK kernel_fn on CPU.

Runs under the separate NT environment (see benchmarks/README.md), e.g.

    /work/nt-venv/bin/python benchmarks/nt_baseline.py --net cnn_gap_d3 --n1 8 --n2 8 --dtype float64

and prints one JSON line of results per run (to stdout; progress goes to stderr).
``--save K.npz`` also writes the inputs and NT's kernels so that infinet's results on the
same inputs can be compared with NT's.

Networks (all convs 3x3, SAME zero padding, W_std=sqrt(2), b_std=0, ReLU,
parameterization 'ntk'; readout Dense(1, W_std=--readout-w (default 1), b_std=0)):

    cnn_gap_d3     3 x [conv + relu], GlobalAvgPool, Dense
    cntk_gap_d11   10 x [conv + relu], GlobalAvgPool, Dense   (depth = convs + readout)
    cntk_gap_d21   20 x [conv + relu], GlobalAvgPool, Dense
    cntk_v_d21     20 x [conv + relu], Flatten, Dense
    cntk_v_d11     10 x [conv + relu], Flatten, Dense

``--convs N`` overrides the number of conv+relu blocks. The same network in infinet's
``.net`` syntax is stored in the saved .npz (key ``net``) and printed by ``--print-net``.

Inputs: x1 = default_rng([seed, 1]).standard_normal((n1, hw, hw, 3)) and
x2 = default_rng([seed, 2]).standard_normal((n2, hw, hw, 3)), generated in float64 and
then cast to --dtype. They do not depend on the other set's size, and a smaller n1 gives
a prefix of a larger one. ``make_inputs`` and ``net_text`` need only numpy, so other
scripts (e.g. infinet's benchmarks) can import this module to get identical inputs.

Timing: NT's kernel_fn is wrapped in ``nt.batch`` (``--mode batch``, the default; it tiles
the N1 x N2 kernel into B x B blocks and jits the block computation) or ``jax.jit``
(``--mode jit``, one call on the whole N1 x N2). The first call (tracing + XLA compile +
one block, or the whole kernel for --mode jit) is timed on its own; then the full
N1 x N2 evaluation is timed --repeat times and the minimum is reported. Wall-clock times,
results forced to host memory.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time

import numpy as np

NETS = {
    # name: (number of conv+relu blocks, readout)
    "cnn_gap_d3": (3, "gap"),
    "cntk_gap_d11": (10, "gap"),
    "cntk_gap_d21": (20, "gap"),
    "cntk_v_d11": (10, "flatten"),
    "cntk_v_d21": (20, "flatten"),
}


def make_inputs(n1, n2, hw=32, channels=3, seed=0, dtype="float64"):
    """The benchmark inputs: two independent sets of random normal NHWC images."""
    x1 = np.random.default_rng([seed, 1]).standard_normal((n1, hw, hw, channels))
    x2 = np.random.default_rng([seed, 2]).standard_normal((n2, hw, hw, channels))
    return x1.astype(dtype), x2.astype(dtype)


def _fmt(v):
    return "sqrt(2)" if v == math.sqrt(2.0) else repr(float(v)).rstrip("0").rstrip(".") if v else "0"


def net_text(net, convs=None, hw=32, channels=3, readout_w=1.0):
    """The network in infinet's .net syntax (docs/language.md)."""
    n, readout = NETS[net]
    n = n if convs is None else convs
    return (
        f"# neural-tangents baseline network {net} ({n} conv+relu, {readout}); "
        f"written by benchmarks/nt_baseline.py\n"
        f"net {net}\n"
        f"input {hw}x{hw}x{channels}\n"
        f"repeat {n} {{\n"
        f"  conv 3x3 pad=same W=sqrt(2) b=0\n"
        f"  relu\n"
        f"}}\n"
        f"{readout}\n"
        f"dense W={_fmt(readout_w)} b=0\n"
    )


def nt_net(stax, net, convs=None, readout_w=1.0):
    n, readout = NETS[net]
    n = n if convs is None else convs
    layers = []
    for _ in range(n):
        layers += [stax.Conv(1, (3, 3), padding="SAME", W_std=math.sqrt(2.0), b_std=0.0,
                             parameterization="ntk"),
                   stax.Relu()]
    layers.append(stax.GlobalAvgPool() if readout == "gap" else stax.Flatten())
    layers.append(stax.Dense(1, W_std=readout_w, b_std=0.0, parameterization="ntk"))
    return stax.serial(*layers)


def machine_info():
    info = {"nproc": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}
    try:
        info["nproc"] = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout)
    except Exception:  # noqa: BLE001
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    info["mem_gib"] = round(int(line.split()[1]) / 2**20, 1)
                    break
        info["loadavg_1min"] = os.getloadavg()[0]
    except OSError:
        pass
    return info


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--net", choices=sorted(NETS), default="cnn_gap_d3")
    p.add_argument("--convs", type=int, default=None, help="override the number of conv+relu blocks")
    p.add_argument("--n1", type=int, default=8)
    p.add_argument("--n2", type=int, default=8)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--hw", type=int, default=32, help="image height = width")
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--readout-w", type=float, default=1.0, help="W_std of the Dense(1) readout")
    p.add_argument("--mode", choices=["batch", "jit"], default="batch")
    p.add_argument("--batch-size", type=int, default=None,
                   help="nt.batch block size (default: 8 for gap nets, 64 for flatten nets; "
                        "must divide n1 and n2)")
    p.add_argument("--repeat", type=int, default=2, help="timed full evaluations (min is reported)")
    p.add_argument("--save", default=None, help="write x1, x2, nngp, ntk (and the net text) to this .npz")
    p.add_argument("--with-self", action="store_true",
                   help="with --save: also store K(x1, x1) as nngp_11 / ntk_11")
    p.add_argument("--print-net", action="store_true", help="print the .net text and exit")
    a = p.parse_args(argv)

    text = net_text(a.net, a.convs, a.hw, a.channels, a.readout_w)
    if a.print_net:
        print(text, end="")
        return 0

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    # float64 needs x64; with x64 on NT casts every input to float64, so it must be off for float32.
    jax.config.update("jax_enable_x64", a.dtype == "float64")
    import jax.numpy as jnp
    import neural_tangents as nt
    from neural_tangents import stax

    _, _, kernel_fn = nt_net(stax, a.net, a.convs, a.readout_w)
    x1n, x2n = make_inputs(a.n1, a.n2, a.hw, a.channels, a.seed, a.dtype)
    x1, x2 = jnp.asarray(x1n), jnp.asarray(x2n)
    readout = NETS[a.net][1]
    ds = kernel_fn.input_req.get("diagonal_spatial")
    nt_layout = "diagonal" if ("YES" in repr(getattr(ds, "input", ds)) or ds is True) else "full"
    log(f"{a.net}: {a.n1}x{a.n2} pairs of {a.hw}x{a.hw}x{a.channels} {a.dtype}, mode={a.mode}, "
        f"NT spatial layout: {nt_layout} ({ds})")

    if a.mode == "batch":
        bs = a.batch_size or (8 if readout == "gap" else 64)
        bs = math.gcd(math.gcd(bs, a.n1), a.n2)
        fn = nt.batch(kernel_fn, batch_size=bs, store_on_device=False)
        warm1, warm2 = x1[:bs], x2[:bs]
    else:
        bs = None
        fn = jax.jit(kernel_fn, static_argnames="get")
        warm1, warm2 = x1, x2

    def run(u, v):
        t = time.perf_counter()
        k = fn(u, v, ("nngp", "ntk"))
        nngp, ntk = np.asarray(k.nngp), np.asarray(k.ntk)  # forces completion
        return time.perf_counter() - t, nngp, ntk

    first, _, _ = run(warm1, warm2)
    log(f"  first call ({'one %dx%d block' % (bs, bs) if bs else 'whole kernel'}, incl. compile): {first:.2f} s")
    times = []
    nngp = ntk = None
    for i in range(a.repeat):
        t, nngp, ntk = run(x1, x2)
        times.append(t)
        log(f"  run {i + 1}/{a.repeat}: {t:.2f} s")
    n_pairs = a.n1 * a.n2
    best = min(times)
    # steady-state cost of the warm-up call, to separate out compile time
    warm_pairs = warm1.shape[0] * warm2.shape[0]
    compile_s = max(first - best * warm_pairs / n_pairs, 0.0)
    assert np.all(np.isfinite(nngp)) and np.all(np.isfinite(ntk)), "non-finite kernel"

    res = {
        "tool": "neural-tangents",
        "net": a.net,
        "convs": NETS[a.net][0] if a.convs is None else a.convs,
        "readout": readout,
        "hw": a.hw, "channels": a.channels,
        "n1": a.n1, "n2": a.n2, "n_pairs": n_pairs,
        "dtype": a.dtype, "out_dtype": str(nngp.dtype),
        "mode": a.mode, "batch_size": bs,
        "seed": a.seed,
        "first_call_s": round(first, 4),
        "compile_s_est": round(compile_s, 4),
        "seconds": round(best, 4),
        "seconds_all": [round(t, 4) for t in times],
        "seconds_per_pair": best / n_pairs,
        "nt_spatial_layout": nt_layout,
        "machine": machine_info(),
        "versions": {"neural_tangents": getattr(nt, "__version__", "?"), "jax": jax.__version__,
                     "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else "?",
                     "numpy": np.__version__},
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join([os.path.basename(sys.executable), "benchmarks/nt_baseline.py"]
                            + (sys.argv[1:] if argv is None else list(argv))),
    }

    if a.save:
        extra = {}
        if a.with_self:
            k11 = fn(x1, x1, ("nngp", "ntk")) if a.mode == "jit" else nt.batch(
                kernel_fn, batch_size=math.gcd(bs, a.n1), store_on_device=False)(x1, x1, ("nngp", "ntk"))
            extra = {"nngp_11": np.asarray(k11.nngp), "ntk_11": np.asarray(k11.ntk)}
        np.savez_compressed(a.save, x1=x1n, x2=x2n, nngp=nngp, ntk=ntk, net=np.array(text),
                            meta=np.array(json.dumps(res)), **extra)
        res["saved"] = a.save
        log(f"  saved {a.save}: keys x1 x2 nngp ntk net meta {' '.join(extra)}")

    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
