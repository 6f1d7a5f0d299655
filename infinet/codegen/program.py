"""Lowering a :class:`~infinet.ir.plan.Plan` to a *kernel program*: stages over offset planes.

This is the code generator's own IR, one step below the plan.  Everything in it is a
compile-time constant of the generated source.

Between plane-mixing layers each offset plane {Σ[p, p + d] : p} of a pair's covariance
evolves on its own: a non-circular conv maps output plane D to input plane s·D, an
elementwise layer or a sum maps every plane to itself.  A :class:`Stage` is a region of
such *plane-local* nodes of the graph with one *sink* state: one work item of a stage is
one (pair, plane D of the sink); it keeps the planes of its states in small local
buffers (shared memory on a GPU, the stack on a CPU) — state s at plane mult_s·D —
runs every node of the region on them and writes either its share of a readout
(flatten/gap) or the sink's plane into a materialised state for later stages.

Regions are grown backwards from the sinks: the input of every readout, of every
plane-mixing layer (pooling, circular conv) and — on the self pass — of every layer that
needs the variances of a state holding more planes than plane 0.  A state that two
stages need, or that one stage needs at two plane multipliers, becomes a sink of its
own (materialised, then read by the later stages: ``load``); this repeats until the
regions are consistent.  After the readout the state is one number per pair and the
*tail* (dense layers, activations, sums of flat states) runs once per pair.

Geometry is canonical: three spatial axes (depth, height, width), with size-1 axes
prepended for sequences and images, so one printer serves every input rank.

Two passes are lowered: the *pair* pass (Σ and Θ of (x, x'), variances v from tables),
and the *self* pass (Σ(x, x) only, once per input, recording v of every variance
state).  A third, *pairk*, is the pair pass without Θ (the NNGP alone).  Every node uses
the same printed per-entry code in every pass, so for x = x' the pair pass reproduces the
self pass bit for bit — which keeps relu's √(v v' − Σ²) exactly 0 on the diagonal, as
in the reference executor.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from ..errors import InfinetError
from ..ir.plan import NodePlan, Plan
from ..layers.base import conv_geometry
from .printer import ElementwiseFunction, print_elementwise

#: math-namespace functions whose printed C gives the same bits in a vector lane as in
#: scalar code (correctly rounded operations, or fixed sequences of them: math.j2)
VECTOR_EXACT = frozenset({"sqrt", "sqrt_fast", "abs", "rsqrt", "acos_sc", "asin_sc", "tiny"})
#: GPU threads per work item are a multiple of this (one warp per plane row).
WARP = 32
#: GPU threads per work item of a stage walked by columns (at most; codegen/columns.py)
COLUMN_TEAM = 128
#: every spatial state is padded to this many axes (depth, height, width)
AXES = 3


class CodegenError(InfinetError):
    """The code generator cannot print a layer (a layer family it does not know)."""


def canon(spatial: tuple[int, ...], fill: int = 1) -> tuple[int, ...]:
    """A spatial tuple padded at the front to AXES axes with ``fill``."""
    return (fill,) * (AXES - len(spatial)) + tuple(spatial)


def canon_planes(demand, rank: int) -> tuple[tuple[int, ...], ...]:
    return ((0,),) * (AXES - rank) + tuple(tuple(d) for d in demand)


# -- the stage IR ---------------------------------------------------------------------------

@dataclass(frozen=True)
class AxisGeom:
    """One spatial axis of a window op: sizes and window arithmetic."""

    n_in: int
    n_out: int
    q: int = 1          # filter / window size
    stride: int = 1
    low: int = 0        # low-side padding


@dataclass
class Source:
    """A materialised state a stage reads: [items][planes][positions] (zeros outside)."""

    state: int
    size: tuple[int, int, int]
    planes: tuple[tuple[int, ...], ...]
    t_live: bool

    @property
    def nplanes(self) -> int:
        return math.prod(len(o) for o in self.planes)

    @property
    def plane_size(self) -> int:
        return math.prod(self.size)

    def entries(self) -> int:
        return self.nplanes * self.plane_size


@dataclass
class Op:
    """One node of a stage (or of a tail), with everything the printer needs."""

    index: int               # the node / state it produces
    line: int                # .net line
    text: str                # the layer as written (describe())
    kind: str                # input | conv | pool | cconv | gconv | load | slot | ew | sum
    mult: tuple[int, int, int] = (1, 1, 1)
    size: tuple[int, int, int] = (1, 1, 1)      # the output state's spatial size
    axes: tuple[AxisGeom, ...] = ()
    weights: tuple[float, ...] = ()             # pool: per-axis weight of a window-pair sum
    W2: float = 1.0
    B2: float = 0.0
    trains: bool = False
    reads: int = -1          # the state it reads (main input)
    source: int = -1         # head/load ops: the materialised state (index into sources)
    src_slot: int = -1       # conv/slot: the local buffer slot it reads
    operands: list = field(default_factory=list)   # sum: [("chain"|"slot"|"load", n)]
    fn: ElementwiseFunction | None = None           # ew
    v_source: str = ""       # ew: table | self | source
    v_state: int = -1        # ew: the state whose variances it reads
    voff: int = 0            # ew (table): offset of v_state's row in the packed table
    vsize: tuple[int, int, int] = (1, 1, 1)   # ew: the variance state's spatial size
    v_src: int = -1          # ew (source): the source index of v_state
    foff: int = -1           # ew (table): offset of the first feature row of v_state for
    #                          this layer (feature k at foff + k·size); -1: computed inline
    record: bool = False     # self pass: record v of this state (plane 0)
    record_off: int = 0
    t_in: bool = False       # Θ is live (nonzero) at the input of this op
    t_out: bool = False      # Θ is live at the output
    channels: int = 0        # input: features

    @property
    def mixing(self) -> bool:
        return self.kind in ("pool", "cconv", "gconv", "load")


@dataclass
class Sweep:
    """One pass over a plane: a starter op and the entry-wise ops fused after it."""

    ops: list[Op]
    stores: dict[int, int] = field(default_factory=dict)   # position in ops -> slot
    mult: tuple[int, int, int] = (1, 1, 1)
    size: tuple[int, int, int] = (1, 1, 1)   # the output state's size (valid region)
    t_out: bool = False

    @property
    def starter(self) -> Op:
        return self.ops[0]

    @property
    def last(self) -> Op:
        return self.ops[-1]


@dataclass
class Stage:
    name: str
    pass_: str                       # pair | self | pairk
    nodes: list[Op]                  # the region's ops in topological order
    sweeps: list[Sweep]
    planes: tuple[tuple[int, ...], ...]   # the sink's offsets per axis (work items per pair)
    sink: int                        # the sink state
    exports: bool = False            # the sink is materialised for later stages
    partials: bool = False           # per-plane sums of the sink feed readouts
    readout_text: str = ""           # which readouts (for comments)
    sink_slot: int = -1
    sink_size: tuple[int, int, int] = (1, 1, 1)
    sources: list[Source] = field(default_factory=list)
    slots: int = 1
    t_slots: set = field(default_factory=set)   # slots whose Θ buffer is used
    uniform: bool = False            # every state keeps the geometry: only the valid region
    halo: tuple[int, int, int] = (0, 0, 0)
    extent: tuple[int, int, int] = (1, 1, 1)   # padded local buffer size per axis
    threads: int = 32                # GPU threads per work item

    @property
    def nplanes(self) -> int:
        return math.prod(len(o) for o in self.planes)

    @property
    def plane_entries(self) -> int:
        return math.prod(self.extent)

    @property
    def t_pass(self) -> bool:
        return self.pass_ == "pair"

    @property
    def sink_t(self) -> bool:
        return self.t_pass and self.sink_slot in self.t_slots

    @property
    def scratch(self) -> int:
        """Local entries per work item: K (and Θ) slot buffers plus a reduction area."""
        bufs = self.slots * (2 if self.t_pass else 1)
        return bufs * self.plane_entries + 2 * self.threads

    @property
    def first_line(self) -> int:
        return min(op.line for op in self.nodes)

    @property
    def last_line(self) -> int:
        return max(op.line for op in self.nodes)

    def state_entries(self) -> int:
        """Entries of the materialised sink per work item group (one pair)."""
        return self.nplanes * math.prod(self.sink_size)


@dataclass
class PassProgram:
    pass_: str                       # pair | self | pairk
    stages: list[Stage]
    tail: list[Op]
    readouts: dict[int, tuple["Stage", float, tuple[int, ...]]] = field(default_factory=dict)
    # readout node -> (the stage whose per-plane sums it reads, 1/entries, which planes)
    out_state: int = -1              # the output (pair passes)
    active: bool = True              # the self pass of a network without variances is empty
    buffers: list[tuple[str, int, bool]] = field(default_factory=list)
    # materialised buffers: (name, entries per item, is a Θ buffer)
    reductions: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    # self pass: (after stage k, state, its v offset, positions, offset of its mean):
    # the mean of a state's v over its positions (layernorm axes=all)

    @property
    def with_t(self) -> bool:
        return self.pass_ == "pair"

    def buffer_entries(self) -> int:
        """Materialised entries per pair across stages (states and readout partials)."""
        return sum(n for _, n, _ in self.buffers)


@dataclass
class KernelProgram:
    name: str
    filename: str
    plan: Plan
    data_shape: tuple[int, ...]
    x_size: int
    channels: int
    pair: PassProgram
    self_: PassProgram
    pairk: PassProgram
    vtable: dict[int, tuple[int, int]] = field(default_factory=dict)  # state -> (offset, size)
    vmeans: dict[int, int] = field(default_factory=dict)   # state -> offset of its mean v
    functions: list[ElementwiseFunction] = field(default_factory=list)
    #: per-input features of variance states (Elementwise.features), after v and the means
    vfeatures: list["FeatureBlock"] = field(default_factory=list)

    @property
    def passes(self) -> list[PassProgram]:
        return [p for p in (self.self_, self.pair, self.pairk) if p.active]

    @property
    def vt_size(self) -> int:
        return sum(size for _, size in self.vtable.values()) + len(self.vmeans) + \
            sum(b.n * b.size for b in self.vfeatures)

    @property
    def self_diagonal_only(self) -> bool:
        """Whether the self pass evaluates plane (0, 0, 0) only.  There every activation
        has s = 0 exactly, so atan2 returns 0 or π whichever implementation (scalar libm or
        a vector libmvec lane) computes it, and the pair pass reproduces the self pass bit
        for bit on x = x′ however either pass is vectorised."""
        return not self.self_.active or all(st.nplanes == 1 for st in self.self_.stages)

    @property
    def vector_blocks_safe(self) -> bool:
        """Whether the CPU target may walk uniform rows in vector blocks in every pass:
        where the self pass is plane 0 alone (self_diagonal_only), or where no per-entry
        function calls a C library function whose vector (libmvec) and scalar versions may
        differ in the last bit — only correctly rounded operations and the θ polynomial
        (VECTOR_EXACT) — so that an entry gets the same bits in a vector lane and in
        scalar code, and the pair pass reproduces the self pass on x = x′ bit for bit."""
        if self.self_diagonal_only:
            return True
        for fn in self.functions:
            for line in fn.body + fn.features_body:
                if set(re.findall(r"\binf_(\w+)\(", line)) - VECTOR_EXACT:
                    return False
        return True

    @property
    def pad_entries(self) -> int:
        """Entries of slack after every array the CPU target's vector blocks read: a block
        may read up to one vector (64 bytes or less: <= 16 entries) past a row's end,
        times the input channels or a window's stride, and discards what it read."""
        stride = max((g.stride for pas in self.passes for st in pas.stages
                      for op in st.nodes for g in op.axes), default=1)
        return 16 * (self.channels + stride + 3)

    @property
    def buffer_names(self) -> list[str]:
        """Every materialised buffer of every pass, in order (kernel arguments)."""
        seen: list[str] = []
        for pas in self.passes:
            for name, _, _ in pas.buffers:
                if name not in seen:
                    seen.append(name)
        return seen


@dataclass(frozen=True)
class FeatureBlock:
    """``n`` rows of ``size`` entries at ``offset`` of the packed variance table: the
    features ``layer.features(m, v)`` of state ``state``'s variances (feature k of
    position p at offset + k·size + p), filled once per input by the executors."""

    state: int
    offset: int
    size: int
    n: int
    layer: object
    key: str


# -- lowering -----------------------------------------------------------------------------

def lower_program(plan: Plan) -> KernelProgram:
    """The stages of the pair and self passes of a plan (see the module docstring)."""
    vtable: dict[int, tuple[int, int]] = {}
    offset = 0
    for s in plan.variance_states:
        size = max(plan.nodes[s].shape.positions, 1)
        vtable[s] = (offset, size)
        offset += size
    vmeans = {s: offset + k for k, s in enumerate(plan.mean_states)}
    functions: dict[str, ElementwiseFunction] = {}
    ctx = _Context(plan, vtable, functions, vmeans, {}, offset + len(vmeans))
    inp = plan.input
    channels = inp.shape.channels or 1
    pair = _lower_pass(ctx, "pair")
    self_ = _lower_pass(ctx, "self")
    pairk = _lower_pass(ctx, "pairk")
    if not any(st.t_slots for st in pair.stages) and not any(op.t_out for op in pair.tail):
        pairk.active = False       # Θ is zero throughout: the pair pass is the NNGP pass
    return KernelProgram(name=plan.name, filename=plan.filename, plan=plan,
                         data_shape=plan.data_shape, x_size=math.prod(plan.data_shape),
                         channels=channels, pair=pair, self_=self_, pairk=pairk,
                         vtable=vtable, vmeans=vmeans, functions=list(functions.values()),
                         vfeatures=list(ctx.features.values()))


@dataclass
class _Context:
    plan: Plan
    vtable: dict
    functions: dict
    vmeans: dict
    features: dict          # (state, features text) -> FeatureBlock
    next_offset: int        # where the next feature block of the variance table goes

    def function(self, layer) -> ElementwiseFunction:
        fn = print_elementwise(layer, f"inf_ew{len(self.functions)}")
        if fn.body_key not in self.functions:
            self.functions[fn.body_key] = fn
        return self.functions[fn.body_key]

    def feature_offset(self, state: int, fn: ElementwiseFunction, layer) -> int:
        """The offset of the feature rows of ``state`` for ``fn`` (allocated once per
        state and distinct features formula)."""
        key = (state, "\n".join(fn.features_body + fn.features_returns))
        if key not in self.features:
            size = self.vtable[state][1]
            self.features[key] = FeatureBlock(state, self.next_offset, size,
                                              fn.n_features, layer, key[1])
            self.next_offset += fn.n_features * size
        return self.features[key].offset


def _demand(node: NodePlan, which: str):
    return node.pair_demand if which in ("pair", "pairk") else node.self_demand


def _needed(plan: Plan, which: str) -> list[NodePlan]:
    if which != "self":
        return [n for n in plan.nodes if n.pair_demand is not None]
    if not plan.variance_states:
        return []
    last = max(plan.variance_states)
    return [n for n in plan.nodes if n.self_demand is not None and n.index <= last]


def _t_live(plan: Plan, which: str) -> dict[int, bool]:
    """Whether Θ is nonzero at each state (pair pass only)."""
    live: dict[int, bool] = {}
    for n in plan.nodes:
        live[n.index] = which == "pair" and (n.layer.trains or any(live[j] for j in n.inputs))
    return live


def _regions(plan: Plan, which: str, needed: list[NodePlan]):
    """Stage sinks and the region (node -> (sink, mult)) of every spatial node."""
    nodes = plan.nodes
    need = {n.index for n in needed}
    spatial = {i for i in need if not nodes[i].shape.is_flat}
    sinks: dict[int, set] = {}
    for n in needed:
        loc = n.layer.locality
        if loc == "readout":
            sinks.setdefault(n.inputs[0], set()).add("readout")
        elif loc == "mixing":
            sinks.setdefault(n.inputs[0], set()).add("buffer")
    if which == "self":
        for n in needed:
            if n.layer.variance_stat is None or n.index not in spatial:
                continue
            s = n.inputs[0]
            # v of other positions than the entry's own: read from memory, after the stage
            # that computes it (and, for a mean, after the reduction that follows it)
            if any(offs != (0,) for offs in nodes[s].self_demand) or \
                    n.layer.variance_stat == "mean":
                sinks.setdefault(s, set()).add("buffer")
        for i in sorted(spatial):
            if not any(c in need for c in nodes[i].consumers):
                sinks.setdefault(i, set())
    while True:
        region: dict[int, tuple[int, tuple[int, ...]]] = {}
        conflict = None
        for t in sorted(sinks, reverse=True):
            region[t] = (t, (1,) * nodes[t].shape.rank)
            queue = [t]
            while queue and conflict is None:
                i = queue.pop()
                n = nodes[i]
                if n.layer.locality in ("mixing", "input"):
                    continue
                stride = n.layer.plane_stride(n.shape.rank)
                mult = tuple(m * s for m, s in zip(region[i][1], stride))
                for u in n.inputs:
                    if u in sinks and u != t:
                        continue                  # read from memory
                    if u in region:
                        if region[u] != (t, mult):
                            conflict = u
                            break
                        continue
                    region[u] = (t, mult)
                    queue.append(u)
            if conflict is not None:
                break
        if conflict is None:
            return sinks, region
        sinks.setdefault(conflict, set()).add("buffer")


def _lower_pass(ctx: _Context, which: str) -> PassProgram:
    plan = ctx.plan
    nodes = plan.nodes
    needed = _needed(plan, which)
    prog = PassProgram(which, [], [], out_state=nodes[-1].index if which != "self" else -1)
    if which == "self" and not needed:
        prog.active = False
        return prog
    live = _t_live(plan, which)
    sinks, region = _regions(plan, which, needed)
    need = {n.index for n in needed}
    record = set(plan.variance_states) if which == "self" else set()
    # stages in the order of their sinks (a stage only reads earlier sinks)
    materialised: dict[int, Source] = {}
    stage_of_sink: dict[int, Stage] = {}
    for t in sorted(sinks):
        members = sorted(i for i, (s, _) in region.items() if s == t)
        stage = _stage(ctx, which, len(prog.stages), t, sinks[t], members, region,
                       live, record, materialised)
        prog.stages.append(stage)
        stage_of_sink[t] = stage
        if which == "self" and t in ctx.vmeans:
            off, size = ctx.vtable[t]
            prog.reductions.append((len(prog.stages) - 1, t, off, size, ctx.vmeans[t]))
        if stage.exports:
            node = nodes[t]
            materialised[t] = Source(t, canon(node.shape.spatial),
                                     canon_planes(_demand(node, which), node.shape.rank),
                                     live[t])
            prog.buffers.append((f"st{t}_k", stage.state_entries(), False))
            if live[t]:
                prog.buffers.append((f"st{t}_t", stage.state_entries(), True))
    # the tail: every needed flat node, in order
    for n in needed:
        if not n.shape.is_flat:
            continue
        prog.tail.append(_tail_op(ctx, which, n, live, record))
        if n.layer.locality == "readout":
            st = stage_of_sink[n.inputs[0]]
            src = nodes[n.inputs[0]]
            own = n.layer.demand((), [src.shape], n.shape)[0]
            count = math.prod(_pairs(nn, offs) for nn, offs in zip(src.shape.spatial, own))
            planes = _plane_indices(st.planes, canon_planes(own, src.shape.rank))
            prog.readouts[n.index] = (st, 1.0 / count, planes)
            st.readout_text += (", " if st.readout_text else "") + \
                f"{n.layer.keyword} (line {n.layer.pos.line})"
    for st in prog.stages:
        if st.partials:
            prog.buffers.append((f"part{st.sink}_k", st.nplanes, False))
            if st.sink_t:
                prog.buffers.append((f"part{st.sink}_t", st.nplanes, True))
    return prog


def _plane_indices(planes, wanted) -> tuple[int, ...]:
    """Indices (in the flattened plane order of ``planes``) of the planes in ``wanted``."""
    import itertools
    order = list(itertools.product(*planes))
    want = set(itertools.product(*wanted))
    return tuple(k for k, p in enumerate(order) if p in want)


def _pairs(n: int, offsets) -> int:
    return sum(n - abs(d) for d in offsets if abs(d) < n)


def _stage(ctx, which, number, sink, kinds, members, region, live, record,
           materialised) -> Stage:
    plan = ctx.plan
    nodes = plan.nodes
    sink_node = nodes[sink]
    stage = Stage(name=f"{which}_stage{number}", pass_=which, nodes=[], sweeps=[],
                  planes=canon_planes(_demand(sink_node, which), sink_node.shape.rank),
                  sink=sink, exports="buffer" in kinds, partials="readout" in kinds,
                  sink_size=canon(sink_node.shape.spatial))
    sources: dict[int, int] = {}

    def source(state: int) -> int:
        if state not in materialised:
            raise CodegenError(f"internal: state {state} is read before it is materialised")
        if state not in sources:
            sources[state] = len(stage.sources)
            stage.sources.append(materialised[state])
        return sources[state]

    member_set = set(members)
    ops: dict[int, Op] = {}
    for i in members:
        n = nodes[i]
        mult = canon(region[i][1])
        op = Op(i, n.layer.pos.line, n.layer.describe(), "", mult=mult,
                size=canon(n.shape.spatial), trains=which == "pair" and n.layer.trains,
                t_in=any(live[j] for j in n.inputs), t_out=live[i],
                reads=n.inputs[0] if n.inputs else -1)
        if i in record:
            op.record, op.record_off = True, ctx.vtable[i][0]
        fam = n.layer.family
        if fam == "input":
            op.kind = "input"
            op.channels = plan.input.shape.channels or 1
        elif fam in ("conv", "pool"):
            src = nodes[n.inputs[0]]
            strides = n.layer.strides() if fam == "pool" else \
                (n.layer.stride,) * src.shape.rank
            geo = []
            for nn, nout, q, s in zip(src.shape.spatial, n.shape.spatial, n.layer.size,
                                      strides):
                geo.append(AxisGeom(nn, nout, q, s, conv_geometry(nn, q, s, n.layer.pad)[1]))
            op.axes = tuple([AxisGeom(1, 1)] * (AXES - len(geo)) + geo)
            if fam == "conv":
                op.W2, op.B2 = n.layer.W ** 2, n.layer.b ** 2
                local = n.inputs[0] in member_set
                if n.layer.pad == "circular":
                    op.kind = "cconv"
                    op.source = source(n.inputs[0])
                elif local:
                    op.kind = "conv"
                else:
                    op.kind = "gconv"
                    op.source = source(n.inputs[0])
            else:
                op.kind = "pool"
                op.source = source(n.inputs[0])
                w = [n.layer.axis_weight(k) for k in range(len(geo))]
                op.weights = tuple([1.0] * (AXES - len(geo)) + w)
        elif fam == "elementwise":
            op.kind = "ew"
            op.fn = ctx.function(n.layer)
            if n.layer.variance_stat is not None:
                s = n.inputs[0]
                op.v_state = s
                op.vsize = canon(nodes[s].shape.spatial)
                if n.layer.variance_stat == "mean":      # one number per input, every pass
                    op.v_source, op.voff, op.vsize = "table", ctx.vmeans[s], (1, 1, 1)
                elif which != "self":
                    op.v_source, op.voff = "table", ctx.vtable[s][0]
                    if op.fn.n_features:
                        op.foff = ctx.feature_offset(s, op.fn, n.layer)
                elif all(offs == (0,) for offs in stage.planes):
                    op.v_source = "self"
                else:
                    op.v_source = "source"
                    op.v_src = source(s)
        elif fam == "sum":
            op.kind = "sum"
        else:
            raise CodegenError(f"the code generator has no implementation of layer "
                               f"'{n.layer.keyword}' (family '{fam}')")
        ops[i] = op
        stage.nodes.append(op)
    _sweeps(stage, ops, nodes, member_set, source, which)
    _finish_stage(stage)
    return stage


def _sweeps(stage: Stage, ops: dict[int, Op], nodes, members: set, source, which) -> None:
    """Group the region's ops into sweeps, fusing entry-wise ops into the sweep that
    produces their main input, and give every state that is read from memory later (a
    stencil's input, a sum operand, several readers, the sink) a local buffer slot."""
    order = sorted(ops)
    readers: dict[int, list[int]] = {i: [c for c in nodes[i].consumers if c in members]
                                     for i in order}
    sweeps: list[Sweep] = []
    where: dict[int, tuple[int, int]] = {}     # state -> (sweep, position in its ops)
    for i in order:
        op = ops[i]
        n = nodes[i]
        entrywise = op.kind in ("ew", "sum")
        cur = sweeps[-1] if sweeps else None
        main = n.inputs[0] if n.inputs else -1
        if op.kind == "sum":
            # fused into the sweep of whichever operand is the chain's current value
            # (the operands are still added in the order of the graph: see the printer)
            last = (len(sweeps) - 1, len(cur.ops) - 1) if cur is not None else None
            main = next((j for j in n.inputs if where.get(j) == last), n.inputs[0])
        fused = (entrywise and cur is not None and main in where
                 and where[main] == (len(sweeps) - 1, len(cur.ops) - 1)
                 and ops[main].mult == op.mult)
        if op.kind == "sum":
            operands = []
            for j in n.inputs:
                if fused and j == main:
                    operands.append(("chain", j, ops[j].t_out))
                elif j in members:
                    operands.append(("slot", j, ops[j].t_out))
                else:
                    operands.append(("load", source(j), stage.sources[source(j)].t_live))
            op.operands = operands
        if fused:
            cur.ops.append(op)
        else:
            if entrywise:
                if main in members:
                    op_start = Op(main, op.line, op.text, "slot", mult=op.mult, size=op.size,
                                  reads=main, t_in=op.t_in, t_out=op.t_in)
                else:
                    op_start = Op(main, op.line, op.text, "load", mult=op.mult, size=op.size,
                                  reads=main, source=source(main), t_in=op.t_in,
                                  t_out=op.t_in)
                if op.kind == "sum":      # the sum itself reads every operand
                    sweeps.append(Sweep([op], mult=op.mult, size=op.size))
                else:
                    sweeps.append(Sweep([op_start, op], mult=op.mult, size=op.size))
            else:
                sweeps.append(Sweep([op], mult=op.mult, size=op.size))
        sw = sweeps[-1]
        where[i] = (len(sweeps) - 1, len(sw.ops) - 1)
        sw.t_out = op.t_out
    # which values must be stored: read by anything but the op fused right after them
    stored: dict[int, int] = {}               # state -> slot
    need_store: set[int] = set()
    for i in order:
        pos = where[i]
        for c in readers[i]:
            cs, cp = where[c]
            sw = sweeps[cs]
            direct = (cs == pos[0] and cp == pos[1] + 1 and
                      (ops[c].kind == "ew" or
                       (ops[c].kind == "sum" and any(k == "chain" and j == i
                                                     for k, j, _ in ops[c].operands))))
            if not direct:
                need_store.add(i)
        if i == stage.sink:
            need_store.add(i)
    # slots: linear scan over sweeps (a slot is free after the last sweep reading it)
    last_read: dict[int, int] = {}
    for i in need_store:
        reads = [where[c][0] for c in readers[i]]
        last_read[i] = max(reads + [where[i][0]] + ([len(sweeps)] if i == stage.sink else []))
    free: list[int] = []
    nslots = 0
    active: dict[int, int] = {}
    for s, sw in enumerate(sweeps):
        for state in [st for st, end in list(last_read.items())
                      if st in active and end < s]:
            free.append(active.pop(state))
            del last_read[state]
        for p, op in enumerate(sw.ops):
            if op.kind in ("slot", "load") and p == 0 and len(sw.ops) > 1:
                continue          # a starter that only reads
            if op.index in need_store and op.index not in active:
                slot = free.pop() if free else nslots
                if slot == nslots:
                    nslots += 1
                active[op.index] = slot
                stored[op.index] = slot
                sw.stores[p] = slot
                if op.t_out and stage.t_pass:
                    stage.t_slots.add(slot)
    for sw in sweeps:
        for op in sw.ops:
            if op.kind in ("conv", "slot"):
                op.src_slot = stored[op.reads]
            if op.kind == "sum":
                op.operands = [(k, stored[j], t) if k == "slot" else (k, j, t)
                               for k, j, t in op.operands]
    stage.sweeps = sweeps
    stage.slots = max(nslots, 1)
    stage.sink_slot = stored[stage.sink]


def _finish_stage(stage: Stage) -> None:
    """The local buffer's padding, whether the geometry is uniform, the GPU team size."""
    halo, extent = [], []
    for ax in range(AXES):
        lo = hi = 0
        for op in stage.nodes:
            hi = max(hi, op.size[ax] * 1)
            if op.kind == "conv":
                g = op.axes[ax]
                lo = max(lo, g.low)
                hi = max(hi, g.stride * (g.n_out - 1) + g.q - g.low, g.n_in)
        halo.append(lo)
        extent.append(lo + hi)
    stage.halo = tuple(halo)
    stage.extent = tuple(extent)
    # uniform: every state of the stage has the sink's size and multiplier 1, so the valid
    # region of a plane is the same for all of them: zero the padding ring around it once
    # per work item, then every sweep touches only that region
    stage.uniform = all(op.size == stage.sink_size and op.mult == (1, 1, 1) and
                        (op.kind != "conv" or all(g.n_in == g.n_out and g.stride == 1
                                                  for g in op.axes))
                        for op in stage.nodes)
    rows = extent[0] * extent[1]
    stage.threads = 32 * min(8, _pow2_at_least(max(rows, 1)))
    if stage.uniform and extent[0] == 1 and stage.sink_size[1] > 1 and \
            stage.sink_size[2] <= COLUMN_TEAM:
        # the CUDA target walks such a stage by columns (codegen/columns.py): a smaller
        # team gives each thread a longer band of rows (the register stencil's rows above
        # the band's first entry are read once per band) and fewer warps per plane
        stage.threads = min(stage.threads, COLUMN_TEAM)


def _tail_op(ctx, which, n: NodePlan, live, record) -> Op:
    op = Op(n.index, n.layer.pos.line, n.layer.describe(), "",
            trains=which == "pair" and n.layer.trains,
            t_in=any(live[j] for j in n.inputs), t_out=live[n.index],
            reads=n.inputs[0] if n.inputs else -1)
    if n.index in record:
        op.record, op.record_off = True, ctx.vtable[n.index][0]
    fam = n.layer.family
    if fam == "input":
        op.kind, op.channels = "input", n.shape.channels
    elif fam == "readout":
        op.kind = "readout"
    elif fam == "affine":
        op.kind, op.W2, op.B2 = "dense", n.layer.W ** 2, n.layer.b ** 2
    elif fam == "elementwise":
        op.kind = "ew"
        op.fn = ctx.function(n.layer)
        if n.layer.variance_stat is not None:
            op.v_state = n.inputs[0]
            op.v_source = "table" if which != "self" else "self"
            op.voff = ctx.vtable[n.inputs[0]][0] if which != "self" else 0
            if which != "self" and op.fn.n_features:
                op.foff = ctx.feature_offset(n.inputs[0], op.fn, n.layer)
    elif fam == "sum":
        op.kind = "sum"
        op.operands = [("var", j, live[j]) for j in n.inputs]
    else:
        raise CodegenError(f"the code generator has no implementation of layer "
                           f"'{n.layer.keyword}' (family '{fam}') on flat states")
    return op


def _pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p
