"""The ``infinet`` command line (SPEC §4).

Every error a user can cause prints ``FILE:LINE:COL: error: ...`` (with the source
line and a caret) or a one-line ``error: ...`` on stderr and exits with status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

from . import __version__
from .compiler import build_plan, parse_program
from .errors import InfinetError, UsageError
from .ir import demand as demand_analysis
from .ir.plan import Plan, human_bytes, human_count

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
    units = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1] if t and t[-1] in units else ""
    try:
        value = float(t[:-1] if unit else t)
    except ValueError:
        raise UsageError(f"--max-memory {text}: expected a size like 512M or 4G") from None
    if value <= 0:
        raise UsageError(f"--max-memory {text}: must be positive")
    return int(value * units[unit])


def load_plan(args) -> Plan:
    program = parse_program(os.fspath(args.net))
    return build_plan(program, parse_defines(args.define))


# -- check / explain ----------------------------------------------------------------------

def summary(plan: Plan) -> str:
    counts = plan.counts()
    lines = [f"{plan.filename}: ok: net {plan.name}, {len(plan.layers) - 1} layers"]
    if plan.params:
        lines.append("  params     " + ", ".join(f"{k} = {v:g}" for k, v in plan.params.items()))
    shape = plan.input_shape
    what = "vectors" if shape.is_flat else "images (NHWC)"
    lines.append(f"  input      {'x'.join(map(str, plan.data_shape))} {what}")
    lines.append("  layers     " + (", ".join(f"{n} {k}" for k, n in counts.items()) or "none"))
    readout = next((lp for lp in plan.layers if lp.layer.kind in ("gap", "flatten")), None)
    if readout is not None:
        prev = plan.layers[readout.index - 1]
        lines.append(f"  readout    {readout.layer.kind} at line {readout.layer.pos.line}: needs "
                     f"offsets {demand_analysis.describe(prev.shape, prev.pair_demand)}")
    pt, st = plan.pair_total, plan.self_total
    peak = max(lp.pair_cost.bytes for lp in plan.layers)
    lines.append(f"  per pair   {human_count(pt.flops)} flops, {human_count(pt.transcendentals)} "
                 f"transcendentals; largest state {human_count(plan.peak_entries)} entries "
                 f"({human_bytes(peak)} at float64)")
    lines.append(f"  per input  {human_count(st.flops)} flops, {human_count(st.transcendentals)} "
                 f"transcendentals (self-variances; {plan.self_variance_entries()} numbers kept)")
    return "\n".join(lines)


def explain(plan: Plan) -> str:
    header = ("#", "line", "layer", "output", "offsets needed", "entries/pair", "flops/pair",
              "bytes/pair", "self offsets")
    rows = []
    for lp in plan.layers:
        rows.append((str(lp.index), str(lp.layer.pos.line), lp.layer.describe(), str(lp.shape),
                     demand_analysis.describe(lp.shape, lp.pair_demand),
                     f"{lp.pair_cost.entries:,}", human_count(lp.pair_cost.flops),
                     human_bytes(lp.pair_cost.bytes),
                     demand_analysis.describe(lp.shape, lp.self_demand)))
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    right = {0, 1, 5, 6, 7}
    fmt = lambda r: "  ".join(c.rjust(w) if i in right else c.ljust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    out = [f"net {plan.name} ({plan.filename})", fmt(header), fmt(["-" * w for w in widths])]
    out += [fmt(r) for r in rows]
    pt, st = plan.pair_total, plan.self_total
    out.append("")
    out.append(f"per pair:  {human_count(pt.flops)} flops, {human_count(pt.transcendentals)} "
               f"transcendentals, {human_count(pt.entries)} entries computed, largest state "
               f"{human_count(plan.peak_entries)} entries")
    out.append(f"per input: {human_count(st.flops)} flops, {human_count(st.transcendentals)} "
               f"transcendentals (self pass); {plan.self_variance_entries()} variances kept")
    out.append("offsets: p' - p per spatial axis (h x w) of the covariance entries a layer's "
               "output must provide; '-' = not needed")
    return "\n".join(out)


def cmd_check(args) -> int:
    print(summary(load_plan(args)))
    return 0


def cmd_explain(args) -> int:
    print(explain(load_plan(args)))
    return 0


# -- eval ----------------------------------------------------------------------------------

def write_npz_atomic(path: str, **arrays) -> None:
    """Write an .npz so that ``path`` is either absent or complete, never torn."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"--out {path}: directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".infinet-", suffix=".npz.tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def cmd_eval(args) -> int:
    from .runtime.backends import check_dtype, resolve_backend
    from .runtime.data import check_inputs, load_array
    from .runtime.evaluate import evaluate
    from .runtime.backends import make_executor

    plan = load_plan(args)
    dtype = check_dtype(args.dtype)
    resolve_backend(args.backend)
    max_memory = parse_size(args.max_memory) if args.max_memory else None
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise UsageError(f"--out {args.out}: directory {out_dir} does not exist")
    x1 = check_inputs(plan, load_array(args.x1, "--x1"), f"--x1 {args.x1}")
    x2 = None if args.x2 is None else check_inputs(plan, load_array(args.x2, "--x2"),
                                                   f"--x2 {args.x2}")
    executor = make_executor(plan, args.backend, dtype)
    result = evaluate(executor, x1, x2, max_memory=max_memory)
    write_npz_atomic(args.out, nngp=result.nngp, ntk=result.ntk)
    if not args.quiet:
        n2 = len(x1) if x2 is None else len(x2)
        print(f"wrote {args.out}: nngp, ntk [{len(x1)}, {n2}] ({dtype.name}, {executor.name})")
    return 0


# -- entry point -------------------------------------------------------------------------

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
    p = net_command("eval", "evaluate the NNGP and NTK kernels of a dataset", cmd_eval)
    p.add_argument("--x1", required=True, metavar="A.npy", help="inputs [N1, ...] (NHWC images "
                   "or [N, D] vectors)")
    p.add_argument("--x2", metavar="B.npy", help="second inputs [N2, ...] (default: x1)")
    p.add_argument("--out", required=True, metavar="K.npz", help="output file with arrays nngp, ntk")
    p.add_argument("--dtype", default="float64", help="float64 (default) or float32")
    p.add_argument("--backend", default="auto", help="auto (default) or numpy")
    p.add_argument("--max-memory", metavar="SIZE", help="working memory for pair batches "
                   "(default 512M)")
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing on success")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except InfinetError as err:
        print(str(err), file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("error: out of memory; lower --max-memory or evaluate fewer inputs at once",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
