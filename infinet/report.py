"""A plan as text: the summary ``infinet check`` prints and the per-layer table of
``infinet explain``; in Python ``k.summary()``, ``k.explain()`` and ``k.plan.summary()``.
"""
from __future__ import annotations

from .ir import demand as demand_analysis
from .ir.plan import Plan, human_bytes, human_count


def summary(plan: Plan) -> str:
    """The plan summary of ``infinet check``: input, layers, readout demand, cost."""
    counts = plan.counts()
    lines = [f"{plan.filename}: ok: net {plan.name}, {len(plan.nodes) - 1} layers"]
    if plan.params:
        lines.append("  params     " + ", ".join(f"{k} = {v:g}" for k, v in plan.params.items()))
    shape = plan.input_shape
    what = {0: "vectors", 1: "sequences (NLC)", 2: "images (NHWC)", 3: "volumes (NDHWC)"}[
        shape.rank]
    lines.append(f"  input      {'x'.join(map(str, plan.data_shape))} {what}")
    lines.append("  layers     " + (", ".join(f"{n} {k}" for k, n in counts.items()) or "none"))
    for readout in (n for n in plan.nodes if n.layer.family == "readout"):
        prev = plan.nodes[readout.inputs[0]]
        lines.append(f"  readout    {readout.layer.keyword} at line {readout.layer.pos.line}: "
                     f"needs offsets {demand_analysis.describe(prev.shape, prev.pair_demand)}")
    pt, st = plan.pair_total, plan.self_total
    peak = max(n.pair_cost.bytes for n in plan.nodes)
    lines.append(f"  per pair   {human_count(pt.flops)} flops, {human_count(pt.transcendentals)} "
                 f"transcendentals; largest state {human_count(plan.peak_entries)} entries "
                 f"({human_bytes(peak)} at float64)")
    lines.append(f"  per input  {human_count(st.flops)} flops, {human_count(st.transcendentals)} "
                 f"transcendentals (self-variances; {plan.self_variance_entries()} numbers kept)")
    return "\n".join(lines)


def explain(plan: Plan) -> str:
    """The table of ``infinet explain``: per layer its output shape, the offsets it must
    provide, and its work and memory per pair."""
    header = ("#", "line", "layer", "output", "offsets needed", "entries/pair", "flops/pair",
              "bytes/pair", "self offsets", "reads")
    rows = []
    for n in plan.nodes:
        reads = ",".join(map(str, n.inputs)) if n.inputs != (n.index - 1,) else ""
        rows.append((str(n.index), str(n.layer.pos.line), n.layer.describe(), str(n.shape),
                     demand_analysis.describe(n.shape, n.pair_demand),
                     f"{n.pair_cost.entries:,}", human_count(n.pair_cost.flops),
                     human_bytes(n.pair_cost.bytes),
                     demand_analysis.describe(n.shape, n.self_demand), reads))
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
    out.append("offsets: p' - p per spatial axis of the covariance entries a layer's "
               "output must provide; '-' = not needed; reads: the states a layer reads, where "
               "not the one before it")
    return "\n".join(out)
