"""Likelihood-ratio tests and IC tables against statsmodels (same data, nested logits)."""

import numpy as np
import pymc as pm
import pytest
import statsmodels.api as sm
from scipy import stats

import mle_ppl


def _logit(X, y, name):
    with pm.Model(name="") as m:
        beta = pm.Flat("beta", shape=X.shape[1])
        pm.Bernoulli("y", logit_p=pm.Data("X", X) @ beta, observed=y)
    fit = mle_ppl.fit(m)
    object.__setattr__(fit, "model_name", name)  # display name for the table
    return fit


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    n = 250
    X = np.column_stack([np.ones(n), rng.normal(size=(n, 3))])
    y = rng.binomial(1, 1 / (1 + np.exp(-(X @ [0.2, 0.8, -0.4, 0.0])))).astype(float)
    return X, y


@pytest.fixture(scope="module")
def fits(data):
    X, y = data
    return _logit(X[:, :2], y, "one"), _logit(X, y, "three")


def test_lrt_matches_statsmodels(data, fits):
    X, y = data
    small, big = fits
    r_small = sm.Logit(y, X[:, :2]).fit(disp=0, tol=1e-12, method="newton")
    r_big = sm.Logit(y, X).fit(disp=0, tol=1e-12, method="newton")
    lr = 2 * (r_big.llf - r_small.llf)
    res = mle_ppl.lrt(small, big)
    # log-likelihoods agree to ~1e-10 at both optima: statistic to 1e-7 absolute
    assert res.df == 2
    np.testing.assert_allclose(res.statistic, lr, atol=1e-7)
    np.testing.assert_allclose(res.p_value, stats.chi2.sf(lr, 2), rtol=1e-6)
    assert "df = 2" in str(res) and res.to_dict()["df"] == 2


def test_ic_table_matches_statsmodels(data, fits):
    X, y = data
    small, big = fits
    tab = mle_ppl.ic_table([big, small])
    r_small = sm.Logit(y, X[:, :2]).fit(disp=0, tol=1e-12, method="newton")
    r_big = sm.Logit(y, X).fit(disp=0, tol=1e-12, method="newton")
    np.testing.assert_allclose(tab.loc["one", ["aic", "bic"]], [r_small.aic, r_small.bic],
                               rtol=1e-9)
    np.testing.assert_allclose(tab.loc["three", ["aic", "bic"]], [r_big.aic, r_big.bic],
                               rtol=1e-9)
    assert tab.index[0] == tab["aic"].idxmin()  # sorted, best first
    np.testing.assert_allclose(tab["aic_weight"].sum(), 1.0)
    k, n = 4, len(y)
    np.testing.assert_allclose(tab.loc["three", "aicc"], r_big.aic + 2 * k * (k + 1) / (n - k - 1))


def test_refuses_different_data_and_wrong_order(data, fits):
    X, y = data
    small, big = fits
    other = _logit(X[:200], y[:200], "subset")
    with pytest.raises(mle_ppl.DataError, match="250 observations and .subset. on 200"):
        mle_ppl.lrt(other, big)
    flipped = _logit(X[:, :2], 1 - y, "flipped")
    with pytest.raises(mle_ppl.DataError, match="different observed values"):
        mle_ppl.ic_table([flipped, big])
    with pytest.raises(mle_ppl.MLEError, match="fewer parameters"):
        mle_ppl.lrt(big, small)


def test_refuses_non_nested(data):
    X, y = data
    # a 2-parameter model using x1 beats a 3-parameter one using x2, x3 only
    a = _logit(X[:, :2], y, "x1")
    b = _logit(X[:, [0, 2, 3]], y, "x2+x3")
    assert a.loglik > b.loglik
    with pytest.raises(mle_ppl.MLEError, match="do not look nested"):
        mle_ppl.lrt(a, b)
