"""Shared test set-up: tests marked `cuda` run on a real GPU or on the cuda-emu emulation."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(autouse=True)
def cuda_device(request):
    """Tests marked `cuda` see CuPy: the real one where it finds a GPU, else the cuda-emu
    stand-in (tests/cuda_emu); "gpu" or "emulator".  Other tests never see the stand-in."""
    if request.node.get_closest_marker("cuda") is None:
        yield None
        return
    import cuda_emu
    with cuda_emu.activated() as where:
        yield where


def pytest_sessionfinish(session):
    """On a pytest-xdist worker: hand the tables to the controller, which prints them."""
    out = getattr(session.config, "workeroutput", None)
    if out is not None:
        from summary import SECTIONS
        out["summary_sections"] = json.dumps(SECTIONS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """(pytest-xdist, on the controller) a worker's tables join this process's."""
    from summary import SECTIONS
    text = getattr(node, "workeroutput", {}).get("summary_sections")
    for title, lines in (json.loads(text) if text else {}).items():
        SECTIONS.setdefault(title, []).extend(lines)


def pytest_terminal_summary(terminalreporter):
    """Tables tests left for the reader (e.g. registers per kernel from ptxas)."""
    from summary import SECTIONS
    for title, lines in SECTIONS.items():
        terminalreporter.write_sep("-", title)
        for line in lines:
            terminalreporter.write_line(line)


def run_cli(*args, cwd=None):
    """Run `python -m infinet ARGS` in a subprocess; return (status, stdout, stderr)."""
    import subprocess
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "infinet", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr
