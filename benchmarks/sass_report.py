"""Static performance report of the generated CUDA kernels: no GPU needed.

    PYTHONPATH=. python3 benchmarks/sass_report.py [--nets cntk_gap21,cntk_v21,myrtle5]
        [--dtypes float32,float64] [--json FILE] [--verbose]

For every net: the CUDA source is compiled by NVRTC to an sm_90 CUBIN (the runtime's
options plus --generate-line-info, which does not change the code), disassembled by
nvdisasm, and read by infinet/codegen/sass.py (control flow, natural loops, issued
instructions on the common path).  Each instruction's source-line chain attributes it to
a sweep of the kernel program (infinet/codegen/program.py), and each loop to the sweep
whose instructions it mostly holds; the program's geometry then gives how many warp
iterations every sweep takes per plane, the bank conflicts of its stencil loads and its
idle lanes.  The prediction is the issue limit of an H100 SXM: every warp instruction
takes one issue slot of one of the 132 x 4 schedulers at 1.98 GHz.  BENCHMARKS.md
("Static performance report (no GPU)") states the method and where it is approximate.

Needs the ``perf`` extra (pip install -e '.[perf]': nvidia-cuda-nvrtc, nvidia-cuda-nvdisasm).
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import infinet  # noqa: E402
from infinet.codegen import columns, nvrtc, program as program_module, sass  # noqa: E402
from infinet.codegen.render import CUDA, SHARED_LIMIT, render  # noqa: E402
from infinet.codegen.render_index import buf  # noqa: E402
from infinet.dtypes import DTYPES  # noqa: E402
from infinet.errors import InfinetError  # noqa: E402
from infinet.runtime.cuda import NVRTC_OPTIONS  # noqa: E402

ARCH = "sm_90"
LINE_INFO = ("--generate-line-info",)


@dataclass(frozen=True)
class Device:
    """The numbers the model uses (H100 SXM5, compute capability 9.0)."""

    name: str = "H100 SXM5 (sm_90)"
    sms: int = 132
    schedulers: int = 4                 # per SM, one warp instruction issued per clock each
    clock_hz: float = 1.98e9            # boost clock
    regs_per_sm: int = 65536
    reg_alloc_unit: int = 256           # registers, allocated per warp
    max_regs_per_thread: int = 255
    smem_per_sm: int = 228 * 1024
    smem_per_block_optin: int = 227 * 1024
    smem_reserved_per_block: int = 1024  # the driver's share of every resident block
    max_threads_per_sm: int = 2048
    max_warps_per_sm: int = 64
    max_blocks_per_sm: int = 32
    banks: int = 32                     # shared memory: 32 banks of 4 bytes
    wavefront_bytes: int = 128

    @property
    def issue_rate(self) -> float:
        """Warp instructions per second, the whole GPU."""
        return self.sms * self.schedulers * self.clock_hz


H100 = Device()


def net_sources() -> dict[str, str]:
    """The report's networks: CNTK-GAP d21 and CNTK-V d21 of bench_backends.py (32x32x3),
    Myrtle-5 from examples/myrtle.net (blocks = 1: 4 convs + dense)."""
    import bench_backends
    table = bench_backends.nets(32)
    with open(os.path.join(ROOT, "examples", "myrtle.net")) as fh:
        myrtle = fh.read()
    return {"cntk_gap21": table["cntk_gap21"], "cntk_v21": table["cntk_v21"],
            "cnn_gap3": table["cnn_gap3"], "cntk_gap11": table["cntk_gap11"],
            "myrtle5": myrtle}


DEFAULT_NETS = ("cntk_gap21", "cntk_v21", "myrtle5")


# == the program side =======================================================================

@dataclass(frozen=True)
class SweepRef:
    pass_: str
    stage: int            # index in the pass's stages
    sweep: int            # index in the stage's sweeps


class Unmapped(Exception):
    """The source's sweeps could not be located (the template changed shape)."""


def sweep_line_map(prog) -> tuple[dict[int, SweepRef], list[str]]:
    """Source line (1-based, in ``render(prog, 'cuda')``) -> the sweep that printed it.

    Found by rendering each stage with its first i sweeps only, i = 0..n: sweep i is the
    block of lines that appears between the renderings with i and i + 1 sweeps.  This
    uses no knowledge of the template beyond "a stage prints its sweeps in order", so it
    follows whatever the code generator prints for a sweep.  A stage where that fails is
    listed in the returned notes (its loops are then reported unattributed)."""
    full = render(prog, "cuda").splitlines()
    out: dict[int, SweepRef] = {}
    notes: list[str] = []
    for pas in prog.passes:
        for s, st in enumerate(pas.stages):
            orig = st.sweeps
            try:
                texts = []
                for i in range(len(orig) + 1):
                    st.sweeps = orig[:i]
                    texts.append(render(prog, "cuda").splitlines())
            except Exception as err:  # noqa: BLE001 - a template that needs every sweep
                notes.append(f"{st.name}: cannot render a prefix of its sweeps ({err})")
                continue
            finally:
                st.sweeps = orig
            try:
                spans = _inserted_blocks(texts, full)
            except Unmapped as err:
                notes.append(f"{st.name}: {err}")
                continue
            for i, (a, b) in enumerate(spans):
                for line in range(a + 1, b + 1):
                    out[line] = SweepRef(pas.pass_, s, i)
    return out, notes


def _inserted_blocks(texts: list[list[str]], full: list[str]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    prev_end = None
    for i in range(len(texts) - 1):
        a, b = texts[i], texts[i + 1]
        n = len(b) - len(a)
        if n <= 0:
            raise Unmapped(f"sweep {i} adds no lines to the source")
        pre = 0
        while pre < len(a) and a[pre] == b[pre]:
            pre += 1
        suf = 0
        while suf < len(a) - 0 and a[len(a) - 1 - suf] == b[len(b) - 1 - suf]:
            suf += 1
        lo, hi = max(len(a) - suf, 0), min(pre, len(a))
        if lo > hi:
            raise Unmapped(f"sweep {i} is not one block of lines")
        k = hi if prev_end is None else min(max(prev_end, lo), hi)
        if full[:k + n] != b[:k + n]:
            raise Unmapped(f"the lines before sweep {i} change with the later sweeps")
        spans.append((k, k + n))
        prev_end = k + n
    return spans


def plane_offsets(stage) -> list[tuple[int, int, int]]:
    """The work items' plane offsets D of a stage, in the kernels' flattened order."""
    return list(itertools.product(*stage.planes))


def sweep_mode(stage) -> str:
    """How the CUDA team walks a sweep (templates/macros.j2, ``sweep_loop``): a uniform
    stage walks its valid region as one flat range (``flat``); any other walks the whole
    padded buffer, rows over warps and lanes along w (``full``)."""
    if stage.uniform and CUDA.flat_team:
        return "columns" if columns.uses_columns(stage) else "flat"
    if stage.uniform:
        return "rows"
    return "full"


@dataclass
class Walk:
    """One sweep over one plane by a team of ``threads``: what each warp iterates."""

    entry_iters: np.ndarray        # per warp: iterations of the entry loop
    row_iters: np.ndarray          # per warp: iterations of the enclosing row loop(s)
    pos: np.ndarray                # [warp iterations, 32, 3]: (d, h, w) of each lane
    live: np.ndarray               # [warp iterations, 32]: the lane computes an entry
    entries: int                   # valid entries of the plane


def team_walk(stage, sweep, D) -> Walk:
    """The lanes' entries of every warp iteration of a sweep over plane D: the mapping of
    templates/macros.j2 (``flat``: thread e of the team takes entries e, e + nth, ... of
    the valid region in row-major order; ``full``/``rows``: warp r takes rows r, r +
    warps, ..., its lanes w = lo + lane, lo + lane + 32, ...).  A code generator that
    maps lanes differently provides ``team_walk(stage, sweep, D)`` in
    infinet/codegen/program.py, which is then used instead."""
    custom = getattr(program_module, "team_walk", None)
    if custom is not None:
        return custom(stage, sweep, D)
    cols = columns.team_walk(stage, sweep, D)     # the CUDA target's column walk
    if cols is not None:
        return Walk(*cols)
    threads = stage.threads
    warps = threads // 32
    (lod, hid), (loh, hih), (low, hiw) = columns.valid_region(sweep, D)
    mode = sweep_mode(stage)
    lane = np.arange(32)
    entry_iters = np.zeros(warps, dtype=np.int64)
    row_iters = np.zeros(warps, dtype=np.int64)
    pos_parts, live_parts = [], []
    if mode == "flat":
        cd, ch, cw = hid - lod, hih - loh, hiw - low
        count = cd * ch * cw
        for wp in range(warps):
            starts = np.arange(32 * wp, count, threads) if count > 32 * wp else np.zeros(0, int)
            entry_iters[wp] = len(starts)
            if len(starts):
                e = starts[:, None] + lane[None, :]
                live = e < count
                e = np.where(live, e, 0)
                w = low + e % cw
                h = loh + (e // cw) % ch
                d = lod + e // (cw * ch)
                pos_parts.append(np.stack([d, h, w], axis=-1))
                live_parts.append(live)
        entries = count
    else:
        ed, eh, ew = stage.extent
        hd, hh, hw = stage.halo
        if mode == "full":
            drange = range(-hd, ed - hd) if ed > 1 else range(0, 1)
            hrange, wlo, whi = (-hh, eh - hh), -hw, ew - hw
        else:
            drange = range(lod, hid) if ed > 1 else range(0, 1)
            hrange, wlo, whi = (loh, hih), low, hiw
        wstarts = np.arange(wlo, whi, 32)
        for wp in range(warps):
            for d in drange:
                for h in range(hrange[0] + wp, hrange[1], warps):
                    row_iters[wp] += 1
                    entry_iters[wp] += len(wstarts)
                    if not len(wstarts):
                        continue
                    w = wstarts[:, None] + lane[None, :]
                    inside = w < whi
                    valid = (inside & (lod <= d) & (d < hid) & (loh <= h) & (h < hih)
                             & (low <= w) & (w < hiw))
                    pos_parts.append(np.stack([np.full_like(w, d), np.full_like(w, h), w],
                                              axis=-1))
                    live_parts.append(valid)
        entries = (hid - lod) * (hih - loh) * (hiw - low)
    pos = np.concatenate(pos_parts) if pos_parts else np.zeros((0, 32, 3), dtype=np.int64)
    live = np.concatenate(live_parts) if live_parts else np.zeros((0, 32), dtype=bool)
    return Walk(entry_iters, row_iters, pos, live, entries)


def _buffer_index(stage):
    """Index of (d, h, w) in the stage's local plane buffer: the code generator's own
    expression (render_index.buf), evaluated on arrays."""
    code = compile(buf(stage, "d", "h", "w"), "<buf>", "eval")
    return lambda d, h, w: eval(code, {}, {"d": d, "h": h, "w": w})  # noqa: S307


def stencil_taps(stage, op) -> list[tuple[int, int, int]] | None:
    """The local-buffer taps (a, b, c) of a conv starter (None: it reads no stencil)."""
    if op.kind != "conv":
        return None
    gd, gh, gw = op.axes
    return [(a, b, c) for a in range(gd.q) for b in range(gh.q) for c in range(gw.q)]


def wavefronts(words: np.ndarray, live: np.ndarray, banks: int = 32) -> np.ndarray:
    """Shared-memory wavefronts of each warp-wide access: the most distinct 4-byte words
    any one bank serves (the same word for several lanes is a broadcast).  ``words``:
    [accesses, lanes, words per lane] word addresses; ``live``: [accesses, lanes]."""
    n = words.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    flat = np.where(live[:, :, None], words, -1).reshape(n, -1)
    flat = np.sort(flat, axis=1)
    first = np.ones_like(flat, dtype=bool)
    first[:, 1:] = flat[:, 1:] != flat[:, :-1]
    keep = first & (flat >= 0)
    rows = np.broadcast_to(np.arange(n)[:, None], flat.shape)
    counts = np.zeros((n, banks), dtype=np.int64)
    np.add.at(counts, (rows[keep], flat[keep] % banks), 1)
    return counts.max(axis=1)


@dataclass
class SweepGeometry:
    """A sweep over every plane of its stage (per pair or per input)."""

    warp_iters: int = 0             # entry-loop warp iterations, all planes
    row_iters: int = 0              # row-loop warp iterations, all planes
    entries: int = 0                # valid entries, all planes
    rounds_threads: int = 0         # threads x the slowest warp's iterations, all planes
    live_lanes: int = 0
    stencil_wavefronts: float = 0.0     # per warp access, averaged over accesses
    stencil_ideal: float = 0.0          # the conflict-free number of wavefronts per access
    stencil_accesses: int = 0

    @property
    def lane_use(self) -> float:
        return self.live_lanes / (32 * self.warp_iters) if self.warp_iters else 0.0

    @property
    def thread_use(self) -> float:
        return self.entries / self.rounds_threads if self.rounds_threads else 0.0

    @property
    def conflict(self) -> float:
        return self.stencil_wavefronts / self.stencil_ideal if self.stencil_ideal else 0.0


def sweep_geometry(stage, sweep, itemsize: int, cache: dict) -> SweepGeometry:
    op = sweep.starter
    taps = stencil_taps(stage, op)
    key = (stage.name, stage.pass_, sweep.mult, sweep.size, op.kind,
           tuple(op.axes) if taps else (), itemsize)
    if key in cache:
        return cache[key]
    geo = SweepGeometry()
    index = _buffer_index(stage)
    wf_sum = ideal_sum = 0.0
    for D in plane_offsets(stage):
        walk = team_walk(stage, sweep, D)
        geo.warp_iters += int(walk.entry_iters.sum())
        geo.row_iters += int(walk.row_iters.sum())
        geo.entries += walk.entries
        geo.rounds_threads += int(walk.entry_iters.max(initial=0)) * stage.threads
        geo.live_lanes += int(walk.live.sum())
        if taps and len(walk.pos):
            gd, gh, gw = op.axes
            d, h, w = walk.pos[..., 0], walk.pos[..., 1], walk.pos[..., 2]
            # every tap is the (0, 0, 0) tap plus one offset for all lanes: one bank
            # pattern, shifted; so the (0, 0, 0) tap stands for all of them
            idx = index(gd.stride * d - gd.low, gh.stride * h - gh.low, gw.stride * w - gw.low)
            per = itemsize // 4
            words = (idx * per)[..., None] + np.arange(per)
            wf = wavefronts(words, walk.live)
            use = walk.live.sum(axis=1)
            keep = use > 0
            wf_sum += float(wf[keep].sum()) * len(taps)
            ideal = np.ceil(use[keep] * itemsize / H100.wavefront_bytes)
            ideal_sum += float(ideal.sum()) * len(taps)
            geo.stencil_accesses += int(keep.sum()) * len(taps)
    if geo.stencil_accesses:
        geo.stencil_wavefronts = wf_sum / geo.stencil_accesses
        geo.stencil_ideal = ideal_sum / geo.stencil_accesses
    cache[key] = geo
    return geo


def tap_trips(op) -> list[int]:
    """Iterations of the tap loops of a pooling / tap-reader starter per entry, outer axis
    first (snippets.py: q^2 window pairs per axis for a pool, q taps for a conv of a
    materialised source; axes of size 1 have no loop)."""
    if op.kind not in ("pool", "cconv", "gconv"):
        return []
    live = [g for g in op.axes if not (g.q == 1 and g.n_in == 1)]
    return [g.q * g.q if op.kind == "pool" else g.q for g in live]


def stores_per_entry(stage, sweep) -> int:
    """Local-buffer stores one entry of a sweep makes (K, and Θ where live)."""
    n = 0
    for p, slot in sweep.stores.items():
        op = sweep.ops[p]
        if op.kind in ("slot", "load") and p == 0 and len(sweep.ops) > 1:
            continue
        n += 1 + (1 if stage.t_pass and slot in stage.t_slots else 0)
    return n


def sweep_label(stage, sweep) -> str:
    parts = []
    for k, op in enumerate(sweep.ops):
        if k == 0 and op.kind in ("slot", "load") and len(sweep.ops) > 1:
            parts.append(f"read {op.index}")
        else:
            parts.append(op.text.split()[0] if op.kind != "input" else "input")
    return " + ".join(parts)


# == occupancy ================================================================================

@dataclass
class Occupancy:
    registers: int
    threads: int
    static_smem: int
    dynamic_smem: int
    blocks_per_sm: int
    limiter: str
    occupancy: float        # resident warps / max warps

    @property
    def warps_per_sm(self) -> int:
        return self.blocks_per_sm * math.ceil(self.threads / 32)


def occupancy(registers: int, threads: int, static_smem: int, dynamic_smem: int = 0,
              dev: Device = H100) -> Occupancy:
    warps = math.ceil(threads / 32)
    per_warp = math.ceil(max(registers, 1) * 32 / dev.reg_alloc_unit) * dev.reg_alloc_unit
    limits = {
        "blocks": dev.max_blocks_per_sm,
        "threads": dev.max_threads_per_sm // threads,
        "registers": (dev.regs_per_sm // per_warp) // warps,
    }
    smem = static_smem + dynamic_smem
    if smem:
        limits["shared memory"] = dev.smem_per_sm // (smem + dev.smem_reserved_per_block)
    limiter = min(limits, key=lambda k: (limits[k], k != "registers"))
    blocks = limits[limiter]
    return Occupancy(registers, threads, static_smem, dynamic_smem, blocks, limiter,
                     blocks * warps / dev.max_warps_per_sm)


# == the pipes (a second, coarser bound) ========================================================

#: lanes per SM per clock of the pipes an opcode needs (compute capability 9.0, from the
#: CUDA C++ Programming Guide's throughput table and Nsight Compute's pipe descriptions);
#: the FP32 pipes take FADD/FMUL/FFMA/HFMA2 at 128 lanes, IMAD only on the heavy half (64)
_PIPE_OF = {}
for _pipe, _ops in {
    "fp32": "FADD FMUL FFMA HADD2 HMUL2 HFMA2 FADD32I FMUL32I FFMA32I",
    "imad": "IMAD IMUL IDP",
    "fp64": "DADD DMUL DFMA DSETP DMNMX DSET",
    "xu": "MUFU I2F F2I F2F I2I FRND F2FP I2FP F2IP DRND",
    "alu": "IADD3 IADD IABS LEA LOP3 LOP SHF SHL SHR ISETP ICMP IMNMX VIMNMX VIADD "
           "VIADDMNMX SEL PRMT POPC FLO BREV BMSK SGXT PLOP3 P2R R2P MOV MOV32I FMNMX FSEL "
           "FSETP FSET FCHK HMNMX2 HSETP2",
}.items():
    for _op in _ops.split():
        _PIPE_OF[_op] = _pipe
PIPE_LANES = {"fp32": 128, "imad": 64, "fp64": 64, "xu": 16, "alu": 64}


def pipe_cycles(opcodes: dict, issued: float, wavefronts_per_lds: float,
                wavefronts_ideal: float, dev: Device = H100) -> dict[str, float]:
    """SM cycles one warp iteration needs on each resource: issue (4 schedulers), the
    FP32+IMAD pipes, the ALU, FP64, the XU (MUFU and conversions), and shared memory (one
    128-byte wavefront per clock per SM: loads at the stencil's wavefronts, stores at the
    conflict-free count)."""
    n: Counter = Counter()
    for op, v in opcodes.items():
        n[_PIPE_OF.get(op, "")] += v
    lds = opcodes.get("LDS", 0) + opcodes.get("LDSM", 0)
    sts = opcodes.get("STS", 0) + opcodes.get("ATOMS", 0)
    return {
        "issue": issued / dev.schedulers,
        "fma": max(n["imad"] * 32 / PIPE_LANES["imad"],
                   (n["fp32"] + n["imad"]) * 32 / PIPE_LANES["fp32"]),
        "alu": n["alu"] * 32 / PIPE_LANES["alu"],
        "fp64": n["fp64"] * 32 / PIPE_LANES["fp64"],
        "xu": n["xu"] * 32 / PIPE_LANES["xu"],
        "shared": lds * (wavefronts_per_lds or wavefronts_ideal) + sts * wavefronts_ideal,
    }


# == the SASS side =============================================================================

@dataclass
class LoopReport:
    addr: int
    depth: int
    union: int
    path: int
    rare: int
    sweep: int | None             # the sweep it belongs to (None: outside the sweeps)
    role: str                     # work-item | entry | row | other
    categories: dict = field(default_factory=dict)
    stores: int = 0               # shared/global stores on its heaviest path (that sweep)


@dataclass
class SweepReport:
    index: int
    label: str
    entry_union: float = 0.0       # issued per entry-loop iteration (common path, union)
    entry_path: float = 0.0
    entries_per_iter: int = 1
    categories: dict = field(default_factory=dict)
    row: int = 0                  # per row-loop iteration
    overhead: int = 0             # per plane per warp, outside the sweep's loops
    loops: int = 0
    stores: int = 0
    stores_expected: int = 0
    warp_iters: int = 0
    row_iters: int = 0
    entries: int = 0
    lane_use: float = 0.0
    thread_use: float = 0.0
    stencil_wavefronts: float = 0.0
    stencil_conflict: float = 0.0
    warp_instructions: float = 0.0     # all planes, per item (pair or input)
    conv_theta: bool = False           # a conv sweep with Θ live (a K+Θ entry-layer)
    opcodes: dict = field(default_factory=dict)    # per entry, by base opcode
    pipe_cycles: dict = field(default_factory=dict)   # SM cycles per warp iteration
    notes: list = field(default_factory=list)


@dataclass
class KernelReport:
    name: str
    pass_: str
    stage: str
    dtype: str
    planes: int
    threads: int
    registers: int
    spills: int
    static_smem: int
    dynamic_smem: int
    global_scratch: bool
    occupancy: float
    blocks_per_sm: int
    occupancy_limiter: str
    instructions: int
    sweeps: list = field(default_factory=list)
    loops: list = field(default_factory=list)
    per_plane_other: float = 0.0        # warp instructions per plane outside the sweeps
    other_loops: float = 0.0            # of which in loops outside the sweeps (assumed trips)
    warp_instructions: float = 0.0      # per item: all planes, sweeps + overheads
    sm_cycles: float = 0.0              # per item, at the pipe bound
    pipe_totals: dict = field(default_factory=dict)   # SM cycles per item of the sweeps' loops
    notes: list = field(default_factory=list)


def _sweep_of(ins: sass.Instr, line_map: dict[int, SweepRef], key) -> int | None:
    for _, line in ins.where:
        ref = line_map.get(line)
        if ref is not None and (ref.pass_, ref.stage) == key:
            return ref.sweep
    return None


def _stage_of_kernel(kern: sass.Kernel, line_map) -> tuple[str, int] | None:
    votes: Counter = Counter()
    for ins in kern.entry.instrs:
        for _, line in ins.where:
            ref = line_map.get(line)
            if ref is not None:
                votes[(ref.pass_, ref.stage)] += 1
                break
    return votes.most_common(1)[0][0] if votes else None


def _path_stores(fn: sass.Function, lp: sass.Loop, labels, sweep: int,
                 kinds=("STS",)) -> int:
    """Instructions of ``sweep`` with an opcode in ``kinds`` (default: the stores to the
    local buffers) on the heaviest-in-those path through one iteration of a loop."""
    region = set(lp.own) - fn.rare_blocks(lp.blocks, lp.header)
    weight = {}
    for b in region:
        blk = fn.blocks[b]
        weight[b] = sum(1 for i in range(blk.start, blk.end)
                        if fn.instrs[i].base in kinds and labels[i] == sweep)
    return fn._longest_path(region, weight, lp.header)


def analyse_kernel(kern: sass.Kernel, prog, pas, s: int, line_map, res, dtype,
                   dev: Device = H100) -> KernelReport:
    st = pas.stages[s]
    fn = kern.entry
    itemsize = DTYPES[dtype].numpy.itemsize
    key = (pas.pass_, s)
    labels = [_sweep_of(ins, line_map, key) for ins in fn.instrs]
    scratch_bytes = st.scratch * itemsize
    # buffers beyond the static limit are dynamic shared memory, opted in at launch up to
    # the device's limit (runtime/cuda.py), and a global scratch buffer beyond that
    global_scratch = res.shared < scratch_bytes and scratch_bytes > dev.smem_per_block_optin
    dynamic = 0
    if res.shared < scratch_bytes and not global_scratch:
        dynamic = scratch_bytes
    occ = occupancy(res.registers, st.threads, res.shared, dynamic, dev)
    rep = KernelReport(kern.name, pas.pass_, st.name, dtype, st.nplanes, st.threads,
                       res.registers, res.spill_stores + res.spill_loads, res.shared,
                       dynamic, global_scratch, occ.occupancy, occ.blocks_per_sm,
                       occ.limiter, sum(len(f.instrs) for f in kern.functions.values()))
    rep.notes += kern.warnings
    # -- loops and the sweeps they belong to
    owner: dict[int, int | None] = {}
    for lp in fn.all_loops():
        votes: Counter = Counter()
        total = 0
        for b in lp.own:
            for i in range(fn.blocks[b].start, fn.blocks[b].end):
                total += 1
                votes[labels[i]] += 1
        top, n = max(((k, v) for k, v in votes.items() if k is not None),
                     key=lambda kv: kv[1], default=(None, 0))
        owner[id(lp)] = top if total and n * 2 > total else None
    sweep_loops: dict[int, list[sass.Loop]] = {}
    for lp in fn.all_loops():
        if owner[id(lp)] is not None:
            sweep_loops.setdefault(owner[id(lp)], []).append(lp)
    # the work-item loop: the smallest loop holding every sweep loop
    swept = [lp for lps in sweep_loops.values() for lp in lps]
    work = None
    for lp in fn.all_loops():
        if owner[id(lp)] is None and swept and all(x.blocks <= lp.blocks for x in swept):
            if work is None or len(lp.blocks) < len(work.blocks):
                work = lp
    per_plane_region = set(work.blocks) if work is not None else set(fn.reachable())
    if work is None:
        rep.notes.append("no loop over work items found: the whole kernel counted per plane")
    # -- per sweep
    geo_cache: dict = {}
    warps = st.threads // 32
    in_sweep_loop: set[int] = set()
    for i, sw in enumerate(st.sweeps):
        sr = SweepReport(i, sweep_label(st, sw))
        sr.conv_theta = sw.starter.kind == "conv" and st.t_pass and sw.starter.t_in
        lps = sweep_loops.get(i, [])
        sr.loops = len(lps)
        kinds = ("STG", "ST") if global_scratch else ("STS",)
        sr.stores_expected = stores_per_entry(st, sw)
        if global_scratch:      # the self pass's variance records go there too
            sr.stores_expected += sum(1 for op in sw.ops if op.record)
        stores = {id(x): _path_stores(fn, x, labels, i, kinds) for x in lps}
        # the entry loop: the innermost of the sweep's loops that makes its stores (inner
        # ones are the tap loops of a pooling or tap reader; outer ones walk rows)
        cands = [x for x in lps if sr.stores_expected and stores[id(x)] >= sr.stores_expected]
        if not cands:
            cands = lps
            if lps and sr.stores_expected:
                sr.notes.append("no loop makes the sweep's stores: its innermost loop is "
                                "taken as the entry loop")
        ids = {id(x) for x in cands}
        inner = [x for x in cands if not any(id(c) in ids for c in _descendants(x))]
        if not lps:
            sr.notes.append("no loop of its own in the SASS (unrolled, or not mapped)")
        entry = max(inner, key=lambda x: fn.loop_cost(x).union) if inner else None
        if len(inner) > 1:
            sr.notes.append(f"{len(inner)} entry loops (versioned or unrolled by ptxas): "
                            f"the largest counted per entry, the others ignored")
        if entry is not None:
            c = fn.loop_cost(entry)
            cats = Counter(c.by_category)
            ops = Counter(c.by_opcode)
            union, path = float(c.union), float(c.path)
            trips = tap_trips(sw.starter)
            mine = {id(x) for x in lps}
            taps = math.prod(trips) if trips else 1
            per_tap = 1 + int(bool(sw.starter.t_in and st.t_pass))
            for y in _descendants(entry):
                if id(y) not in mine:
                    continue
                r = y.depth - entry.depth
                addr = fn.instrs[fn.blocks[y.header].start].addr
                if r > len(trips):
                    sr.notes.append(f"loop at {addr:#x} inside the entry loop: counted once "
                                    f"per entry")
                n = math.prod(trips[:r]) if trips else 1
                if trips and not any(id(c) in mine for c in _descendants(y)):
                    # the innermost tap loop: its body holds the taps of the axes ptxas
                    # unrolled into it (global loads on its heaviest path / loads per tap)
                    loads = _path_stores(fn, y, labels, i, ("LDG", "LD"))
                    if loads >= per_tap:
                        n = taps / (loads // per_tap)
                        sr.notes.append(f"tap loop at {addr:#x}: {loads // per_tap} taps per "
                                        f"iteration, {n:g} iterations per entry")
                cy = fn.loop_cost(y)
                union += n * cy.union
                path += n * cy.path
                for k2, v in cy.by_category.items():
                    cats[k2] += n * v
                for k2, v in cy.by_opcode.items():
                    ops[k2] += n * v
            sr.stores = stores[id(entry)]
            u = 1
            if sr.stores_expected and sr.stores >= 2 * sr.stores_expected and \
                    sr.stores % sr.stores_expected == 0:
                u = sr.stores // sr.stores_expected
                sr.notes.append(f"{u} entries per iteration (its stores)")
            elif sr.stores_expected and sr.stores != sr.stores_expected:
                sr.notes.append(f"{sr.stores} stores per iteration, {sr.stores_expected} "
                                f"expected per entry: 1 entry per iteration assumed")
            sr.entries_per_iter = u
            sr.entry_union, sr.entry_path = union / u, path / u
            sr.categories = {k2: v / u for k2, v in sorted(cats.items())}
            sr.opcodes = {k2: v / u for k2, v in sorted(ops.items())}
            rows = [x for x in lps if x is not entry and entry.blocks < x.blocks]
            sr.row = sum(fn.loop_cost(x).union for x in rows)
            for x in lps:
                in_sweep_loop |= set(x.blocks)
        # overhead: this sweep's instructions in the per-plane region, outside its loops
        loop_blocks = set().union(*(x.blocks for x in lps)) if lps else set()
        region = per_plane_region - loop_blocks
        region -= set().union(*(x.blocks for x in fn.all_loops()
                                if x is not work and x.blocks <= region
                                and owner[id(x)] != i)) if fn.all_loops() else set()
        rare = fn.rare_blocks(per_plane_region, work.header if work else 0)
        sr.overhead = sum(1 for b in region - rare
                          for k in range(fn.blocks[b].start, fn.blocks[b].end)
                          if labels[k] == i)
        geo = sweep_geometry(st, sw, itemsize, geo_cache)
        sr.warp_iters, sr.row_iters, sr.entries = geo.warp_iters, geo.row_iters, geo.entries
        sr.lane_use, sr.thread_use = geo.lane_use, geo.thread_use
        sr.stencil_wavefronts, sr.stencil_conflict = geo.stencil_wavefronts, geo.conflict
        # (entry_union is per entry: a loop ptxas unrolled by u runs warp_iters / u times
        # at u * entry_union each)
        sr.warp_instructions = (geo.warp_iters * sr.entry_union
                                + geo.row_iters * sr.row + st.nplanes * warps * sr.overhead)
        ideal = geo.stencil_ideal or math.ceil(32 * itemsize / dev.wavefront_bytes)
        sr.pipe_cycles = pipe_cycles(sr.opcodes, sr.entry_union, geo.stencil_wavefronts,
                                     ideal, dev)
        rep.sweeps.append(sr)
    # -- the rest of a work item: straight-line code and loops outside the sweeps
    rest = per_plane_region - in_sweep_loop
    other_loops = [x for x in fn.all_loops() if x is not work and x.blocks <= rest
                   and owner[id(x)] is None]
    other_ids = {id(x) for x in other_loops}
    top_other = [x for x in other_loops if x.parent is None or x.parent is work
                 or id(x.parent) not in other_ids]
    straight_region = rest - set().union(*(x.blocks for x in other_loops)) if other_loops \
        else rest
    rare = fn.rare_blocks(per_plane_region, work.header if work else 0)
    straight = sum(1 for b in straight_region - rare
                   for k in range(fn.blocks[b].start, fn.blocks[b].end) if labels[k] is None)
    # loops outside the sweeps (ring zeroing, readout, export): their trip counts are not
    # in the SASS.  Model: a nest walks the plane buffer once, block-wide: its innermost
    # loops take ceil(entries / 32) warp iterations, each enclosing level one per buffer
    # row.  Nests printed from the same source lines are versions of one loop (ptxas
    # versions loops): only the costliest counts.
    rows = st.extent[0] * st.extent[1]
    chunks = math.ceil(st.plane_entries / 32)

    def nest_cost(x) -> float:
        total = 0.0
        for y in [x] + list(_descendants(x)):
            total += (rows if y.children else chunks) * fn.loop_cost(y).union
        return total

    def nest_lines(x) -> set:
        return {line for b in x.blocks for ins in fn.block_instrs(b) for line in ins.lines}

    groups: list[tuple[set, float]] = []
    for x in top_other:
        lines, cost = nest_lines(x), nest_cost(x)
        for g, (glines, gcost) in enumerate(groups):
            if len(lines & glines) * 2 > min(len(lines), len(glines)):
                groups[g] = (glines | lines, max(gcost, cost))
                break
        else:
            groups.append((lines, cost))
    loop_cost = sum(c for _, c in groups)
    if len(groups) < len(top_other):
        rep.notes.append(f"{len(top_other)} loops outside the sweeps, {len(groups)} after "
                         f"merging the versions of one source loop")
    rep.per_plane_other = warps * straight + loop_cost
    rep.other_loops = loop_cost
    rep.warp_instructions = sum(x.warp_instructions for x in rep.sweeps) + \
        st.nplanes * rep.per_plane_other
    # the pipe bound: each sweep's entry loop at its slowest resource, the rest at issue
    rep.sm_cycles = sum(x.warp_iters * max(x.pipe_cycles.values(), default=0.0)
                        + (x.warp_instructions - x.warp_iters * x.entry_union) / dev.schedulers
                        for x in rep.sweeps) + st.nplanes * rep.per_plane_other / dev.schedulers
    for x in rep.sweeps:
        for k2, v in x.pipe_cycles.items():
            rep.pipe_totals[k2] = rep.pipe_totals.get(k2, 0.0) + x.warp_iters * v
    for lp in fn.all_loops():
        c = fn.loop_cost(lp)
        o = owner[id(lp)]
        role = "work-item" if lp is work else "other" if o is None else "sweep"
        rep.loops.append(LoopReport(fn.instrs[fn.blocks[lp.header].start].addr, lp.depth,
                                    c.union, c.path, c.rare, o, role,
                                    dict(sorted(c.by_category.items()))))
    return rep


def _descendants(lp: sass.Loop):
    for c in lp.children:
        yield c
        yield from _descendants(c)


def tail_cost(kern: sass.Kernel, pas) -> float:
    """Warp instructions per item of a tail kernel (one thread per item: its issued count
    over 32).  Its loops (readout sums over planes) run planes / (loads per iteration /
    loads per plane) times; approximate."""
    fn = kern.entry
    total = fn.cost(set(fn.reachable()) - set().union(*(lp.blocks for lp in fn.loops))
                    if fn.loops else set(fn.reachable()), 0).union
    planes = max((len(p) for _, _, p in pas.readouts.values()), default=1)
    per_plane = max((1 + int(st.sink_t) for st, _, _ in pas.readouts.values()), default=1)
    for lp in fn.all_loops():
        c = fn.loop_cost(lp)
        loads = c.by_category.get("global", 0)
        trips = planes / max(1.0, loads / per_plane)
        total += c.union * trips
    return total / 32


# == one net ==================================================================================

@dataclass
class NetReport:
    net: str
    dtype: str
    kernels: list
    pair_warp_instructions: float
    self_warp_instructions: float
    tail_warp_instructions: float
    entry_layer: float              # issued per K+Θ entry-layer (median of conv+Θ sweeps)
    entry_layer_mean: float
    entry_layer_path: float
    us_per_pair: float
    us_per_input_self: float
    notes: list
    us_per_pair_pipes: float = 0.0      # the coarser bound: slowest pipe of each sweep
    us_sweeps: float = 0.0              # of us_per_pair: the sweeps' loops
    us_overheads: float = 0.0           # straight-line code per plane (sweeps' and the rest)
    us_other_loops: float = 0.0         # loops outside the sweeps (assumed trip counts)
    pipe_limiter: str = ""              # the resource of the largest share of the main sweeps
    #: the main sweeps (conv with Θ live, pair pass), weighted by their warp iterations
    main_categories: dict = field(default_factory=dict)
    main_lane_use: float = 0.0
    main_thread_use: float = 0.0
    main_conflict: float = 0.0
    #: the pair-pass kernel that issues the most
    main_kernel: str = ""
    main_registers: int = 0
    main_occupancy: float = 0.0
    main_smem: int = 0


def report_net(name: str, source: str, dtypes, dev: Device = H100,
               path: str | None = None) -> list[NetReport]:
    """The report of one net (``path``: its .net file, named in error messages)."""
    k = infinet.compile(path if path is not None else source)
    prog = k.kernel_program
    text = k.cuda_source
    notes: list[str] = []
    if render(prog, "cuda") != text:
        notes.append("the CUDA source is not render(program, 'cuda'): sweeps not mapped")
        line_map: dict = {}
    else:
        line_map, notes_map = sweep_line_map(prog)
        notes += notes_map
    result = nvrtc.compile_cubin(text, ARCH, f"{name}.cu", tuple(NVRTC_OPTIONS) + LINE_INFO)
    kernels = sass.kernels_of(result.cubin)
    out = []
    for dtype in dtypes:
        suffix = DTYPES[dtype].suffix
        reps: list[KernelReport] = []
        tails = {}
        for kname, kern in kernels.items():
            if not kname.endswith("_" + suffix):
                continue
            ref = _stage_of_kernel(kern, line_map)
            if ref is None:
                for pas in prog.passes:
                    if kname.startswith(pas.pass_ + "_tail"):
                        tails[pas.pass_] = tail_cost(kern, pas)
                continue
            pas = next(p for p in prog.passes if p.pass_ == ref[0])
            reps.append(analyse_kernel(kern, prog, pas, ref[1], line_map,
                                       result.resources[kname], dtype, dev))
        order = {p.pass_: n for n, p in enumerate(prog.passes)}
        reps.sort(key=lambda r: (order[r.pass_], r.stage))
        pair = sum(r.warp_instructions for r in reps if r.pass_ == "pair")
        self_ = sum(r.warp_instructions for r in reps if r.pass_ == "self")
        tail = tails.get("pair", 0.0)
        main = [sw for r in reps if r.pass_ == "pair" for sw in r.sweeps
                if sw.conv_theta and sw.entry_union]
        med = statistics.median(sw.entry_union for sw in main) if main else 0.0
        weights = sum(sw.warp_iters for sw in main)
        mean = (sum(sw.entry_union * sw.warp_iters for sw in main) / weights) if weights else 0.0
        path = statistics.median(sw.entry_path for sw in main) if main else 0.0
        nr = NetReport(name, dtype, reps, pair, self_, tail, med, mean, path,
                       (pair + tail) / dev.issue_rate * 1e6, self_ / dev.issue_rate * 1e6,
                       list(notes))
        if weights:
            cats: Counter = Counter()
            for sw in main:
                for k2, v in sw.categories.items():
                    cats[k2] += v * sw.warp_iters / weights
            nr.main_categories = {k2: round(v, 1) for k2, v in sorted(cats.items())}
            nr.main_lane_use = sum(sw.lane_use * sw.warp_iters for sw in main) / weights
            nr.main_thread_use = sum(sw.thread_use * sw.warp_iters for sw in main) / weights
            nr.main_conflict = sum(sw.stencil_conflict * sw.warp_iters for sw in main) / weights
        pr = [r for r in reps if r.pass_ == "pair"]
        loops_w = sum(sw.warp_iters * sw.entry_union
                      + sw.row_iters * sw.row for r in pr for sw in r.sweeps)
        other_w = sum(r.planes * r.other_loops for r in pr)
        nr.us_sweeps = loops_w / dev.issue_rate * 1e6
        nr.us_other_loops = other_w / dev.issue_rate * 1e6
        nr.us_overheads = nr.us_per_pair - nr.us_sweeps - nr.us_other_loops
        cycles = sum(r.sm_cycles for r in reps if r.pass_ == "pair") + tail / dev.schedulers
        nr.us_per_pair_pipes = cycles / (dev.sms * dev.clock_hz) * 1e6
        if main:
            load: Counter = Counter()
            for sw in main:
                for k2, v in sw.pipe_cycles.items():
                    load[k2] += v * sw.warp_iters
            nr.pipe_limiter = max(load, key=load.get)
        pair_reps = [r for r in reps if r.pass_ == "pair"]
        if pair_reps:
            top = max(pair_reps, key=lambda r: r.warp_instructions)
            nr.main_kernel, nr.main_registers = top.name, top.registers
            nr.main_occupancy, nr.main_smem = top.occupancy, top.static_smem + top.dynamic_smem
        out.append(nr)
    return out


# == printing ==================================================================================

def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _pipes(cycles: dict) -> str:
    top = sorted(cycles.items(), key=lambda kv: -kv[1])[:2]
    if not top:
        return "-"
    text = f"{top[0][1]:.1f} {top[0][0]}"
    return text + (f" ({top[1][1]:.1f} {top[1][0]})" if len(top) > 1 else "")


def print_net(rep: NetReport, verbose: bool = False, file=sys.stdout) -> None:
    p = lambda *a: print(*a, file=file)  # noqa: E731
    p(f"## {rep.net} {rep.dtype}")
    p()
    p("| kernel | planes | threads | regs | spills | smem static+dyn (B) | occupancy "
      "(limit) | warp instr / item | other per plane |")
    p("|---|---:|---:|---:|---:|---:|---|---:|---:|")
    for r in rep.kernels:
        smem = f"{r.static_smem}+{r.dynamic_smem}"
        if r.global_scratch:
            smem += " (global scratch)"
        p(f"| {r.name} | {r.planes} | {r.threads} | {r.registers} | {r.spills} | {smem} | "
          f"{_pct(r.occupancy)} ({r.blocks_per_sm} blocks, {r.occupancy_limiter}) | "
          f"{r.warp_instructions:.4g} | {r.per_plane_other:.0f} |")
    for r in rep.kernels:
        p()
        p(f"### {r.name}: sweeps (issued per entry-loop iteration, common path)")
        p()
        p("| # | sweep | issued/iter | path | int | move | fp32 | fp64 | mufu | conv | shared "
          "| global | ctrl+other | row | overhead | warp iters | lanes used | threads used "
          "| stencil wavefronts (conflict) | SM cycles/iter: slowest (next) | share |")
        p("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:"
          "|---:|---:|---:|---|---:|")
        for sw in r.sweeps:
            c = sw.categories
            rest = sum(v for k, v in c.items() if k not in
                       ("int", "move", "fp32", "fp64", "mufu", "conv", "shared", "global"))
            stencil = (f"{sw.stencil_wavefronts:.2f} ({sw.stencil_conflict:.2f}x)"
                       if sw.stencil_wavefronts else "-")
            share = sw.warp_instructions / r.warp_instructions if r.warp_instructions else 0
            p(f"| {sw.index} | {sw.label} | {sw.entry_union:.0f} | {sw.entry_path:.0f} | "
              + " | ".join(f"{c.get(k, 0):.0f}" for k in
                           ("int", "move", "fp32", "fp64", "mufu", "conv", "shared", "global"))
              + f" | {rest:.0f} | {sw.row} | {sw.overhead} | {sw.warp_iters} | "
              f"{_pct(sw.lane_use)} | {_pct(sw.thread_use)} | {stencil} | "
              f"{_pipes(sw.pipe_cycles)} | {_pct(share)} |")
        notes = [f"sweep {sw.index}: {n}" for sw in r.sweeps for n in sw.notes] + r.notes
        if notes:
            p()
            for n in notes:
                p(f"- {n}")
        if verbose:
            p()
            p("loops (address, depth, role, sweep, issued per iteration union/path, rare):")
            for lp in r.loops:
                p(f"    {'  ' * lp.depth}{lp.addr:#07x} d{lp.depth} {lp.role:9s} "
                  f"sweep={lp.sweep} {lp.union}/{lp.path} rare={lp.rare}")
    p()
    for n in rep.notes:
        p(f"- {n}")
    p()


def summary_line(rep: NetReport) -> str:
    cats = ", ".join(f"{k} {v:.0f}" for k, v in rep.main_categories.items() if v >= 0.5)
    return (f"SUMMARY {rep.net} {rep.dtype}: {rep.entry_layer:.0f} issued instructions per "
            f"K+Θ entry-layer of the main sweep (mean {rep.entry_layer_mean:.0f}, single path "
            f"{rep.entry_layer_path:.0f}: {cats}); {rep.main_kernel}: {rep.main_registers} "
            f"registers, occupancy {_pct(rep.main_occupancy)}, {rep.main_smem} B shared, "
            f"stencil bank conflicts {rep.main_conflict:.2f}x, lanes used "
            f"{_pct(rep.main_lane_use)} (threads {_pct(rep.main_thread_use)}); "
            f"{rep.pair_warp_instructions + rep.tail_warp_instructions:.4g} warp instructions "
            f"per pair -> {rep.us_per_pair:.1f} us per pair at the issue limit "
            f"(sweep loops {rep.us_sweeps:.1f}, straight-line code per plane "
            f"{rep.us_overheads:.1f}, other loops {rep.us_other_loops:.1f} with assumed trips; "
            f"{rep.us_per_pair_pipes:.1f} at the pipe bound, main sweep limited by "
            f"{rep.pipe_limiter or '-'}); self pass {rep.us_per_input_self:.2f} us per input")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", default=",".join(DEFAULT_NETS),
                    help=f"comma list of {','.join(net_sources())} or .net files")
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--json", metavar="FILE", help="also write every number as JSON")
    ap.add_argument("--verbose", action="store_true", help="list every loop of every kernel")
    args = ap.parse_args(argv)
    for tool_ok, what in ((nvrtc.available(), "NVRTC (pip install nvidia-cuda-nvrtc)"),
                          (sass.available(), "nvdisasm (pip install nvidia-cuda-nvdisasm)")):
        if not tool_ok:
            print(f"error: {what} is needed: pip install -e '.[perf]'", file=sys.stderr)
            return 2
    dtypes = args.dtypes.split(",")
    for d in dtypes:
        if d not in DTYPES:
            print(f"error: unknown dtype '{d}' (float32 or float64)", file=sys.stderr)
            return 2
    table = net_sources()
    sources = []
    for net in args.nets.split(","):
        if net in table:
            sources.append((net, table[net], None))
        elif os.path.isfile(net):
            with open(net) as fh:
                sources.append((os.path.basename(net), fh.read(), net))
        else:
            print(f"error: unknown net '{net}' (one of {', '.join(table)}, or a .net file)",
                  file=sys.stderr)
            return 2
    print(f"# infinet sass_report  {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"NVRTC {'.'.join(map(str, nvrtc.version()))}, {ARCH}, model: {H100.name}, "
          f"{H100.sms} SMs x {H100.schedulers} schedulers x {H100.clock_hz / 1e9:.2f} GHz")
    print()
    everything = []
    summaries = []
    for name, source, path in sources:
        try:
            reps = report_net(name, source, dtypes, path=path)
        except InfinetError as err:
            print(f"error: {name}: {err}", file=sys.stderr)
            return 2
        for rep in reps:
            print_net(rep, args.verbose)
            everything.append(rep)
            summaries.append(summary_line(rep))
    print("\n".join(summaries))
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump({"device": asdict(H100), "arch": ARCH,
                       "nvrtc": list(nvrtc.version()),
                       "nets": [asdict(r) for r in everything]}, fh, indent=1)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
