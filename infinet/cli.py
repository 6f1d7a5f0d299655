"""The ``infinet`` command line (README.md, "Commands").

Every error a user can cause prints ``FILE:LINE:COL: error: ...`` (with the source
line and a caret) or a one-line ``error: ...`` on stderr and exits with status 2.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys


from . import __version__
from .compiler import build_plan, parse_net
from .errors import InfinetError, UsageError
from .ir.plan import Plan
from .report import explain, summary

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors: same format, status 2
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR)


def parse_defines(items: list[str] | None) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name or not value.strip():
            raise UsageError(f"-D {item}: expected NAME=VALUE, e.g. -D depth=5")
        if name in params:
            raise UsageError(f"-D {name} is given twice")
        params[name] = value.strip()
    return params


def parse_size(text: str) -> int:
    from .runtime.memory import parse_size as parse
    return parse(text, f"--max-memory {text}")


def load_plan(args) -> Plan:
    program = parse_net(os.fspath(args.net))
    return build_plan(program, parse_defines(args.define), from_cli=True)


# -- check / explain ----------------------------------------------------------------------

def cmd_check(args) -> int:
    print(summary(load_plan(args)))
    return 0


def cmd_explain(args) -> int:
    print(explain(load_plan(args)))
    return 0


# -- eval ----------------------------------------------------------------------------------

def cmd_eval(args) -> int:
    from .runtime.backends import check_backend, check_dtype

    plan = load_plan(args)
    dtype = check_dtype(args.dtype)
    check_backend(args.backend)
    max_memory = parse_size(args.max_memory) if args.max_memory else None
    from . import jobs  # datasets, tiles, resumable output (issue 4)
    jobs.output_kind(args.out)
    tile = jobs.parse_tile(args.tile)
    x1, d1 = jobs.load_inputs(plan, args.x1, "--x1")
    x2, d2 = (None, None) if args.x2 is None else jobs.load_inputs(plan, args.x2, "--x2")
    describe = {"x1": d1.describe()} | ({} if d2 is None else {"x2": d2.describe()})
    with jobs.cluster(args) as client:     # --scheduler / --workers: tiles on a Dask cluster
        executor = jobs.executor_for(plan, args.backend, dtype, _pair_count(x1, x2), client)
        message = jobs.eval_to_output(executor, x1, x2, args.out, max_memory=max_memory,
                                      tile=tile, quiet=args.quiet, describe=describe,
                                      overwrite=args.overwrite, client=client)
    if not args.quiet:
        print(message)
    return 0


def _pair_count(x1, x2) -> int:
    """How many kernel entries an eval computes (guides `--backend auto`)."""
    from .runtime.tiles import pair_count
    return pair_count(len(x1), len(x1) if x2 is None else len(x2), x2 is None)


def cmd_cuda(args) -> int:
    """Print the generated CUDA source (self-contained: plain NVRTC or nvcc compiles it)."""
    from .codegen import generate
    print(generate(load_plan(args), "cpu" if args.cpu else "cuda"), end="")
    return 0


def cmd_classify(args) -> int:
    from . import jobs
    from .runtime.backends import check_dtype
    plan = load_plan(args)
    dtype = check_dtype(args.dtype)
    max_memory = parse_size(args.max_memory) if args.max_memory else None
    with jobs.cluster(args) as client:     # --scheduler / --workers: tiles on a Dask cluster
        executor = jobs.executor_for(plan, args.backend, dtype, client=client)
        return jobs.run_classify(args, plan, executor, max_memory=max_memory, client=client)


def cmd_demo(args) -> int:
    from . import demo
    return demo.run(args)


# -- entry point -------------------------------------------------------------------------

def add_backend_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="auto", help="auto (default: cuda where a GPU is usable, "
                   "else cpu, else numpy), numpy, cpu or cuda")


def add_cluster_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scheduler", metavar="ADDRESS", help="compute the tiles on a running Dask "
                   "cluster (dask scheduler / dask worker), e.g. tcp://10.0.0.1:8786")
    p.add_argument("--workers", metavar="N", help="start a local Dask cluster of N worker "
                   "processes (one per GPU with dask-cuda) and compute the tiles there")


def add_memory_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-memory", metavar="SIZE", help="working memory for pair batches "
                   "(default 512M)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="infinet", description="Compile infinitely wide networks (.net files) "
                     "to exact NNGP and NTK kernels.")
    parser.add_argument("--version", action="version", version=f"infinet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def net_command(name, help_text, func):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("net", metavar="NET", help="a .net file")
        p.add_argument("-D", dest="define", action="append", metavar="NAME=VALUE",
                       help="override a param of the .net file (repeatable)")
        p.set_defaults(func=func)
        return p

    net_command("check", "parse and analyse a network; print the plan summary", cmd_check)
    net_command("explain", "per-layer table: shape, offsets needed, work and memory per pair",
                cmd_explain)
    p = net_command("cuda", "print the generated CUDA source of a network", cmd_cuda)
    p.add_argument("--cpu", action="store_true", help="print the C++ source of the CPU "
                   "target instead (the same kernel code, compiled for the host)")
    p = net_command("eval", "evaluate the NNGP and NTK kernels of a dataset", cmd_eval)
    data_help = ("A.npy, A.npz (array x), digits[:train|:test] or cifar10:DIR:train|test, "
                 "optionally sliced: SPEC[a:b]")
    p.add_argument("--x1", required=True, metavar="DATA", help="inputs [N1, ...] (NHWC images "
                   "or [N, D] vectors): " + data_help)
    p.add_argument("--x2", metavar="DATA", help="second inputs [N2, ...] (default: x1; then only "
                   "the upper triangle is computed)")
    p.add_argument("--out", required=True, metavar="K.npz|K.zarr|DIR/", help="K.npz: one file "
                   "with arrays nngp, ntk; K.zarr: a zarr group (a chunk per tile; a path every "
                   "worker sees, or an object store URL); DIR/: memory-mappable nngp.npy, ntk.npy "
                   "and a manifest. Any of them: a killed run resumes when the same command is "
                   "run again")
    p.add_argument("--tile", metavar="N", help="tile side in inputs (default: sized from "
                   "--max-memory and the net's cost)")
    p.add_argument("--dtype", default="float64", help="float64 (default) or float32")
    add_backend_option(p)
    add_memory_option(p)
    add_cluster_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace an --out that holds the "
                   "results of a different computation (without it such an output is refused)")
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing on success (no "
                   "progress either)")

    p = net_command("classify", "kernel regression classifier: train on one dataset, report "
                    "accuracy on another", cmd_classify)
    p.add_argument("--train", required=True, metavar="DATA", help="labelled training data: "
                   "A.npz (x, y), digits:train, cifar10:DIR:train, ... (SPEC[a:b] slices)")
    p.add_argument("--test", required=True, metavar="DATA", help="labelled test data")
    p.add_argument("--kernel", default="ntk", choices=("ntk", "nngp"), help="ntk (default: the "
                   "trained infinite network) or nngp (the GP posterior mean)")
    p.add_argument("--reg", type=float, default=0.0, metavar="R", help="ridge, relative to the "
                   "mean diagonal of the train kernel (default 0: ridgeless)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--kernels", metavar="DIR|K.zarr", help="keep the kernels in DIR/train, "
                   "DIR/test (or the zarr groups K.zarr/train, K.zarr/test); resumable: a killed "
                   "run continues where it stopped, finished kernels are read back")
    p.add_argument("--dtype", default="float64", help="float64 (default) or float32 for the "
                   "kernels; the solve is always float64")
    add_backend_option(p)
    add_memory_option(p)
    add_cluster_options(p)
    p.add_argument("--quiet", "-q", action="store_true", help="print only the accuracy line")

    p = sub.add_parser("demo", help="the CNTK paper's experiment in miniature on scikit-learn's "
                       "digits: accuracy table and plot", description="Exact CNTK-V and CNTK-GAP "
                       "kernels at several depths on scikit-learn's 8x8 digits, kernel regression "
                       "with the NTK and the NNGP, an accuracy table beside the paper's CIFAR-10 "
                       "table, and a PNG plot of accuracy against depth.")
    p.add_argument("--plot", default="infinet-demo.png", metavar="PNG", help="where to write the "
                   "plot (default: infinet-demo.png)")
    p.add_argument("--large", action="store_true", help="all 1,000 training and 797 test digits "
                   "for every net and more depths (for GPUs or fast CPU backends)")
    add_backend_option(p)
    p.add_argument("--depths", metavar="LIST", help="comma-separated depths (default 3,4,6; "
                   "--large: 3,4,6,11,21)")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # for the tests
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_demo)
    return parser


@contextlib.contextmanager
def _warnings_as_lines():
    """infinet's own warnings as one ``warning: ...`` line each (no file:line, no source)."""
    import warnings
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if category.__module__.split(".")[0] == "infinet":
            print(f"warning: {message}", file=file or sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        finally:                        # --help and --version print, then raise SystemExit
            sys.stdout.flush()
        with _warnings_as_lines():
            status = args.func(args)
        sys.stdout.flush()              # a closed pipe shows here, not at exit
        return status
    except InfinetError as err:
        print(str(err), file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as err:
        hint = getattr(err, "hint", "")
        print("error: interrupted" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return 130
    except MemoryError:
        print("error: out of memory; lower --max-memory or evaluate fewer inputs at once",
              file=sys.stderr)
        return 1
    except BrokenPipeError:
        return _reader_went_away()


def _reader_went_away() -> int:
    """stdout (or stderr) is a pipe whose reader exited (``infinet check X | head -1``):
    stop quietly, as other command-line tools do.  Both are pointed at /dev/null so the
    interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):  # noqa: PERF203 - a stream without a descriptor
            pass
    os.close(devnull)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
