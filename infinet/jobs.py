"""The dataset-scale commands behind the CLI: ``eval`` output handling and ``classify``.

cli.py parses the arguments; the work is here so that the command line stays thin.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import warnings

import numpy as np

from .errors import DataError, UsageError


def load_inputs(plan, spec: str, what: str):
    """A dataset spec checked against the net's input line: (x float64, Dataset)."""
    from .runtime.data import check_inputs
    from .runtime.datasets import load_dataset
    data = load_dataset(spec, what)
    return check_inputs(plan, data.x, f"{what} {spec}"), data


def output_kind(out: str, what: str = "--out") -> str:
    """'npz' for ``K.npz``, 'zarr' for ``K.zarr`` (a path, a group in one, or an object
    store URL), 'dir' for ``DIR/`` (or an existing directory, or no suffix)."""
    from .runtime.zarrstore import Location, is_zarr, needs_zarr
    if is_zarr(out):
        needs_zarr(what)
        loc = Location(out, what)
        parent = os.path.dirname(loc.root)
        if loc.local and not os.path.isdir(parent):
            raise UsageError(f"{what} {out}: directory {parent} does not exist")
        return "zarr"
    if "://" in out:
        raise UsageError(f"{what} {out}: a URL names a zarr store: end it in .zarr")
    if out.endswith(".npz") and not os.path.isdir(out):
        parent = os.path.dirname(os.path.abspath(out))
        if not os.path.isdir(parent):
            raise UsageError(f"{what} {out}: directory {parent} does not exist")
        return "npz"
    if out.endswith(("/", os.sep)) or os.path.isdir(out) or not os.path.splitext(out)[1]:
        parent = os.path.dirname(os.path.abspath(out.rstrip("/" + os.sep)))
        if not os.path.isdir(parent):
            raise UsageError(f"{what} {out}: directory {parent} does not exist")
        return "dir"
    raise UsageError(f"{what} {out}: expected K.npz (one file) or DIR/ (a directory with "
                     f"memory-mappable nngp.npy, ntk.npy and a manifest), or K.zarr (a zarr "
                     f"store)")


def make_progress(label: str, quiet: bool):
    from .runtime.progress import Progress
    return Progress(label, mode="quiet" if quiet else "auto")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during a run; ``hint`` says what was kept and how to go on."""

    def __init__(self, hint: str = ""):
        super().__init__(hint)
        self.hint = hint


@contextlib.contextmanager
def interruptible(progress, hint: str):
    """Close the progress bar's line when the block ends; Ctrl-C inside the block comes out
    as :class:`Interrupted` carrying ``hint``."""
    try:
        yield
    except KeyboardInterrupt as err:
        progress.close()
        raise Interrupted(getattr(err, "hint", "") or hint) from None
    finally:
        progress.close()


def parse_workers(text):
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"--workers {text}: expected a number of worker processes, e.g. 2") \
            from None
    if value < 1:
        raise UsageError(f"--workers {text}: must be at least 1")
    return value


def cluster(args):
    """The Dask client that ``--scheduler ADDRESS`` / ``--workers N`` ask for (a context
    manager; None for neither)."""
    from .runtime.cluster import connect
    return connect(getattr(args, "scheduler", None), parse_workers(getattr(args, "workers", None)),
                   getattr(args, "backend", "auto"))


def executor_for(plan, backend, dtype, pairs=None, client=None):
    """The executor of a run: built here, or on the cluster's workers (``client``)."""
    if client is None:
        from .runtime.backends import make_executor
        return make_executor(plan, backend, dtype, pairs=pairs)
    from .runtime.cluster import cluster_executor
    return cluster_executor(plan, backend, dtype, client, pairs)


def eval_to_output(executor, x1, x2, out: str, *, max_memory=None, tile=None, quiet=False,
                   describe=None, overwrite=False, client=None):
    """Evaluate to ``K.npz``, ``K.zarr`` or ``DIR/``, resumably (on a Dask cluster with
    ``client``); returns the message to print."""
    from .runtime.evaluate import evaluate_tiled
    from .runtime.npzstore import workdir
    kind = output_kind(out)
    if x2 is not None and x2.shape == x1.shape and np.array_equal(x1, x2):
        x2 = None      # K(x, x): compute the upper triangle only, exactly symmetric
        if describe:
            describe = {k: v for k, v in describe.items() if k != "x2"}
    progress = make_progress("eval", quiet)
    n1 = len(x1)
    n2 = n1 if x2 is None else len(x2)
    what = f"nngp, ntk [{n1}, {n2}] ({executor.dtype.name}, {executor.name})"
    inputs = "".join(f"{k:6} {v}\n" for k, v in (describe or {}).items())
    kept = workdir(out) + "/" if kind == "npz" else out
    with interruptible(progress, f"the finished tiles are kept in {kept}: run the same command "
                                 f"again to resume"):
        result = evaluate_tiled(executor, x1, x2, out=out, overwrite=overwrite,
                                max_memory=max_memory, tile=tile, progress=progress,
                                describe=describe, client=client)
    if result.pairs_computed == 0:
        return f"{inputs}{out}: already done (verified, nothing recomputed): {what}"
    if kind == "npz":
        return f"{inputs}wrote {out}: {what}"
    if kind == "zarr":
        return (f"{inputs}wrote {out}: {what} as zarr arrays {', '.join(result_names(result))} "
                f"(a chunk per tile), the manifest in the group's attributes")
    return (f"{inputs}wrote {out}: {what} as nngp.npy, ntk.npy (memory-mappable) and "
            f"manifest.json")


def result_names(result) -> list[str]:
    return [name for name in ("nngp", "ntk") if getattr(result, name) is not None]


def parse_tile(text):
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"--tile {text}: expected a whole number of inputs, e.g. 256") from None
    if value < 1:
        raise UsageError(f"--tile {text}: must be at least 1")
    return value


# -- classify ---------------------------------------------------------------------------------

def _labels(data, spec: str, what: str) -> np.ndarray:
    if data.y is None:
        raise DataError(f"{what} {spec}: has no labels (use an .npz with arrays 'x' and 'y', "
                        f"digits:..., or cifar10:DIR:...)")
    return data.y


def run_classify(args, plan, executor, max_memory=None, client=None) -> int:
    """``infinet classify``: kernels, kernel regression, ``accuracy: 0.xxxx`` last."""
    from .regression import IllConditionedWarning, classify
    from .runtime.evaluate import evaluate_tiled

    kernel = args.kernel
    if kernel not in ("ntk", "nngp"):
        raise UsageError(f"--kernel {kernel}: choose ntk or nngp")
    reg = args.reg
    if not np.isfinite(reg) or reg < 0:
        raise UsageError(f"--reg {reg:g}: must be a number >= 0")
    if args.json:
        parent = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(parent):
            raise UsageError(f"--json {args.json}: directory {parent} does not exist")
    kernels_dir = getattr(args, "kernels", None)
    zarr_kernels = False
    if kernels_dir:
        from .runtime.zarrstore import is_zarr
        zarr_kernels = is_zarr(kernels_dir)
        if zarr_kernels:
            output_kind(kernels_dir, "--kernels")
        else:
            parent = os.path.dirname(os.path.abspath(kernels_dir.rstrip("/")))
            if not os.path.isdir(parent):
                raise UsageError(f"--kernels {kernels_dir}: directory {parent} does not exist")
    x_train, train = load_inputs(plan, args.train, "--train")
    x_test, test = load_inputs(plan, args.test, "--test")
    y_train = _labels(train, args.train, "--train")
    y_test = _labels(test, args.test, "--test")
    say = (lambda *a: None) if args.quiet else print
    params = ", ".join(f"{k} = {v:g}" for k, v in plan.params.items())
    say(f"net {plan.name} ({plan.filename}){': ' + params if params else ''}")
    say(f"train  {train.describe()}")
    say(f"test   {test.describe()}")
    t0 = time.perf_counter()
    store_train = store_test = None
    if kernels_dir:
        base = kernels_dir.rstrip("/")
        if zarr_kernels:
            from .runtime.zarrstore import classify_root
            classify_root(base, "--kernels")
        else:
            try:
                os.makedirs(base, exist_ok=True)
            except OSError as err:
                raise UsageError(f"--kernels {kernels_dir}: cannot create ({err.strerror})") \
                    from None
        store_train, store_test = base + "/train", base + "/test"
    hint = (f"the finished tiles are kept in {kernels_dir}: run the same command again to "
            f"resume" if kernels_dir else "nothing was kept (--kernels DIR keeps the kernels "
            "resumably)")
    progress = make_progress("train kernel", args.quiet)
    with interruptible(progress, hint):
        k_train = evaluate_tiled(executor, x_train, None, out=store_train,
                                 max_memory=max_memory, progress=progress, what="--kernels",
                                 describe={"x1": args.train}, client=client)
    progress = make_progress("test kernel", args.quiet)
    with interruptible(progress, hint):
        k_test = evaluate_tiled(executor, x_test, x_train, out=store_test,
                                max_memory=max_memory, progress=progress, what="--kernels",
                                describe={"x1": args.test, "x2": args.train}, client=client)
    seconds = time.perf_counter() - t0
    pick = (lambda r: np.asarray(r.ntk)) if kernel == "ntk" else (lambda r: np.asarray(r.nngp))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IllConditionedWarning)
        result = classify(pick(k_train), pick(k_test), y_train, y_test, reg=reg,
                          ridge_example="--reg 1e-6")
    for w in caught:
        if issubclass(w.category, IllConditionedWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    solver = result.solver
    ridge = "ridgeless" if reg == 0 else f"ridge {reg:g} x mean diagonal"
    cond = solver.condition
    cond_text = f", condition number ~{cond:.2g}" if cond is not None else ""
    say(f"kernel {kernel}, {ridge}; solver: {solver.method}{cond_text}")
    say(f"kernels: {len(x_train):,} x {len(x_train):,} train, {len(x_test):,} x "
        f"{len(x_train):,} test in {seconds:.1f} s ({executor.name}, {executor.dtype.name})")
    if args.json:
        from .runtime.atomic import write_atomic
        report = {
            "accuracy": result.accuracy, "kernel": kernel, "reg": reg,
            "net": plan.name, "net_file": plan.filename, "params": plan.params,
            "train": {"spec": args.train, "n": len(x_train), "preprocessing": train.preprocessing},
            "test": {"spec": args.test, "n": len(x_test), "preprocessing": test.preprocessing},
            "solver": {"method": solver.method, "condition": cond, "warning": solver.warning},
            "kernel_seconds": seconds, "backend": executor.name, "dtype": executor.dtype.name,
            "correct": int(np.sum(result.labels == y_test)),
        }
        write_atomic(args.json, (json.dumps(report, indent=2, default=_json_default) + "\n")
                     .encode())
    print(f"accuracy: {result.accuracy:.4f}")
    return 0


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)
