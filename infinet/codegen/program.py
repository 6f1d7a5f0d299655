"""Lowering a :class:`~infinet.ir.plan.Plan` to a *kernel program*: stages over offset planes.

This is the code generator's own IR, one step below the plan.  Everything in it is a
compile-time constant of the generated source.

Between pooling layers each offset plane {Σ[p, p + d] : p} of a pair's covariance
evolves on its own (SPEC §2.1): a non-circular conv maps output plane D to input plane
s·D, an activation maps every plane to itself.  A :class:`Stage` is a maximal run of
such *plane-local* layers.  One work item of a stage is one (pair, output plane); it
keeps that plane in a small local buffer (shared memory on a GPU, the stack on a CPU),
runs every layer of the stage on it and writes either its share of the readout
(flatten/gap) or the plane into a materialised state for the next stage.

Layers that mix planes — avgpool, and a circular conv (wrapping couples offset d with
d ± n) — start a new stage as its *head*: they read the previous stage's materialised
state with explicit tap arithmetic.  After the readout the state is one number per
pair and the *tail* (dense layers, activations) runs once per pair.

Two passes are lowered: the *pair* pass (Σ and Θ of (x, x'), variances v from tables)
and the *self* pass (Σ(x, x) only, once per input, recording v at every nonlinearity).
In the self pass an activation takes v from plane 0 of its own input; inside a fused
stage that is only possible when the stage is plane 0 alone, so the self pass cuts a
stage before an activation whose input has other planes too (head ``load``).

Every step uses the same per-entry functions in both passes, so for x = x' the pair
pass reproduces the self pass bit for bit — which keeps relu's √(v v' − Σ²) exactly 0
on the diagonal, as in the reference executor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..ir.layers import (Activation, AvgPool, Conv, Dense, Flatten, GlobalAvgPool, Input,
                         conv_geometry)
from ..ir.plan import Plan

#: GPU threads per work item are a multiple of this (one warp per plane row).
WARP = 32


@dataclass(frozen=True)
class AxisGeom:
    """One spatial axis of a layer inside a stage: sizes and window arithmetic."""

    n_in: int
    n_out: int
    q: int = 1          # filter / window size
    stride: int = 1
    low: int = 0        # low-side padding
    mult: int = 1       # this layer's output offset = mult * (stage output offset)


@dataclass
class Op:
    """One layer of a stage, with everything the printer needs."""

    index: int               # layer index in the plan (state index it produces)
    line: int                # .net line
    text: str                # the layer as written (describe())
    kind: str                # input | conv | act | pool | cconv | load
    axes: tuple[AxisGeom, ...] = ()
    W2: float = 1.0
    B2: float = 0.0
    trains: bool = False
    fn: str = ""             # activation: abrelu | erf
    a: float = 0.0
    b: float = 1.0
    v_source: str = ""       # activation: table | self | inbuf
    record: bool = False     # self pass: record v (pre-activation Σ at plane 0)
    voff: int = 0            # offset of this activation's v in the packed v table
    t_in: bool = False       # Θ is live (nonzero) at the input of this op
    t_out: bool = False      # Θ is live at the output

    @property
    def mixing(self) -> bool:
        return self.kind in ("pool", "cconv", "load")


@dataclass
class Stage:
    name: str
    pass_: str                       # pair | self
    ops: list[Op]
    planes: tuple[tuple[int, ...], ...]   # output offsets per axis (work items per pair)
    out_size: tuple[int, ...]        # spatial size of the stage's output state
    in_state: int | None = None      # index of the materialised state it reads
    in_size: tuple[int, ...] = ()
    in_planes: tuple[tuple[int, ...], ...] = ()
    sink: str = "buffer"             # buffer | readout
    readout: str = ""                # gap | flatten
    readout_line: int = 0
    readout_index: int = 0
    out_state: int = 0
    uniform: bool = False            # every op keeps the geometry: loop over valid entries only
    halo: tuple[int, ...] = ()
    extent: tuple[int, ...] = ()     # padded local buffer size per axis
    threads: int = 32                # GPU threads per work item

    @property
    def nplanes(self) -> int:
        return math.prod(len(o) for o in self.planes)

    @property
    def plane_entries(self) -> int:
        return math.prod(self.extent)

    @property
    def t_live(self) -> bool:
        return self.pass_ == "pair" and self.ops[-1].t_out

    @property
    def t_in(self) -> bool:
        return self.pass_ == "pair" and self.ops[0].t_in

    @property
    def scratch(self) -> int:
        """Local entries per work item: K (and Θ) ping-pong buffers plus a reduction area."""
        bufs = 4 if self.pass_ == "pair" else 2
        return bufs * self.plane_entries + 2 * self.threads

    @property
    def first_line(self) -> int:
        return min(op.line for op in self.ops)

    @property
    def last_line(self) -> int:
        return max(op.line for op in self.ops)

    def state_entries(self) -> int:
        """Entries of the materialised output state per work item group (one pair)."""
        return self.nplanes * math.prod(self.out_size)


@dataclass
class TailOp:
    index: int
    line: int
    text: str
    kind: str                  # dense | act | input
    W2: float = 1.0
    B2: float = 0.0
    trains: bool = False
    fn: str = ""
    a: float = 0.0
    b: float = 1.0
    voff: int = 0
    record: bool = False
    t_in: bool = False
    t_out: bool = False
    channels: int = 0          # input: features


@dataclass
class PassProgram:
    pass_: str
    stages: list[Stage]
    tail: list[TailOp]
    readout_scale: float = 1.0     # gap: 1/(H² W²), flatten: 1/(H W)
    readout_stage: int = -1        # index of the stage whose partial sums feed the tail
    flat_input: bool = False
    active: bool = True            # the self pass of a network without nonlinearities is empty

    def buffer_entries(self) -> int:
        """Materialised entries per pair (Σ, plus Θ on the pair pass) across stages."""
        total = 0
        for st in self.stages:
            if st.sink == "buffer":
                total += st.state_entries() * (2 if st.t_live else 1)
        return total


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
    vtable: dict[int, tuple[int, int]] = field(default_factory=dict)  # layer -> (offset, size)

    @property
    def vt_size(self) -> int:
        return sum(size for _, size in self.vtable.values())

    @property
    def self_diagonal_only(self) -> bool:
        """Whether the self pass evaluates plane (0, 0) only.  There every activation has
        s = 0 exactly, so atan2 returns 0 or π whichever implementation (scalar libm or a
        vector libmvec lane) computes it, and the pair pass reproduces the self pass bit
        for bit on x = x′ however either pass is vectorised."""
        return not self.self_.active or all(st.nplanes == 1 for st in self.self_.stages)

    @property
    def pad_entries(self) -> int:
        """Entries of slack after every array the CPU target's vector blocks read: a block
        may read up to one vector (64 bytes or less: <= 16 entries) past a row's end,
        times the input channels or a window's stride, and discards what it read."""
        stride = max((g.stride for pas in (self.pair, self.self_) for st in pas.stages
                      for op in st.ops for g in (getattr(op, "axes", None) or ())),
                     default=1)
        return 16 * (self.channels + stride + 3)


# -- lowering -----------------------------------------------------------------------------

def lower_program(plan: Plan) -> KernelProgram:
    """The stages of the pair and self passes of a plan (see the module docstring)."""
    vtable: dict[int, tuple[int, int]] = {}
    offset = 0
    for i in plan.activation_indices:
        size = max(plan.layers[i - 1].shape.positions, 1)
        vtable[i] = (offset, size)
        offset += size
    inp = plan.input
    channels = inp.shape.channels or 1
    pair = _lower_pass(plan, "pair", vtable)
    self_ = _lower_pass(plan, "self", vtable)
    return KernelProgram(name=plan.name, filename=plan.filename, plan=plan,
                         data_shape=plan.data_shape, x_size=math.prod(plan.data_shape),
                         channels=channels, pair=pair, self_=self_, vtable=vtable)


def _lower_pass(plan: Plan, which: str, vtable) -> PassProgram:
    demand = [lp.pair_demand if which == "pair" else lp.self_demand for lp in plan.layers]
    layers = [lp.layer for lp in plan.layers]
    shapes = [lp.shape for lp in plan.layers]
    flat_input = shapes[0].is_flat
    if which == "self" and not vtable:
        return PassProgram(which, [], [], flat_input=flat_input, active=False)

    stages: list[Stage] = []
    tail: list[TailOp] = []
    t_live = False
    current: list[Op] = []
    prog = PassProgram(which, stages, tail, flat_input=flat_input)
    last_needed = max(vtable) if which == "self" else len(layers) - 1

    def close(sink_index: int, sink: str, readout_layer=None, planes=None):
        """End the current stage; its output is state `sink_index` (before the readout)."""
        st_planes = demand[sink_index] if planes is None else planes
        stage = Stage(name=f"{which}_stage{len(stages)}", pass_=which, ops=list(current),
                      planes=st_planes, out_size=tuple(shapes[sink_index].spatial),
                      sink=sink, out_state=sink_index)
        head = current[0]
        if head.kind != "input":
            src = head.index - 1
            stage.in_state = src
            stage.in_size = tuple(shapes[src].spatial)
            stage.in_planes = demand[src]
        if readout_layer is not None:
            stage.readout = readout_layer.kind
            stage.readout_line = readout_layer.pos.line
        _finish_stage(stage)
        stages.append(stage)
        current.clear()

    for i, layer in enumerate(layers):
        if i > last_needed:
            break
        lp = plan.layers[i]
        text = layer.describe()
        line = layer.pos.line
        if isinstance(layer, Input):
            if flat_input:
                tail.append(TailOp(i, line, text, "input", channels=layer.shape.channels))
            else:
                current.append(Op(i, line, text, "input",
                                  axes=tuple(AxisGeom(n, n) for n in layer.shape.spatial)))
            continue
        spatial = not shapes[i - 1].is_flat
        if isinstance(layer, (GlobalAvgPool, Flatten)):
            close(i - 1, "readout", layer)
            stages[-1].readout_index = i
            n = shapes[i - 1].positions
            prog.readout_scale = 1.0 / (n * n) if isinstance(layer, GlobalAvgPool) else 1.0 / n
            prog.readout_stage = len(stages) - 1
            continue
        if isinstance(layer, Activation):
            if not layer.nonlinear:
                continue          # identity: nothing to compute
            voff = vtable.get(i, (0, 0))[0]
            record = which == "self" and i in vtable
            if not spatial:
                tail.append(TailOp(i, line, text, "act", fn=layer.fn, a=layer.a, b=layer.b,
                                   voff=voff, record=record, t_in=t_live, t_out=t_live))
                continue
            if which == "self":
                zero = tuple((0,) for _ in shapes[i - 1].spatial)
                if demand[i - 1] == zero:
                    v_source = "self"
                else:
                    v_source = "inbuf"
                    if current:      # materialise the input; the activation reads plane 0 of it
                        close(i - 1, "buffer")
                    current.append(Op(i, line, text, "load",
                                      axes=tuple(AxisGeom(n, n) for n in shapes[i - 1].spatial),
                                      t_in=t_live, t_out=t_live))
            else:
                v_source = "table"
            if which == "self" and i == last_needed and demand[i] is None:
                # the last nonlinearity: only its input variances are needed
                current.append(Op(i, line, text, "act", fn=layer.fn, a=layer.a, b=layer.b,
                                  v_source=v_source, record=record, voff=voff,
                                  axes=tuple(AxisGeom(n, n) for n in shapes[i].spatial),
                                  t_in=t_live, t_out=t_live))
                close(i, "none", planes=tuple((0,) for _ in shapes[i].spatial))
                break
            current.append(Op(i, line, text, "act", fn=layer.fn, a=layer.a, b=layer.b,
                              v_source=v_source, record=record, voff=voff,
                              axes=tuple(AxisGeom(n, n) for n in shapes[i].spatial),
                              t_in=t_live, t_out=t_live))
            continue
        trains = which == "pair" and lp.trains_ntk
        if isinstance(layer, Dense):
            t_out = t_live or trains
            tail.append(TailOp(i, line, text, "dense", W2=layer.W ** 2, B2=layer.b ** 2,
                               trains=trains, t_in=t_live, t_out=t_out))
            t_live = t_out
            continue
        if isinstance(layer, Conv):
            t_out = t_live or trains
            axes = []
            for n, n_out, q in zip(shapes[i - 1].spatial, shapes[i].spatial, layer.size):
                _, low = conv_geometry(n, q, layer.stride, layer.pad)
                axes.append(AxisGeom(n, n_out, q, layer.stride, low))
            kind = "cconv" if layer.pad == "circular" else "conv"
            if kind == "cconv" and current:
                close(i - 1, "buffer")
            current.append(Op(i, line, text, kind, axes=tuple(axes), W2=layer.W ** 2,
                              B2=layer.b ** 2, trains=trains, t_in=t_live, t_out=t_out))
            t_live = t_out
            continue
        if isinstance(layer, AvgPool):
            axes = []
            for n, n_out, w, s in zip(shapes[i - 1].spatial, shapes[i].spatial, layer.window,
                                      layer.stride):
                _, low = conv_geometry(n, w, s, layer.pad)
                axes.append(AxisGeom(n, n_out, w, s, low))
            if current:
                close(i - 1, "buffer")
            current.append(Op(i, line, text, "pool", axes=tuple(axes), t_in=t_live,
                              t_out=t_live))
            continue
        raise AssertionError(type(layer))  # pragma: no cover
    if which == "self" and current:       # (stopped inside a stage: not reachable)
        raise AssertionError("self pass ended inside a stage")  # pragma: no cover
    return prog


def _finish_stage(stage: Stage) -> None:
    """Offset multipliers, the local buffer's padding, and the GPU team size."""
    ops = stage.ops
    ndim = len(stage.out_size)
    # offsets: output plane D; a plane-local conv with stride s reads plane s*D
    mult = [1] * ndim
    for op in reversed(ops):
        op.axes = tuple(AxisGeom(g.n_in, g.n_out, g.q, g.stride, g.low, m)
                        for g, m in zip(op.axes, mult))
        if op.kind == "conv":
            mult = [m * g.stride for m, g in zip(mult, op.axes)]
    halo, extent = [], []
    for ax in range(ndim):
        lo = 0
        hi = 0
        for op in ops:
            g = op.axes[ax]
            hi = max(hi, g.n_out, g.n_in if op.kind in ("input", "load", "act", "conv") else 0)
            if op.kind == "conv":
                lo = max(lo, g.low)
                hi = max(hi, g.stride * (g.n_out - 1) + g.q - g.low)
        halo.append(lo)
        extent.append(lo + hi)
    stage.halo = tuple(halo)
    stage.extent = tuple(extent)
    # uniform: every op's output has the stage's size and offset, so the valid region of a
    # plane is the same for all of them: zero the padding ring around it once per work
    # item, then every layer touches only that region
    stage.uniform = all(
        tuple(g.n_out for g in op.axes) == stage.out_size and
        (op.mixing or all(g.n_in == g.n_out and g.stride == 1 for g in op.axes))
        for op in ops)
    rows = extent[0] if extent else 1
    stage.threads = 32 * min(8, _pow2_at_least(max(rows, 1)))


def _pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p
