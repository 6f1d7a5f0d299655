"""Every ```python block of README.md runs as written, in order, from the repository root,
in one interpreter — as a new user pasting them would run them."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import ROOT

BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def python_blocks() -> list[str]:
    return BLOCK.findall((ROOT / "README.md").read_text())


def test_the_readme_has_its_python_examples():
    blocks = python_blocks()
    assert len(blocks) == 2
    assert "infinet.compile(" in blocks[0] and "InfinetClassifier(" in blocks[1]


def test_every_python_block_of_the_readme_runs(tmp_path):
    script = "\n\n".join(f"# -- README block {i + 1}\n{block}"
                         for i, block in enumerate(python_blocks()))
    (tmp_path / "readme.py").write_text(script)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               INFINET_CACHE_DIR=os.environ.get("INFINET_CACHE_DIR", str(tmp_path / "cache")),
               MPLBACKEND="Agg")
    before = sorted(os.listdir(ROOT))
    proc = subprocess.run([sys.executable, str(tmp_path / "readme.py")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr
    # what the blocks print is what the README says they print
    out = proc.stdout
    assert "<infinet kernel cntk_gap (examples/cntk_gap.net): input 32x32x3, " in out
    assert "examples/cntk_gap.net: ok: net cntk_gap" in out      # k.summary()
    accuracies = [float(a) for a in re.findall(r"^accuracy (0\.\d+)$", out, re.M)]
    assert len(accuracies) == 2 and min(accuracies) > 0.8, out[-2000:]
    assert sorted(os.listdir(ROOT)) == before                   # nothing left in the checkout
