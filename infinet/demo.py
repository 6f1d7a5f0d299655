"""``infinet demo``: the CNTK paper's experiment in miniature, on scikit-learn's digits.

Arora et al. (2019) classify CIFAR-10 by ridgeless kernel regression with the exact
convolutional NTK of vanilla (CNTK-V, flatten readout) and global-average-pooled
(CNTK-GAP) networks of several depths.  The demo runs the same pipeline — the same
nets (``examples/digits_cntk_v.net``, ``examples/digits_cntk_gap.net``: those of
``examples/cntk_v.net`` and ``examples/cntk_gap.net`` on 8×8×1 inputs), the same
0.9/−0.1 one-hot labels, ridgeless float64 solves — on the 1,797 digits that ship with
scikit-learn (train: the first 1,000, test: the other 797), with the NTK and with the
NNGP kernel, prints an accuracy table beside the paper's CIFAR-10 table, and plots
accuracy against depth.

Sizes (default: under two minutes on a 2-core CPU with the NumPy backend): CNTK-V on
all 1,000 / 797; CNTK-GAP, whose pair pass needs every offset (4,096 covariance
entries per layer per pair on 8×8 images, against 64 for CNTK-V), on the first
``GAP_TRAIN`` training and first ``GAP_TEST`` test digits, with CNTK-V run on that
same subset too for a like-for-like comparison.  ``--large`` runs everything on the
full split at the paper's depths (meant for GPUs or the compiled CPU backend).
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field


from .errors import UsageError

CNTK_V = """\
# CNTK-V (Arora et al. 2019) on 8x8x1 digits: depth = conv layers + the final dense.
net cntk_v
param depth = 3
input 8x8x1
repeat depth - 1 {
  conv 3x3 pad=same W=sqrt(2) b=0
  relu
}
flatten
dense W=1 b=0
"""

CNTK_GAP = """\
# CNTK-GAP (Arora et al. 2019) on 8x8x1 digits: fixed first conv and last dense.
net cntk_gap
param depth = 3
input 8x8x1
conv 3x3 pad=same W=sqrt(2) b=0 fixed
relu
repeat depth - 2 {
  conv 3x3 pad=same W=sqrt(2) b=0
  relu
}
gap
dense W=1 b=0 fixed
"""

#: Arora et al. 2019, Table 1: CIFAR-10 accuracy (%) of exact CNTK kernel regression.
PAPER = {3: (64.47, 70.47), 4: (65.52, 75.93), 6: (66.03, 76.73), 11: (65.90, 77.43),
         21: (64.09, 77.08)}

DEPTHS = (3, 4, 6)
LARGE_DEPTHS = (3, 4, 6, 11, 21)
GAP_TRAIN = 150
GAP_TEST = 150


@dataclass
class Setting:
    depths: tuple[int, ...]
    v_train: int
    v_test: int
    gap_train: int
    gap_test: int


DEFAULT = Setting(DEPTHS, 1000, 797, GAP_TRAIN, GAP_TEST)
LARGE = Setting(LARGE_DEPTHS, 1000, 797, 1000, 797)
TINY = Setting((3, 4), 120, 60, 24, 16)     # for tests


@dataclass
class Job:
    arch: str         # "CNTK-V" or "CNTK-GAP"
    depth: int
    n_train: int
    n_test: int
    seconds: float = 0.0
    accuracy: dict = field(default_factory=dict)   # {"ntk": .., "nngp": ..}
    conditions: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.arch} {self.n_train}/{self.n_test}"


def _sources() -> dict[str, str]:
    return {"CNTK-V": CNTK_V, "CNTK-GAP": CNTK_GAP}


def plan_jobs(setting: Setting) -> list[Job]:
    jobs = []
    for d in setting.depths:
        jobs.append(Job("CNTK-V", d, setting.v_train, setting.v_test))
        if (setting.gap_train, setting.gap_test) != (setting.v_train, setting.v_test):
            jobs.append(Job("CNTK-V", d, setting.gap_train, setting.gap_test))
        jobs.append(Job("CNTK-GAP", d, setting.gap_train, setting.gap_test))
    return jobs


def run_job(job: Job, train, test, backend: str, quiet: bool) -> Job:
    import warnings

    from . import compile as compile_net
    from .regression import IllConditionedWarning, classify
    from .runtime.evaluate import evaluate_tiled
    from .runtime.progress import Progress

    kernel = compile_net(_sources()[job.arch], depth=job.depth)
    ex = kernel.executor(backend, "float64")
    xtr, ytr = train.x[:job.n_train], train.y[:job.n_train]
    xte, yte = test.x[:job.n_test], test.y[:job.n_test]
    label = f"  {job.arch} depth {job.depth}"
    mode = "quiet" if quiet else "auto"
    t0 = time.perf_counter()
    k_train = evaluate_tiled(ex, xtr, progress=Progress(label + " train kernel", mode=mode,
                                                         keep=False))
    k_test = evaluate_tiled(ex, xte, xtr, progress=Progress(label + " test kernel", mode=mode,
                                                            keep=False))
    job.seconds = time.perf_counter() - t0
    for name in ("ntk", "nngp"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", IllConditionedWarning)
            result = classify(getattr(k_train, name), getattr(k_test, name), ytr, yte)
        job.accuracy[name] = result.accuracy
        job.conditions[name] = result.solver.condition
        job.warnings += [f"{job.arch} depth {job.depth} {name}: {w.message}" for w in caught]
    job.backend = ex.name
    return job


# -- output ----------------------------------------------------------------------------------

def _pct(x) -> str:
    return "   -  " if x is None else f"{100 * x:6.2f}"


def table(jobs: list[Job], setting: Setting) -> str:
    groups = []
    for j in jobs:
        key = (j.arch, j.n_train, j.n_test)
        if key not in groups:
            groups.append(key)
    by = {(j.arch, j.n_train, j.n_test, j.depth): j for j in jobs}
    depths = sorted(set(setting.depths) | set(PAPER))
    head1 = ["depth"] + [f"{a} {n}/{m}" for a, n, m in groups] + ["paper: CIFAR-10"]
    head2 = [""] + ["   NTK   NNGP" for _ in groups] + ["CNTK-V CNTK-GAP"]
    widths = [5] + [max(len(h), 13) for h in head1[1:-1]] + [15]
    lines = ["  ".join(h.center(w) if i else h.ljust(w)
                       for i, (h, w) in enumerate(zip(head1, widths))),
             "  ".join(h.rjust(w) if i else h.ljust(w)
                       for i, (h, w) in enumerate(zip(head2, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for d in depths:
        row = [str(d).ljust(widths[0])]
        for (a, n, m), w in zip(groups, widths[1:-1]):
            j = by.get((a, n, m, d))
            cell = (f"{_pct(j.accuracy['ntk'])} {_pct(j.accuracy['nngp'])}" if j else
                    "     -      -")
            row.append(cell.rjust(w))
        paper = PAPER.get(d)
        row.append((f"{paper[0]:6.2f}   {paper[1]:6.2f}" if paper else "     -        -")
                   .rjust(widths[-1]))
        lines.append("  ".join(row))
    return "\n".join(lines)


def figure(jobs: list[Job], setting: Setting):
    """Accuracy against depth: the digits runs (left) and the paper's CIFAR-10 (right).
    The legends sit below the axes, so they never cover a line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 5.2), layout="constrained")
    FigureCanvasAgg(fig)          # no pyplot: no global state, no GUI backend
    ax, bx = fig.subplots(1, 2)
    groups = []
    for j in jobs:
        key = (j.arch, j.n_train, j.n_test)
        if key not in groups:
            groups.append(key)
    colors = {"CNTK-V": "tab:blue", "CNTK-GAP": "tab:red"}
    for gi, (a, n, m) in enumerate(groups):
        sel = sorted((j for j in jobs if (j.arch, j.n_train, j.n_test) == (a, n, m)),
                     key=lambda j: j.depth)
        d = [j.depth for j in sel]
        small = n != max(g[1] for g in groups)
        color = colors[a] if not (a == "CNTK-V" and small) else "tab:cyan"
        for kname, style in (("ntk", "-o"), ("nngp", "--s")):
            ax.plot(d, [100 * j.accuracy[kname] for j in sel], style, color=color,
                    label=f"{a} {kname.upper()} ({n} train / {m} test)", markersize=5)
    ax.set_xlabel("depth (conv layers + readout)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("infinet: exact kernels on scikit-learn digits (8x8)")
    ax.set_xticks(sorted(setting.depths))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2,
              frameon=False)
    pd = sorted(PAPER)
    bx.plot(pd, [PAPER[d][0] for d in pd], "-o", color=colors["CNTK-V"], label="CNTK-V")
    bx.plot(pd, [PAPER[d][1] for d in pd], "-o", color=colors["CNTK-GAP"], label="CNTK-GAP")
    bx.set_xticks(pd)
    bx.set_xlabel("depth")
    bx.set_ylabel("test accuracy (%)")
    bx.set_title("Arora et al. 2019, Table 1: CIFAR-10 (50k/10k), NTK")
    bx.grid(alpha=0.3)
    bx.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2,
              frameon=False)
    return fig


def plot(jobs: list[Job], setting: Setting, path: str) -> None:
    """Write :func:`figure` as a PNG at ``path`` (atomically)."""
    fig = figure(jobs, setting)
    directory = os.path.dirname(os.path.abspath(path))
    from .runtime.atomic import mkstemp_public
    fd, tmp = mkstemp_public(directory, ".png")
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=110)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# -- the command -------------------------------------------------------------------------------

def parse_depths(text: str | None, default: tuple[int, ...]) -> tuple[int, ...]:
    if text is None:
        return default
    try:
        depths = tuple(sorted({int(t) for t in text.split(",") if t.strip()}))
    except ValueError:
        raise UsageError(f"--depths {text}: expected comma-separated whole numbers, e.g. 3,4,6") \
            from None
    if not depths or min(depths) < 3:
        raise UsageError(f"--depths {text}: depths must be at least 3 (CNTK-GAP's first conv "
                         f"and last dense are fixed, so at depth 2 it has no trained layer)")
    if max(depths) > 200:
        raise UsageError(f"--depths {text}: depths above 200 are not supported by the demo")
    return depths


def run(args) -> int:
    from .runtime.backends import resolve_backend
    from .runtime.datasets import load_dataset

    start = time.perf_counter()
    setting = LARGE if args.large else (TINY if getattr(args, "tiny", False) else DEFAULT)
    depths = parse_depths(getattr(args, "depths", None), setting.depths)
    setting = Setting(depths, setting.v_train, setting.v_test, setting.gap_train,
                      setting.gap_test)
    plot_path = args.plot
    plot_dir = os.path.dirname(os.path.abspath(plot_path))
    if not os.path.isdir(plot_dir):
        raise UsageError(f"--plot {plot_path}: directory {plot_dir} does not exist")
    if not plot_path.lower().endswith(".png"):
        raise UsageError(f"--plot {plot_path}: the plot is a PNG; give a path ending in .png")
    if args.json:
        jdir = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(jdir):
            raise UsageError(f"--json {args.json}: directory {jdir} does not exist")
    resolve_backend(args.backend)
    train = load_dataset("digits:train")
    test = load_dataset("digits:test")
    out = print
    out("infinet demo: the CNTK experiment of Arora et al. (2019) in miniature, on "
        "scikit-learn's digits")
    out(f"data     {len(train)} train / {len(test)} test 8x8x1 digit images (scikit-learn "
        f"load_digits: train = the first {len(train)}, test = the other {len(test)});")
    out("         " + "; ".join(train.preprocessing[1:]))
    out("nets     CNTK-V:   (depth-1) x [conv 3x3 same W=sqrt(2), relu], flatten, dense "
        "(examples/digits_cntk_v.net)")
    out("         CNTK-GAP: conv+relu (fixed), (depth-2) x [conv, relu], gap, dense (fixed) "
        "(examples/digits_cntk_gap.net)")
    if (setting.gap_train, setting.gap_test) != (setting.v_train, setting.v_test):
        out(f"sizes    CNTK-V on {setting.v_train} train / {setting.v_test} test; CNTK-GAP on "
            f"a subset, the first {setting.gap_train} train / {setting.gap_test} test digits")
        out("         (its kernel needs every offset: 4,096 covariance entries per layer per pair, "
            "CNTK-V 64),")
        out("         with CNTK-V on the same subset for a like-for-like comparison. "
            "All sizes: infinet demo --large")
    else:
        out(f"sizes    every net on all {setting.v_train} train / {setting.v_test} test digits")
    jobs = plan_jobs(setting)
    backend_name = None
    out(f"method   exact NTK and NNGP kernels (float64), ridgeless kernel regression on one-hot "
        f"0.9/-0.1 labels, argmax; depths {', '.join(map(str, depths))}")
    if args.large and resolve_backend(args.backend) == "numpy":
        out("note     --large on the NumPy backend takes hours (CNTK-GAP on all digits); "
            "use --backend cpu or a GPU (--backend cuda)")
    out("")
    for job in jobs:
        run_job(job, train, test, args.backend, args.quiet)
        backend_name = job.backend
        out(f"  {job.arch:8} depth {job.depth:2}  {job.n_train:4} train / {job.n_test:3} test  "
            f"NTK {100 * job.accuracy['ntk']:6.2f}%  NNGP {100 * job.accuracy['nngp']:6.2f}%  "
            f"({job.seconds:.1f} s, {job.backend})", flush=True)
    for job in jobs:
        for w in job.warnings:
            print(f"warning: {w}", file=sys.stderr)
    out("")
    out("Test accuracy (%) on digits, beside the paper's CIFAR-10 table (Arora et al. 2019, "
        "Table 1; exact CNTK,")
    out("50k train / 10k test, NTK; on the far harder CIFAR-10, so compare trends, not levels):")
    out("")
    out(table(jobs, setting))
    out("")
    plot(jobs, setting, plot_path)
    elapsed = time.perf_counter() - start
    out(f"plot     wrote {plot_path} (accuracy against depth; the paper's table beside it)")
    if args.json:
        from .runtime.atomic import write_atomic
        report = {
            "setting": setting.__dict__, "backend": backend_name, "seconds": elapsed,
            "paper_cifar10": {str(d): {"CNTK-V": v, "CNTK-GAP": g} for d, (v, g) in PAPER.items()},
            "runs": [{"net": j.arch, "depth": j.depth, "n_train": j.n_train, "n_test": j.n_test,
                      "accuracy": j.accuracy, "condition": j.conditions,
                      "kernel_seconds": j.seconds} for j in jobs],
            "preprocessing": train.preprocessing,
        }
        write_atomic(args.json, (json.dumps(report, indent=2) + "\n").encode())
        out(f"json     wrote {args.json}")
    out(f"time     {elapsed:.1f} s in all ({backend_name} backend, {os.cpu_count()} CPUs)")
    best = max((j for j in jobs if j.arch == "CNTK-V" and j.n_train == setting.v_train),
               key=lambda j: j.accuracy["ntk"])
    out(f"best     CNTK-V depth {best.depth} NTK: {100 * best.accuracy['ntk']:.2f}% on "
        f"{best.n_test} test digits")
    return 0
