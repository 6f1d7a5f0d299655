"""``--out K.zarr``: the zarr store the cluster's workers write into (runtime/zarrstore.py),
tested in one process: layout and manifest, resume, refusal, damaged chunks, every kill
point, classify and the regression API reading kernels from it.

Kill points run as in test_store_hardening.py: a forked child evaluates with
``INFINET_KILLPOINT`` naming the point and dies there of SIGKILL; the parent resumes and
must get bit-identical results with no temporary file left.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal

import numpy as np
import pytest

zarr = pytest.importorskip("zarr", reason="the cluster extra (pip install 'infinet[cluster]')")

import infinet  # noqa: E402
from infinet.cli import main  # noqa: E402
from infinet.errors import DataError, UsageError  # noqa: E402
from infinet.regression import classify  # noqa: E402
from infinet.runtime.evaluate import evaluate_tiled  # noqa: E402
from infinet.runtime.killpoints import POINTS  # noqa: E402
from infinet.runtime.stores import StoreWarning  # noqa: E402
from infinet.runtime.tiles import TileGrid  # noqa: E402
from infinet.runtime.zarrstore import ZarrStore, read_kernels  # noqa: E402

from conftest import EXAMPLES  # noqa: E402
from forked import run_forked  # noqa: E402

GAP = EXAMPLES / "cnn_gap_small.net"
N, TILE = 10, 3                      # a 4 x 4 grid of tiles, 10 of them above the diagonal
TOTAL = N * (N + 1) // 2


def _images(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 8, 8, 1))


class Counting:
    """An executor that counts the pairs it computes and can stop after some calls."""

    def __init__(self, inner, stop_after=None):
        self.inner, self.stop_after = inner, stop_after
        self.plan, self.dtype, self.name = inner.plan, inner.dtype, inner.name
        self.ntk = inner.ntk
        self.pairs_done = self.calls = 0

    def self_variances(self, x):
        return self.inner.self_variances(x)

    def pairs(self, x1, x2, r, c, v1, v2):
        if self.stop_after is not None and self.calls >= self.stop_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.pairs_done += len(r)
        return self.inner.pairs(x1, x2, r, c, v1, v2)


@pytest.fixture(scope="module")
def gap():
    return infinet.compile(GAP, depth=2).executor("numpy")


@pytest.fixture(scope="module")
def want(gap):
    return evaluate_tiled(gap, _images(N), None, tile=TILE)


def _same(result, want) -> bool:
    return (np.array_equal(np.asarray(result.nngp), want.nngp)
            and np.array_equal(np.asarray(result.ntk), want.ntk))


def _tiles():
    return TileGrid(N, N, TILE, TILE, True).tiles()


def _files(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, names in os.walk(root) for f in names)


def _records(path) -> int:
    """How many tiles K.zarr's tiles_sha256 records (non-zero rows)."""
    table = zarr.open_group(str(path), mode="r")["tiles_sha256"][:]
    return int(np.count_nonzero(table.any(axis=1)))


def _interrupted(gap, out, calls):
    with pytest.raises(KeyboardInterrupt):
        evaluate_tiled(Counting(gap, calls), _images(N), None, out=str(out), tile=TILE)


def _manifest(path) -> dict:
    return json.loads((path / "zarr.json").read_text())["attributes"]["infinet"]


# -- the layout ------------------------------------------------------------------------------------

def test_a_zarr_group_with_one_chunk_per_tile_and_the_manifest(gap, want, tmp_path):
    out = tmp_path / "K.zarr"
    r = evaluate_tiled(gap, _images(N), None, out=str(out), tile=TILE,
                       describe={"x1": "ten images"})
    assert r.pairs_computed == TOTAL and _same(r, want)
    group = zarr.open_group(str(out), mode="r")
    assert group.metadata.zarr_format == 3
    assert sorted(group.keys()) == ["nngp", "ntk", "tiles_sha256"]
    for name, expected in (("nngp", want.nngp), ("ntk", want.ntk)):
        arr = group[name]
        assert arr.shape == (N, N) and arr.chunks == (TILE, TILE) and arr.dtype == np.float64
        assert "crc32c" in [c.to_dict()["name"] for c in arr.metadata.codecs]
        assert np.array_equal(arr[:], expected)
    # 4 diagonal tiles and 6 mirrored ones: all 16 chunks of each array, and nothing else
    chunks = [f for f in _files(out) if f.startswith("nngp/c/")]
    assert chunks == sorted(f"nngp/c/{i}/{j}" for i in range(4) for j in range(4))
    m = _manifest(out)
    source = GAP.read_text()
    assert m["format"] == "infinet-kernels-zarr/1" and m["status"] == "complete"
    assert m["net"]["source"] == source and m["net"]["name"] == "cnn_gap_small"
    assert m["identity"]["net"]["source_sha256"] == hashlib.sha256(source.encode()).hexdigest()
    assert m["identity"]["params"] == {"depth": 2}
    x = np.ascontiguousarray(_images(N))              # sha256 of dtype, shape and bytes
    digest = hashlib.sha256(f"{x.dtype.str}{x.shape}".encode() + x.tobytes()).hexdigest()
    assert m["identity"]["x1"] == {"shape": [N, 8, 8, 1], "checksum": "sha256:" + digest}
    assert (m["identity"]["dtype"], m["identity"]["backend"]) == ("float64", "numpy")
    assert m["identity"]["kernels"] == ["nngp", "ntk"] and m["arrays"] == ["nngp", "ntk"]
    assert m["infinet_version"] == infinet.__version__ and m["inputs"] == {"x1": "ten images"}
    assert m["grid"] == {"rows": 3, "cols": 3, "symmetric": True, "tiles": 10,
                         "batch": m["grid"]["batch"]}
    # each tile's record: the sha256 of its values (and of their mirror image), both arrays
    table = group["tiles_sha256"][:]
    for t in _tiles():
        h = hashlib.sha256()
        for full in (want.nngp, want.ntk):
            block = full[t.r0:t.r1, t.c0:t.c1]
            h.update(np.ascontiguousarray(block))
            if t.mirrored:
                h.update(np.ascontiguousarray(block.T))
        assert bytes(table[t.index]) == h.digest(), t
    c = Counting(gap)                                  # finished: verified, not recomputed
    again = evaluate_tiled(c, _images(N), None, out=str(out))
    assert c.pairs_done == 0 and again.pairs_computed == 0 and _same(again, want)


def test_a_cross_kernel_and_an_nngp_only_store(gap, tmp_path):
    x, y = _images(7, seed=1), _images(5, seed=2)
    want = evaluate_tiled(gap, x, y, tile=2)
    r = evaluate_tiled(gap, x, y, out=str(tmp_path / "C.zarr"), tile=2)
    assert _same(r, want)
    assert zarr.open_group(str(tmp_path / "C.zarr"), mode="r")["nngp"].chunks == (2, 2)
    nngp_only = infinet.compile(GAP, depth=2).executor("numpy", ntk=False)
    r = evaluate_tiled(nngp_only, x, y, out=str(tmp_path / "G.zarr"), tile=2)
    assert r.ntk is None and np.array_equal(np.asarray(r.nngp), want.nngp)
    group = zarr.open_group(str(tmp_path / "G.zarr"), mode="r")
    assert sorted(group.keys()) == ["nngp", "tiles_sha256"]
    assert _manifest(tmp_path / "G.zarr")["identity"]["kernels"] == ["nngp"]
    with pytest.raises(DataError, match=r"the kernels computed \(NNGP only or NNGP and NTK\)"):
        evaluate_tiled(gap, x, y, out=str(tmp_path / "G.zarr"))


def test_an_object_store_url(gap, want):
    url = "memory://infinet-test/K.zarr"
    r = evaluate_tiled(gap, _images(N), None, out=url, tile=TILE)
    assert _same(r, want)
    c = Counting(gap)
    assert _same(evaluate_tiled(c, _images(N), None, out=url), want) and c.pairs_done == 0
    assert _same(read_kernels(url), want)


# -- resuming, refusing --------------------------------------------------------------------------

def test_resume_computes_only_the_unrecorded_tiles(gap, want, tmp_path):
    out = tmp_path / "K.zarr"
    _interrupted(gap, out, calls=4)                    # a batch per tile here: 4 tiles done
    assert _records(out) == 4 and _manifest(out)["status"] == "running"
    again = Counting(gap)
    r = evaluate_tiled(again, _images(N), None, out=str(out))
    assert again.pairs_done == TOTAL - sum(t.pairs for t in _tiles()[:4])
    assert _same(r, want) and _records(out) == 10


def test_a_different_computation_is_refused_and_foreign_data_never_touched(gap, want,
                                                                          tmp_path):
    out = tmp_path / "K.zarr"
    _interrupted(gap, out, calls=3)
    before = _files(out), (out / "zarr.json").read_bytes()
    other = infinet.compile(GAP, depth=3).executor("numpy")
    for ex, x, words in [(other, _images(N), "the params changed"),
                         (gap, _images(N, seed=9), "the inputs x1 changed")]:
        with pytest.raises(DataError, match=rf"holds an unfinished run of a different computation "
                                            rf"\({words}\); refusing to mix results"):
            evaluate_tiled(ex, x, None, out=str(out))
    assert (_files(out), (out / "zarr.json").read_bytes()) == before
    replaced = evaluate_tiled(other, _images(N), None, out=str(out), overwrite=True)
    mine = evaluate_tiled(other, _images(N), None)
    assert _same(replaced, mine) and not np.array_equal(mine.ntk, want.ntk)
    foreign = tmp_path / "theirs.zarr"
    zarr.open_group(str(foreign), mode="w").create_array("data", shape=(2,), dtype="f8")
    files = _files(foreign)
    with pytest.raises(UsageError, match="a zarr group that infinet did not write"):
        evaluate_tiled(gap, _images(N), None, out=str(foreign), overwrite=True)
    assert _files(foreign) == files
    (tmp_path / "notes.zarr").mkdir()
    (tmp_path / "notes.zarr" / "notes.txt").write_text("keep")
    with pytest.raises(UsageError, match="is not empty and is not an infinet zarr store"):
        evaluate_tiled(gap, _images(N), None, out=str(tmp_path / "notes.zarr"), overwrite=True)
    assert (tmp_path / "notes.zarr" / "notes.txt").read_text() == "keep"
    (tmp_path / "file.zarr").write_text("x")
    with pytest.raises(UsageError, match="exists and is not a directory"):
        evaluate_tiled(gap, _images(N), None, out=str(tmp_path / "file.zarr"))


def test_leftovers_of_a_killed_client_or_writer_are_cleared(gap, want, tmp_path):
    """A probe file (a cluster client killed while checking the workers see the store) and
    zarr's temporary files (a writer killed in mid-write) neither block nor stay."""
    out = tmp_path / "K.zarr"
    out.mkdir()
    (out / (".infinet-probe-" + "a" * 32)).write_text("probe\n")
    assert _same(evaluate_tiled(gap, _images(N), None, out=str(out), tile=TILE), want)
    (out / "nngp" / "c" / "0" / ("1." + "b" * 32 + ".partial")).write_bytes(b"torn")
    (out / (".infinet-probe-" + "c" * 32)).write_text("probe\n")
    c = Counting(gap)
    assert _same(evaluate_tiled(c, _images(N), None, out=str(out)), want) and c.pairs_done == 0
    assert _clean(out) and not [f for f in _files(out) if "probe" in f]


def test_the_regression_api_takes_stored_kernels(gap, want, tmp_path):
    from infinet import regression
    out = tmp_path / "K.zarr"
    evaluate_tiled(gap, _images(N), None, out=str(out), tile=TILE)
    y = np.arange(N) % 2
    direct = classify(want.ntk[:6, :6], want.ntk[6:, :6], y[:6], y[6:])
    stored = regression.read_kernels(str(out))          # verified NumPy arrays
    assert type(stored.ntk) is np.ndarray and np.array_equal(stored.ntk, want.ntk)
    lazy = zarr.open_group(str(out), mode="r")["ntk"]   # a zarr array works as it is
    for K in (stored.ntk, lazy):
        c = classify(K[:6, :6], K[6:, :6], y[:6], y[6:])
        assert np.array_equal(c.labels, direct.labels)


def test_a_store_being_written_is_locked(gap, tmp_path):
    out = tmp_path / "K.zarr"
    ident = {"net": "x"}
    first = ZarrStore(str(out), ident)
    try:
        with pytest.raises(UsageError, match="another infinet run is writing this store"):
            ZarrStore(str(out), ident)
    finally:
        first.close()
    ZarrStore(str(out), ident).close()                # released


# -- damage ----------------------------------------------------------------------------------------

def _flip(path, offset=20):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flipped", "missing", "other values", "record"])
def test_a_damaged_chunk_costs_only_its_tile(gap, want, tmp_path, damage):
    out = tmp_path / "K.zarr"
    _interrupted(gap, out, calls=5)                    # tiles 0..4; tile 1 = rows 0:3, cols 3:6
    chunk = out / "ntk" / "c" / "0" / "1"
    if damage == "flipped":                           # its crc32c no longer matches
        _flip(chunk)
    elif damage == "missing":                         # reads as NaN
        chunk.unlink()
    elif damage == "other values":                    # a valid chunk, of another tile
        shutil.copyfile(out / "ntk" / "c" / "0" / "2", chunk)
    else:                                             # the record itself is damaged
        _flip(out / "tiles_sha256" / "c" / "1" / "0", 5)
    again = Counting(gap)
    with pytest.warns(StoreWarning, match="1 of 5 finished tiles are damaged"):
        r = evaluate_tiled(again, _images(N), None, out=str(out))
    assert again.pairs_done == TOTAL - sum(t.pairs for t in _tiles()[:5]) + _tiles()[1].pairs
    assert _same(r, want)


def test_a_damaged_finished_store_is_repaired_not_reported_done(gap, want, tmp_path):
    out = tmp_path / "K.zarr"
    evaluate_tiled(gap, _images(N), None, out=str(out), tile=TILE)
    _flip(out / "nngp" / "c" / "3" / "3")             # the last tile
    with pytest.raises(DataError, match="1 of 10 tiles do not match their checksums"):
        read_kernels(str(out))
    again = Counting(gap)
    with pytest.warns(StoreWarning, match=r"the finished results are damaged \(1 of 10 tiles"):
        r = evaluate_tiled(again, _images(N), None, out=str(out))
    assert again.pairs_done == _tiles()[-1].pairs and _same(r, want)
    assert _manifest(out)["status"] == "complete"
    c = Counting(gap)
    assert _same(evaluate_tiled(c, _images(N), None, out=str(out)), want) and c.pairs_done == 0


def test_a_tile_overwritten_after_it_was_recorded_is_not_reported_done(gap, want, tmp_path,
                                                                      monkeypatch):
    """Another writer (a stray task of an earlier run, say) changes a recorded chunk before
    the run finishes: the final verification catches it, and the next run repairs it."""
    from infinet.runtime import zarrstore
    out = tmp_path / "K.zarr"
    real = zarrstore.ZarrStore.record

    def record(self, tile, digest):
        real(self, tile, digest)
        if tile.index == 9:                          # the last tile: now spoil tile 0
            zarr.open_group(str(out), mode="a")["nngp"][0:3, 0:3] = np.zeros((3, 3))
    monkeypatch.setattr(zarrstore.ZarrStore, "record", record)
    with pytest.raises(DataError, match="1 of 10 tiles do not hold the values that were "
                                        "recorded for them"):
        evaluate_tiled(gap, _images(N), None, out=str(out), tile=TILE)
    monkeypatch.undo()
    assert _manifest(out)["status"] == "running" and _records(out) == 9
    again = Counting(gap)
    assert _same(evaluate_tiled(again, _images(N), None, out=str(out)), want)
    assert again.pairs_done == _tiles()[0].pairs


# -- every kill point recovers ---------------------------------------------------------------------

ZARR_POINTS = ["zarr.manifest-written", "zarr.tile-written@3", "zarr.tile-recorded@3",
               "zarr.verified"]


def _run(gap, out, **kw):
    evaluate_tiled(gap, _images(N), None, out=str(out), tile=TILE, **kw)


def _killed_at(point, fn, *args):
    status, value = run_forked(fn, *args, env={"INFINET_KILLPOINT": point})
    assert status == -signal.SIGKILL, (point, status, value)


def _clean(out) -> bool:
    return not [f for f in _files(out) if f.endswith(".partial") or ".infinet-" in f]


@pytest.mark.parametrize("point", ZARR_POINTS)
def test_every_kill_point_recovers(gap, want, tmp_path, point):
    assert point.split("@")[0] in POINTS
    out = tmp_path / "K.zarr"
    _killed_at(point, _run, gap, out)
    again = Counting(gap)
    r = evaluate_tiled(again, _images(N), None, out=str(out), tile=TILE)
    assert _same(r, want) and _clean(out)
    recorded = {"zarr.tile-written@3": 2, "zarr.tile-recorded@3": 3, "zarr.verified": 10,
                "zarr.manifest-written": 0}[point]
    assert again.pairs_done == TOTAL - sum(t.pairs for t in _tiles()[:recorded])
    assert _manifest(out)["status"] == "complete"


def test_kill_while_overwriting_and_while_repairing(gap, want, tmp_path):
    out = tmp_path / "K.zarr"
    other = infinet.compile(GAP, depth=3).executor("numpy")
    evaluate_tiled(other, _images(N), None, out=str(out), tile=TILE)
    _killed_at("zarr.cleared", lambda: _run(gap, out, overwrite=True))
    assert _manifest(out)["status"] == "empty"       # nothing of the old run counts
    assert _same(evaluate_tiled(gap, _images(N), None, out=str(out), tile=TILE), want)
    _flip(out / "ntk" / "c" / "2" / "3")
    _killed_at("zarr.reopened", _run, gap, out)
    with pytest.warns(StoreWarning, match="1 of 10 finished tiles are damaged"):
        r = evaluate_tiled(gap, _images(N), None, out=str(out), tile=TILE)
    assert _same(r, want) and _clean(out)


# -- the command line, classify and the regression API ---------------------------------------------

def test_cli_zarr_output_and_errors(tmp_path, capsys):
    np.save(tmp_path / "x.npy", _images(N))
    base = ["eval", str(GAP), "--x1", str(tmp_path / "x.npy"), "--backend", "numpy", "--tile",
            str(TILE)]
    assert main(base + ["--out", str(tmp_path / "K.zarr"), "-D", "depth=2"]) == 0
    out = capsys.readouterr().out
    assert "as zarr arrays nngp, ntk (a chunk per tile)" in out
    assert main(base + ["--out", str(tmp_path / "K.zarr"), "-D", "depth=2"]) == 0
    assert "K.zarr: already done (verified, nothing recomputed)" in capsys.readouterr().out
    for args, message in [(["--out", str(tmp_path / "K.zarr"), "-D", "depth=3"],
                           "holds a finished run of a different computation (the params "
                           "changed); refusing to mix results"),
                          (["--out", str(tmp_path / "no" / "K.zarr")], "does not exist"),
                          (["--out", "memory://bucket/K"], "a URL names a zarr store: end it "
                                                           "in .zarr")]:
        assert main(base + args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
    want = evaluate_tiled(infinet.compile(GAP, depth=2).executor("numpy"), _images(N), None,
                          tile=TILE)
    assert _same(read_kernels(str(tmp_path / "K.zarr")), want)


def test_classify_keeps_and_reads_its_kernels_in_a_zarr_store(tmp_path, capsys):
    args = ["classify", str(GAP), "-D", "depth=1", "--train", "digits:train[:40]", "--test",
            "digits:test[:20]", "--backend", "numpy", "--kernels", str(tmp_path / "K.zarr")]
    assert main(args) == 0
    first = capsys.readouterr()
    accuracy = first.out.strip().splitlines()[-1]
    assert accuracy.startswith("accuracy: ")
    root = zarr.open_group(str(tmp_path / "K.zarr"), mode="r")
    assert sorted(root.keys()) == ["test", "train"]
    assert dict(root.attrs)["infinet"]["kind"] == "classify"
    assert main(args) == 0                            # read back, nothing recomputed
    again = capsys.readouterr()
    assert again.out.strip().splitlines()[-1] == accuracy
    assert "train kernel: all 820 pairs already done" in again.err
    assert "test kernel: all 800 pairs already done" in again.err
    # the regression API on the stored kernels gives the same accuracy
    k = infinet.compile(GAP, depth=1)
    train, test = infinet.load_dataset("digits:train[:40]"), infinet.load_dataset("digits:test[:20]")
    k_train = read_kernels(str(tmp_path / "K.zarr" / "train"))
    k_test = read_kernels(str(tmp_path / "K.zarr" / "test"))
    assert np.array_equal(k_train.ntk, k(train.x, backend="numpy").ntk)
    c = classify(k_train.ntk, k_test.ntk, train.y, test.y)
    assert f"accuracy: {c.accuracy:.4f}" == accuracy
    # an eval store is not classify's
    np.save(tmp_path / "x.npy", _images(N))
    assert main(["eval", str(GAP), "--x1", str(tmp_path / "x.npy"), "--out",
                 str(tmp_path / "E.zarr"), "-q", "--backend", "numpy"]) == 0
    assert main(args[:-1] + [str(tmp_path / "E.zarr")]) == 2
    assert "holds a kernel of 'infinet eval', not the train and test kernels" in \
        capsys.readouterr().err


def test_reading_an_unfinished_or_foreign_store_is_an_error(gap, tmp_path):
    out = tmp_path / "K.zarr"
    _interrupted(gap, out, calls=2)
    with pytest.raises(DataError, match="the run that writes it has not finished"):
        read_kernels(str(out))
    with pytest.raises(DataError, match="no zarr store here"):
        read_kernels(str(tmp_path / "none.zarr"))
    zarr.open_group(str(tmp_path / "theirs.zarr"), mode="w")
    with pytest.raises(DataError, match="not a kernel store written by this infinet"):
        read_kernels(str(tmp_path / "theirs.zarr"))
