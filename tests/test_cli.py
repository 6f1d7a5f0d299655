"""The command line (README.md, "Commands"): check, explain, eval, and how it ends."""
from __future__ import annotations

import numpy as np
import pytest

import infinet
from infinet.cli import main

from conftest import EXAMPLES, run_cli


@pytest.mark.parametrize("net", sorted(p.name for p in EXAMPLES.glob("*.net")))
def test_check_every_example(net, capsys):
    assert main(["check", str(EXAMPLES / net)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{EXAMPLES / net}: ok: net ")
    assert "per pair" in out and "per input" in out


def test_check_summary_reports_readout_demand(capsys):
    assert main(["check", str(EXAMPLES / "cntk_gap.net"), "-D", "depth=4"]) == 0
    out = capsys.readouterr().out
    assert "params     depth = 4" in out
    assert "layers     3 conv, 3 relu, 1 gap, 1 dense" in out
    assert "gap at line 14: needs offsets all(63) x all(63)" in out
    assert main(["check", str(EXAMPLES / "cntk_v.net")]) == 0
    assert "needs offsets 0 x 0" in capsys.readouterr().out


def test_explain_table(capsys):
    assert main(["explain", str(EXAMPLES / "myrtle.net")]) == 0
    out = capsys.readouterr().out.splitlines()
    header = out[1].split()
    assert header[:4] == ["#", "line", "layer", "output"]
    rows = [line for line in out[3:] if line.strip() and line.split()[0].isdigit()]
    assert len(rows) == 14
    pool = next(r for r in rows if "avgpool 8x8" in r)
    assert "1x1xinf" in pool and " 0 x 0 " in pool
    first_pool = next(r for r in rows if "avgpool 2x2" in r)
    assert "all(31) x all(31)" in first_pool and "65,536" in first_pool
    assert any(line.startswith("per pair:") for line in out)


def test_eval_writes_nngp_and_ntk(tmp_path):
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(3, 8, 8, 1)), rng.normal(size=(2, 8, 8, 1))
    np.save(tmp_path / "a.npy", x1)
    np.save(tmp_path / "b.npy", x2)
    net = EXAMPLES / "cnn_gap_small.net"
    code, out, err = run_cli("eval", net, "--x1", "a.npy", "--x2", "b.npy", "--out", "K.npz",
                             "-D", "depth=2", cwd=tmp_path)
    assert code == 0, err
    assert "wrote K.npz: nngp, ntk [3, 2]" in out
    with np.load(tmp_path / "K.npz") as f:
        assert sorted(f.keys()) == ["nngp", "ntk"]
        want = infinet.compile(net, depth=2)(x1, x2)
        np.testing.assert_array_equal(f["nngp"], want.nngp)
        np.testing.assert_array_equal(f["ntk"], want.ntk)
    code, _, err = run_cli("eval", net, "--x1", "a.npy", "--out", "K.npz", "--dtype", "float32",
                           "--backend", "numpy", "--quiet", "--overwrite", cwd=tmp_path)
    assert code == 0, err
    with np.load(tmp_path / "K.npz") as f:
        assert f["nngp"].shape == (3, 3) and np.array_equal(f["nngp"], f["nngp"].T)
        assert np.abs(f["nngp"] - infinet.compile(net)(x1).nngp).max() < 1e-5


def test_eval_flat_vectors_and_npz_input(tmp_path):
    x = np.random.default_rng(1).normal(size=(4, 64))
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(4))
    code, _, err = run_cli("eval", EXAMPLES / "fc_ntk.net", "--x1", "d.npz", "--out", "K.npz",
                           cwd=tmp_path)
    assert code == 0, err
    with np.load(tmp_path / "K.npz") as f:
        np.testing.assert_array_equal(f["ntk"], infinet.compile(EXAMPLES / "fc_ntk.net")(x).ntk)


def test_version_and_help():
    code, out, _ = run_cli("--version")
    assert code == 0 and out.strip() == f"infinet {infinet.__version__}"
    code, out, _ = run_cli("--help")
    assert code == 0 and "check" in out and "explain" in out and "eval" in out


# -- --max-memory values -----------------------------------------------------------------------

@pytest.mark.parametrize("value, message", [
    ("inf", "--max-memory inf: expected a finite size, like 512M or 4G"),
    ("nan", "--max-memory nan: expected a finite size, like 512M or 4G"),
    ("1e400", "--max-memory 1e400: expected a finite size, like 512M or 4G"),
    ("INFG", "--max-memory INFG: expected a finite size, like 512M or 4G"),
    ("1e300T", "--max-memory 1e300T: is more than 2^60 bytes; expected a size like 512M or 4G"),
    ("0.5", "--max-memory 0.5: is less than one byte"),
    ("0", "--max-memory 0: must be positive"),
    ("12Q", "--max-memory 12Q: expected a size like 512M or 4G"),
])
def test_max_memory_that_is_not_a_size_is_an_error_line(tmp_path, capsys, value, message):
    np.save(tmp_path / "a.npy", np.ones((2, 64)))
    for command in (["eval", str(EXAMPLES / "fc_ntk.net"), "--x1", str(tmp_path / "a.npy"),
                     "--out", str(tmp_path / "K.npz")],
                    ["classify", str(EXAMPLES / "fc_ntk.net"), "--train", "x", "--test", "y"]):
        assert main(command + ["--max-memory", value]) == 2
        assert capsys.readouterr().err == f"error: {message}\n"
    assert not any(p.name.startswith("K.npz") for p in tmp_path.iterdir())


def test_max_memory_sizes():
    from infinet.cli import parse_size
    assert parse_size("512M") == 512 * 2 ** 20
    assert parse_size("4GiB") == parse_size("4g") == 4 * 2 ** 30
    assert parse_size("1.5K") == 1536 and parse_size("1e6") == 10 ** 6


# -- a reader that went away --------------------------------------------------------------------

def _run_into_closed_pipe(*args, cwd=None):
    """Run the CLI with stdout a pipe whose reading end is already closed."""
    import os
    import subprocess
    import sys

    from conftest import ROOT
    read, write = os.pipe()
    os.close(read)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        proc = subprocess.run([sys.executable, "-m", "infinet", *map(str, args)], stdout=write,
                              stderr=subprocess.PIPE, text=True, cwd=cwd, env=env, timeout=600)
    finally:
        os.close(write)
    return proc.returncode, proc.stderr


def test_a_closed_stdout_pipe_ends_every_command_quietly(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).normal(size=(6, 64)),
             y=np.arange(6) % 2)
    net = EXAMPLES / "fc_ntk.net"
    commands = [["check", net], ["explain", EXAMPLES / "myrtle.net"], ["cuda", net], ["--help"],
                ["eval", net, "--x1", "d.npz", "--out", "K.npz", "--backend", "numpy"],
                ["classify", net, "--train", "d.npz", "--test", "d.npz", "--backend", "numpy"],
                ["demo", "--tiny", "--backend", "numpy", "--plot", "p.png"]]
    for args in commands:
        code, err = _run_into_closed_pipe(*args, cwd=tmp_path)
        # argparse itself ignores a failed write of --help (and --version) and exits 0
        expected = 0 if args == ["--help"] else 1
        assert err == "" and code == expected, (args, code, err)
    # what eval computed before it tried to report is complete, not half-written
    with np.load(tmp_path / "K.npz") as f:
        assert f["ntk"].shape == (6, 6)
