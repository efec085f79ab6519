"""Sandwich covariances against statsmodels' ``cov_type`` results on the same data.

References: statsmodels OLS / Logit / Poisson with ``cov_type="HC0" | "HC1" | "cluster"``. Our
estimates and statsmodels' agree to ~1e-9 (both Newton to a tight tolerance), so covariances are
compared at rtol=1e-6 (well above the optimizers' noise, far below any real difference).
"""

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import pytest
import statsmodels.api as sm

import mle_ppl
from mle_ppl._src.engine import likelihood as L

RTOL = 1e-6


def _design(n, k, seed):
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.normal(size=(n, k))])
    g = rng.integers(0, 12, size=n)
    return rng, X, g


@pytest.fixture(scope="module")
def ols():
    rng, X, g = _design(120, 2, 1)
    # heteroskedastic errors so that HC and nonrobust differ
    y = X @ [1.0, 2.0, -1.0] + rng.normal(size=120) * (0.5 + np.abs(X[:, 1]))
    with pm.Model() as m:
        Xd = pm.Data("X", X)
        beta = pm.Flat("beta", shape=3)
        sigma = pm.HalfFlat("sigma")
        pm.Normal("y", Xd @ beta, sigma, observed=pm.Data("y_obs", y))
    return mle_ppl.fit(m), X, y, g


@pytest.fixture(scope="module")
def logit():
    rng, X, g = _design(300, 2, 2)
    p = 1 / (1 + np.exp(-(X @ [0.3, 1.0, -0.7])))
    y = rng.binomial(1, p).astype(float)
    with pm.Model() as m:
        beta = pm.Flat("beta", shape=3)
        pm.Bernoulli("y", logit_p=pm.Data("X", X) @ beta, observed=y)
    return mle_ppl.fit(m), X, y, g


@pytest.fixture(scope="module")
def poisson():
    rng, X, g = _design(200, 2, 3)
    y = rng.poisson(np.exp(X @ [0.5, 0.3, -0.2]) * rng.gamma(2, 0.5, size=200))
    with pm.Model() as m:
        beta = pm.Flat("beta", shape=3)
        pm.Poisson("y", mu=pt.exp(pm.Data("X", X) @ beta), observed=y)
    return mle_ppl.fit(m), X, y, g


def test_ols_beta_block_matches_statsmodels(ols):
    fit, X, y, g = ols
    n, k = X.shape
    p = fit.n_params  # k betas + sigma
    beta = [lab for lab in fit.labels if lab.startswith("beta")]
    res = sm.OLS(y, X)
    hc0 = fit.robust_cov("HC0").loc[beta, beta].to_numpy()
    np.testing.assert_allclose(hc0, res.fit(cov_type="HC0").cov_params(), rtol=RTOL)
    # statsmodels' HC1 is HC0 * n/(n-k) with k regressors; ours counts sigma: n/(n-p)
    hc1 = fit.robust_cov("HC1").loc[beta, beta].to_numpy()
    np.testing.assert_allclose(hc1 * (n - p) / (n - k), res.fit(cov_type="HC1").cov_params(),
                               rtol=RTOL)
    # cluster: G/(G-1) (n-1)/(n-k) in statsmodels; ours (n-1)/(n-p)
    cl = fit.robust_cov("cluster", groups=g).loc[beta, beta].to_numpy()
    ref = res.fit(cov_type="cluster", cov_kwds={"groups": g}).cov_params()
    np.testing.assert_allclose(cl * (n - p) / (n - k), ref, rtol=RTOL)


@pytest.mark.parametrize("name", ["logit", "poisson"])
@pytest.mark.parametrize("kind", ["HC0", "HC1", "cluster"])
def test_glm_sandwich_matches_statsmodels(request, name, kind):
    fit, X, y, g = request.getfixturevalue(name)
    model = sm.Logit(y, X) if name == "logit" else sm.Poisson(y, X)
    kw = {"cov_kwds": {"groups": g}} if kind == "cluster" else {}
    ref = model.fit(method="newton", tol=1e-12, maxiter=100, disp=0, cov_type=kind, **kw)
    np.testing.assert_allclose(fit.theta, ref.params, rtol=1e-7)
    ours = fit.robust_cov(kind, groups=g if kind == "cluster" else None)
    # statsmodels' "HC1" for a non-OLS (discrete) model falls back to cov_white_simple without
    # the n/(n-k) factor (statsmodels/base/covtype.py), i.e. it equals HC0 there: undo ours.
    n, k = X.shape
    factor = (n - k) / n if kind == "HC1" else 1.0
    np.testing.assert_allclose(ours.to_numpy() * factor, ref.cov_params(), rtol=RTOL)
    tab = fit.table(cov_type=kind, groups=g if kind == "cluster" else None)
    np.testing.assert_allclose(tab["std_err"] * np.sqrt(factor), ref.bse, rtol=RTOL)
    if kind == "HC1":
        return
    np.testing.assert_allclose(tab["p_value"], ref.pvalues, rtol=1e-5)


def test_scores_sum_to_minus_gradient_and_compile_once(logit):
    fit, *_ = logit
    lik = fit.likelihood
    S = lik.scores(fit.x)
    before = L.COMPILE_COUNT
    x = fit.x + 0.1
    S = lik.scores(x)
    _, g = lik.value_and_grad(x)
    # the scores are the rows of the gradient of +loglik: their sum is -grad(NLL)
    np.testing.assert_allclose(S.sum(axis=0), -g, rtol=1e-10, atol=1e-10)
    fit.robust_cov("HC1")
    assert L.COMPILE_COUNT == before


def test_nonrobust_is_fit_cov_and_errors(ols):
    fit, *_ = ols
    pd.testing.assert_frame_equal(fit.robust_cov("nonrobust"), fit.cov)
    with pytest.raises(mle_ppl.MLEError, match="HC0"):
        fit.robust_cov("HC3x")
    with pytest.raises(mle_ppl.MLEError, match="groups="):
        fit.robust_cov("cluster")
    with pytest.raises(mle_ppl.DataError, match=r"\(120,\)"):
        fit.robust_cov("cluster", groups=np.zeros(5))


def test_scores_memory_is_linear_in_rows():
    """Per-row scores of a matrix-product model on 30,000 rows, in a fresh process.

    The reverse-mode per-row Jacobian pushed a rows x rows identity through ``X @ beta``
    (30,000 rows: 7.2 GB); forward mode keeps rows x parameters. Reference: the logistic score
    (y - p) x by hand, to 1e-12 relative (rounding of p only). Peak RSS bound: 4 GB, below
    the rows x rows path (7.2 GB) and above the ~0.4 GB this needs plus a cold Numba/LLVM compile
    of the model on a fresh install (measured 2.3 GB peak in CI).
    """
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import resource, numpy as np, pymc as pm, mle_ppl
        rng = np.random.default_rng(0); n = 30000
        X = rng.normal(size=(n, 4))
        y = rng.binomial(1, 1 / (1 + np.exp(-X @ [0.3, -0.2, 0.1, 0.5])))
        with pm.Model() as m:
            Xd = pm.Data("X", X); b = pm.Flat("b", shape=4)
            pm.Bernoulli("y", logit_p=Xd @ b, observed=y)
        fit = mle_ppl.fit(m)
        S = fit.likelihood.scores(fit.x)
        p = 1 / (1 + np.exp(-X @ fit.x))
        ref = (y - p)[:, None] * X
        print(float(np.max(np.abs(S - ref)) / np.max(np.abs(ref))),
              resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=600, check=True)
    rel, peak_gb = map(float, out.stdout.split())
    assert rel < 1e-12
    assert peak_gb < 4.0
