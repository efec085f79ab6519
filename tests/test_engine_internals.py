"""Engine shortcuts that save data passes must not change what a fit reports.

- ``Likelihood.count_obs`` (from data shapes) against counting the pointwise log-likelihood.
- Newton's reuse of the previous Hessian near the optimum: the returned Hessian is the exact one
  at the returned point and the Newton decrement there is below the tolerance.
- ``reuse_large_allocations`` (glibc malloc tuning during a fit): re-entrant, restores, and a
  fit gives bit-identical results with it switched off.
"""

import numpy as np
import pymc as pm
import pytensor.tensor as pt
import pytest
from _models import gaussian_linear, logistic, multinomial_logit

import mle_ppl
from mle_ppl._src.engine import alloc
from mle_ppl._src.engine.likelihood import likelihood_for
from mle_ppl._src.engine.optimize import newton

RNG = np.random.default_rng(7)


def _mvnormal_model():
    y = RNG.normal(size=(40, 3))
    with pm.Model() as m:
        mu = pm.Flat("mu", shape=3)
        pm.MvNormal("y", mu=mu, cov=np.eye(3), observed=y)
    return m


def _multinomial_model():
    counts = RNG.multinomial(10, [0.2, 0.3, 0.5], size=25)
    with pm.Model() as m:
        a = pm.Flat("a", shape=2)
        p = pt.special.softmax(pt.concatenate([pt.zeros(1), a]))
        pm.Multinomial("y", n=10, p=p, observed=counts)
    return m


def _two_observed_constant_data():
    with pm.Model() as m:
        mu = pm.Flat("mu")
        sigma = pm.HalfFlat("sigma")
        pm.Normal("a", mu, sigma, observed=RNG.normal(size=17))
        pm.Normal("b", mu, sigma, observed=RNG.normal(size=(4, 5)))
    return m


X = RNG.normal(size=(60, 2))
BUILDERS = {
    "gaussian (pm.Data)": lambda: gaussian_linear(X, X @ [1.0, 2.0] + RNG.normal(size=60)),
    "bernoulli (int data behind a cast)": lambda: logistic(
        X, (RNG.random(60) < 0.5).astype("int32")),
    "categorical": lambda: multinomial_logit(X, RNG.integers(0, 3, size=60), 3),
    "mvnormal (n x d data, one term per row)": _mvnormal_model,
    "multinomial (counts, one term per row)": _multinomial_model,
    "two observed, constants, 2-D": _two_observed_constant_data,
}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_count_obs_equals_pointwise_terms(name):
    lik = likelihood_for(BUILDERS[name]())
    x = lik.x0()
    expected = sum(v.size for v in lik.pointwise(x).values())
    assert lik.count_obs(x) == expected


def test_newton_returns_the_hessian_at_its_final_point():
    n = 3000
    Xl = np.column_stack([np.ones(n), RNG.normal(size=(n, 4))])
    y = (RNG.random(n) < 1 / (1 + np.exp(-Xl @ [0.3, 1.0, -0.5, 0.2, 0.0]))).astype(int)
    lik = likelihood_for(logistic(Xl, y))
    res = newton(lik, lik.x0(), tol=1e-10)
    assert res.converged
    H = lik.hessian(res.x)
    if res.hessian is not None:  # it may leave the final Hessian to the caller
        np.testing.assert_array_equal(res.hessian, H)
    g = lik.value_and_grad(res.x)[1]
    # the convergence claim holds at the returned point, with the exact Hessian there
    assert 0.5 * g @ np.linalg.solve(H, g) < 1e-10


def test_allocation_tuning_is_reentrant_and_restores(monkeypatch):
    with alloc.reuse_large_allocations():
        with alloc.reuse_large_allocations():
            assert alloc._depth == (2 if alloc._glibc() else 0)
    assert alloc._depth == 0
    monkeypatch.setattr(alloc, "_libc", False)  # as on macOS / musl, or MLE_PPL_MALLOC_TUNING=0
    with alloc.reuse_large_allocations():
        assert alloc._depth == 0


def test_fit_is_identical_without_allocation_tuning(monkeypatch):
    n = 2000
    Xl = np.column_stack([np.ones(n), RNG.normal(size=(n, 3))])
    y = (RNG.random(n) < 1 / (1 + np.exp(-Xl @ [0.3, 1.0, -0.5, 0.2]))).astype(int)
    m = logistic(Xl, y)
    tuned = mle_ppl.fit(m)
    monkeypatch.setattr(alloc, "_libc", False)
    plain = mle_ppl.fit(m)
    np.testing.assert_array_equal(tuned.theta, plain.theta)
    np.testing.assert_array_equal(tuned.cov, plain.cov)


# ------------------------------------------------------------------ compilation modes ("auto")
def test_auto_mode_follows_data_size():
    from mle_ppl._src.engine.likelihood import SMALL_DATA, SMALL_MODE

    small = logistic(np.ones((10, 2)), np.array([0, 1] * 5))
    assert likelihood_for(small).mode == SMALL_MODE
    n = SMALL_DATA // 2 + 1  # X (n x 2) alone is above the threshold
    big = logistic(np.ones((n, 2)), np.zeros(n, dtype=int))
    assert likelihood_for(big).mode == "FAST_RUN"
    assert likelihood_for(small, mode="FAST_RUN").mode == "FAST_RUN"  # explicit mode wins


@pytest.mark.parametrize("mode", ["MLE_PPL_SMALL", "FAST_RUN"])
def test_both_modes_match_statsmodels_logit(mode):
    import statsmodels.api as sm

    n = 400
    Xl = np.column_stack([np.ones(n), RNG.normal(size=(n, 3))])
    y = (RNG.random(n) < 1 / (1 + np.exp(-Xl @ [0.3, 1.0, -0.5, 0.2]))).astype(int)
    ref = sm.Logit(y, Xl).fit(disp=0, tol=1e-12)
    fit = mle_ppl.fit(logistic(Xl, y), mode=mode)
    # same tolerances as the statsmodels tests of test_engine.py (1e-8 params, 1e-6 SEs)
    np.testing.assert_allclose(fit.theta, ref.params, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(fit.std_errors.to_numpy(), ref.bse, rtol=1e-6)


def test_small_mode_keeps_the_stabilizing_rewrites():
    # log(sigmoid(eta)) at eta = -800 is -800, not -inf: without PyTensor's "stabilize" rewrites
    # the Python-VM mode would return inf for this NLL
    Xl = np.array([[1.0], [1.0]])
    y = np.array([1, 0])
    m = logistic(Xl, y)
    small = likelihood_for(m, mode="MLE_PPL_SMALL")
    fast = likelihood_for(m, mode="FAST_RUN")
    for beta in (-800.0, 800.0):
        f_small, g_small = small.value_and_grad(np.array([beta]))
        f_fast, g_fast = fast.value_and_grad(np.array([beta]))
        assert np.isfinite(f_small)
        np.testing.assert_allclose(f_small, f_fast, rtol=1e-12)
        np.testing.assert_allclose(g_small, g_fast, rtol=1e-12)
        np.testing.assert_allclose(f_small, 800.0, rtol=1e-12)  # one term is 0, the other 800


def test_import_and_cli_help_do_not_import_pymc():
    # `import mle_ppl` and `mle-ppl --help` must stay instant: PyMC (1.4 s) loads on first use
    import subprocess
    import sys

    code = ("import sys, mle_ppl; from mle_ppl._src.cli import build_parser; "
            "build_parser().format_help(); "
            "print('pymc' in sys.modules, 'pytensor' in sys.modules); "
            "mle_ppl.fit; print('pymc' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # nor does touching mle_ppl.fit: PyMC loads when a pm.Model is built (never on a fit-cache
    # hit, tests/test_fitcache.py)
    assert out.stdout.split() == ["False", "False", "False"]


# ------------------------------------------------------------------ warm-start root search
def test_illinois_finds_the_scale_root_from_a_lopsided_bracket():
    from mle_ppl._src.engine.optimize import _illinois

    # d NLL / d log(sigma) of a Gaussian with n = 16, RSS = 16 e^12: root at log(sigma) = 6,
    # exponential on one side (the bracket [-10, 21] is what the warm start's expansion produces)
    calls = []

    def score(t):
        calls.append(t)
        return 16.0 - 16.0 * np.exp(12.0 - 2.0 * t)

    root = _illinois(score, -10.0, 21.0, score(-10.0), score(21.0), xtol=1e-3, maxiter=40,
                     bisect_above=1.0)
    assert abs(root - 6.0) < 1e-3
    assert len(calls) - 2 <= 20  # bisection to width 1 (5 steps), then superlinear


def test_scale_search_never_returns_a_worse_point():
    from mle_ppl._src.engine.optimize import _solve_1d

    # the NLL along coordinate 0 is (t - 2)^2 for t < 3 and not finite beyond: the search must
    # end at a finite point no worse than its start
    def vg(z):
        t = z[0]
        if t >= 3.0:
            return np.nan, np.array([np.nan])
        return (t - 2.0) ** 2, np.array([2.0 * (t - 2.0)])

    x0 = np.array([0.0])
    f0, g0 = vg(x0)
    x, f, g = _solve_1d(vg, x0, 0, f0, g0)
    assert np.isfinite(f) and f <= f0
    np.testing.assert_allclose(vg(x)[0], f)
