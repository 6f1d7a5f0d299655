"""What an infinitely wide trained network predicts: kernel regression with Σ or Θ.

* :func:`kernel_regression` / :func:`classify` — ridgeless (or ridge) kernel regression
  in float64, labels one-hot encoded as 0.9 / −0.1 (Arora et al. 2019), argmax;
* :func:`gp_posterior` — the NNGP posterior mean and variance (Bayesian inference with
  the infinite network as the prior);
* :func:`ntk_predict` — the mean prediction (and, given the NNGP kernels, the
  variance) of an infinitely wide network trained by gradient flow on the squared loss,
  at finite time ``t`` or at ``t = ∞`` (Lee et al. 2019);
* :func:`read_kernels` — the kernels of a finished ``K.zarr`` store (``infinet eval
  --out K.zarr``, on a Dask cluster or not) as verified NumPy arrays for any of these;
* :class:`InfinetClassifier`, :class:`InfinetRegressor` — scikit-learn estimators
  (``fit`` / ``predict`` / ``score`` / ``get_params``) usable in ``Pipeline`` and
  ``cross_val_score``.

Solves: the train kernel is factorised once (Cholesky, with LAPACK's condition
estimate).  When it is singular or too ill-conditioned for float64 (reciprocal
condition number below N·eps), an :class:`IllConditionedWarning` says so and the solve
falls back to an eigendecomposition that drops the eigenvalues below N·eps times the
largest (a stable pseudo-inverse), so predictions are never silently NaN.  The ridge
``reg`` is relative to the mean of the train kernel's diagonal: K + reg·mean(diag K)·I.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .errors import DataError, UsageError

LABEL_ON = 0.9
LABEL_OFF = -0.1


class IllConditionedWarning(UserWarning):
    """The train kernel is (numerically) singular; a stable pseudo-inverse was used."""


def read_kernels(path, verify: bool = True):
    """``.nngp`` and ``.ntk`` of a finished zarr store (``K.zarr``, ``K.zarr/train``, an
    object store URL) as float64 NumPy arrays, every tile checked against its checksum
    first (``verify``).  A zarr array itself (``zarr.open_group("K.zarr")["ntk"]``) may
    also be passed to the functions here as it is (read whole, unverified)."""
    from .runtime.zarrstore import read_kernels as read
    return read(path, "read_kernels", verify)


# -- labels ----------------------------------------------------------------------------------

def one_hot(y, classes=None, on: float = LABEL_ON, off: float = LABEL_OFF):
    """(Y [N, k] with ``on`` at each label's class and ``off`` elsewhere, classes [k])."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"labels must be a vector [N], got shape {tuple(y.shape)}")
    classes = np.unique(y) if classes is None else np.asarray(classes)
    idx = np.searchsorted(classes, y)
    idx = np.clip(idx, 0, len(classes) - 1)
    if not np.all(classes[idx] == y):
        raise DataError("labels contain values that are not among the classes")
    Y = np.full((len(y), len(classes)), off, np.float64)
    Y[np.arange(len(y)), idx] = on
    return Y, classes


# -- the train-kernel solve -----------------------------------------------------------------

def _as_matrix(K, what: str, square: bool = False) -> np.ndarray:
    K = np.asarray(K, dtype=np.float64)
    if K.ndim != 2:
        raise DataError(f"{what}: expected a matrix, got shape {tuple(K.shape)}")
    if square and K.shape[0] != K.shape[1]:
        raise DataError(f"{what}: expected a square matrix, got shape {tuple(K.shape)}")
    if not np.isfinite(K).all():
        raise DataError(f"{what}: contains NaN or inf")
    return K


class KernelSolver:
    """Factorises K + ridge·I once; ``solve(B)`` = (K + ridge·I)⁻¹ B in float64.

    ``ridge_example`` is how the caller's user sets a ridge, for the ill-conditioning
    warning (``reg=1e-6`` in Python, ``--reg 1e-6`` on the command line).
    """

    def __init__(self, k_train, reg: float = 0.0, warn: bool = True,
                 ridge_example: str = "reg=1e-6"):
        K = _as_matrix(k_train, "train kernel", square=True)
        reg = float(reg)
        if not np.isfinite(reg) or reg < 0:
            raise UsageError(f"the ridge must be a number >= 0, got {reg}")
        n = len(K)
        if n == 0:
            raise DataError("train kernel: is empty")
        K = (K + K.T) / 2
        self.n = n
        self.mean_diag = float(np.mean(np.diag(K)))
        self.ridge = reg * self.mean_diag
        if self.ridge:
            K = K + self.ridge * np.eye(n)
        self.matrix = K
        self.method = "cholesky"
        self.rcond = None
        self.dropped = 0
        self.warning: str | None = None
        self._factor = None
        self._eig = None
        import scipy.linalg as sla
        from scipy.linalg import lapack
        threshold = n * np.finfo(np.float64).eps
        try:
            c, lower = sla.cho_factor(K, lower=True, check_finite=False)
            anorm = float(np.max(np.sum(np.abs(K), axis=0)))
            rcond, info = lapack.dpocon(c, anorm, uplo="L")
            self.rcond = float(rcond)
            ok = info == 0 and self.rcond >= threshold
        except (np.linalg.LinAlgError, sla.LinAlgError, ValueError):
            ok = False
        if ok:
            self._factor = (c, lower)
            return
        # The stable fallback: an eigendecomposition, dropping the null directions.
        w, V = np.linalg.eigh(K)
        top = max(float(w[-1]), 0.0)
        if top <= 0.0 or not np.isfinite(top):
            raise DataError(f"the train kernel ({n}x{n}) is zero (or has no positive "
                            f"eigenvalue): there is nothing to regress on. A net whose every "
                            f"weight layer is `fixed` has an NTK of 0; use its NNGP")
        cutoff = threshold * top
        keep = w > cutoff
        self.dropped = int(n - keep.sum())
        self.method = "eigh (pseudo-inverse)"
        self._eig = (w, V, keep)
        cond = "infinite" if not keep.all() or w[0] <= 0 else f"{top / w[0]:.2g}"
        if self.rcond is not None and self.rcond > 0 and cond == "infinite":
            cond = f"~{1 / self.rcond:.2g}"
        self.warning = (f"the train kernel ({n}x{n}) is ill-conditioned for float64 (condition "
                        f"number {cond}; duplicate or nearly identical training inputs?); "
                        f"solving with a pseudo-inverse that drops {self.dropped} of {n} "
                        f"eigenvalues below {threshold:.1e} x the largest. A ridge "
                        f"(e.g. {ridge_example}) avoids this")
        if warn:
            warnings.warn(self.warning, IllConditionedWarning, stacklevel=2)

    @property
    def condition(self) -> float | None:
        if self._eig is not None:
            w, _, keep = self._eig
            return float("inf") if w[0] <= 0 else float(w[-1] / w[0])
        return None if not self.rcond else 1.0 / self.rcond

    def solve(self, B) -> np.ndarray:
        B = np.asarray(B, np.float64)
        if self._factor is not None:
            import scipy.linalg as sla
            return sla.cho_solve(self._factor, B, check_finite=False)
        w, V, keep = self._eig
        inv = np.where(keep, 1.0 / np.where(keep, w, 1.0), 0.0)
        return V @ (inv[:, None] * (V.T @ B)) if B.ndim == 2 else V @ (inv * (V.T @ B))

    def flow(self, B, t: float) -> np.ndarray:
        """K⁻¹ (I − e^{−tK}) B: the gradient-flow operator at time t (t = inf: K⁻¹ B)."""
        if t is None or np.isinf(t):
            return self.solve(B)
        if t < 0:
            raise UsageError(f"time t must be >= 0, got {t}")
        if self._eig is None:
            if getattr(self, "_eig_full", None) is None:
                self._eig_full = np.linalg.eigh(self.matrix)
            w, V = self._eig_full
        else:
            w, V, _ = self._eig
        w = np.maximum(w, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.where(w > 0, -np.expm1(-t * w) / np.where(w > 0, w, 1.0), t)
        B = np.asarray(B, np.float64)
        return V @ (g[:, None] * (V.T @ B)) if B.ndim == 2 else V @ (g * (V.T @ B))


def _check_pair(k_train, k_test_train, y_train):
    K = _as_matrix(k_train, "train kernel", square=True)
    Ks = _as_matrix(k_test_train, "test-train kernel")
    if Ks.shape[1] != K.shape[0]:
        raise DataError(f"test-train kernel: has {Ks.shape[1]} columns for {K.shape[0]} "
                        f"training inputs")
    y = np.asarray(y_train, np.float64) if y_train is not None else None
    if y is not None and len(y) != len(K):
        raise DataError(f"{len(y)} training targets for a {len(K)}x{len(K)} train kernel")
    return K, Ks, y


# -- kernel regression and classification -----------------------------------------------

def kernel_regression(k_train, k_test_train, y_train, reg: float = 0.0) -> np.ndarray:
    """K(test, train) (K(train, train) + ridge)⁻¹ Y: predictions [N_test, ...]."""
    K, Ks, Y = _check_pair(k_train, k_test_train, y_train)
    solver = KernelSolver(K, reg)
    return Ks @ solver.solve(Y)


@dataclass
class Classification:
    """Predicted labels, the regression outputs behind them, and how the solve went."""

    labels: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    accuracy: float | None
    solver: KernelSolver


def classify(k_train, k_test_train, y_train, y_test=None, reg: float = 0.0,
             warn: bool = True, ridge_example: str = "reg=1e-6") -> Classification:
    """Kernel regression on 0.9/−0.1 one-hot labels, then argmax (Arora et al. 2019)."""
    K, Ks, _ = _check_pair(k_train, k_test_train, None)
    y_train = np.asarray(y_train)
    if len(y_train) != len(K):
        raise DataError(f"{len(y_train)} training labels for a {len(K)}x{len(K)} train kernel")
    if y_test is not None:
        y_test = np.asarray(y_test)
        if len(y_test) != len(Ks):
            raise DataError(f"{len(y_test)} test labels for {len(Ks)} test inputs")
        check_label_kinds(y_train, y_test)
    Y, classes = one_hot(y_train)
    solver = KernelSolver(K, reg, warn=warn, ridge_example=ridge_example)
    scores = Ks @ solver.solve(Y)
    labels = classes[np.argmax(scores, axis=1)]
    accuracy = None if y_test is None else float(np.mean(labels == y_test))
    return Classification(labels, scores, classes, accuracy, solver)


def _label_kind(y: np.ndarray) -> str:
    if y.dtype.kind in "biuf":
        return "numbers"
    if y.dtype.kind in "US" or (y.dtype.kind == "O" and all(isinstance(v, str) for v in y)):
        return "strings"
    return str(y.dtype)


def _first(y: np.ndarray, n: int = 3) -> str:
    values = [repr(v.item() if hasattr(v, "item") else v) for v in np.unique(y)[:n]]
    return ", ".join(values) + (", ..." if len(np.unique(y)) > n else "")


def check_label_kinds(y_train: np.ndarray, y_test: np.ndarray) -> None:
    """Test labels that can never equal a training label are an error, not accuracy 0."""
    a, b = _label_kind(y_train), _label_kind(y_test)
    if a != b:
        raise DataError(f"the training labels are {a} ({_first(y_train)}) but the test labels "
                        f"are {b} ({_first(y_test)}): no prediction can ever match; give both "
                        f"sets the same kind of labels")
    if not np.isin(y_test, np.unique(y_train)).any():
        raise DataError(f"none of the test labels ({_first(y_test)}) is a training label "
                        f"({_first(y_train)}): no prediction can ever match")


# -- NNGP posterior ---------------------------------------------------------------------------

def gp_posterior(k_train, k_test_train, y_train, k_test_test=None, reg: float = 0.0):
    """NNGP (Σ) posterior: ``(mean, var)``.

    mean = Σ*ᵀ (Σ + ridge·I)⁻¹ Y.  ``k_test_test`` is Σ(test, test), as a full matrix
    (then ``var`` is the posterior covariance [N_test, N_test]) or as its diagonal
    [N_test] (then ``var`` is the posterior variance per test input); None: no variance.
    ``reg`` (relative to the mean diagonal) plays the observation noise.
    """
    K, Ks, Y = _check_pair(k_train, k_test_train, y_train)
    solver = KernelSolver(K, reg)
    mean = Ks @ solver.solve(Y)
    if k_test_test is None:
        return mean, None
    Kss = np.asarray(k_test_test, np.float64)
    A = solver.solve(Ks.T)                       # [N_train, N_test]
    if Kss.ndim == 1:
        if len(Kss) != len(Ks):
            raise DataError(f"k_test_test: {len(Kss)} entries for {len(Ks)} test inputs")
        var = Kss - np.einsum("ij,ji->i", Ks, A)
        return mean, np.maximum(var, 0.0)
    if Kss.shape != (len(Ks), len(Ks)):
        raise DataError(f"k_test_test: shape {Kss.shape}, expected {(len(Ks), len(Ks))}")
    cov = Kss - Ks @ A
    return mean, (cov + cov.T) / 2


# -- NTK: the trained infinite network --------------------------------------------------------

def ntk_predict(ntk_train, ntk_test_train, y_train, t: float | None = None, *,
                nngp_train=None, nngp_test_train=None, nngp_test_test=None,
                reg: float = 0.0):
    """Mean (and optionally variance) of an infinitely wide net trained on MSE.

    Gradient flow with learning rate 1 on L = ½ Σ_i ‖f(x_i) − y_i‖² (a *sum* over the
    training set).  neural-tangents' ``predict.gradient_descent_mse(k, y_train,
    learning_rate=lr)`` evolves e^{−lr·t_NT·Θ / y_train.size} instead (a mean over the
    N·outputs targets), so its time ``t_NT`` is this ``t = lr · t_NT / y_train.size``;
    its ``diag_reg`` is this ``reg``.  Averaged over initialisations (f₀ ~ GP(0, Σ)):

        mean_t(x*) = Θ(x*, X) Θ⁻¹ (I − e^{−tΘ}) Y          (t = None or inf: Θ* Θ⁻¹ Y)

    With the NNGP kernels given (``nngp_train`` Σ(X, X), ``nngp_test_train`` Σ(x*, X),
    ``nngp_test_test`` Σ(x*, x*) as a matrix or its diagonal) the variance over
    initialisations is returned too (Lee et al. 2019, eq. 16, with P = Θ⁻¹(I − e^{−tΘ})):

        Σ** + Θ* P Σ Pᵀ Θ*ᵀ − (Θ* P Σ*ᵀ + Σ* Pᵀ Θ*ᵀ)

    Returns ``mean`` or ``(mean, var)``.
    """
    K, Ks, Y = _check_pair(ntk_train, ntk_test_train, y_train)
    solver = KernelSolver(K, reg)
    t = None if t is None else float(t)
    mean = Ks @ solver.flow(Y, t)
    if nngp_train is None and nngp_test_train is None and nngp_test_test is None:
        return mean
    if nngp_train is None or nngp_test_train is None or nngp_test_test is None:
        raise UsageError("the variance needs all three of nngp_train, nngp_test_train and "
                         "nngp_test_test")
    S, Ss, _ = _check_pair(nngp_train, nngp_test_train, None)
    if S.shape != K.shape or Ss.shape != Ks.shape:
        raise DataError("the NNGP kernels must have the shapes of the NTK kernels")
    Sss = np.asarray(nngp_test_test, np.float64)
    M = solver.flow(Ks.T, t).T                   # Θ* P  [N_test, N_train]  (P symmetric)
    cross = M @ Ss.T                             # Θ* P Σ*ᵀ
    if Sss.ndim == 1:
        var = Sss + np.einsum("ij,ij->i", M @ S, M) - 2 * np.diag(cross)
        return mean, np.maximum(var, 0.0)
    cov = Sss + M @ S @ M.T - (cross + cross.T)
    return mean, (cov + cov.T) / 2


# -- scikit-learn estimators ------------------------------------------------------------------

def _sklearn_base():
    try:
        from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    except ImportError:  # pragma: no cover - a core dependency
        raise UsageError("the estimators need scikit-learn (pip install scikit-learn)") from None
    return BaseEstimator, ClassifierMixin, RegressorMixin


_Base, _ClassifierMixin, _RegressorMixin = _sklearn_base()


class _InfinetEstimator(_Base):
    """Shared parts: compile the net, shape the inputs, compute kernels."""

    def _kernel_fn(self):
        from . import compile as compile_net
        key = (self.net if isinstance(self.net, str) else str(self.net),
               tuple(sorted((self.params or {}).items())))
        if getattr(self, "_compiled_key", None) != key:
            self._compiled = compile_net(self.net, **(self.params or {}))
            self._compiled_key = key
        return self._compiled

    def _inputs(self, X, what: str) -> np.ndarray:
        from .runtime.data import check_inputs
        k = self._kernel_fn()
        shape = k.plan.data_shape
        X = np.asarray(X, dtype=np.float64) if not isinstance(X, str) else X
        if not isinstance(X, str) and X.ndim == 2 and len(shape) > 1 \
                and X.shape[1] == int(np.prod(shape)):
            X = X.reshape((len(X),) + tuple(shape))   # flat rows (e.g. from a Pipeline)
        return check_inputs(k.plan, X, what)

    def _backend(self) -> str:
        """The backend that runs (``auto`` resolved once, the same for every kernel)."""
        return self._kernel_fn().executor(self.backend, self.dtype).name

    def _kernels(self, a, b=None):
        if self.kernel not in ("ntk", "nngp"):
            raise UsageError(f"kernel must be 'ntk' or 'nngp', got {self.kernel!r}")
        # cached: a grid search over reg or kernel refits on the same folds
        r = self._kernel_fn()(a, b, dtype=self.dtype, backend=self._backend(), cache=True)
        return r.ntk if self.kernel == "ntk" else r.nngp

    def _fit_kernel(self, X):
        self.X_train_ = self._inputs(X, "X")
        self.solver_ = KernelSolver(self._kernels(self.X_train_), self.reg)
        self.n_features_in_ = int(np.prod(self.X_train_.shape[1:]))
        return self

    def _test_kernel(self, X):
        if not hasattr(self, "X_train_"):
            from sklearn.exceptions import NotFittedError
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit first")
        return self._kernels(self._inputs(X, "X"), self.X_train_)


class InfinetClassifier(_ClassifierMixin, _InfinetEstimator):
    """Kernel regression classifier with the NTK or NNGP of a ``.net`` network.

    ``net``: a ``.net`` path or source text; ``params``: overrides of its params (the
    ``-D`` of the CLI); ``kernel``: 'ntk' (the trained infinite network) or 'nngp';
    ``reg``: ridge relative to the mean diagonal (0 = ridgeless).  Labels are one-hot
    encoded as 0.9/−0.1 and the prediction is the argmax.  Flat rows are reshaped to
    the net's input shape, so the estimator fits after e.g. a ``StandardScaler``.
    """

    def __init__(self, net, kernel: str = "ntk", reg: float = 0.0, params=None,
                 backend: str = "auto", dtype: str = "float64"):
        self.net = net
        self.kernel = kernel
        self.reg = reg
        self.params = params
        self.backend = backend
        self.dtype = dtype

    def fit(self, X, y):
        y = np.asarray(y)
        if y.ndim != 1:
            raise DataError(f"y: expected labels [N], got shape {tuple(y.shape)}")
        self._fit_kernel(X)
        if len(y) != len(self.X_train_):
            raise DataError(f"{len(y)} labels for {len(self.X_train_)} inputs")
        Y, self.classes_ = one_hot(y)
        self.dual_coef_ = self.solver_.solve(Y)
        return self

    def decision_function(self, X) -> np.ndarray:
        return self._test_kernel(X) @ self.dual_coef_

    def predict(self, X) -> np.ndarray:
        scores = self.decision_function(X)
        return self.classes_[np.argmax(scores, axis=1)]


class InfinetRegressor(_RegressorMixin, _InfinetEstimator):
    """Kernel (ridge) regression with the NTK or NNGP of a ``.net`` network.

    With ``kernel='nngp'`` this is the NNGP posterior mean; ``predict(X,
    return_std=True)`` also gives the posterior standard deviation.
    """

    def __init__(self, net, kernel: str = "ntk", reg: float = 0.0, params=None,
                 backend: str = "auto", dtype: str = "float64"):
        self.net = net
        self.kernel = kernel
        self.reg = reg
        self.params = params
        self.backend = backend
        self.dtype = dtype

    def fit(self, X, y):
        y = np.asarray(y, dtype=np.float64)
        self._fit_kernel(X)
        if len(y) != len(self.X_train_):
            raise DataError(f"{len(y)} targets for {len(self.X_train_)} inputs")
        self.dual_coef_ = self.solver_.solve(y)
        return self

    def predict(self, X, return_std: bool = False):
        Ks = self._test_kernel(X)
        mean = Ks @ self.dual_coef_
        if not return_std:
            return mean
        k = self._kernel_fn()
        a = self._inputs(X, "X")
        diag = np.empty(len(a))
        for i in range(len(a)):   # the test self-kernel's diagonal, one input at a time
            r = k(a[i:i + 1], dtype=self.dtype, backend=self._backend())
            diag[i] = (r.ntk if self.kernel == "ntk" else r.nngp)[0, 0]
        var = diag - np.einsum("ij,ji->i", Ks, self.solver_.solve(Ks.T))
        return mean, np.sqrt(np.maximum(var, 0.0))
