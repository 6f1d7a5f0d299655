#!/usr/bin/env python
"""neural-tangents' predictors on fixed kernels: what `ntk_predict` and `gp_posterior`
must reproduce, and the time scaling between them (docs/neural-tangents.md).

Writes nt_predict.npz next to this file (NT_REF_OUT=DIR to change):
  k_train [10, 10], k_test_train [3, 10], k_test_test [3, 3], y_train [10, 3]
  lr, t, diag_reg (scalars)
  gd_t        gradient_descent_mse(k_train, y_train, learning_rate=lr, diag_reg=diag_reg)
              (t, 0., 0., k_test_train)[1]: the test predictions at time t
  gd_inf      the same at t=None (infinite time)
  gp_mean, gp_cov   gp_inference(k_train, y_train, diag_reg=diag_reg)
              (get='nngp', k_test_train=..., k_test_test=...): posterior mean, covariance
Run with the oracle environment of README.md:  nt-venv/bin/python nt_predict.py
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402

# jax 0.4.23 wraps scipy.linalg.tril/triu, which newer SciPy no longer has
scipy.linalg.tril = getattr(scipy.linalg, "tril", np.tril)
scipy.linalg.triu = getattr(scipy.linalg, "triu", np.triu)
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import neural_tangents as nt  # noqa: E402

OUT = os.environ.get("NT_REF_OUT", os.path.dirname(os.path.abspath(__file__)))

rng = np.random.default_rng(0)
A = rng.normal(size=(13, 20))
K = A @ A.T / 20 + 0.1
k_train, k_test_train, k_test_test = K[:10, :10], K[10:, :10], K[10:, 10:]
y_train = rng.normal(size=(10, 3))
lr, t, diag_reg = 0.5, 7.0, 1e-2

gd = nt.predict.gradient_descent_mse(k_train, y_train, learning_rate=lr, diag_reg=diag_reg)
gd_t = np.asarray(gd(t, 0., 0., k_test_train)[1])
gd_inf = np.asarray(gd(None, 0., 0., k_test_train)[1])
gp = nt.predict.gp_inference(k_train, y_train, diag_reg=diag_reg)
posterior = gp(get="nngp", k_test_train=k_test_train, k_test_test=k_test_test)
np.savez(os.path.join(OUT, "nt_predict.npz"), k_train=k_train, k_test_train=k_test_train,
         k_test_test=k_test_test, y_train=y_train, lr=lr, t=t, diag_reg=diag_reg, gd_t=gd_t,
         gd_inf=gd_inf, gp_mean=np.asarray(posterior.mean),
         gp_cov=np.asarray(posterior.covariance))
print("wrote", os.path.join(OUT, "nt_predict.npz"))
