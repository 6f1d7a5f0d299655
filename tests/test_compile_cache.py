"""The compile cache of the CPU target: private, verified before loading, never following
symlinks, broken entries rebuilt, clear errors for a cache that cannot be used.

Libraries are loaded only in forked children (tests/forked.py): a process keeps what it
has dlopen'ed, and a crash (SIGBUS on a truncated library) must fail the test, not end
the session.
"""
from __future__ import annotations

import ctypes
import fcntl
import json
import os
import shutil
import stat
import subprocess
import tempfile

import pytest

from infinet.codegen import cpujit
from infinet.errors import InfinetError

from forked import run_forked

pytestmark = pytest.mark.skipif(cpujit.find_compiler() is None, reason="no C++ compiler")


def _src(value: int) -> str:
    return f'extern "C" int f(void) {{ return {value}; }}\n'


def _call_f(source: str) -> int:
    lib = cpujit.load(source, "t")
    fn = lib.f
    fn.restype = ctypes.c_int
    return fn()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh private cache, and a private temporary directory for the fallback."""
    root = tmp_path / "cache"
    monkeypatch.setenv("INFINET_CACHE_DIR", str(root))
    tmp = tmp_path / "tmp"
    tmp.mkdir(mode=0o700)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return root


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_cache_is_private_even_under_umask_000(cache):
    nested = cache / "a" / "b"
    os.environ["INFINET_CACHE_DIR"] = str(nested)
    old = os.umask(0)
    try:
        lib = cpujit.build_library(_src(1), "t")
    finally:
        os.umask(old)
    for d in (cache, cache / "a", nested):
        assert _mode(d) == 0o700, (d, oct(_mode(d)))
    files = sorted(nested.iterdir())
    assert {p.suffix for p in files} >= {".so", ".cpp", ".lock"}
    for p in files:
        assert _mode(p) & 0o077 == 0, (p, oct(_mode(p)))
    assert lib.parent == nested


def _plant(lib, marker):
    """Replace a cached library by one that writes ``marker`` when loaded, and make its
    sidecar (if any) agree with it: what another user could do in a shared cache."""
    planted = lib.parent / "planted.cpp"
    planted.write_text('#include <cstdio>\n__attribute__((constructor)) static void pwn() {\n'
                       f'  FILE *f = fopen("{marker}", "w"); if (f) {{ fputs("pwned", f); '
                       'fclose(f); }\n}\nextern "C" int f(void) { return 666; }\n')
    subprocess.run([cpujit.find_compiler(), "-shared", "-fPIC", str(planted), "-o", str(lib)],
                   check=True)
    planted.unlink()
    side = lib.with_suffix(".json")
    if side.exists():
        import hashlib
        record = json.loads(side.read_text())
        data = lib.read_bytes()
        record.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
        side.write_text(json.dumps(record))


@pytest.mark.parametrize("how", ["world-writable", "group-writable", "foreign-owner"])
def test_a_cache_others_can_write_is_not_used(cache, tmp_path, monkeypatch, how):
    lib = cpujit.build_library(_src(1), "t")       # learn the entry's names
    marker = tmp_path / "pwned.txt"
    _plant(lib, marker)
    if how == "world-writable":
        os.chmod(cache, 0o777)
    elif how == "group-writable":
        os.chmod(cache, 0o770)
    elif os.geteuid() == 0:
        os.chown(cache, 65534, 65534)
    else:                  # not root: a directory of root's stands for another user's
        cache = next(p for p in ("/usr", "/") if os.stat(p).st_uid != os.geteuid())
        monkeypatch.setenv("INFINET_CACHE_DIR", cache)
    before = sorted(os.listdir(cache))
    status, value = run_forked(_call_f, _src(1))
    assert status == 0 and value == 1, (status, value)
    assert not marker.exists(), "the planted library was loaded"
    assert sorted(os.listdir(cache)) == before, "wrote into the shared cache"
    fallback = os.path.join(tempfile.gettempdir(), f"infinet-cache-{os.geteuid()}")
    assert _mode(fallback) == 0o700 and any(n.endswith(".so") for n in os.listdir(fallback))
    with pytest.warns(cpujit.CacheWarning, match=r"compile cache .*: not used, it is "
                      r"(writable by|owned by uid).*using the private .*infinet-cache-"):
        assert str(cpujit.build_library(_src(1), "t").parent) == fallback


def test_the_fallback_must_be_private_too(cache):
    os.chmod(cache.parent, 0o700)
    cache.mkdir(mode=0o777)
    os.chmod(cache, 0o777)
    fallback = os.path.join(tempfile.gettempdir(), f"infinet-cache-{os.geteuid()}")
    os.mkdir(fallback)
    os.chmod(fallback, 0o777)
    with pytest.raises(cpujit.CacheError, match="is writable by others"):
        cpujit.build_library(_src(1), "t")
    os.rmdir(fallback)
    os.symlink(str(cache), fallback)
    with pytest.raises(cpujit.CacheError, match="is a symlink"):
        cpujit.build_library(_src(1), "t")


def test_symlinks_in_the_cache_are_not_followed(cache, tmp_path):
    lib = cpujit.build_library(_src(1), "t")
    victim = tmp_path / "precious.txt"
    victim.write_text("precious")
    for suffix in (".so", ".json"):
        lib.with_suffix(suffix).unlink(missing_ok=True)   # force a rebuild
    for suffix in (".lock", ".cpp"):
        lib.with_suffix(suffix).unlink()
        lib.with_suffix(suffix).symlink_to(victim)
    status, value = run_forked(_call_f, _src(1))
    assert status == 0 and value == 1, (status, value)
    assert victim.read_text() == "precious"
    assert not lib.with_suffix(".cpp").is_symlink()
    assert lib.with_suffix(".cpp").read_text() == _src(1)


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "another net's"])
def test_a_broken_cached_library_is_rebuilt(cache, damage):
    lib = cpujit.build_library(_src(1), "t")
    other = cpujit.build_library(_src(2), "t")
    data = lib.read_bytes()
    if damage == "truncated":
        lib.write_bytes(data[:len(data) // 2])
    elif damage == "empty":
        lib.write_bytes(b"")
    elif damage == "garbage":
        lib.write_bytes(os.urandom(len(data)))
    else:
        shutil.copyfile(other, lib)
    status, value = run_forked(_call_f, _src(1))
    assert status == 0 and value == 1, (status, value)
    assert lib.read_bytes() != b"" and len(lib.read_bytes()) > len(data) // 2


def test_a_consistent_entry_of_another_key_is_not_trusted(cache):
    """Library and sidecar of another source copied under this name: the sidecar's key
    gives it away."""
    lib = cpujit.build_library(_src(1), "t")
    other = cpujit.build_library(_src(2), "t")
    shutil.copyfile(other, lib)
    shutil.copyfile(other.with_suffix(".json"), lib.with_suffix(".json"))
    status, value = run_forked(_call_f, _src(1))
    assert status == 0 and value == 1, (status, value)


def test_the_cache_layout_is_part_of_the_key(cache, monkeypatch):
    lib = cpujit.build_library(_src(1), "t")
    monkeypatch.setattr(cpujit, "LAYOUT", cpujit.LAYOUT + 1)
    newer = cpujit.build_library(_src(1), "t")
    assert newer != lib and newer.exists()
    assert json.loads(newer.with_suffix(".json").read_text())["layout"] == cpujit.LAYOUT


def test_a_lock_held_too_long_is_an_error(cache, monkeypatch):
    lib = cpujit.build_library(_src(1), "t")
    lib.unlink()                                   # so that the next call must build
    fd = os.open(lib.with_suffix(".lock"), os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.write(fd, b"%d\n" % os.getpid())
    try:
        monkeypatch.setattr(cpujit, "LOCK_TIMEOUT", 0.3)
        status, err = run_forked(cpujit.build_library, _src(1), "t", timeout=60)
    finally:
        os.close(fd)
    assert status == 1, (status, err)
    text = str(err)
    assert text.startswith("error: compile cache lock ") and str(lib.with_suffix(".lock")) in text
    assert f"held by process {os.getpid()} for more than 0.3 s" in text


# -- a cache that cannot be used -----------------------------------------------------------------

def _uncreatable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a regular file")
    return blocker / "cache"


def test_an_uncreatable_cache_is_an_error_line_for_backend_cpu(tmp_path, monkeypatch, capsys):
    import numpy as np

    from conftest import EXAMPLES
    from infinet.cli import main
    root = _uncreatable(tmp_path)
    monkeypatch.setenv("INFINET_CACHE_DIR", str(root))
    np.save(tmp_path / "x.npy", np.zeros((2, 8, 8, 1)))
    code = main(["eval", str(EXAMPLES / "cnn_gap_small.net"), "--x1", str(tmp_path / "x.npy"),
                 "--out", str(tmp_path / "K.npz"), "--backend", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"error: compile cache {root}: cannot create (Not a directory); set " \
                  f"INFINET_CACHE_DIR to a writable directory\n"


def test_backend_auto_says_why_it_does_not_use_the_cpu(tmp_path, monkeypatch, capsys):
    import infinet
    from infinet.runtime import backends
    monkeypatch.setenv("INFINET_CACHE_DIR", str(_uncreatable(tmp_path)))
    monkeypatch.setattr(backends, "cuda_usable", lambda: False)
    monkeypatch.setattr(backends, "_notified", set())
    cpujit.unusable_reason.cache_clear()
    try:
        plan = infinet.compile("input 4\ndense\nrelu\ndense\n").plan
        assert backends.resolve_backend("auto", plan, pairs=10 ** 12) == "numpy"
    finally:
        cpujit.unusable_reason.cache_clear()
    err = capsys.readouterr().err
    assert "no working C++ compiler" not in err
    assert err.startswith("infinet: no CUDA GPU and an unusable compile cache (compile cache ")
    assert "cannot create (Not a directory)" in err and "using the NumPy executor" in err


def test_an_unwritable_cache_is_an_error(cache, monkeypatch):
    cache.mkdir(mode=0o700)
    if os.geteuid() != 0:                          # permission bits bind: make it real
        os.chmod(cache, 0o500)
    else:                                          # root writes anyway: say it is read-only
        real = os.access
        monkeypatch.setattr(cpujit.os, "access", lambda p, m: False if os.fspath(p) == str(cache)
                            else real(p, m))
    try:
        with pytest.raises(InfinetError, match=rf"compile cache {cache}: not writable"):
            cpujit.build_library(_src(1), "t")
    finally:
        os.chmod(cache, 0o700)
