"""Multi-start fits: agreement on a unimodal model, local optima on a sinusoid frequency fit."""

import numpy as np
import pymc as pm
import pytensor.tensor as pt
import pytest
from scipy import optimize

import mle_ppl

X = np.linspace(0, 10, 60)
Y = np.sin(2.0 * X) + np.random.default_rng(4).normal(0, 0.3, size=60)


def _sine_model():
    with pm.Model() as m:
        w = pm.Uniform("w", 0, 5)  # flat on (0, 5): the grid below covers the whole support
        s = pm.HalfFlat("s")
        pm.Normal("y", pt.sin(w * pm.Data("x", X)), s, observed=Y)
    return m


def _profile_nll(w):  # sigma profiled out: n/2 log(RSS/n) (+ const)
    return 0.5 * len(Y) * np.log(np.mean((Y - np.sin(w * X)) ** 2))


def test_sinusoid_finds_global_optimum_and_warns():
    # the frequency likelihood has many local maxima: starts land in different ones
    with pytest.warns(mle_ppl.MultimodalityWarning, match="different local optima"):
        fit = mle_ppl.fit(_sine_model(), start={"w": 1.0}, starts=12, random_seed=1)
    rep = fit.multistart
    assert rep.n_starts == 12 and rep.n_distinct > 1 and not rep.agree
    assert sum(rep.counts) == int(rep.converged.sum())
    # independent reference: dense grid over w (sigma profiled out in closed form), then
    # Brent refinement in the best cell; the grid step 1e-3 is far finer than the ~0.3 spacing
    # of the local optima
    grid = np.arange(1e-3, 5, 1e-3)
    w0 = grid[np.argmin([_profile_nll(w) for w in grid])]
    ref = optimize.minimize_scalar(_profile_nll, bracket=(w0 - 1e-3, w0, w0 + 1e-3), tol=1e-12)
    np.testing.assert_allclose(fit.estimates["w"], ref.x, rtol=1e-7)
    assert rep.optima[0] == pytest.approx(fit.loglik, abs=1e-9)
    assert any("multi-start" in n for n in fit.notes)
    d = fit.to_dict()
    assert d["multistart"]["agree"] is False and d["multistart"]["n_starts"] == 12


def test_unimodal_model_starts_agree_and_are_reproducible():
    y = np.random.default_rng(0).normal(3.0, 2.0, size=40)

    def model():
        with pm.Model() as m:
            mu = pm.Flat("mu")
            sigma = pm.HalfFlat("sigma")
            pm.Normal("y", mu, sigma, observed=y)
        return m

    m = model()
    fit = mle_ppl.fit(m, starts=6, random_seed=3)
    assert fit.multistart.agree and fit.multistart.n_distinct == 1
    # closed form: mean and the MLE standard deviation
    np.testing.assert_allclose(fit.theta, [y.mean(), y.std()], rtol=1e-9)
    again = mle_ppl.fit(m, starts=6, random_seed=3)
    np.testing.assert_array_equal(again.multistart.logliks, fit.multistart.logliks)
    with pytest.raises(mle_ppl.MLEError, match="starts="):
        mle_ppl.fit(m, starts=0)
