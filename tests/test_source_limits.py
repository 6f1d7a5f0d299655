"""Sources of any size or depth give a value or one located error — never a
RecursionError, a VisitError or a traceback."""
from __future__ import annotations

import pytest

import infinet
from conftest import run_cli
from infinet.cli import main
from infinet.errors import NetError


def test_numbers_longer_than_python_converts_are_located_errors():
    with pytest.raises(NetError) as info:
        infinet.compile("param a = " + "9" * 5000 + "\ninput 3\ndense\n")
    text = str(info.value)
    assert text.startswith("<string>:1:11: error: this number has 5,000 characters")
    assert len(text.splitlines()[1]) < 200            # the shown line is cut around the caret
    with pytest.raises(NetError, match="too large"):
        infinet.compile("input 3\nconv " + "3" * 50 + "\nflatten\n")


@pytest.mark.parametrize("terms", [400, 5000])
def test_long_expressions_evaluate(terms):
    k = infinet.compile("param a = " + " + ".join(["1"] * terms) + "\ninput 3\ndense\n")
    assert k.plan.params["a"] == terms
    k = infinet.compile("param a = " + "-" * terms + "2\ninput 3\ndense\n")
    assert k.plan.params["a"] == (2 if terms % 2 == 0 else -2)
    k = infinet.compile("param a = " + "sqrt(" * 600 + "2" + ")" * 600 + "\ninput 3\ndense\n")
    assert k.plan.params["a"] == pytest.approx(1.0)


def test_long_expressions_from_the_command_line(tmp_path, capsys):
    (tmp_path / "n.net").write_text("param d = 1\ninput 3\nrepeat d { dense }\n")
    assert main(["check", str(tmp_path / "n.net"), "-D", "d=" + "+".join(["1"] * 3000)]) == 0
    assert "3000 dense" in capsys.readouterr().out
    assert main(["check", str(tmp_path / "n.net"), "-D", "d=" + "-" * 4000 + "3"]) == 0
    assert main(["check", str(tmp_path / "n.net"), "-D",
                 "d=" + "sqrt(" * 2000 + "1" + ")" * 2000]) == 0


def test_deeply_nested_blocks_are_a_located_error(tmp_path):
    deep = "input 3\n" + "repeat 1 {\n" * 400 + "dense\n" + "}\n" * 400
    with pytest.raises(NetError, match="blocks are nested more than 100 deep"):
        infinet.compile(deep)
    (tmp_path / "deep.net").write_text(deep)
    status, out, err = run_cli("check", tmp_path / "deep.net")
    assert status == 2 and "deep.net:102:" in err and "Traceback" not in err
    ok = "input 3\n" + "repeat 1 {\n" * 90 + "dense\n" + "}\n" * 90   # deep, but allowed
    assert len(infinet.compile(ok).plan.nodes) == 2


def test_utf8_byte_order_mark_in_source_text():
    assert infinet.compile("\ufeffinput 3\ndense\n").plan.data_shape == (3,)
