"""Bootstrap against refits on explicitly resampled data, SciPy's BCa, and sampling theory."""

import numpy as np
import pymc as pm
import pytest
import statsmodels.api as sm
from scipy import stats

import mle_ppl
from mle_ppl._src.engine import likelihood as L
from mle_ppl._src.inference.bootstrap import bca_interval

Y = np.random.default_rng(0).exponential(2.0, size=25)  # skewed: BCa differs from percentile


@pytest.fixture(scope="module")
def normal_fit():
    with pm.Model() as m:
        mu = pm.Flat("mu")
        s = pm.HalfFlat("s")
        pm.Normal("y", mu, s, observed=Y)
    return mle_ppl.fit(m)


@pytest.fixture(scope="module")
def boot(normal_fit):
    return normal_fit.bootstrap(300, random_seed=1)


def test_nonparametric_replicates_are_refits_on_resampled_rows(normal_fit, boot):
    assert boot.n_failed == 0
    for b in range(0, 300, 37):
        idx = boot.indices(b)
        # the Normal MLE on the resampled rows: their mean and (1/n) standard deviation;
        # Newton to a 1e-10 decrement leaves ~1e-9 relative error
        np.testing.assert_allclose(boot.replicates[b], [Y[idx].mean(), Y[idx].std()], rtol=1e-8)
    # no recompilation on a second run; seeded runs are identical
    before = L.COMPILE_COUNT
    again = normal_fit.bootstrap(300, random_seed=1)
    assert L.COMPILE_COUNT == before
    np.testing.assert_array_equal(again.replicates, boot.replicates)


def test_logit_replicates_match_statsmodels_refits():
    rng = np.random.default_rng(2)
    X = np.column_stack([np.ones(150), rng.normal(size=150)])
    y = rng.binomial(1, 1 / (1 + np.exp(-(X @ [0.3, 1.0])))).astype(float)
    with pm.Model() as m:
        beta = pm.Flat("beta", shape=2)
        pm.Bernoulli("y", logit_p=pm.Data("X", X) @ beta, observed=y)
    res = mle_ppl.fit(m).bootstrap(4, random_seed=7)
    for b in range(4):
        idx = res.indices(b)
        ref = sm.Logit(y[idx], X[idx]).fit(disp=0, method="newton", tol=1e-12)
        np.testing.assert_allclose(res.replicates[b], ref.params, rtol=1e-7)


def test_bca_formula_matches_scipy():
    data = Y
    ref = stats.bootstrap((data,), np.mean, n_resamples=999, method="BCa",
                          random_state=np.random.default_rng(3))
    # for the mean, the jackknife and the infinitesimal jackknife influences are both
    # proportional to y - ybar, so the acceleration is identical; same replicates: exact
    lo, hi = bca_interval(data.mean(), ref.bootstrap_distribution, data - data.mean(), 0.95)
    np.testing.assert_allclose([lo, hi], [ref.confidence_interval.low,
                                          ref.confidence_interval.high], rtol=1e-12)


def test_bca_uses_influence_of_the_mle(normal_fit, boot):
    # for the Normal mean the influence of row i on the MLE is (y_i - ybar)/n
    np.testing.assert_allclose(boot.influence[:, 0], (Y - Y.mean()) / len(Y), atol=1e-12)
    R = boot.replicates[:, 0]
    ci = boot.conf_int(method="bca")
    lo, hi = bca_interval(Y.mean(), R, Y - Y.mean(), 0.95)
    np.testing.assert_allclose(ci.loc["mu"], [lo, hi], rtol=1e-12)
    pc = boot.conf_int()
    np.testing.assert_allclose(pc.loc["mu"], np.quantile(R, [0.025, 0.975]), rtol=1e-12)
    assert "Nonparametric bootstrap: 300 replicates" in str(boot)


def test_parametric_bootstrap_matches_sampling_theory(normal_fit):
    B = 400
    res = normal_fit.bootstrap(B, kind="parametric", random_seed=4)
    n = len(Y)
    mu_hat, s_hat = normal_fit.theta
    # replicate means ~ N(mu_hat, s_hat²/n): the SD of B draws has relative SE 1/sqrt(2(B-1))
    # ≈ 3.5 %; allow 4 SE
    np.testing.assert_allclose(res.std_errors["mu"], s_hat / np.sqrt(n),
                               rtol=4 / np.sqrt(2 * (B - 1)))
    np.testing.assert_allclose(res.replicates[:, 0].mean(), mu_hat,
                               atol=4 * s_hat / np.sqrt(n * B))
    # n s*²/s_hat² ~ chi2(n-1): the mean of s*² is s_hat² (n-1)/n, SE s_hat² sqrt(2(n-1))/n/sqrt(B)
    s2 = res.replicates[:, 1] ** 2
    np.testing.assert_allclose(s2.mean(), s_hat**2 * (n - 1) / n,
                               atol=4 * s_hat**2 * np.sqrt(2 * (n - 1)) / n / np.sqrt(B))


def test_parallel_equals_serial(normal_fit, boot):
    par = normal_fit.bootstrap(6, random_seed=1, n_jobs=2)
    np.testing.assert_allclose(par.replicates, boot.replicates[:6], rtol=1e-12)


def test_errors_and_progress(normal_fit):
    with pytest.raises(mle_ppl.MLEError, match="nonparametric"):
        normal_fit.bootstrap(10, kind="jackknife")
    with pytest.raises(mle_ppl.MLEError, match="n_boot"):
        normal_fit.bootstrap(1)
    res = normal_fit.bootstrap(5, random_seed=0, progress=True)
    with pytest.raises(mle_ppl.MLEError, match="percentile"):
        res.conf_int(method="basic")
