"""Kernel regression, GP posterior, NTK at finite time, `infinet classify`, the estimators."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import scipy.linalg

import infinet
from infinet.errors import DataError, UsageError
from infinet.regression import (IllConditionedWarning, InfinetClassifier, InfinetRegressor,
                                KernelSolver, classify, gp_posterior, kernel_regression,
                                ntk_predict, one_hot)

from conftest import EXAMPLES, run_cli

FC = EXAMPLES / "fc_ntk.net"       # flat input of `features` (default 64)


def _kernels(n=40, m=9, d=60, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n + m, d))
    K = A @ A.T / d + 0.1
    return K[:n, :n], K[n:, :n], K[n:, n:], rng


def test_one_hot_is_09_minus_01():
    Y, classes = one_hot(np.array([2, 0, 2, 5]))
    assert list(classes) == [0, 2, 5]
    assert np.array_equal(Y, [[-0.1, 0.9, -0.1], [0.9, -0.1, -0.1], [-0.1, 0.9, -0.1],
                              [-0.1, -0.1, 0.9]])


def test_regression_matches_a_direct_solve():
    K, Ks, _, rng = _kernels()
    Y = rng.normal(size=(40, 3))
    np.testing.assert_allclose(kernel_regression(K, Ks, Y), Ks @ np.linalg.solve(K, Y),
                               rtol=1e-9, atol=1e-10)
    ridge = 1e-2 * np.mean(np.diag(K))
    np.testing.assert_allclose(kernel_regression(K, Ks, Y, reg=1e-2),
                               Ks @ np.linalg.solve(K + ridge * np.eye(40), Y), rtol=1e-10)
    y = rng.integers(0, 4, 40)
    c = classify(K, Ks, y, y_test=np.zeros(9, int))
    Yoh, _ = one_hot(y)
    want = np.argmax(Ks @ np.linalg.solve(K, Yoh), axis=1)
    assert np.array_equal(c.labels, np.unique(y)[want])
    assert c.accuracy == pytest.approx(np.mean(c.labels == 0))
    assert c.solver.method == "cholesky" and c.solver.warning is None


def test_ill_conditioned_train_kernel_warns_and_stays_finite():
    K, Ks, _, rng = _kernels(n=10, d=30)
    B = np.r_[np.c_[K, K], np.c_[K, K]]             # every training input twice
    Bs = np.c_[Ks, Ks]
    y = np.r_[np.arange(10) % 3, np.arange(10) % 3]
    with pytest.warns(IllConditionedWarning, match="ill-conditioned"):
        c = classify(B, Bs, y)
    assert np.isfinite(c.scores).all() and c.solver.method.startswith("eigh")
    # the pseudo-inverse gives the minimum-norm interpolant: the duplicates' answer
    Yoh, _ = one_hot(y)
    np.testing.assert_allclose(c.scores, Bs @ np.linalg.pinv(B, rcond=1e-12) @ Yoh, atol=1e-8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        classify(B, Bs, y, reg=1e-6)                  # a ridge fixes it, no warning
    with pytest.raises(DataError, match="is zero"):
        classify(np.zeros((4, 4)), np.zeros((2, 4)), [0, 1, 0, 1])
    with pytest.raises(DataError, match="NaN"):
        classify(np.full((2, 2), np.nan), np.zeros((1, 2)), [0, 1])
    with pytest.raises(UsageError, match="ridge"):
        KernelSolver(np.eye(2), reg=-1)


def test_gp_posterior():
    K, Ks, Kss, rng = _kernels()
    y = rng.normal(size=40)
    mean, cov = gp_posterior(K, Ks, y, Kss)
    inv = np.linalg.inv(K)
    np.testing.assert_allclose(mean, Ks @ inv @ y, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(cov, Kss - Ks @ inv @ Ks.T, atol=1e-8)
    _, var = gp_posterior(K, Ks, y, np.diag(Kss))
    np.testing.assert_allclose(var, np.maximum(np.diag(Kss - Ks @ inv @ Ks.T), 0), atol=1e-8)
    # at a training point the noiseless posterior is exact and certain
    m, v = gp_posterior(K, K[:3], y, np.diag(K)[:3])
    np.testing.assert_allclose(m, y[:3], atol=1e-8)
    assert np.all(v < 1e-8)
    assert gp_posterior(K, Ks, y)[1] is None


def test_labels_that_can_never_match_are_refused():
    K, Ks, _, _ = _kernels()
    y = np.arange(40) % 3
    with pytest.raises(DataError, match=r"training labels are numbers \(0, 1, 2\) but the test "
                                        r"labels are strings \('0', '1', '2'\)"):
        classify(K, Ks, y, y_test=np.array([str(v) for v in np.arange(9) % 3]))
    with pytest.raises(DataError, match=r"training labels are strings \('a', 'b', 'c'\) but "
                                        r"the test labels are numbers"):
        classify(K, Ks, np.array(list("abc" * 14))[:40], y_test=np.zeros(9, int))
    with pytest.raises(DataError, match=r"none of the test labels \(3, 4\) is a training label "
                                        r"\(0, 1, 2\)"):
        classify(K, Ks, y, y_test=np.r_[np.full(5, 3), np.full(4, 4)])
    # numbers compare as numbers: float test labels against int training labels are fine
    c = classify(K, Ks, y, y_test=(np.arange(9) % 3).astype(float))
    assert c.accuracy == pytest.approx(np.mean(c.labels == np.arange(9) % 3))


def test_ill_conditioning_hint_uses_the_callers_words():
    K, Ks, _, _ = _kernels(n=10, d=30)
    B, Bs = np.r_[np.c_[K, K], np.c_[K, K]], np.c_[Ks, Ks]
    y = np.r_[np.arange(10) % 3, np.arange(10) % 3]
    with pytest.warns(IllConditionedWarning, match=r"A ridge \(e.g. reg=1e-6\) avoids this"):
        classify(B, Bs, y)
    with pytest.warns(IllConditionedWarning, match=r"A ridge \(e.g. --reg 1e-6\) avoids this"):
        classify(B, Bs, y, ridge_example="--reg 1e-6")


def test_time_scaling_against_neural_tangents():
    """tests/data/nt_predict.npz (tests/oracle/nt_predict.py): NT's gradient_descent_mse at
    time t with learning rate lr is ntk_predict at lr·t / y_train.size; its diag_reg is
    our reg; its gp_inference is gp_posterior."""
    from conftest import DATA
    with np.load(DATA / "nt_predict.npz") as f:
        r = {k: f[k] for k in f.files}
    args = r["k_train"], r["k_test_train"], r["y_train"]
    reg = float(r["diag_reg"])
    t = float(r["lr"]) * float(r["t"]) / r["y_train"].size
    np.testing.assert_allclose(ntk_predict(*args, t=t, reg=reg), r["gd_t"], rtol=1e-12,
                               atol=1e-14)
    np.testing.assert_allclose(ntk_predict(*args, reg=reg), r["gd_inf"], rtol=1e-12, atol=1e-14)
    assert np.abs(ntk_predict(*args, t=float(r["t"]), reg=reg) - r["gd_t"]).max() > 1e-2
    mean, cov = gp_posterior(*args, k_test_test=r["k_test_test"], reg=reg)
    np.testing.assert_allclose(mean, r["gp_mean"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(cov, r["gp_cov"], rtol=1e-10, atol=1e-13)


def test_ntk_finite_time():
    T, Ts, Tss, rng = _kernels(seed=1)
    S, Ss, Sss, _ = _kernels(seed=2)
    Y = rng.normal(size=(40, 2))
    np.testing.assert_allclose(ntk_predict(T, Ts, Y), kernel_regression(T, Ts, Y), rtol=1e-9)
    np.testing.assert_allclose(ntk_predict(T, Ts, Y, t=1e9), ntk_predict(T, Ts, Y), atol=1e-8)
    assert np.abs(ntk_predict(T, Ts, Y, t=0)).max() == 0
    t = 0.37
    P = np.linalg.solve(T, np.eye(40) - scipy.linalg.expm(-t * T))
    np.testing.assert_allclose(ntk_predict(T, Ts, Y, t=t), Ts @ P @ Y, rtol=1e-8, atol=1e-10)
    # Lee et al. 2019 eq. 16: the variance over initialisations
    mean, cov = ntk_predict(T, Ts, Y, t=t, nngp_train=S, nngp_test_train=Ss, nngp_test_test=Sss)
    M = Ts @ P
    want = Sss + M @ S @ M.T - (M @ Ss.T + Ss @ M.T)
    np.testing.assert_allclose(cov, want, atol=1e-8)
    _, var = ntk_predict(T, Ts, Y, t=t, nngp_train=S, nngp_test_train=Ss,
                         nngp_test_test=np.diag(Sss))
    np.testing.assert_allclose(var, np.diag(want), atol=1e-8)
    _, v0 = ntk_predict(T, Ts, Y, t=0, nngp_train=S, nngp_test_train=Ss,
                        nngp_test_test=np.diag(Sss))
    np.testing.assert_allclose(v0, np.diag(Sss), rtol=1e-12)     # untrained: the prior
    with pytest.raises(UsageError, match="needs all three"):
        ntk_predict(T, Ts, Y, nngp_train=S)
    with pytest.raises(UsageError, match="t must be >= 0"):
        ntk_predict(T, Ts, Y, t=-1)


# -- infinet classify ----------------------------------------------------------------------------

def test_classify_digits_cntk_v_depth3_is_well_above_95_percent(tmp_path):
    code, out, err = run_cli("classify", EXAMPLES / "digits_cntk_v.net", "-D", "depth=3",
                             "--train", "digits:train", "--test", "digits:test",
                             "--backend", "numpy", "--json", "r.json", cwd=tmp_path)
    assert code == 0, err
    last = out.strip().splitlines()[-1]
    assert last.startswith("accuracy: 0.") and len(last) == len("accuracy: 0.xxxx")
    accuracy = float(last.split()[1])
    assert accuracy > 0.96
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["accuracy"] == pytest.approx(accuracy, abs=5e-5)
    assert report["kernel"] == "ntk" and report["reg"] == 0 and report["train"]["n"] == 1000
    assert "standardised per channel" in " ".join(report["test"]["preprocessing"])
    assert "ridgeless" in out and "digits:test: 797 images" in out


def _main_in(cwd, capsys, *args):
    """The CLI in-process (faster than a subprocess), from directory ``cwd``."""
    from infinet.cli import main
    import os
    old = os.getcwd()
    os.chdir(cwd)
    try:
        capsys.readouterr()
        code = main(list(args))
    finally:
        os.chdir(old)
    out, err = capsys.readouterr()
    return code, out, err


def test_classify_npz_nngp_ridge_and_resumable_kernels(tmp_path, capsys):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 64))
    y = rng.integers(0, 3, 90)
    x = centers[y] + 0.5 * rng.normal(size=(90, 64))
    np.savez(tmp_path / "tr.npz", x=x[:60], y=y[:60])
    np.savez(tmp_path / "te.npz", x=x[60:], y=np.array(["abc"[i] for i in y[60:]]))
    np.savez(tmp_path / "te_num.npz", x=x[60:], y=y[60:])
    code, out, err = run_cli("classify", FC, "--train", "tr.npz", "--test", "te_num.npz",
                             "--kernel", "nngp", "--reg", "1e-3", "--kernels", "kern",
                             "--quiet", cwd=tmp_path)
    assert code == 0, err
    assert out.strip().splitlines() == [out.strip()] and float(out.split()[1]) > 0.9
    assert (tmp_path / "kern" / "train" / "manifest.json").exists()
    # the same command again reuses the stored kernels
    code, out2, err = run_cli("classify", FC, "--train", "tr.npz", "--test", "te_num.npz",
                              "--kernel", "nngp", "--reg", "1e-3", "--kernels", "kern",
                              cwd=tmp_path)
    assert code == 0 and out2.strip().splitlines()[-1] == out.strip()
    # direct check of the number against a solve
    net = infinet.compile(FC)
    Ktr, Kte = net(x[:60]).nngp, net(x[60:], x[:60]).nngp
    Y, _ = one_hot(y[:60])
    pred = np.argmax(Kte @ np.linalg.solve(Ktr + 1e-3 * np.mean(np.diag(Ktr)) * np.eye(60), Y), 1)
    assert out.strip() == f"accuracy: {np.mean(pred == y[60:]):.4f}"
    for args, message in [
        (["--train", "tr.npz", "--test", "te.npz"],                       # was: accuracy 0
         "error: the training labels are numbers (0, 1, 2) but the test labels are strings "
         "('a', 'b', 'c'): no prediction can ever match"),
        (["--train", "digits:train", "--test", "te_num.npz"], "has shape (1000, 8, 8, 1)"),
        (["--train", "tr.npz", "--test", "x.npy"], "has no labels"),
        (["--train", "tr.npz", "--test", "te_num.npz", "--reg", "-1"], "--reg -1: must be"),
        (["--train", "tr.npz", "--test", "te_num.npz", "--json", "no/r.json"], "does not exist"),
    ]:
        np.save(tmp_path / "x.npy", x[:3])
        code, out, err = _main_in(tmp_path, capsys, "classify", str(FC), *args)
        assert code == 2 and message in err and "Traceback" not in err, (args, err)
        assert "accuracy" not in out


def test_classify_warns_on_duplicate_training_inputs(tmp_path):
    x = np.random.default_rng(0).normal(size=(10, 64))
    np.savez(tmp_path / "tr.npz", x=np.r_[x, x], y=np.r_[np.arange(10) % 2, np.arange(10) % 2])
    np.savez(tmp_path / "te.npz", x=x[:4], y=np.arange(4) % 2)
    code, out, err = run_cli("classify", FC, "--train", "tr.npz", "--test", "te.npz",
                             cwd=tmp_path)
    assert code == 0, err
    assert err.startswith("warning: the train kernel (20x20) is ill-conditioned")
    assert "(e.g. --reg 1e-6)" in err                      # in the command line's words
    assert "nan" not in out.lower() and out.strip().endswith("accuracy: 1.0000")


# -- scikit-learn ------------------------------------------------------------------------------

def test_estimator_in_a_pipeline_and_cross_validation():
    from sklearn.base import clone
    from sklearn.datasets import load_digits
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    digits = load_digits()
    X, y = digits.data[:300], digits.target[:300]
    clf = InfinetClassifier(str(FC), kernel="ntk", params={"depth": 2})
    assert clf.get_params() == {"net": str(FC), "kernel": "ntk", "reg": 0.0,
                                "params": {"depth": 2}, "backend": "auto", "dtype": "float64"}
    clf.set_params(reg=1e-4)
    assert clone(clf).get_params()["reg"] == 1e-4
    pipe = make_pipeline(StandardScaler(), clf)
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.85
    pipe.fit(X[:200], y[:200])
    assert pipe.score(X[200:], y[200:]) > 0.85
    assert set(pipe.predict(X[200:210])) <= set(range(10))
    # an image net takes the flat rows a Pipeline hands it, reshaped to 8x8x1
    img = InfinetClassifier(str(EXAMPLES / "digits_cntk_v.net"), params={"depth": 3},
                            backend="numpy").fit(X[:150] / 16, y[:150])
    assert img.score(X[150:250] / 16, y[150:250]) > 0.8
    with pytest.raises(Exception, match="not fitted"):
        InfinetClassifier(str(FC)).predict(X[:2])


def test_regressor_matches_gp_posterior():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 64))
    t = np.sin(x[:, 0])
    reg = InfinetRegressor(str(FC), kernel="nngp", reg=1e-3).fit(x[:20], t[:20])
    mean, std = reg.predict(x[20:], return_std=True)
    net = infinet.compile(FC)
    K, Ks = net(x[:20]).nngp, net(x[20:], x[:20]).nngp
    Kss = np.diag(net(x[20:]).nngp)
    m, v = gp_posterior(K, Ks, t[:20], Kss, reg=1e-3)
    np.testing.assert_allclose(mean, m, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(std, np.sqrt(v), rtol=1e-6, atol=1e-8)
    assert reg.score(x[20:], t[20:]) <= 1.0


def test_a_fitted_classifier_pickles_and_predicts_the_same(tmp_path):
    import pickle

    import joblib
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(24, 64)), np.arange(24) % 3
    clf = InfinetClassifier(str(FC), params={"depth": 2}, backend="cpu").fit(x[:16], y[:16])
    want = clf.decision_function(x[16:])        # the compiled C++ executor is loaded now
    assert clf._kernel_fn()._executors           # (what made pickling fail: a ctypes pointer)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.decision_function(x[16:]), want)
    joblib.dump(clf, tmp_path / "clf.joblib")
    loaded = joblib.load(tmp_path / "clf.joblib")
    assert np.array_equal(loaded.predict(x[16:]), clf.predict(x[16:]))
    np.testing.assert_array_equal(loaded.decision_function(x[16:]), want)
    assert loaded.get_params() == clf.get_params()


def test_grid_search_over_the_ridge_computes_each_kernel_once(monkeypatch):
    from sklearn.model_selection import GridSearchCV

    from infinet.runtime.datasets import checksum
    from infinet.runtime.kernel_cache import KERNELS
    from infinet.runtime.reference import ReferenceExecutor
    KERNELS.clear()
    symmetric, cross = [], []
    pairs = ReferenceExecutor.pairs

    def counting_pairs(self, x1, x2, *args, **kwargs):   # one entry per kernel computed
        (symmetric if x1 is x2 else cross).append((checksum(x1), checksum(x2)))
        return pairs(self, x1, x2, *args, **kwargs)

    monkeypatch.setattr(ReferenceExecutor, "pairs", counting_pairs)
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(30, 64)), np.arange(30) % 3
    est = InfinetClassifier(str(FC), params={"depth": 2}, backend="numpy")
    search = GridSearchCV(est, {"reg": [0.0, 1e-3, 1e-1], "kernel": ["ntk", "nngp"]}, cv=3,
                          refit=False).fit(x, y)
    assert len(search.cv_results_["mean_test_score"]) == 6
    # 3 folds: each train kernel and each test-train kernel once (in one pair batch each),
    # not once per candidate (6 each)
    assert len(set(symmetric)) == 3 and len(symmetric) == 3, symmetric
    assert len(set(cross)) == 3 and len(cross) == 3, cross
    assert KERNELS.hits == 6 * 3 * 2 - 6
    # the cached kernels give the scores an uncached run gives
    KERNELS.clear()
    KERNELS.max_bytes = 0                       # keeps nothing
    try:
        fresh = GridSearchCV(est, {"reg": [1e-3]}, cv=3, refit=False).fit(x, y)
    finally:
        KERNELS.max_bytes = 2 ** 30
    want = [s for p, s in zip(search.cv_results_["params"],
                              search.cv_results_["mean_test_score"])
            if p == {"kernel": "ntk", "reg": 1e-3}]
    assert fresh.cv_results_["mean_test_score"].tolist() == want
    assert len(symmetric) == 6
