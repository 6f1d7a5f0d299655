"""`infinet demo`: the paper's experiment in miniature (a tiny setting here; the default
one is measured by hand, see the README)."""
from __future__ import annotations

import json

from infinet import demo

from conftest import EXAMPLES, run_cli


def test_demo_prints_a_table_and_writes_a_plot(tmp_path):
    code, out, err = run_cli("demo", "--tiny", "--plot", "acc.png", "--json", "demo.json",
                             "--backend", "numpy", cwd=tmp_path)
    assert code == 0, err
    assert "Traceback" not in err
    png = (tmp_path / "acc.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    assert "wrote acc.png" in out
    # honest about sizes, the paper's table beside ours
    assert "CNTK-GAP on a subset, the first 24 train / 16 test digits" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("depth "))
    assert "CNTK-V 120/60" in lines[header] and "CNTK-GAP 24/16" in lines[header]
    assert "paper: CIFAR-10" in lines[header]
    row = next(line for line in lines[header:] if line.startswith("21 "))
    assert "64.09" in row and "77.08" in row
    report = json.loads((tmp_path / "demo.json").read_text())
    runs = report["runs"]
    assert {(r["net"], r["depth"]) for r in runs} == {(a, d) for a in ("CNTK-V", "CNTK-GAP")
                                                      for d in (3, 4)}
    for r in runs:
        assert 0 <= r["accuracy"]["ntk"] <= 1 and 0 <= r["accuracy"]["nngp"] <= 1
    v = [r for r in runs if r["net"] == "CNTK-V" and r["n_train"] == 120]
    assert all(r["accuracy"]["ntk"] > 0.8 for r in v)
    assert report["paper_cifar10"]["11"] == {"CNTK-V": 65.90, "CNTK-GAP": 77.43}


def test_demo_user_errors(tmp_path):
    for args, message in [(["--plot", "nodir/a.png"], "does not exist"),
                          (["--plot", "a.jpg"], "give a path ending in .png"),
                          (["--depths", "2,3"], "at least 3"),
                          (["--depths", "x"], "comma-separated whole numbers"),
                          (["--backend", "tpu"], "unknown backend")]:
        code, out, err = run_cli("demo", "--tiny", *args, cwd=tmp_path)
        assert code == 2 and err.startswith("error: ") and message in err, (args, err)
        assert "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_embedded_nets_are_the_examples():
    assert (EXAMPLES / "digits_cntk_v.net").read_text() == demo.CNTK_V
    assert (EXAMPLES / "digits_cntk_gap.net").read_text() == demo.CNTK_GAP


def test_default_setting_is_the_documented_one():
    assert demo.DEFAULT.depths == (3, 4, 6)
    assert (demo.DEFAULT.v_train, demo.DEFAULT.v_test) == (1000, 797)
    assert demo.LARGE.gap_train == 1000 and 21 in demo.LARGE.depths
    assert demo.PAPER[3] == (64.47, 70.47)
