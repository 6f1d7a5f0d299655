"""Reading .net sources (infinet/dsl/source.py): paths against source text, what files
are read at all, and encodings."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import infinet
from infinet.dsl import source
from infinet.errors import NetError, UsageError

from conftest import EXAMPLES, ROOT, run_cli

NET = "net tiny\ninput 4\ndense W=2 b=0.5\nrelu\ndense\n"


def _kernel(k):
    return k(np.arange(8.0).reshape(2, 4) / 8, backend="numpy").ntk


def test_a_utf8_byte_order_mark_is_accepted_like_crlf(tmp_path):
    plain = tmp_path / "plain.net"
    plain.write_text(NET)
    bom = tmp_path / "bom.net"
    bom.write_bytes(b"\xef\xbb\xbf" + NET.replace("\n", "\r\n").encode())
    want = _kernel(infinet.compile(plain))
    np.testing.assert_array_equal(_kernel(infinet.compile(bom)), want)
    np.testing.assert_array_equal(_kernel(infinet.compile(str(bom))), want)
    np.testing.assert_array_equal(_kernel(infinet.compile("\ufeff" + NET)), want)
    code, out, err = run_cli("check", bom)
    assert code == 0 and out.startswith(f"{bom}: ok: net tiny"), err
    # positions are counted after the mark: the caret is under the mistake
    bad = tmp_path / "bad.net"
    bad.write_bytes(b"\xef\xbb\xbfinput 4\nrelu x=1\n")
    with pytest.raises(NetError) as info:
        infinet.compile(bad)
    assert info.value.pos.line == 2 and info.value.pos.column == 6
    assert str(info.value).splitlines()[1:] == ["    relu x=1", "         ^"]


def test_utf16_is_named(tmp_path):
    f = tmp_path / "w.net"
    f.write_bytes(NET.encode("utf-16"))
    with pytest.raises(UsageError, match="is UTF-16 text; save it as UTF-8"):
        infinet.compile(f)


def _cli_with_timeout(*args, timeout=60):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "infinet", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "pipe.net"
    os.mkfifo(fifo)
    code, out, err = _cli_with_timeout("check", fifo)     # before: hung forever
    assert code == 2 and out == ""
    assert err == f"error: {fifo}: is a FIFO (named pipe), not a regular file; give a .net file\n"
    with pytest.raises(UsageError, match="FIFO"):
        infinet.compile(str(fifo))


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_a_device_is_refused_before_reading():
    code, out, err = _cli_with_timeout("check", "/dev/zero")   # before: "out of memory"
    assert code == 2
    assert err == "error: /dev/zero: is a device, not a regular file; give a .net file\n"


def test_a_huge_file_is_refused_before_reading(tmp_path):
    big = tmp_path / "big.net"
    with open(big, "wb") as fh:                # sparse: costs no disk
        fh.truncate(source.MAX_SOURCE_BYTES + 1)
    with pytest.raises(UsageError, match=r"big.net: is 2.0 MiB, larger than a .net file can "
                                         r"be \(2 MiB\)"):
        infinet.compile(big)
    just_fits = tmp_path / "fits.net"
    text = NET + "#" * (source.MAX_SOURCE_BYTES - len(NET) - 1) + "\n"
    just_fits.write_text(text)
    assert infinet.compile(just_fits).name == "tiny"
    with pytest.raises(UsageError, match="source text is larger than 2 MiB"):
        infinet.compile(text + "#\n")


def test_a_mistyped_path_says_no_such_file(tmp_path):
    code, out, err = run_cli("check", "examples/cntk_gap", cwd=ROOT)
    assert code == 2
    assert err == ("error: examples/cntk_gap: no such file (did you mean "
                   "examples/cntk_gap.net?)\n")
    for name in ("mynet", "examples/nosuch", "nosuch.net", str(tmp_path / "a b" / "x")):
        with pytest.raises(UsageError) as info:
            infinet.compile(name)
        assert str(info.value) == f"error: {name}: no such file", name
    # a directory that exists, then a name with a space in it: still a path
    (tmp_path / "my nets").mkdir()
    with pytest.raises(UsageError, match="no such file"):
        infinet.compile(str(tmp_path / "my nets" / "a net"))


def test_one_line_source_text_is_still_source():
    k = infinet.compile("input 4; dense W=1/2; relu; dense")
    assert k.plan.filename == "<string>" and len(k.plan.nodes) == 4
    with pytest.raises(NetError, match="^<string>:1:1: error: unknown layer 'inptu' \\(did you mean 'input'\\?\\)"):
        infinet.compile("inptu 4")
    assert not source.looks_like_path("")
    assert source.looks_like_path(str(EXAMPLES / "fc_ntk.net"))


def test_directories_and_other_types(tmp_path):
    with pytest.raises(UsageError, match="is a directory, not a .net file"):
        infinet.compile(tmp_path)
    with pytest.raises(UsageError, match="expected a .net path or source text, got int"):
        infinet.compile(3)
