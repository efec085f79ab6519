"""The structured Hessian (Dᵀ diag(w) D through linear predictors) against the generic vectorised
Jacobian, statsmodels' analytic Hessians and central differences of the gradient."""

import numpy as np
import pymc as pm
import pytensor.tensor as pt
import pytest
import statsmodels.api as sm

from mle_ppl._src.engine.likelihood import Likelihood

RNG = np.random.default_rng(11)
N, P = 400, 3
X = RNG.standard_normal((N, P))
Z = RNG.standard_normal((N, 2))
Y_BIN = (RNG.random(N) < 1 / (1 + np.exp(-(0.3 + X @ [0.5, -0.4, 0.2])))).astype(np.int64)
Y_CNT = RNG.poisson(np.exp(0.2 + X @ [0.3, -0.2, 0.1]))
Y_GAU = 1.0 + X @ [0.5, -1.0, 2.0] + np.exp(0.3 * Z[:, 0]) * RNG.standard_normal(N)


def _logistic():
    with pm.Model() as m:
        a = pm.Flat("a")
        b = pm.Flat("b", shape=P)
        pm.Bernoulli("y", logit_p=a + pm.Data("X", X) @ b, observed=Y_BIN)
    return m


def _poisson():
    with pm.Model() as m:
        b = pm.Flat("b", shape=P + 1)
        Xc = np.column_stack([np.ones(N), X])
        pm.Poisson("y", mu=pt.exp(pt.dot(pm.Data("X", Xc), b)), observed=pm.Data("y_obs", Y_CNT))
    return m


def _gaussian():
    with pm.Model() as m:
        a = pm.Flat("a")
        b = pm.Flat("b", shape=P)
        s = pm.HalfFlat("sigma")
        pm.Normal("y", mu=a + X @ b, sigma=s, observed=Y_GAU)
    return m


def _negbin():
    with pm.Model() as m:
        a = pm.Flat("a")
        b = pm.Flat("b", shape=P)
        alpha = pm.HalfFlat("alpha")
        pm.NegativeBinomial("y", mu=pt.exp(a + pm.Data("X", X) @ b), alpha=alpha, observed=Y_CNT)
    return m


def _two_predictors():
    """Heteroscedastic normal: mean and log-sd each a linear predictor (cross blocks D1ᵀ w D2)."""
    with pm.Model() as m:
        b = pm.Flat("b", shape=P)
        g = pm.Flat("g", shape=2)
        pm.Normal("y", mu=pm.Data("X", X) @ b, sigma=pt.exp(pm.Data("Z", Z) @ g), observed=Y_GAU)
    return m


def _not_separable():
    """A row-coupling term (logsumexp over rows): the generic path must be kept."""
    with pm.Model() as m:
        b = pm.Flat("b", shape=P)
        eta = X @ b
        pm.Normal("y", mu=eta - pt.logsumexp(eta), sigma=1.0, observed=Y_GAU)
    return m


MODELS = {"logistic": _logistic, "poisson": _poisson, "gaussian": _gaussian,
          "negbin": _negbin, "two_predictors": _two_predictors}


def _pair(build, mode):
    m = build()
    structured = Likelihood(m, mode=mode)
    generic = Likelihood(m, mode=mode)
    generic._hessian_kind = "generic"
    return structured, generic


# every model in the Python-VM mode; the Numba mode (compiles are slower) on two of them
CASES = [(name, "MLE_PPL_SMALL") for name in sorted(MODELS)] + [
    ("logistic", "FAST_RUN"), ("two_predictors", "FAST_RUN")]


@pytest.mark.parametrize(("name", "mode"), CASES)
def test_structured_equals_generic_and_central_differences(name, mode):
    lik, gen = _pair(MODELS[name], mode)
    x = lik.x0() + 0.1 * np.sin(np.arange(lik.n_params) + 1.0)
    H = lik.hessian(x)
    Hg = gen.hessian(x)
    assert lik.hessian_kind == "structured"
    assert gen.hessian_kind == "generic"
    # the same derivatives by two formulas: equal to rounding (1e-10 relative to the largest)
    np.testing.assert_allclose(H, Hg, rtol=0, atol=1e-10 * np.abs(Hg).max())
    # independent reference: central differences of the gradient, step 1e-5 (error ~1e-10
    # relative from truncation + rounding; 1e-6 relative to the largest entry leaves margin)
    h = 1e-5
    fd = np.empty_like(H)
    for j in range(lik.n_params):
        e = np.zeros(lik.n_params)
        e[j] = h
        fd[:, j] = (lik.value_and_grad(x + e)[1] - lik.value_and_grad(x - e)[1]) / (2 * h)
    np.testing.assert_allclose(H, 0.5 * (fd + fd.T), rtol=0, atol=1e-6 * np.abs(H).max())


def test_row_coupling_model_keeps_the_generic_hessian():
    lik, gen = _pair(_not_separable, "MLE_PPL_SMALL")
    x = np.array([0.2, -0.1, 0.3])
    np.testing.assert_allclose(lik.hessian(x), gen.hessian(x), rtol=1e-12)
    assert lik.hessian_kind == "generic"


def test_logistic_hessian_matches_statsmodels():
    lik, _ = _pair(_logistic, "MLE_PPL_SMALL")
    Xc = np.column_stack([np.ones(N), X])
    params = sm.Logit(Y_BIN, Xc).fit(disp=0).params
    # statsmodels' analytic Hessian of the log-likelihood is -H of the NLL; agreement to
    # rounding of sums of 400 terms (1e-10 relative)
    ref = -sm.Logit(Y_BIN, Xc).hessian(params)
    np.testing.assert_allclose(lik.hessian(params), ref, rtol=1e-10, atol=1e-10)


def test_poisson_hessian_matches_statsmodels():
    lik, _ = _pair(_poisson, "MLE_PPL_SMALL")
    Xc = np.column_stack([np.ones(N), X])
    params = sm.GLM(Y_CNT, Xc, family=sm.families.Poisson()).fit().params
    ref = -sm.Poisson(Y_CNT, Xc).hessian(params)
    np.testing.assert_allclose(lik.hessian(params), ref, rtol=1e-10, atol=1e-10)


def test_bundled_model_file_uses_the_structured_hessian():
    """Model files pin parameter shapes (SpecifyShape): the predictors are still found."""
    import mle_ppl

    fit = mle_ppl.fit("logistic_regression", warn=False)
    lik = fit.likelihood
    gen = Likelihood(lik.model, mode=lik.mode)
    gen._hessian_kind = "generic"
    H = lik.hessian(fit.x)
    assert lik.hessian_kind == "structured"
    Hg = gen.hessian(fit.x)
    np.testing.assert_allclose(H, Hg, rtol=0, atol=1e-10 * np.abs(Hg).max())


def _student_t():
    """Robust regression: the weights ∂²ℓ/∂μ² are negative for large residuals."""
    with pm.Model() as m:
        a = pm.Flat("a")
        b = pm.Flat("b", shape=P)
        s = pm.HalfFlat("sigma")
        pm.StudentT("y", nu=3.0, mu=a + pm.Data("X", X) @ b, sigma=s, observed=Y_GAU)
    return m


def _computed_design():
    """A data matrix computed in the graph (a column slice): the products stay in the graph."""
    with pm.Model() as m:
        b = pm.Flat("b", shape=P - 1)
        pm.Poisson("y", mu=pt.exp(pm.Data("X", X)[:, 1:] @ b), observed=Y_CNT)
    return m


@pytest.mark.parametrize("name", ["logistic", "gaussian", "negbin", "two_predictors", "student_t"])
def test_numpy_row_blocks_equal_the_compiled_graph(name, monkeypatch):
    """The NumPy row-block path (engine/predictors.py) against the same derivatives compiled
    as one graph (structured) and the generic Jacobian; small blocks, so that several blocks and
    a partial last block are summed."""
    from mle_ppl._src.engine import predictors

    monkeypatch.setattr(predictors, "block_rows", lambda k: 37)  # 11 blocks of 400 rows
    build = {**MODELS, "student_t": _student_t}[name]
    m = build()
    fast = Likelihood(m, mode="MLE_PPL_SMALL")
    graph = Likelihood(m, mode="MLE_PPL_SMALL")
    graph._hessian_kind = "graph"
    x = fast.x0() + 0.1 * np.cos(np.arange(fast.n_params) + 2.0)
    f, g = fast.value_and_grad(x)
    fg, gg = graph.value_and_grad(x)
    H, Hg = fast.hessian(x), graph.hessian(x)
    assert fast._predictors is not None and graph._predictors is None
    # same arithmetic, sums in another order: equal to rounding (1e-12 relative)
    assert f == pytest.approx(fg, rel=1e-12)
    np.testing.assert_allclose(g, gg, rtol=0, atol=1e-12 * max(np.abs(gg).max(), 1.0))
    np.testing.assert_allclose(H, Hg, rtol=0, atol=1e-11 * np.abs(Hg).max())
    if name == "student_t":  # the negative-weight half of the row-block product was used
        from mle_ppl._src.engine.predictors import _data

        t = _data(fast._predictors.sources[0]) @ x[1:1 + P] + x[0]
        r2 = (Y_GAU - t) ** 2 / np.exp(2 * x[-1])
        assert np.any(r2 > 3.0)  # (nu+1)(nu-r2)/(nu+r2)^2 < 0 there
    # a step in sigma alone reuses the kept predictors (and, for the Gaussian, whose ∂NLL/∂t
    # only rescales, the product Dᵀ ∂NLL/∂t): still the graph's numbers
    x2 = x.copy()
    x2[-1] += 0.3
    reads = []
    monkeypatch.setattr(predictors, "rmatvec", lambda D, r: reads.append(1) or D.T @ r)
    g2 = fast.value_and_grad(x2)[1]
    np.testing.assert_allclose(g2, graph.value_and_grad(x2)[1],
                               rtol=0, atol=1e-12 * max(np.abs(gg).max(), 1.0))
    assert len(reads) == (0 if name == "gaussian" else 1 if name != "two_predictors" else 2)


def test_computed_design_keeps_the_graph_products():
    m = _computed_design()
    lik = Likelihood(m, mode="MLE_PPL_SMALL")
    gen = Likelihood(m, mode="MLE_PPL_SMALL")
    gen._hessian_kind = "generic"
    x = np.array([0.1, -0.2])
    np.testing.assert_allclose(lik.hessian(x), gen.hessian(x), rtol=1e-12)
    assert lik._predictors is None and lik.hessian_kind == "structured"


def test_row_blocks_see_new_data_at_the_same_point():
    """pm.set_data between two calls at the same x: the kept predictors are not reused."""
    m = _logistic()
    lik = Likelihood(m, mode="MLE_PPL_SMALL")
    x = np.array([0.2, 0.3, -0.1, 0.4])
    lik.value_and_grad(x)
    X2 = X[::-1].copy()
    pm.set_data({"X": X2}, model=m)
    f, g = lik.value_and_grad(x)
    H = lik.hessian(x)
    Xc = np.column_stack([np.ones(N), X2])
    eta = Xc @ x
    mu = 1 / (1 + np.exp(-eta))
    # closed forms of the logistic NLL, gradient and Hessian (rounding of 400-term sums)
    assert f == pytest.approx(np.sum(np.logaddexp(0, eta) - Y_BIN * eta), rel=1e-12)
    np.testing.assert_allclose(g, Xc.T @ (mu - Y_BIN), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(H, Xc.T @ (Xc * (mu * (1 - mu))[:, None]), rtol=1e-10)


def test_gaussian_gram_kept_within_a_fit_only():
    """A Gaussian's Hessian reuses DᵀD within one fit; data changed in place between two fits
    (the same array object) are seen by the second fit: estimates and SEs against statsmodels
    OLS (rescaled to the MLE's RSS/n), to 1e-8 relative."""
    import mle_ppl

    rng = np.random.default_rng(5)
    Xg = rng.standard_normal((300, 3))
    with pm.Model() as m:
        Xd = pm.Data("X", Xg)
        a = pm.Flat("a")
        b = pm.Flat("b", shape=3)
        s = pm.HalfFlat("sigma")
        pm.Normal("y", mu=a + Xd @ b, sigma=s, observed=pm.Data("y_obs", rng.standard_normal(300)))
    for k in range(2):
        stored = Xd.get_value(borrow=True)
        stored[:] = rng.standard_normal((300, 3)) * (1 + k)  # in place: same object
        y = 1.0 + stored @ [0.5, -1.0, 2.0] + rng.standard_normal(300)
        pm.set_data({"y_obs": y}, model=m)
        assert Xd.get_value(borrow=True) is stored
        fit = mle_ppl.fit(m)
        ols = sm.OLS(y, sm.add_constant(stored)).fit()
        est = fit.estimates[["a", "b[0]", "b[1]", "b[2]"]].to_numpy()
        np.testing.assert_allclose(est, ols.params, rtol=1e-8)
        se = fit.std_errors[["a", "b[0]", "b[1]", "b[2]"]].to_numpy()
        np.testing.assert_allclose(se, ols.bse * np.sqrt((300 - 4) / 300), rtol=1e-8)
