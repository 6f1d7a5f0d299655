"""Reading the SASS of a CUBIN: instructions, control flow, loops, issued-instruction counts.

A static tool (no GPU): ``nvdisasm`` (pip package ``nvidia-cuda-nvdisasm``, in the ``perf``
and ``test`` extras) disassembles a CUBIN that :func:`infinet.codegen.nvrtc.compile_cubin`
built; :func:`parse` reads its text into kernels, each a set of functions (the entry point
and the subroutines ptxas put beside it, e.g. the slow paths of an IEEE division), each a
control-flow graph of basic blocks with its natural loops (back edges to a dominating
header, nested by containment).

With ``--generate-line-info`` in the compile options (it does not change the code) every
instruction carries the chain of source lines it came from, innermost first (the
per-entry function, then the stage function it was inlined into, then the kernel): that
is how a caller attributes instructions and loops to the parts of the program that
printed them (benchmarks/sass_report.py maps them to sweeps).

What one iteration of a loop issues (:meth:`Function.loop_cost`) is counted on its
*common path*: every instruction of the loop's own blocks (not those of inner loops) once,
except in *rare* blocks — a block that calls a subroutine and that a branch before it can
go around, or that calls one named ``*slowpath*`` (ptxas's out-of-line fallbacks of
IEEE division and square root, taken when a range check on the operands fails:
``__cuda_sm3x_div_rn_noftz_f32_slowpath``, ``__cuda_sm20_div_rn_f64_full``,
``__cuda_sm20_dsqrt_rn_f64_mediumpath_v1``), and the blocks only reachable through rare
blocks.  Both sides
of any other branch are counted (the ``union`` figure: a warp whose lanes disagree issues
both); ``path`` is the longest single path through the body (no lane diverges).  A call
on the common path adds the callee's own common-path count.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

from ..errors import InfinetError


class SassError(InfinetError):
    """nvdisasm is missing, failed, or printed something this module cannot read."""


# -- the disassembler ---------------------------------------------------------------------

def _tool_candidates(name: str) -> list[str]:
    found: list[str] = []
    env = os.environ.get("INFINET_" + name.upper())
    if env:
        found.append(env)
    try:
        import nvidia  # namespace package of the nvidia-* wheels
        for root in list(nvidia.__path__):
            for sub in ("cu13/bin", "cu12/bin", "cuda_nvdisasm/bin", "cuda_cuobjdump/bin"):
                found += sorted(glob.glob(os.path.join(root, sub, name)))
    except ImportError:
        pass
    on_path = shutil.which(name)
    if on_path:
        found.append(on_path)
    found.append(f"/usr/local/cuda/bin/{name}")
    return [f for f in found if os.path.isfile(f) and os.access(f, os.X_OK)]


@lru_cache(maxsize=None)
def tool(name: str = "nvdisasm") -> str:
    """Path of a CUDA binary tool: ``$INFINET_NVDISASM``, the pip package, then PATH."""
    found = _tool_candidates(name)
    if not found:
        raise SassError(f"{name} not found: install the `nvidia-cuda-{name}` package "
                        f"(pip install 'infinet[perf]') or set INFINET_{name.upper()}")
    return found[0]


def available() -> bool:
    try:
        tool("nvdisasm")
        return True
    except SassError:
        return False


def disassemble(cubin: bytes) -> str:
    """The SASS text of a CUBIN (code sections, with the inlined-line chains ``-gi``)."""
    with tempfile.TemporaryDirectory(prefix="infinet-sass-") as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as fh:
            fh.write(cubin)
        proc = subprocess.run([tool("nvdisasm"), "-c", "-gi", path], capture_output=True,
                              text=True, timeout=300)
    if proc.returncode != 0:
        raise SassError(f"nvdisasm failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


# -- instructions -------------------------------------------------------------------------

#: instruction categories (by opcode) for the breakdowns of a count
CATEGORIES = ("int", "move", "fp32", "fp64", "mufu", "conv", "shared", "global", "local",
              "const", "uniform", "warp", "control", "other")

_CATEGORY_OF = {}
for _cat, _ops in {
    "int": "IMAD IMUL IADD3 IADD IABS LEA LOP3 LOP SHF SHL SHR ISETP ICMP IMNMX VIMNMX "
           "VIADD VIADDMNMX SEL PRMT POPC FLO BREV BMSK SGXT IDP PLOP3 P2R R2P BFE BFI "
           "LEPC",
    "move": "MOV MOV32I",
    "fp32": "FADD FMUL FFMA FMNMX FSEL FSETP FSET FCHK FSWZADD HADD2 HMUL2 HFMA2 HMNMX2 "
            "HSETP2 FADD32I FMUL32I FFMA32I",
    "fp64": "DADD DMUL DFMA DSETP DMNMX DSET",
    "mufu": "MUFU",
    "conv": "I2F F2I F2F I2I FRND F2FP I2FP F2IP DRND",
    "shared": "LDS STS ATOMS LDSM",
    "global": "LDG STG LD ST ATOM ATOMG RED LDGSTS",
    "local": "LDL STL",
    "const": "LDC",
    "warp": "SHFL VOTE VOTEU MATCH REDUX",
    "control": "BRA BRX JMP JMX CALL RET EXIT BSSY BSYNC BAR BREAK WARPSYNC NOP YIELD KILL "
               "BPT ENDCOLLECTIVE ELECT ACQBULK DEPBAR MEMBAR ERRBAR CCTL S2R CS2R",
}.items():
    for _op in _ops.split():
        _CATEGORY_OF[_op] = _cat


def category(opcode: str) -> str:
    """The category of an opcode (``IMAD.MOV.U32`` -> move, ``LDS.64`` -> shared)."""
    base = opcode.split(".")[0]
    if opcode.startswith("IMAD.MOV"):
        return "move"
    if base in _CATEGORY_OF:
        return _CATEGORY_OF[base]
    if base.startswith("U") or base in ("S2UR", "R2UR"):
        return "uniform"       # the uniform datapath (one value per warp)
    return "other"


@dataclass
class Instr:
    addr: int
    pred: str                 # "" or "@P0", "@!P0", ...
    opcode: str               # "LDS.U.64"
    operands: str
    #: the source (file, line) chain it came from, innermost first (empty without -gi)
    where: tuple[tuple[str, int], ...] = ()

    @property
    def base(self) -> str:
        return self.opcode.split(".")[0]

    @property
    def category(self) -> str:
        if self.opcode.startswith("HFMA2") and self.operands.split(",")[1:3] == [" -RZ", " RZ"]:
            return "move"      # HFMA2.MMA R, -RZ, RZ, c0, c1: ptxas's move of a constant
        return category(self.opcode)

    @property
    def target(self) -> str | None:
        """The label a branch or call names (`(.L_x_12)` in nvdisasm's syntax)."""
        m = re.search(r"`\(([^)]+)\)", self.operands)
        return m.group(1) if m else None

    @property
    def conditional(self) -> bool:
        if self.pred and self.pred not in ("@PT", "@UPT"):
            return True
        # BRA P1, `(label)`: a second predicate operand
        return bool(re.match(r"!?U?P[0-6T]\s*,", self.operands))

    @property
    def lines(self) -> tuple[int, ...]:
        return tuple(line for _, line in self.where)

    def __str__(self) -> str:
        pred = self.pred + " " if self.pred else ""
        return f"/*{self.addr:04x}*/ {pred}{self.opcode} {self.operands}"


@dataclass
class Block:
    index: int
    start: int                # first instruction (index into Function.instrs)
    end: int                  # one past the last
    succs: list[int] = field(default_factory=list)
    preds: list[int] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)   # subroutines called from here

    def __len__(self) -> int:
        return self.end - self.start


@dataclass
class Loop:
    header: int
    blocks: frozenset[int]          # every block of the loop, inner loops included
    latches: tuple[int, ...]
    parent: "Loop | None" = None
    children: list["Loop"] = field(default_factory=list)
    own: frozenset[int] = frozenset()   # blocks not inside an inner loop

    @property
    def depth(self) -> int:
        d, p = 1, self.parent
        while p is not None:
            d, p = d + 1, p.parent
        return d


@dataclass
class Cost:
    """What one pass over a set of blocks issues, per warp."""

    union: int                        # every common-path instruction once
    path: int                         # the longest single common path
    by_category: Counter = field(default_factory=Counter)
    by_opcode: Counter = field(default_factory=Counter)
    rare: int = 0                     # instructions left out as rare (slow paths)

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.union + other.union, self.path + other.path,
                    self.by_category + other.by_category, self.by_opcode + other.by_opcode,
                    self.rare + other.rare)


_BRANCH = ("BRA", "BRX", "JMP", "JMX")
_END = ("EXIT", "RET", "KILL", "BPT")


@dataclass
class Function:
    name: str
    instrs: list[Instr]
    labels: dict[str, int]            # label -> instruction index
    kernel: "Kernel | None" = None
    blocks: list[Block] = field(default_factory=list)
    loops: list[Loop] = field(default_factory=list)      # outermost first, in code order
    _dom: dict = field(default_factory=dict, repr=False)
    block_of: list[int] = field(default_factory=list)    # instruction index -> block
    warnings: list[str] = field(default_factory=list)

    # -- construction --------------------------------------------------------------------
    def build(self) -> None:
        n = len(self.instrs)
        leaders = {0}
        for i, ins in enumerate(self.instrs):
            if ins.base in _BRANCH or ins.base in _END:
                if i + 1 < n:
                    leaders.add(i + 1)
                t = ins.target
                if ins.base in _BRANCH and t is not None and t in self.labels:
                    leaders.add(self.labels[t])
        starts = sorted(s for s in leaders if s < n)
        self.blocks = [Block(k, s, (starts[k + 1] if k + 1 < len(starts) else n))
                       for k, s in enumerate(starts)]
        self.block_of = [0] * n
        for b in self.blocks:
            for i in range(b.start, b.end):
                self.block_of[i] = b.index
        for b in self.blocks:
            for i in range(b.start, b.end):
                ins = self.instrs[i]
                if ins.base == "CALL" and ins.target:
                    b.calls.append(ins.target)
            last = self.instrs[b.end - 1]
            nxt = b.index + 1 if b.index + 1 < len(self.blocks) else None
            succ: list[int] = []
            if last.base in _BRANCH:
                t = last.target
                if t is not None and t in self.labels:
                    succ.append(self.block_of[self.labels[t]])
                elif last.base in ("BRX", "JMX") or t is None:
                    self.warnings.append(f"{self.name}: indirect branch at "
                                         f"{last.addr:#x} (its targets are not followed)")
                if last.conditional and nxt is not None:
                    succ.append(nxt)
            elif last.base in _END:
                if last.conditional and nxt is not None:
                    succ.append(nxt)
            elif nxt is not None:
                succ.append(nxt)
            b.succs = list(dict.fromkeys(succ))
        for b in self.blocks:
            for s in b.succs:
                self.blocks[s].preds.append(b.index)
        self._find_loops()

    def reachable(self) -> list[int]:
        seen, order, stack = set(), [], [0]
        while stack:
            b = stack.pop()
            if b in seen:
                continue
            seen.add(b)
            order.append(b)
            stack.extend(reversed(self.blocks[b].succs))
        return sorted(order)

    def dominators(self) -> dict[int, set[int]]:
        nodes = self.reachable()
        dom = {b: set(nodes) for b in nodes}
        dom[0] = {0}
        changed = True
        while changed:
            changed = False
            for b in nodes:
                if b == 0:
                    continue
                preds = [p for p in self.blocks[b].preds if p in dom]
                new = set.intersection(*(dom[p] for p in preds)) if preds else set()
                new = new | {b}
                if new != dom[b]:
                    dom[b], changed = new, True
        return dom

    def _find_loops(self) -> None:
        dom = self._dom = self.dominators()
        by_header: dict[int, tuple[set[int], list[int]]] = {}
        for b in dom:
            for s in self.blocks[b].succs:
                if s in dom[b]:                      # back edge b -> s
                    body, latches = by_header.setdefault(s, ({s}, []))
                    latches.append(b)
                    stack = [b]
                    while stack:
                        x = stack.pop()
                        if x in body:
                            continue
                        body.add(x)
                        stack.extend(p for p in self.blocks[x].preds if p in dom)
        self._check_reducible(dom)
        loops = [Loop(h, frozenset(body), tuple(sorted(latches)))
                 for h, (body, latches) in by_header.items()]
        loops.sort(key=lambda lp: (len(lp.blocks), -lp.header))
        for k, lp in enumerate(loops):               # the smallest enclosing loop
            for outer in loops[k + 1:]:
                if lp.blocks < outer.blocks:
                    lp.parent = outer
                    outer.children.append(lp)
                    break
        for lp in loops:
            inner = set().union(*(c.blocks for c in lp.children)) if lp.children else set()
            lp.own = frozenset(lp.blocks - inner)
            lp.children.sort(key=lambda c: c.header)
        self.loops = sorted((lp for lp in loops if lp.parent is None),
                            key=lambda lp: lp.header)

    def _check_reducible(self, dom: dict[int, set[int]]) -> None:
        """Warn where a cycle remains without its back edges (a loop with two entries:
        not a natural loop, so not counted as one)."""
        state: dict[int, int] = {}
        for root in sorted(dom):
            if root in state:
                continue
            stack = [(root, iter(self.blocks[root].succs))]
            state[root] = 1
            while stack:
                b, it = stack[-1]
                for s in it:
                    if s not in dom or s in dom[b]:
                        continue                      # unreachable, or a back edge
                    if state.get(s) == 1:
                        self.warnings.append(
                            f"{self.name}: irreducible control flow at "
                            f"{self.instrs[self.blocks[s].start].addr:#x} (not counted as a loop)")
                    elif s not in state:
                        state[s] = 1
                        stack.append((s, iter(self.blocks[s].succs)))
                        break
                else:
                    state[b] = 2
                    stack.pop()

    # -- queries -------------------------------------------------------------------------
    def all_loops(self) -> list[Loop]:
        """Every loop, outer before inner, in code order."""
        out: list[Loop] = []

        def walk(lp: Loop) -> None:
            out.append(lp)
            for c in lp.children:
                walk(c)
        for lp in self.loops:
            walk(lp)
        return out

    def loop_of_block(self) -> dict[int, Loop]:
        """The innermost loop of every block inside one."""
        out: dict[int, Loop] = {}
        for lp in self.all_loops():           # outer first: inner ones overwrite
            for b in lp.blocks:
                out[b] = lp
        return out

    def block_instrs(self, b: int) -> list[Instr]:
        blk = self.blocks[b]
        return self.instrs[blk.start:blk.end]

    def slow_call(self, b: int) -> bool:
        """Whether block ``b`` calls a subroutine off the common path: one named a slow
        path, or any call in a block entered through a conditional branch (the only
        subroutines in generated code are ptxas's out-of-line fallbacks, e.g.
        ``__cuda_sm20_div_rn_f64_full``, taken when a range check fails)."""
        blk = self.blocks[b]
        if not blk.calls:
            return False
        if any(_is_slow(c) for c in blk.calls):
            return True
        # guarded: a branch before it has another way on that never comes to it
        for p in blk.preds:
            others = [s for s in self.blocks[p].succs if s != b]
            if others and any(not self._forward_reaches(s, b) for s in others):
                return True
        return False

    def _forward_reaches(self, a: int, b: int) -> bool:
        """Whether block ``b`` is reachable from ``a`` without taking a back edge."""
        dom = self._dom
        seen, stack = set(), [a]
        while stack:
            x = stack.pop()
            if x == b:
                return True
            if x in seen:
                continue
            seen.add(x)
            stack.extend(s for s in self.blocks[x].succs if not (x in dom and s in dom[x]))
        return False

    def rare_blocks(self, region: set[int] | frozenset[int], entry: int | None = None) -> set[int]:
        """Blocks of ``region`` off the common path: those calling a slow-path subroutine
        and those whose every predecessor in the region is rare (``entry`` never is)."""
        rare = {b for b in region if self.slow_call(b)}
        changed = True
        while changed:
            changed = False
            for b in sorted(region):
                if b in rare or b == entry:
                    continue
                preds = [p for p in self.blocks[b].preds if p in region and p != b]
                if preds and all(p in rare for p in preds):
                    rare.add(b)
                    changed = True
        return rare

    def cost(self, region, entry: int | None = None, exclude=frozenset()) -> Cost:
        """Issued instructions of one pass over the blocks of ``region`` (minus
        ``exclude``), on the common path (see the module docstring)."""
        region = set(region)
        rare = self.rare_blocks(region, entry)
        counted = sorted(region - rare - set(exclude))
        cats: Counter = Counter()
        ops: Counter = Counter()
        weight: dict[int, int] = {}
        for b in counted:
            w = 0
            for ins in self.block_instrs(b):
                cats[ins.category] += 1
                ops[ins.base] += 1
                w += 1
            for callee in self.blocks[b].calls:
                sub = self.kernel.functions.get(callee) if self.kernel else None
                if sub is not None and sub is not self:
                    c = sub.cost(set(range(len(sub.blocks))), 0)
                    cats += c.by_category
                    ops += c.by_opcode
                    w += c.union
            weight[b] = w
        union = sum(weight.values())
        rare_n = sum(len(self.blocks[b]) for b in rare)
        path = self._longest_path(set(counted), weight, entry)
        return Cost(union, path, cats, ops, rare_n)

    def _longest_path(self, nodes: set[int], weight: dict[int, int], entry) -> int:
        """Heaviest path through the DAG of ``nodes`` (edges to ``entry`` ignored)."""
        if not nodes:
            return 0
        preds = {b: [p for p in self.blocks[b].preds if p in nodes and b != entry
                     and p != b] for b in nodes}
        indeg = {b: len(preds[b]) for b in nodes}
        succs: dict[int, list[int]] = {b: [] for b in nodes}
        for b in nodes:
            for p in preds[b]:
                succs[p].append(b)
        ready = sorted(b for b in nodes if indeg[b] == 0)
        best: dict[int, int] = {}
        while ready:
            b = ready.pop()
            best[b] = weight[b] + max((best[p] for p in preds[b]), default=0)
            for s in succs[b]:
                indeg[s] -= 1
                if indeg[s] == 0:
                    ready.append(s)
        if len(best) < len(nodes):        # a cycle (irreducible): no single path
            return sum(weight.values())
        return max(best.values())

    def loop_cost(self, lp: Loop) -> Cost:
        """One iteration of a loop: its own blocks (inner loops excluded) on the common path."""
        return self.cost(lp.blocks, lp.header, exclude=lp.blocks - lp.own)


def _is_slow(name: str) -> bool:
    return "slowpath" in name.lower()


@dataclass
class Kernel:
    name: str
    functions: dict[str, Function]    # the entry first, then its subroutines

    @property
    def entry(self) -> Function:
        return self.functions[self.name]

    @property
    def warnings(self) -> list[str]:
        return [w for f in self.functions.values() for w in f.warnings]


# -- parsing nvdisasm's text --------------------------------------------------------------

_SECTION = re.compile(r"^\s*\.section\s+\.text\.([^,\s]+)")
_TYPE = re.compile(r"^\s*\.type\s+([^,\s]+)\s*,\s*@function")
_LABEL = re.compile(r"^([^\s/][^\s:]*):\s*$")
_INSTR = re.compile(r"^\s*/\*([0-9a-fA-F]+)\*/\s*(.*?)\s*;?\s*(?:/\*.*\*/)?\s*$")
_PRED = re.compile(r"^(@!?U?P(?:[0-7]|T))\s+")
_LOC = re.compile(r'File\s+"([^"]*)",\s*line\s+(\d+)')


def parse(text: str) -> dict[str, Kernel]:
    """Kernels (by name) of nvdisasm's text output (``nvdisasm -c [-gi] file.cubin``)."""
    kernels: dict[str, Kernel] = {}
    section: str | None = None
    funcs: dict[str, Function] = {}
    cur: Function | None = None
    pending_types: list[str] = []
    where: tuple[tuple[str, int], ...] = ()
    chain: list[tuple[str, int]] = []
    pending_labels: list[str] = []

    def close():
        nonlocal funcs, cur
        if section is not None and funcs:
            entry = funcs.get(section) or next(iter(funcs.values()))
            ordered = {entry.name: entry}
            ordered.update({k: v for k, v in funcs.items() if k != entry.name})
            kern = Kernel(entry.name, ordered)
            for f in ordered.values():
                f.kernel = kern
                f.build()
            kernels[kern.name] = kern
        funcs, cur = {}, None

    for raw in text.splitlines():
        m = _SECTION.match(raw)
        if m:
            close()
            section = m.group(1)
            pending_types, where, chain, pending_labels = [], (), [], []
            continue
        if section is None:
            continue
        stripped = raw.strip()
        if stripped.startswith("//##"):
            locs = _LOC.findall(stripped)
            if locs:
                chain.append((locs[0][0], int(locs[0][1])))
            continue
        m = _TYPE.match(raw)
        if m:
            pending_types.append(m.group(1))
            continue
        m = _LABEL.match(raw)
        if m:
            label = m.group(1)
            if label in pending_types:
                pending_types.remove(label)
                cur = funcs[label] = Function(label, [], {})
                pending_labels = []
            elif cur is not None:
                pending_labels.append(label)
            continue
        m = _INSTR.match(raw)
        if m:
            if cur is None:
                cur = funcs[section] = Function(section, [], {})
            if chain:
                where, chain = tuple(chain), []
            for label in pending_labels:
                cur.labels[label] = len(cur.instrs)
            pending_labels = []
            body = m.group(2).strip()
            pred = ""
            pm = _PRED.match(body)
            if pm:
                pred = pm.group(1)
                body = body[pm.end():]
            parts = body.split(None, 1)
            if not parts:
                continue
            cur.instrs.append(Instr(int(m.group(1), 16), pred, parts[0],
                                    parts[1].strip() if len(parts) > 1 else "", where))
    close()
    if not kernels:
        raise SassError("no kernel found in the disassembly (is it nvdisasm -c output?)")
    for kern in kernels.values():
        if not kern.entry.instrs:
            raise SassError(f"kernel {kern.name}: no instructions read")
    return kernels


def kernels_of(cubin: bytes) -> dict[str, Kernel]:
    """Disassemble and parse a CUBIN."""
    return parse(disassemble(cubin))


__all__ = ["CATEGORIES", "Block", "Cost", "Function", "Instr", "Kernel", "Loop",
           "SassError", "available", "category", "disassemble", "kernels_of", "parse",
           "tool"]
