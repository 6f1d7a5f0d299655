"""Kernel tiles on a Dask cluster (runtime/cluster.py): a LocalCluster of 2 worker
processes (one for the whole module), results compared bit for bit with the
single-process path; a worker killed (its process, SIGKILL) in the middle of a run; the
client killed and restarted; a store refused for a different computation; ``--workers``,
``--scheduler`` and their errors; the dask-cuda selection with mocks (no GPU here)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import types
from collections import Counter

import numpy as np
import pytest

distributed = pytest.importorskip("distributed",
                                  reason="the cluster extra (pip install 'infinet[cluster]')")
zarr = pytest.importorskip("zarr", reason="the cluster extra (pip install 'infinet[cluster]')")

import infinet  # noqa: E402
from infinet.errors import DataError, UsageError  # noqa: E402
from infinet.runtime import cluster  # noqa: E402
from infinet.runtime.evaluate import evaluate_tiled  # noqa: E402
from infinet.runtime.zarrstore import ZarrStore  # noqa: E402

from conftest import EXAMPLES, ROOT  # noqa: E402

GAP = EXAMPLES / "cnn_gap_small.net"


def _images(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 8, 8, 1))


def _same(result, want) -> bool:
    return (np.array_equal(np.asarray(result.nngp), want.nngp)
            and np.array_equal(np.asarray(result.ntk), want.ntk))


class TileStarts(distributed.diagnostics.plugin.SchedulerPlugin):
    """A scheduler plugin: how many times each tile task was sent to a worker."""

    def __init__(self):
        self.starts = Counter()

    def transition(self, key, start, finish, *args, **kwargs):
        if finish == "processing" and str(key).startswith("infinet-tile-"):
            self.starts[str(key)] += 1


@pytest.fixture(scope="module")
def local():
    """(cluster, client): 2 worker processes of one thread each."""
    c = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                 dashboard_address=":0")
    client = distributed.Client(c)
    client.wait_for_workers(2)
    yield c, client
    client.close()
    c.close()


@pytest.fixture(scope="module")
def client(local):
    return local[1]


@pytest.fixture(scope="module")
def gap():
    return infinet.compile(GAP, depth=2).executor("numpy")


def _stats(client) -> Counter:
    total = Counter()
    for stats in client.run(cluster.worker_stats).values():
        total.update(stats)
    return total


# -- the same bits, written by the workers ---------------------------------------------------------

def test_tiles_on_two_workers_are_bit_identical_and_written_there(client, gap, tmp_path,
                                                                  monkeypatch):
    x, y = _images(12), _images(7, seed=1)
    before = client.run(cluster.worker_stats)

    def client_writes(*_args):
        raise AssertionError("the client wrote a tile")
    monkeypatch.setattr(ZarrStore, "write", client_writes)   # only the workers may write
    r = evaluate_tiled(gap, x, None, out=str(tmp_path / "K.zarr"), tile=3, client=client)
    want = evaluate_tiled(gap, x, None, tile=3)
    assert _same(r, want) and r.pairs_computed == 78
    after = client.run(cluster.worker_stats)
    tiles = {w: after[w].get("tiles computed", 0) - before.get(w, {}).get("tiles computed", 0)
             for w in after}
    assert sum(tiles.values()) == 10                      # each of the 10 tiles once
    for w, n in tiles.items():                           # once per worker, not per task
        built = after[w].get("self-variances computed", 0) - before.get(w, {}).get(
            "self-variances computed", 0)
        assert built == (1 if n else 0), (w, n, built)
        assert after[w].get("executors built", 0) <= 1
    # a cross kernel; and outputs the workers cannot write (memory, K.npz): values come back
    monkeypatch.undo()
    want = evaluate_tiled(gap, x, y, tile=2)
    assert _same(evaluate_tiled(gap, x, y, out=str(tmp_path / "C.zarr"), tile=2,
                                client=client), want)
    assert _same(evaluate_tiled(gap, x, y, tile=2, client=client), want)
    r = evaluate_tiled(gap, x, y, out=str(tmp_path / "C.npz"), tile=2, client=client)
    with np.load(tmp_path / "C.npz") as f:
        assert np.array_equal(f["nngp"], want.nngp) and np.array_equal(f["ntk"], want.ntk)


def test_the_generated_cpu_code_on_the_workers_gives_the_same_bits(client, tmp_path):
    from infinet.codegen import cpujit
    if not cpujit.compiler_works():
        pytest.skip("no working C++ compiler")
    k = infinet.compile(GAP, depth=2)
    x = _images(14, seed=8)
    want = evaluate_tiled(k.executor("cpu"), x, None, tile=5)
    r = cluster.evaluate(k, x, client=client, out=str(tmp_path / "K.zarr"), backend="cpu",
                         tile=5)
    assert _same(r, want)
    m = zarr.open_group(str(tmp_path / "K.zarr"), mode="r").attrs["infinet"]
    assert m["identity"]["backend"] == "cpu"


def test_the_python_api_with_a_client(client, tmp_path):
    k = infinet.compile(GAP, depth=2)
    x = _images(9, seed=4)
    want = k(x, backend="numpy")
    seen = []
    r = cluster.evaluate(k, x, client=client, out=str(tmp_path / "K.zarr"), backend="numpy",
                         tile=4, progress=lambda done, total: seen.append((done, total)))
    assert _same(r, want)
    assert seen[0] == (0, 45) and seen[-1] == (45, 45) and len(seen) == 1 + 6  # one per tile
    assert _same(k(x, backend="numpy", client=client), want)   # the kernel's own call
    g = cluster.evaluate(k, x, client=client, backend="numpy", get="nngp")
    assert g.ntk is None and np.array_equal(g.nngp, k(x, backend="numpy", get="nngp").nngp)
    remote = cluster.cluster_executor(k, "numpy", "float64", client)
    with pytest.raises(infinet.InfinetError, match="runs on the cluster's workers"):
        evaluate_tiled(remote, x, None)                    # without the client


def test_progress_counts_resumed_tiles_and_the_cluster_finishes_the_rest(client, gap, tmp_path):
    out = tmp_path / "K.zarr"
    x = _images(10)

    class Stop(Exception):
        pass

    def stop(done, total):
        if done >= 15:                               # two or more of the 10 tiles recorded
            raise Stop

    with pytest.raises(Stop):
        evaluate_tiled(gap, x, None, out=str(out), tile=3, client=client, progress=stop)
    recorded = int(np.count_nonzero(zarr.open_group(str(out), mode="r")["tiles_sha256"][:]
                                    .any(axis=1)))
    assert 0 < recorded < 10
    seen = []
    r = evaluate_tiled(gap, x, None, out=str(out), client=client,
                       progress=lambda d, t: seen.append(d))
    assert _same(r, evaluate_tiled(gap, x, None, tile=3))
    assert seen[0] > 0 and r.pairs_computed == 55 - seen[0]


# -- failures --------------------------------------------------------------------------------------

def test_a_worker_killed_mid_run_costs_only_its_tiles(local, gap, tmp_path):
    c, client = local
    plugin = TileStarts()
    c.scheduler.add_plugin(plugin, name="infinet-tile-starts")
    x = _images(40, seed=2)
    out = tmp_path / "K.zarr"
    pids = client.run(os.getpid)
    killed = []

    def kill_one(done, total):
        if killed or done < total // 5:
            return
        busy = [w for w, keys in client.processing().items() if keys and w in pids]
        if busy:
            os.kill(pids[busy[0]], signal.SIGKILL)
            killed.append((done, busy[0]))

    try:
        r = evaluate_tiled(gap, x, None, out=str(out), tile=4, client=client, progress=kill_one)
    finally:
        c.scheduler.remove_plugin(name="infinet-tile-starts")
    assert killed and killed[0][0] < 820, "the worker was not killed in the middle of the run"
    assert _same(r, evaluate_tiled(gap, x, None, tile=4))
    tiles = 55                                       # 10 x 10 tiles above the diagonal
    assert len(plugin.starts) == tiles and r.pairs_computed == 820
    twice = [k for k, n in plugin.starts.items() if n > 1]
    assert max(plugin.starts.values()) == 2
    # only what the dead worker held: the tasks in flight (the window: 2 per worker thread,
    # counting results the client had not yet released), each once more; every tile was
    # recorded once (pairs_computed above)
    assert 1 <= len(twice) <= cluster.WINDOW_PER_THREAD * 2, plugin.starts
    client.wait_for_workers(2)                        # the nanny restarted it


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _recorded(out) -> int:
    try:
        return len(os.listdir(out / "tiles_sha256" / "c"))
    except FileNotFoundError:
        return 0


def test_the_client_killed_mid_run_resumes_on_the_next_invocation(client, tmp_path, capsys,
                                                                   monkeypatch):
    address = client.scheduler.address
    x = _images(50, seed=3)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "K.zarr"
    args = [sys.executable, "-m", "infinet", "eval", str(GAP), "-D", "depth=3", "--x1", "x.npy",
            "--out", "K.zarr", "--tile", "5", "--backend", "numpy", "--scheduler", address]
    proc = subprocess.Popen(args, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while _recorded(out) < 6 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.communicate()
    done = _recorded(out)
    assert 6 <= done < 55, "killed too late to test resuming"
    resumed = subprocess.run(args, cwd=tmp_path, env=_env(), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming:" in resumed.stderr and "wrote K.zarr" in resumed.stdout
    ex = infinet.compile(GAP, depth=3).executor("numpy")
    group = zarr.open_group(str(out), mode="r")
    want = evaluate_tiled(ex, x, None, tile=5)
    assert np.array_equal(group["nngp"][:], want.nngp) and np.array_equal(group["ntk"][:],
                                                                          want.ntk)
    # a different computation on the same store is refused, and the store left as it was
    from infinet.cli import main
    manifest = (out / "zarr.json").read_bytes()
    monkeypatch.chdir(tmp_path)
    assert main(args[3:6] + ["depth=2"] + args[7:]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out K.zarr: holds a finished run of a different "
                          "computation (the params changed)") and len(err.splitlines()) == 1
    assert (out / "zarr.json").read_bytes() == manifest


def test_a_store_the_workers_cannot_see_and_a_foreign_worker_are_refused(tmp_path):
    """With fake clients: the checks on what the workers answer."""
    store = ZarrStore(str(tmp_path / "K.zarr"), {"net": "x"})
    try:
        blind = types.SimpleNamespace(run=lambda fn, *a: {"tcp://h1:1": True, "tcp://h2:1": False,
                                                          "tcp://h3:1": False})
        with pytest.raises(UsageError, match=r"worker tcp://h2:1 \(and 1 more\) does not see "
                                             r".*K.zarr; the store must be on a file system "
                                             r"every worker mounts at the same path"):
            cluster.prepare_store(blind, store)
        assert os.listdir(tmp_path / "K.zarr") == []           # the probe is gone
    finally:
        store.close()
    old = types.SimpleNamespace(nthreads=lambda: {"tcp://h1:1": 1},
                                run=lambda fn: {"tcp://h1:1": {"infinet": "0.0.1"}})
    with pytest.raises(UsageError, match=r"worker tcp://h1:1 \(infinet 0.0.1\) runs another "
                                         r"infinet"):
        cluster.check_workers(old, "--scheduler X")

    def unpickling_fails(fn):
        raise ModuleNotFoundError("No module named 'infinet'")
    bare = types.SimpleNamespace(nthreads=lambda: {"tcp://h1:1": 1}, run=unpickling_fails)
    with pytest.raises(UsageError, match=r"a worker cannot run infinet \(No module named "
                                         r"'infinet'\); install the same infinet"):
        cluster.check_workers(bare, "--scheduler X")


def test_a_tile_whose_workers_keep_dying_stops_the_run_with_an_error(local, gap, tmp_path):
    """With ``allowed-failures`` 0, one worker death is one too many: the run stops with a
    one-line error, keeps what it recorded, and the same call finishes it."""
    c, client = local
    x = _images(30, seed=6)
    out = tmp_path / "K.zarr"
    pids = client.run(os.getpid)
    killed = []

    def kill_one(done, total):
        busy = [w for w, keys in client.processing().items() if keys and w in pids]
        if not killed and done >= total // 4 and busy:
            os.kill(pids[busy[0]], signal.SIGKILL)
            killed.append(done)

    allowed, c.scheduler.allowed_failures = c.scheduler.allowed_failures, 0
    try:
        with pytest.raises(DataError, match=r"tile \d+ \(rows \d+:\d+, columns \d+:\d+\): the "
                                            r"workers running it died too often .* run the same "
                                            r"command again to resume"):
            evaluate_tiled(gap, x, None, out=str(out), tile=3, client=client,
                           progress=kill_one)
    finally:
        c.scheduler.allowed_failures = allowed
    assert killed
    client.wait_for_workers(2)
    r = evaluate_tiled(gap, x, None, out=str(out), client=client)
    assert _same(r, evaluate_tiled(gap, x, None, tile=3)) and 0 < r.pairs_computed < 465


# -- the command line ------------------------------------------------------------------------------

def test_cli_workers_and_scheduler_options(client, tmp_path, capsys):
    import dask
    from infinet.cli import main
    x = _images(12, seed=5)
    np.save(tmp_path / "x.npy", x)
    base = ["eval", str(GAP), "-D", "depth=2", "--x1", str(tmp_path / "x.npy"), "--tile", "4",
            "--backend", "numpy", "-q"]
    assert main(base + ["--out", str(tmp_path / "A.zarr")]) == 0
    assert main(base + ["--out", str(tmp_path / "B.zarr"), "--workers", "2"]) == 0
    a = zarr.open_group(str(tmp_path / "A.zarr"), mode="r")
    b = zarr.open_group(str(tmp_path / "B.zarr"), mode="r")
    for name in ("nngp", "ntk"):
        assert np.array_equal(a[name][:], b[name][:])
    capsys.readouterr()
    errors = [(["--workers", "0"], "error: --workers 0: must be at least 1"),
              (["--workers", "two"], "error: --workers two: expected a number"),
              (["--workers", "2", "--scheduler", client.scheduler.address],
               "error: --scheduler and --workers: give one"),
              (["--scheduler", "tcp://127.0.0.1:9"],
               "error: --scheduler tcp://127.0.0.1:9: cannot connect to a Dask scheduler there")]
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        for extra, message in errors:
            assert main(base + ["--out", str(tmp_path / "C.zarr")] + extra) == 2, extra
            err = capsys.readouterr().err
            assert err.startswith(message) and len(err.splitlines()) == 1, (extra, err)
    assert not (tmp_path / "C.zarr").exists()


def test_missing_cluster_packages_say_how_to_install_them(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(UsageError, match=r"--scheduler X needs dask.distributed: pip install "
                                         r"'infinet\[cluster\]'"):
        cluster.needs_dask("--scheduler X")


# -- which local cluster: dask-cuda selection (mocked: no GPU here) --------------------------------

def _fake_dask_cuda(gpus):
    mod = types.SimpleNamespace(LocalCUDACluster=type("LocalCUDACluster", (), {}))
    mod.utils = types.SimpleNamespace(get_n_gpus=lambda: gpus)
    return mod


def test_one_worker_per_gpu_with_dask_cuda(monkeypatch):
    fake = _fake_dask_cuda(4)
    monkeypatch.setattr(cluster, "_import_dask_cuda", lambda: fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cls, options = cluster.local_cluster_options(2, "auto")
    assert cls is fake.LocalCUDACluster
    assert options == {"n_workers": 2, "CUDA_VISIBLE_DEVICES": ["0", "1"],
                       "threads_per_worker": 1, "dashboard_address": ":0"}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 5,7")        # the GPUs this job was given
    cls, options = cluster.local_cluster_options(3, "cuda")
    assert options["CUDA_VISIBLE_DEVICES"] == ["3", "5", "7"]
    with pytest.raises(UsageError, match=r"--workers 5: this machine has 4 GPUs \(one worker per "
                                         r"GPU\); use --workers 4 or fewer, or --backend cpu"):
        cluster.local_cluster_options(5, "auto")
    cls, options = cluster.local_cluster_options(2, "cpu", cpus=16)   # GPUs not wanted
    assert cls is distributed.LocalCluster
    assert options["env"] == {"OMP_NUM_THREADS": "8"} and options["processes"] is True
    made = {}

    class Recorder:
        def __init__(self, **kw):
            made.update(kw)
    fake.LocalCUDACluster = Recorder
    assert isinstance(cluster.start_local_cluster(1, "auto"), Recorder)
    assert made["n_workers"] == 1 and made["CUDA_VISIBLE_DEVICES"] == ["3"]


def test_processes_without_dask_cuda_or_without_gpus(monkeypatch, capsys):
    monkeypatch.setattr(cluster, "_import_dask_cuda", lambda: None)
    cls, options = cluster.local_cluster_options(3, "auto", cpus=2)
    assert cls is distributed.LocalCluster
    assert options == {"n_workers": 3, "threads_per_worker": 1, "processes": True,
                       "dashboard_address": ":0", "env": {"OMP_NUM_THREADS": "1"}}
    assert capsys.readouterr().err == ""
    cluster.local_cluster_options(2, "cuda")
    assert "dask-cuda is not installed (or sees no GPU): the workers share the default GPU" in \
        capsys.readouterr().err
    monkeypatch.setattr(cluster, "_import_dask_cuda", lambda: _fake_dask_cuda(0))
    assert cluster.local_cluster_options(2, "auto")[0] is distributed.LocalCluster
    with pytest.raises(UsageError, match="--workers 0: must be at least 1"):
        cluster.local_cluster_options(0)


# -- the README's example ------------------------------------------------------------------------

def test_the_readme_cluster_example_runs(client, tmp_path, monkeypatch, capsys):
    import re
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"^```py\n(.*?)^```$", text, re.S | re.M)
    assert len(blocks) == 1 and "cluster.evaluate(" in blocks[0]
    code = blocks[0].replace('Client("tcp://A:8786")', f'Client("{client.scheduler.address}")')
    code = code.replace('"examples/', f'"{EXAMPLES}/')
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    scope["client"].close()
    printed = capsys.readouterr().out
    assert re.fullmatch(r"accuracy 0\.\d{3}\n", printed), printed
    k, train, test = scope["k"], scope["train"], scope["test"]
    accuracy = float(np.mean(scope["classify"](scope["tr"].ntk, scope["te"].ntk, train.y,
                                               test.y).labels == test.y))
    backend = zarr.open_group("K.zarr/train", mode="r").attrs["infinet"]["identity"]["backend"]
    assert np.array_equal(scope["tr"].ntk, k(train.x, backend=backend).ntk)
    assert 0.7 < accuracy <= 1.0
    from infinet.cli import main                       # classify reads what the example wrote
    assert main(["classify", str(EXAMPLES / "digits_cntk_gap.net"), "-D", "depth=3", "--train",
                 "digits:train[:60]", "--test", "digits:test[:30]", "--backend", backend,
                 "--kernels", "K.zarr"]) == 0
    cap = capsys.readouterr()
    assert "train kernel: all 1,830 pairs already done" in cap.err
    assert cap.out.strip().splitlines()[-1] == f"accuracy: {accuracy:.4f}"
