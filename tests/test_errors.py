"""Every mistake a user can make is an `error:` line (with place and caret for .net
files), exit status 2, no traceback, and no output file left behind."""
from __future__ import annotations

import time

import numpy as np
import pytest

from infinet.cli import main

from conftest import run_cli

NET_ERRORS = [
    # (source, -D overrides, expected "LINE:COL: error: ..." fragment)
    ("input 8x8x3\nconv 3x3 pad=same W=\nrelu\n", [], "2:21: error: unexpected end of line"),
    ("input 8x8x3\nconv 3x3 W=2 % 3\ngap\n", [], "2:14: error: unexpected character '%'"),
    ("input 4x4x3\nrepeat 2 {\n relu\n\nflatten\n", [], "error: unexpected end of file; expected"),
    ("input 8x8x3\nconvolution 3x3\n", [], "2:1: error: unknown layer 'convolution'"),
    ("input 8x8x3\nconv 3x3 padding=same\ngap\n", [], "2:10: error: unknown option 'padding' for conv"),
    ("input 8x8x3\nconv 3x3 pad=full\ngap\n", [], "2:14: error: pad must be one of same, valid, circular"),
    ("input 8x8x3\navgpool 2x2 pad=circular\ngap\n", [], "2:17: error: pad must be one of valid, same"),
    ("input 8x8x3\nrelu fixed\ngap\n", [], "2:6: error: unknown flag 'fixed' for relu"),
    ("input 8x8x3\nconv 3x3 W\ngap\n", [], "2:10: error: option 'W' needs a value"),
    ("input 8x8x3\nconv 3x3 W=1 W=2\ngap\n", [], "2:14: error: option 'W' is given twice"),
    ("input 8x8x3\nconv\ngap\n", [], "2:1: error: conv needs a window size"),
    ("input 8x8x3\nrelu 3x3\ngap\n", [], "2:6: error: relu takes no size"),
    ("input 8x8x3\nconv 3x3x3\ngap\n", [], "2:6: error: conv window 3x3x3 has 3 axes, but its "
     "input is an image (8x8): write a 2-d window like `conv 3x3`"),
    ("input 16x3\navgpool 2x2\ngap\n", [], "2:9: error: avgpool window 2x2 has 2 axes, but its "
     "input is a sequence (16): write a 1-d window like `avgpool 3`"),
    ("input 8x8x8x8x1\nflatten\n", [], "1:7: error: an input has at most 3 spatial axes"),
    ("input 8x8x3\nrepeat depth { relu }\ngap\n", [], "2:8: error: undefined param 'depth'"),
    ("param a = 2\nparam a = 3\ninput 3\n", [], "2:7: error: param 'a' is already defined"),
    ("param d = 3\ninput 8x8x3\nconv 3x3 W=1/(d-3)\ngap\n", [], "3:13: error: division by zero"),
    ("input 4x4x3\nconv 3x3 W=sqrt(-1)\nflatten\n", [], "2:12: error: sqrt of a negative number"),
    ("input 4x4x3\nconv 3x3 W=exp(1)\nflatten\n", [], "2:12: error: unknown function 'exp'"),
    ("input 4x4x3\nconv 3x3 W=-1\nflatten\n", [], "2:12: error: W is a standard deviation"),
    ("input 4x4x3\nconv 3x3 stride=0\nflatten\n", [], "2:17: error: a stride must be at least 1"),
    ("input 4x4x3\nconv 3x3 stride=1.5\nflatten\n", [], "2:17: error: a stride must be a whole number"),
    ("input 8x8x3\nconv 3x3\ndense\n", [], "3:1: error: dense needs a flat input, but its input is an image (8x8)"),
    ("input 10\nconv 3x3\ndense\n", [], "2:1: error: conv needs a spatial input (sequence, "
     "image or volume), but its input is a flat vector"),
    ("input 10\navgpool 2x2\ndense\n", [], "2:1: error: avgpool needs a spatial input"),
    ("input 10\ngap\n", [], "2:1: error: gap needs a spatial input"),
    ("input 10\nflatten\n", [], "2:1: error: flatten on an input that is already flat"),
    ("input 4x4x3\nflatten\nrelu\n", [], "3:1: error: relu right after flatten"),
    ("input 4x4x3\navgpool 5x5\nflatten\n", [], "2:1: error: the 5-wide pooling window is larger than its 4-wide input"),
    ("input 4x4x3\nconv 5x5 pad=valid\nflatten\n", [], "2:1: error: the 5-wide filter is larger than its 4-wide input"),
    ("input 4x4x3\nconv 3x3 pad=valid\nconv 3x3 pad=valid\nconv 3x3 pad=valid\nflatten\n", [],
     "3:1: error: the 3-wide filter is larger than its 2-wide input"),
    ("input 0x4x3\nflatten\n", [], "1:7: error: input sizes must be at least 1"),
    ("input 0\ndense\n", [], "1:7: error: the number of input features must be at least 1"),
    ("input 4x4x3\nconv 0x3\nflatten\n", [], "2:6: error: conv window sizes must be at least 1"),
    ("param n = -2\ninput 4x4x3\nrepeat n { relu }\nflatten\n", [], "3:8: error: a repeat count must be at least 0, got -2"),
    ("input 4x4x3\nrepeat 2.5 { relu }\nflatten\n", [], "2:8: error: a repeat count must be a whole number, got 2.5"),
    ("input 4x4x3\nrepeat 20000 { relu }\nflatten\n", [], "2:1: error: this repeat unrolls to 20,000 layers"),
    ("input 4x4x3\nrepeat 1000000000 { repeat 1000000000 { relu } }\nflatten\n", [],
     "2:1: error: this repeat unrolls to 1,000,000,000,000,000,000 layers; the limit is 10,000"),
    ("input 4x4x3\nrepeat 10000 { repeat 0 { relu } }\nrepeat 5000 { relu }\nrepeat 5001 { relu }\nflatten\n",
     [], "4:1: error: this repeat unrolls to 5,001 layers"),
    ("conv 3x3\n", [], "1:1: error: a layer before the `input` line"),
    ("# only a comment\n", [], "1:1: error: no `input` line"),
    ("input 3\ninput 3\n", [], "2:1: error: a second `input` line"),
    ("input 3\ndense\ninput 3\n", [], "3:1: error: a second `input` line"),
    ("input 3\nrepeat 2 { param x = 1 }\n", [], "2:18: error: params must be declared at the top level"),
    ("net a\nnet b\ninput 3\n", [], "2:5: error: the net is already named"),
    ("input 4x4x3\nconv 3x3\n", [], "2:1: error: the network ends with an image (4x4), not a flat output"),
    ("param depth = 3\ninput 4x4x3\nflatten\n", ["width=3"], "error: -D width: "),
    ("param depth = 3\ninput 4x4x3\nflatten\n", ["depth"], "error: -D depth: expected NAME=VALUE"),
    ("param depth = 3\ninput 4x4x3\nflatten\n", ["depth=1/0"], "error: -D depth=1/0: division by zero"),
    ("param depth = 3\ninput 4x4x3\nflatten\n", ["depth=3", "depth=4"], "error: -D depth is given twice"),
    ("param depth = 3\ninput 4x4x3\nrepeat depth { relu }\nflatten\n", ["depth=-1"],
     "3:8: error: a repeat count must be at least 0, got -1"),
]

# the activations of issue 10: every option's mistakes, and mistakes inside fn="..."
# (positioned at the character of the string: the opening quote's column + 1 + offset)
NET_ERRORS += [
    ("input 3\nsin a=1e200\ndense\n", [], "2:7: error: a=1e+200 is too large: its square overflows"),
    ("input 3\nsin b=\"1\"\ndense\n", [], "2:7: error: expected a number here"),
    ("input 3\ncos c=[1]\ndense\n", [], "2:7: error: expected a number here"),
    ("input 3\ncos d=1\ndense\n", [], "2:5: error: unknown option 'd' for cos (options: a, b, c)"),
    ("input 3\nrbf gamma=-1\ndense\n", [], "2:11: error: gamma must be at least 0, got -1"),
    ("input 3\nrbf gama=1\ndense\n", [], "2:5: error: unknown option 'gama' for rbf (did you mean 'gamma'?"),
    ("input 3\nexp a=1e300\ndense\n", [], "2:7: error: a=1e+300 is too large"),
    ("input 3\nexp b=x\ndense\n", [], "2:7: error: undefined param 'x'"),
    ("input 3\ngaussian b=[1, 2]\ndense\n", [], "2:12: error: expected a number here"),
    ("input 3\ngaussian a=1e160\ndense\n", [], "2:12: error: a=1e+160 is too large"),
    ("input 3\nmonomial degree=2.5\ndense\n", [], "2:17: error: a degree must be a whole number, got 2.5"),
    ("input 3\nmonomial degree=-1\ndense\n", [], "2:17: error: a degree must be at least 0, got -1"),
    ("input 3\nmonomial degree=17\ndense\n", [], "2:17: error: a degree must be at most 16, got 17"),
    ("input 3\nmonomial 3\ndense\n", [], "2:10: error: monomial takes no size"),
    ("input 3\nrectified_monomial degree=40\ndense\n", [], "2:27: error: a degree must be at most 16"),
    ("input 3\nrectified_monomial degree=1.5\ndense\n", [], "2:27: error: a degree must be a whole number"),
    ("input 3\npolynomial\ndense\n", [], "2:1: error: polynomial needs its coefficients: coef=[c0, c1, ...]"),
    ("input 3\npolynomial coef=3\ndense\n", [], "2:17: error: coef must be a list of numbers, e.g. coef=[0.1, 1, 0.5]"),
    ("input 3\npolynomial coef=\"1, 2\"\ndense\n", [], "2:17: error: coef must be a list of numbers"),
    ("input 3\npolynomial coef=[]\ndense\n", [], "2:17: error: coef takes 1 to 17 numbers, got 0"),
    ("input 3\npolynomial coef=[1, 1/0]\ndense\n", [], "2:22: error: division by zero"),
    ("input 3\npolynomial coef=[1, c]\ndense\n", [], "2:21: error: undefined param 'c'"),
    ("input 3\npolynomial coef=[1 2]\ndense\n", [], "2:20: error: unexpected '2'; expected ')'"),
    ("input 3\nsigmoid_like a=1\ndense\n", [], "2:14: error: unknown option 'a' for sigmoid_like (it has no options)"),
    ("input 3\ngelu approximate=1\ndense\n", [], "2:6: error: unknown option 'approximate' for gelu"),
    ("input 3\nsign fixed\ndense\n", [], "2:6: error: unknown flag 'fixed' for sign"),
    ("input 3\nabs a=1\ndense\n", [], "2:5: error: unknown option 'a' for abs (it has no options)"),
    ("input 4x4x3\nflatten\ngelu\n", [], "3:1: error: gelu right after flatten"),
    ("input 3\nelementwise\ndense\n", [], "2:1: error: elementwise needs the activation: fn=\"...\""),
    ("input 3\nelementwise fn=3\ndense\n", [], "2:16: error: fn must be a quoted string"),
    ("input 3\nelementwise fn=\"\"\ndense\n", [], "2:17: error: fn is empty"),
    ("input 3\nelementwise fn=\"x + foo(x)\"\ndense\n", [], "2:21: error: unknown function 'foo' in fn"),
    ("input 3\nelementwise fn=\"sqr(x)\"\ndense\n", [], "2:17: error: unknown function 'sqr' in fn (did you mean 'sqrt'?"),
    ("input 3\nelementwise fn=\"x +\"\ndense\n", [], "2:20: error: fn ends too early"),
    ("input 3\nelementwise fn=\"x*tanh(x\"\ndense\n", [], "2:25: error: expected ')' to close tanh( in fn"),
    ("input 3\nelementwise fn=\"(x\"\ndense\n", [], "2:19: error: expected ')' to close the '(' of column 17"),
    ("input 3\nelementwise fn=\"x)\"\ndense\n", [], "2:18: error: unexpected ')' in fn"),
    ("input 3\nelementwise fn=\"x $ 2\"\ndense\n", [], "2:19: error: unexpected character '$' in fn"),
    ("input 3\nelementwise fn=\"2^^x\"\ndense\n", [], "2:19: error: unexpected '^' in fn"),
    ("input 3\nelementwise fn=\"y*x\"\ndense\n", [], "2:17: error: unknown name 'y' in fn (the variable is x; params: none)"),
    ("param alpha = 2\ninput 3\nelementwise fn=\"alph*x\"\ndense\n", [], "3:17: error: unknown name 'alph' in fn (did you mean 'alpha'?"),
    ("input 3\nelementwise fn=\"exp\"\ndense\n", [], "2:17: error: exp is a function: write exp(...)"),
    ("input 3\nelementwise fn=\"max(x)\"\ndense\n", [], "2:17: error: max takes 2 arguments, got 1"),
    ("input 3\nelementwise fn=\"tanh(x, 1)\"\ndense\n", [], "2:17: error: tanh takes 1 argument, got 2"),
    ("input 3\nelementwise fn=\"x * log(-1)\"\ndense\n", [], "2:21: error: this part of fn has no finite value"),
    ("input 3\nelementwise fn=\"x/(2-2)\"\ndense\n", [], "2:18: error: division by zero in fn"),
    ("input 3\nelementwise fn=\"x + 1e999\"\ndense\n", [], "2:21: error: the number 1e999 is too large"),
    ("input 3\nelementwise fn=\"" + "(" * 70 + "x" + ")" * 70 + "\"\ndense\n", [],
     "error: fn is nested too deeply (at most 60 levels)"),
    ("input 3\nelementwise fn=\"" + "+".join(["x"] * 500) + "\"\ndense\n", [],
     "error: fn is too long (at most 400 operations)"),
    ("input 3\nelementwise fn=\"x\" deg=0\ndense\n", [], "2:24: error: a deg must be at least 1, got 0"),
    ("input 3\nelementwise fn=\"x\" deg=201\ndense\n", [], "2:24: error: a deg must be at most 200, got 201"),
    ("input 3\nelementwise fn=\"x\" deg=2.5\ndense\n", [], "2:24: error: a deg must be a whole number"),
    ("input 3\nelementwise fn=\"x\" fn=\"x\"\ndense\n", [], "2:20: error: option 'fn' is given twice"),
    ("input 3\nelementwise f=\"x\"\ndense\n", [], "2:13: error: unknown option 'f' for elementwise (did you mean 'fn'?"),
    ("param d = 0\ninput 3\nelementwise fn=\"x\" deg=d\ndense\n", [], "3:24: error: a deg must be at least 1, got 0"),
    ("param d = 3\ninput 3\nelementwise fn=\"x\" deg=d\ndense\n", ["d=300"], "3:24: error: a deg must be at most 200, got 300"),
]

@pytest.mark.parametrize("source,defines,expected", NET_ERRORS)
def test_net_errors(tmp_path, capsys, source, defines, expected):
    path = tmp_path / "bad.net"
    path.write_text(source)
    argv = ["check", str(path)] + [a for d in defines for a in ("-D", d)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert "Traceback" not in err
    if ":" in expected.split("error")[0]:           # positioned: FILE:LINE:COL, line, caret
        first, shown, caret = err.splitlines()[:3]
        assert first.startswith(f"{path}:")
        col = int(expected.split(":")[1])
        line = int(expected.split(":")[0])
        assert shown.strip() == source.splitlines()[line - 1].strip()
        assert caret.strip() == "^"
        assert caret.index("^") - 4 == col - 1, (shown, caret)   # 4 = indentation


def test_errors_are_prompt_even_for_absurd_repeat_counts(tmp_path, capsys):
    path = tmp_path / "huge.net"
    path.write_text("input 4x4x3\nrepeat 10000 { repeat 10000 { repeat 10000 { relu } } }\n"
                    "flatten\n")
    start = time.perf_counter()
    assert main(["check", str(path)]) == 2
    assert time.perf_counter() - start < 1.0
    assert "the limit is 10,000 layers" in capsys.readouterr().err


def test_the_layer_limit_is_inclusive(tmp_path, capsys):
    path = tmp_path / "max.net"
    path.write_text("input 4\nrepeat 4999 { dense\n relu }\ndense\nidentity\n")
    assert main(["check", str(path)]) == 0
    assert "10000 layers" in capsys.readouterr().out


@pytest.mark.parametrize("args,expected", [
    (["check", "missing.net"], "error: missing.net: no such file"),
    (["check", "."], "error: .: is a directory"),
    (["frobnicate", "x.net"], "error: argument COMMAND: invalid choice"),
    (["eval", "x.net"], "error: the following arguments are required: --x1, --out"),
])
def test_usage_errors(capsys, args, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) if args[0] == "frobnicate" or args[0] == "eval" else _nothing():
        code = main(args)
        assert code == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_binary_net_file(tmp_path, capsys):
    path = tmp_path / "bin.net"
    path.write_bytes(b"\xff\xfe\x00\x01garbage")
    assert main(["check", str(path)]) == 2
    assert "not a text file" in capsys.readouterr().err


# -- data errors -----------------------------------------------------------------------------

NET = "input 4x4x3\nconv 3x3\nrelu\nflatten\ndense\n"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ok.net").write_text(NET)
    rng = np.random.default_rng(0)
    np.save("good.npy", rng.random((3, 4, 4, 3)))
    np.save("chan.npy", rng.random((3, 4, 4, 2)))
    np.save("nchw.npy", rng.random((3, 3, 4, 4)))
    bad = rng.random((3, 4, 4, 3))
    bad[1, 2, 3, 0] = np.nan
    np.save("nan.npy", bad)
    bad[1, 2, 3, 0] = np.inf
    np.save("inf.npy", bad)
    np.save("empty.npy", np.zeros((0, 4, 4, 3)))
    np.save("text.npy", np.array([["a"] * 3] * 3))
    np.save("objects.npy", np.array([{}], dtype=object), allow_pickle=True)
    np.save("complex.npy", np.zeros((2, 4, 4, 3), complex))
    np.save("flat.npy", rng.random((3, 48)))
    (tmp_path / "junk.npy").write_text("hello")
    (tmp_path / "trunc.npy").write_bytes(open("good.npy", "rb").read()[:200])
    np.savez("multi.npz", a=np.zeros(3), b=np.zeros(3))
    return tmp_path


@pytest.mark.parametrize("extra,expected", [
    (["--x1", "chan.npy"], "error: --x1 chan.npy: has 2 channels but the input line says 3"),
    (["--x1", "nchw.npy"], "looks like NCHW"),
    (["--x1", "nan.npy"], "contains NaN or inf"),
    (["--x1", "inf.npy"], "contains NaN or inf"),
    (["--x1", "empty.npy"], "is empty (0 samples)"),
    (["--x1", "text.npy"], "expected numbers"),
    (["--x1", "complex.npy"], "expected numbers"),
    (["--x1", "objects.npy"], "not a readable .npy/.npz array file"),
    (["--x1", "flat.npy"], "has shape (3, 48), but ok takes images"),
    (["--x1", "junk.npy"], "not a .npy or .npz file"),
    (["--x1", "trunc.npy"], "not a readable .npy/.npz array file"),
    (["--x1", "multi.npz"], "an .npz needs an array named 'x'"),
    (["--x1", "missing.npy"], "error: --x1 missing.npy: no such file"),
    (["--x1", "good.npy", "--x2", "chan.npy"], "error: --x2 chan.npy: has 2 channels"),
    (["--x1", "good.npy", "--dtype", "float16"], "error: unknown dtype 'float16'"),
    (["--x1", "good.npy", "--backend", "tpu"], "error: unknown backend 'tpu'"),
    (["--x1", "good.npy", "--max-memory", "12Q"], "error: --max-memory 12Q"),
])
def test_data_errors_leave_no_output(workdir, capsys, extra, expected):
    assert main(["eval", "ok.net", "--out", "K.npz"] + extra) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert err.startswith("error: ") and "Traceback" not in err
    assert not (workdir / "K.npz").exists()
    assert [p.name for p in workdir.iterdir() if "tmp" in p.name] == []


def test_output_directory_must_exist(workdir, capsys):
    assert main(["eval", "ok.net", "--x1", "good.npy", "--out", "nodir/K.npz"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_subprocess_exit_status_and_no_traceback(workdir):
    code, out, err = run_cli("eval", "ok.net", "--x1", "nan.npy", "--out", "K.npz", cwd=workdir)
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    code, out, err = run_cli("check", "ok.net", "-D", "nope=1", cwd=workdir)
    assert code == 2 and err.strip() == "error: -D nope: ok.net has no param 'nope' (its params: none)"


def test_python_api_raises_typed_errors():
    import infinet
    with pytest.raises(infinet.NetError) as info:
        infinet.compile("input 4x4x3\nconvv 3x3\n")
    assert info.value.pos.line == 2 and info.value.pos.column == 1
    with pytest.raises(infinet.UsageError):
        infinet.compile("param d = 1\ninput 3\ndense\n", width=3)
    k = infinet.compile("param d = 1\ninput 3\ndense W=d\n", d=2)
    with pytest.raises(infinet.DataError):
        k(np.ones((2, 4)))
    with pytest.raises(infinet.DataError):
        k([[1.0, float("nan"), 2.0]])
    with pytest.raises(infinet.UsageError):
        k(np.ones((2, 3)), dtype="int8")
    assert k(np.ones((2, 3))).nngp[0, 0] == pytest.approx(4.0)
