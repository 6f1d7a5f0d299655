"""Every generated CUDA source compiles with plain NVRTC to sm_80 and sm_90 CUBINs.

Runs without a GPU: NVRTC (pip package nvidia-cuda-nvrtc, in the `test` extra) only
compiles.  The source must be self-contained (no CuPy headers, no includes at all) and
warning-free; ptxas (run for the real architectures, ``--ptxas-options=-v``) must
place every kernel without spilling registers and with its static shared memory within
the 48 KiB a block gets without opting in.  Registers per kernel go to the end-of-run
summary.
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

import infinet
from codegen_cases import CASES
from infinet.codegen import nvrtc
from infinet.runtime.cuda import NVRTC_OPTIONS
from summary import SECTIONS

pytestmark = pytest.mark.skipif(not nvrtc.available(), reason="NVRTC not installed "
                                "(pip install nvidia-cuda-nvrtc)")

ARCHS = ("sm_80", "sm_90")
STATIC_SHARED_LIMIT = 48 * 1024
_RESULTS: dict = {}


def _compile_all():
    """Compile every case for both architectures once per session, two at a time."""
    if not _RESULTS:
        jobs = [(name, arch) for name in sorted(CASES) for arch in ARCHS]
        sources = {name: infinet.compile(CASES[name]).cuda_source for name in CASES}

        def one(job):
            name, arch = job
            try:
                return job, nvrtc.compile_cubin(sources[name], arch, f"{name}.cu", NVRTC_OPTIONS)
            except nvrtc.NvrtcError as err:
                return job, err
        with ThreadPoolExecutor(max_workers=2) as pool:
            _RESULTS.update(pool.map(one, jobs))
    return _RESULTS


def _result(name, arch):
    result = _compile_all()[(name, arch)]
    if isinstance(result, Exception):
        raise result
    return result


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_cuda_source_compiles_without_warnings(name, arch):
    result = _result(name, arch)
    assert result.diagnostics == "", result.diagnostics
    assert ".entry pair_stage0_f32" in result.ptx or ".entry pair_tail_f32" in result.ptx
    assert ".entry pair_tail_f64" in result.ptx
    assert result.cubin and result.cubin[:4] == b"\x7fELF"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_kernels_fit_the_hardware(name, arch):
    """No register spills, static shared memory within 48 KiB, on the real architecture."""
    result = _result(name, arch)
    entries = set(re.findall(r"\.entry\s+(\w+)", result.ptx))
    kernels = result.resources
    assert set(kernels) == entries and kernels
    for k in kernels.values():
        assert k.registers > 0 and k.arch == arch, k
        assert k.shared <= STATIC_SHARED_LIMIT, k
    spilled = {k.name for k in kernels.values() if k.spill_stores or k.spill_loads}
    assert not spilled, [kernels[n] for n in sorted(spilled)]
    SECTIONS.setdefault("ptxas: registers / static shared bytes per kernel", []).append(
        f"{name:24s} {arch}  " + "  ".join(
            f"{k.name}={k.registers}r/{k.shared}B" for k in sorted(kernels.values(),
                                                                   key=lambda k: k.name)))


def test_ptxas_refuses_what_the_ptx_compile_accepts():
    """A 52 KB static __shared__ array: fine for PTX, refused by ptxas for sm_90."""
    src = ('extern "C" __global__ void big(float* out) { __shared__ float s[13312]; '
           's[threadIdx.x] = 1.0f; __syncthreads(); out[threadIdx.x] = s[13311 - threadIdx.x]; }')
    assert ".entry big" in nvrtc.compile_ptx(src, "compute_90").ptx
    with pytest.raises(nvrtc.NvrtcError, match="too much shared data"):
        nvrtc.compile_cubin(src, "sm_90")
    fits = nvrtc.compile_cubin(src.replace("13312", "12288").replace("13311", "12287"), "sm_90")
    assert fits.resources["big"].shared == 48 * 1024


def test_ptxas_resources_are_parsed():
    """Registers and spills as ptxas reports them: a register-hungry kernel spills once
    squeezed by --maxrregcount."""
    src = ('extern "C" __global__ void hungry(double* out, int n) {\n'
           '  double a[16];\n'
           '  for (int i = 0; i < 16; ++i) a[i] = out[(i * n) % 1000];\n'
           '  double s = 0;\n'
           '  _Pragma("unroll") for (int i = 0; i < 16; ++i)\n'
           '    _Pragma("unroll") for (int j = 0; j < 16; ++j) s += a[i] * a[j] / (a[(i + j) % 16] + 1.0);\n'
           '  out[threadIdx.x] = s; }')
    free = nvrtc.compile_cubin(src, "sm_80").resources["hungry"]
    assert free.arch == "sm_80" and free.registers > 64 and free.barriers == 0
    assert free.spill_stores == free.spill_loads == 0 and free.shared == 0
    squeezed = nvrtc.compile_cubin(src, "sm_80", options=("--maxrregcount=16",)).resources["hungry"]
    assert squeezed.registers < free.registers
    assert squeezed.spill_stores > 0 and squeezed.spill_loads > 0 and squeezed.stack > 0


def test_cuda_source_is_self_contained_and_specialised():
    k = infinet.compile(CASES["example_cntk_gap"])
    src = k.cuda_source
    assert "#include" not in src
    # constants of the network are literals; demanded planes are listed; .net lines cited
    # the unrolled 3x3 stencil (the column walk: the new row's taps, the rows above from
    # registers)
    assert "A(S): this row's taps along w summed and scaled by 1/3" in src
    assert "pair_stage0_oh[15] = { -7, -6" in src          # 8x8 gap: all 15 offsets per axis
    assert "layer 1 (line 8): conv 3x3 pad=same W=1.41421 b=0 fixed" in src
    assert src == infinet.compile(CASES["example_cntk_gap"]).cuda_source   # deterministic
    flat = infinet.compile(CASES["example_cntk_v"]).cuda_source
    assert "pair_stage0_oh[1] = { 0 }" in flat                # flatten: offset 0 only


def test_nvrtc_reports_errors():
    with pytest.raises(nvrtc.NvrtcError) as info:
        nvrtc.compile_ptx("__global__ void f() { undefined_thing(); }", "compute_80")
    assert "undefined_thing" in str(info.value)
