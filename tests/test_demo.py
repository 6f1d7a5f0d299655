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


def test_the_legends_never_cover_the_data():
    """With --depths 3,5 the old in-axes legend sat on a line: legends are now outside."""
    jobs = []
    for d in (3, 5):
        for arch, n, m in (("CNTK-V", 1000, 797), ("CNTK-V", 150, 150), ("CNTK-GAP", 150, 150)):
            job = demo.Job(arch, d, n, m)
            job.accuracy = {"ntk": 0.9 + 0.01 * d, "nngp": 0.85 + 0.01 * d}
            jobs.append(job)
    fig = demo.figure(jobs, demo.Setting((3, 5), 1000, 797, 150, 150))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = fig.get_axes()
    assert len(axes) == 2
    for ax in axes:
        legend = ax.get_legend()
        assert legend is not None
        box = legend.get_window_extent(renderer)
        for other in axes:                                # neither on its own plot nor the other
            assert not box.overlaps(other.get_window_extent(renderer)), ax.get_title()
        assert fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1)
    assert len(axes[0].get_legend().get_texts()) == 6


def test_what_the_demo_and_the_build_leave_in_the_checkout_is_ignored():
    import subprocess

    from conftest import ROOT
    paths = ["infinet-demo.png", "infinet.egg-info/PKG-INFO", "build/lib/infinet/cli.py",
             "tests/__pycache__/conftest.cpython-311.pyc", ".pytest_cache/README.md",
             ".hypothesis/examples/x", "infinet/codegen/x.so", "infinet/x.o"]
    proc = subprocess.run(["git", "check-ignore", "--no-index", "--verbose", *paths], cwd=ROOT,
                          capture_output=True, text=True)
    ignored = {line.split("\t")[-1] for line in proc.stdout.splitlines()}
    assert ignored == set(paths), (proc.stdout, proc.stderr)
    assert demo_default_plot() == "infinet-demo.png"


def demo_default_plot() -> str:
    from infinet.cli import build_parser
    return build_parser().parse_args(["demo"]).plot
