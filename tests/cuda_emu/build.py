"""Building emulated CUDA modules: the system C++ compiler, cached by content.

A CUDA source becomes a shared library in three steps:

1. preprocess it (``g++ -E``, the NVRTC macros defined) and find its ``extern "C"
   __global__`` functions and their ``__launch_bounds__``;
2. compile it as C++ with ``cuda_emu.h`` force-included and a kernel table appended
   (``EMU_KERNEL(name, bound)``: the C++ compiler itself describes every parameter);
3. link it, defining every ``extern __shared__`` array (an undefined thread-local symbol)
   at one dynamic-shared-memory arena, and read the ELF symbol table: the thread-local
   symbols are the ``__shared__`` variables, so each kernel's static shared memory is
   known exactly (variables of the kernel itself, plus those at namespace scope or in
   device functions, counted for every kernel).

Everything lands in ``$INFINET_CACHE_DIR/cuda-emu`` (default: ``infinet-cuda-emu-UID``
in the system temp dir), named by sha256 of the source, the options, the build mode, the
header, the runtime and the compiler, written under a file lock with atomic renames.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

HERE = Path(__file__).resolve().parent
HEADER = HERE / "cuda_emu.h"
ABI = HERE / "abi.h"
RUNTIME = HERE / "runtime.cpp"

MODES = ("plain", "asan", "tsan")
#: static __shared__ memory a block may use (CUDA: 48 KiB without opting in)
STATIC_SHARED_LIMIT = 48 * 1024
#: the dynamic-shared-memory arena: the largest opt-in of the emulated device (sm_90)
DYNAMIC_SHARED_CAPACITY = 227 * 1024
#: compute capability the emulated device reports (and __CUDA_ARCH__ by default)
ARCH = 90

_MODE_FLAGS = {
    "plain": ["-O1"],
    "asan": ["-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer"],
    "tsan": ["-O1", "-g", "-fsanitize=thread"],
}
_COMMON = ["-std=c++17", "-fPIC", "-ffp-contract=off", "-fno-strict-aliasing", "-w",
           # function-scope statics stay private to their module (GCC would make them
           # process-wide STB_GNU_UNIQUE symbols, shared between loaded modules)
           "-fno-gnu-unique"]


class BuildError(Exception):
    """The host compiler rejected an emulated source (message: command + diagnostics)."""


def cache_root() -> Path:
    root = os.environ.get("INFINET_CACHE_DIR")
    path = (Path(root) / "cuda-emu" if root
            else Path(tempfile.gettempdir()) / f"infinet-cuda-emu-{os.getuid()}")
    path.mkdir(parents=True, exist_ok=True)
    return path


@lru_cache(maxsize=None)
def compiler() -> str:
    for name in filter(None, (os.environ.get("CXX"), "g++", "c++")):
        found = shutil.which(name)
        if found:
            return found
    raise BuildError("cuda-emu needs a C++ compiler (g++) on PATH")


@lru_cache(maxsize=None)
def compiler_version() -> str:
    return subprocess.run([compiler(), "--version"], capture_output=True, text=True).stdout


def _run(cmd: list[str], what: str, keep: Path | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        where = f"\n  source: {keep}" if keep else ""
        raise BuildError(f"cuda-emu: {what} failed (exit {proc.returncode})\n  command: "
                         f"{' '.join(cmd)}{where}\n{proc.stderr.strip()}")
    return proc.stdout


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


class _Locked:
    """Build `final` (a directory) once: under a lock, into a temp dir renamed in place."""

    def __init__(self, final: Path):
        self.final = final

    def __enter__(self) -> Path | None:
        self.lock = open(str(self.final) + ".lock", "w")
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        if self.final.exists():
            return None
        self.tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=self.final.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        try:
            if hasattr(self, "tmp"):
                if exc_type is None:
                    os.replace(self.tmp, self.final)
                else:
                    shutil.rmtree(self.tmp, ignore_errors=True)
        finally:
            fcntl.flock(self.lock, fcntl.LOCK_UN)
            self.lock.close()
        return False


# ---- the runtime ---------------------------------------------------------------------------
def runtime_library(mode: str) -> Path:
    """libcudaemu for a build mode (the runtime itself is never instrumented)."""
    if mode not in MODES:
        raise ValueError(f"cuda-emu mode {mode!r}: one of {MODES}")
    defs = {"plain": [], "asan": ["-DEMU_ASAN"], "tsan": ["-DEMU_TSAN"]}[mode]
    cmd_tail = ["-O2", "-g", "-std=c++17", "-fPIC", "-shared", "-pthread", *defs]
    key = _digest(RUNTIME.read_text(), ABI.read_text(), " ".join(cmd_tail), compiler_version())
    final = cache_root() / f"runtime-{mode}-{key}"
    with _Locked(final) as tmp:
        if tmp is not None:
            _run([compiler(), *cmd_tail, f"-I{HERE}", str(RUNTIME), "-o",
                  str(tmp / "libcudaemu.so")], "building the cuda-emu runtime")
    return final / "libcudaemu.so"


# ---- kernels in a source ---------------------------------------------------------------------
@dataclass
class KernelDecl:
    name: str
    launch_bound: str   # C expression, "0" if none


_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|[A-Za-z_]\w*|\d[\w.]*|\S')


def _balanced(tokens: list[str], i: int) -> int:
    """Index after the parenthesised group that starts at tokens[i] == '('."""
    depth = 0
    while i < len(tokens):
        if tokens[i] == "(":
            depth += 1
        elif tokens[i] == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def find_kernels(preprocessed: str) -> list[KernelDecl]:
    """The extern "C" __global__ functions of a preprocessed source, in order."""
    tokens = _TOKEN.findall(preprocessed)
    found: dict[str, KernelDecl] = {}
    extern_c_depth: list[int] = []   # brace depths of open `extern "C" {` blocks
    depth = 0
    decl_start = 0                   # first token of the current declaration
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t == "extern" and tokens[i + 1:i + 3] == ['"C"', "{"]:
            depth += 1
            extern_c_depth.append(depth)
            i += 3
            decl_start = i
            continue
        if t == "{":
            depth += 1
            decl_start = i + 1
        elif t == "}":
            if extern_c_depth and extern_c_depth[-1] == depth:
                extern_c_depth.pop()
            depth -= 1
            decl_start = i + 1
        elif t == ";":
            decl_start = i + 1
        elif t == "__global__":
            prefix = tokens[decl_start:i]
            is_c = bool(extern_c_depth) or any(
                prefix[k] == "extern" and k + 1 < len(prefix) and prefix[k + 1] == '"C"'
                for k in range(len(prefix)))
            if "template" in prefix:
                is_c = False
            j, bound, name = i + 1, "0", None
            while j < len(tokens):
                tj = tokens[j]
                if tj in ("__launch_bounds__", "__attribute__", "alignas", "__declspec"):
                    end = _balanced(tokens, j + 1)
                    if tj == "__launch_bounds__":
                        inner, level, arg = tokens[j + 2:end - 1], 0, []
                        for x in inner:
                            if x in "([{":
                                level += 1
                            elif x in ")]}":
                                level -= 1
                            elif x == "," and level == 0:
                                break
                            arg.append(x)
                        bound = " ".join(arg) or "0"
                    j = end
                    continue
                if tj == "(":
                    name = tokens[j - 1]
                    break
                if tj in (";", "{"):
                    break
                j += 1
            if is_c and name and re.fullmatch(r"[A-Za-z_]\w*", name):
                prev = found.get(name)
                if prev is None or prev.launch_bound == "0":
                    found[name] = KernelDecl(name, bound)
            i = j
            continue
        i += 1
    return list(found.values())


# ---- ELF symbols -----------------------------------------------------------------------------
@dataclass
class TlsSymbol:
    name: str
    offset: int
    size: int
    defined: bool


def tls_symbols(path: Path) -> list[TlsSymbol]:
    """Thread-local symbols of an ELF64 little-endian object or shared library."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise BuildError(f"{path}: not a little-endian ELF64 file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + k * shentsize)
                for k in range(shnum)]
    out: list[TlsSymbol] = []
    for sec in sections:
        if sec[1] != 2:          # SHT_SYMTAB
            continue
        strtab = sections[sec[6]]
        s_off = strtab[4]
        for k in range(sec[5] // 24):
            st_name, st_info, _other, st_shndx, st_value, st_size = struct.unpack_from(
                "<IBBHQQ", data, sec[4] + k * 24)
            if st_info & 0xF != 6:   # STT_TLS
                continue
            end = data.index(b"\0", s_off + st_name)
            name = data[s_off + st_name:end].decode()
            out.append(TlsSymbol(name, st_value, st_size, st_shndx != 0))
    return out


_LOCAL_STATIC = re.compile(r"_ZZ(\d+)")


def owner_of(symbol: str) -> str | None:
    """The extern "C" function a function-local static belongs to (``_ZZ<len><name>E...``),
    or None (namespace scope, a C++ function, a template)."""
    m = _LOCAL_STATIC.match(symbol)
    if not m:
        return None
    n, start = int(m.group(1)), m.end()
    name = symbol[start:start + n]
    return name if symbol[start + n:start + n + 1] == "E" else None


def _internal(symbol: str) -> bool:
    return (symbol.startswith(("_ZGV", "_ZTH", "_ZTW", "emu_", "_ZN3emu", "_ZZN3emu"))
            or symbol in ("emu_tls_anchor_",))


# ---- modules ---------------------------------------------------------------------------------
@dataclass
class ModuleBuild:
    """A built module: the library, its source as compiled, and what the runtime needs."""

    library: Path
    source: Path
    kernels: list[str]
    static_shared: dict[str, int]                   # kernel -> bytes
    shared_ranges: dict[str, list[tuple[int, int]]]  # kernel -> (TLS offset, size)
    anchor_offset: int
    dyn_offset: int                                 # -1: no extern __shared__
    dyn_capacity: int
    shared_vars: dict[str, int] = field(default_factory=dict)   # symbol -> bytes


@dataclass(frozen=True)
class Options:
    defines: tuple[str, ...] = ()
    includes: tuple[str, ...] = ()
    std: str = "c++17"
    arch: int = ARCH


def build_module(source: str, options: Options, mode: str = "plain") -> ModuleBuild:
    cxx = compiler()
    arch_defs = ["-D__CUDACC__", "-D__CUDACC_RTC__", f"-D__CUDA_ARCH__={options.arch}0"]
    user = [f"-D{d}" for d in options.defines] + [f"-I{i}" for i in options.includes]
    flags = _COMMON[:] + _MODE_FLAGS[mode]
    flags[0] = f"-std={options.std}"
    key = _digest(source, repr(options), mode, " ".join(flags), HEADER.read_text(),
                  ABI.read_text(), compiler_version())
    final = cache_root() / f"module-{mode}-{key}"
    with _Locked(final) as tmp:
        if tmp is not None:
            _build(source, tmp, final, cxx, flags, arch_defs + user, mode)
    info = json.loads((final / "info.json").read_text())
    return ModuleBuild(library=final / "module.so", source=final / "module.cu",
                       kernels=info["kernels"], static_shared=info["static_shared"],
                       shared_ranges={k: [tuple(r) for r in v]
                                      for k, v in info["shared_ranges"].items()},
                       anchor_offset=info["anchor_offset"], dyn_offset=info["dyn_offset"],
                       dyn_capacity=info["dyn_capacity"], shared_vars=info["shared_vars"])


def _build(source: str, out: Path, final: Path, cxx: str, flags: list[str], defs: list[str],
           mode: str):
    raw = out / "input.cu"
    raw.write_text(source)
    pre = _run([cxx, "-E", "-P", "-x", "c++", f"-std={flags[0].split('=', 1)[1]}", *defs,
                str(raw)], "preprocessing the CUDA source", raw)
    kernels = find_kernels(pre)
    table = ["", "// ---- cuda-emu: the kernel table (appended by the build) ----",
             "EMU_KERNEL_TABLE_BEGIN"]
    table += [f"    EMU_KERNEL({k.name}, {k.launch_bound})" for k in kernels]
    table += ["EMU_KERNEL_TABLE_END", ""]
    src = out / "module.cu"
    src.write_text(source + ("" if source.endswith("\n") else "\n") + "\n".join(table))
    obj = out / "module.o"
    # errors name the source by its final path (__FILE__ in the messages of the runtime)
    _run([cxx, *flags, *defs, f"-ffile-prefix-map={out}={final}", f"-I{HERE}", "-include",
          str(HEADER), "-x", "c++", "-c", str(src), "-o", str(obj)],
         "compiling the CUDA source as C++", src)
    undefined = sorted({s.name for s in tls_symbols(obj) if not s.defined})
    # -Bsymbolic: a module's references bind to its own definitions (kernels of the same
    # name in two modules never mix)
    link = [cxx, "-shared", "-Wl,-Bsymbolic", *(f for f in flags if f.startswith("-fsanitize")),
            str(obj)]
    if undefined:
        asm = out / "dynamic_shared.s"
        lines = ['\t.section .tbss,"awT",@nobits', "\t.balign 256"]
        for name in ["emu_dynamic_shared", *undefined]:
            lines += [f"\t.globl {name}", f"\t.hidden {name}", f"\t.type {name}, @object"]
        lines += [f"{name}:" for name in ["emu_dynamic_shared", *undefined]]
        lines += [f"\t.zero {DYNAMIC_SHARED_CAPACITY}",
                  f"\t.size emu_dynamic_shared, {DYNAMIC_SHARED_CAPACITY}",
                  '\t.section .note.GNU-stack,"",@progbits', ""]
        asm.write_text("\n".join(lines))
        link.append(str(asm))
    lib = out / "module.so"
    _run(link + ["-o", str(lib)], "linking the emulated module", src)
    symbols = [s for s in tls_symbols(lib) if s.defined]
    by_name = {s.name: s for s in symbols}
    anchor = by_name["emu_tls_anchor_"].offset
    dyn = by_name["emu_dynamic_shared"].offset if "emu_dynamic_shared" in by_name else -1
    names = [k.name for k in kernels]
    seen: set[tuple[int, int]] = set()
    own: dict[str, list[tuple[int, int]]] = {k: [] for k in names}
    common: list[tuple[int, int]] = []
    shared_vars: dict[str, int] = {}
    for s in symbols:
        if _internal(s.name) or s.size == 0 or (s.offset, s.size) in seen:
            continue
        seen.add((s.offset, s.size))
        shared_vars[s.name] = s.size
        who = owner_of(s.name)
        (own[who] if who in own else common).append((s.offset, s.size))
    ranges = {k: own[k] + common for k in names}
    info = {"kernels": names,
            "static_shared": {k: sum(size for _, size in ranges[k]) for k in names},
            "shared_ranges": ranges, "anchor_offset": anchor, "dyn_offset": dyn,
            "dyn_capacity": DYNAMIC_SHARED_CAPACITY if dyn >= 0 else 0,
            "shared_vars": shared_vars, "mode": mode}
    (out / "info.json").write_text(json.dumps(info, indent=1))
    obj.unlink()
