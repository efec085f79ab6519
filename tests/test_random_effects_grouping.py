"""Nested and crossed random-intercept groupings of a Gaussian LMM (issue 14), pm.Model input.

Reference: statsmodels ``MixedLM(reml=False)`` with variance components (``vc_formula``); the
Laplace approximation is exact for a Gaussian LMM. statsmodels is fitted with L-BFGS, then
polished by BFGS with ``gtol=1e-10`` from there (MixedLM.fit drops L-BFGS's own tolerances,
and its default stops short of the 1e-4 tolerance on the variance components).
Tolerances (issue 14): loglik 1e-6 relative, fixed effects 1e-6, variance components 1e-4.
"""

import numpy as np
import pandas as pd
import pymc as pm
import pytest
import statsmodels.formula.api as smf

import mle_ppl
from mle_ppl._src.engine.fit import objective_for


def _statsmodels(df, groups, vc, re_formula):
    md = smf.mixedlm("y ~ x", df, groups=df[groups], re_formula=re_formula, vc_formula=vc)
    start = md.fit(reml=False, method="lbfgs")
    return md.fit(reml=False, method="bfgs", gtol=1e-10, start_params=start.params_object)


def _check(fit, ref, fixed, sds):
    assert fit.converged and not fit.warnings
    assert fit.loglik == pytest.approx(ref.llf, rel=1e-6)
    np.testing.assert_allclose(fit.estimates[fixed], ref.fe_params, rtol=1e-6)
    sm_var = [ref.cov_re.iloc[0, 0]] if ref.cov_re.shape[0] else []
    sm_var = np.array(sm_var + list(ref.vcomp))
    np.testing.assert_allclose(fit.estimates[sds].to_numpy() ** 2, sm_var, rtol=1e-4)
    assert fit.estimates["sigma"] ** 2 == pytest.approx(ref.scale, rel=1e-4)


def test_nested_groupings_match_statsmodels():
    # 12 groups, each with 3 subgroups (36 nested units), 288 rows
    rng = np.random.default_rng(5)
    G1, G2, n = 12, 3, 288
    g1 = np.repeat(np.arange(G1), n // G1)
    g2 = rng.integers(0, G2, n)
    g12 = g1 * G2 + g2
    x = rng.normal(size=n)
    y = (1 + 0.5 * x + rng.normal(0, 0.8, G1)[g1] + rng.normal(0, 0.5, G1 * G2)[g12]
         + rng.normal(0, 1, n))
    df = pd.DataFrame({"y": y, "x": x, "g1": g1, "g2": g2})
    with pm.Model(coords={"g1": np.arange(G1), "g12": np.arange(G1 * G2)}) as m:
        a = pm.Flat("a")
        b = pm.Flat("b")
        s1 = pm.HalfFlat("sd_g1")
        s2 = pm.HalfFlat("sd_g12")
        s = pm.HalfFlat("sigma")
        u1 = pm.Normal("u1", 0, s1, dims="g1")
        u2 = pm.Normal("u2", 0, s2, dims="g12")
        pm.Normal("y", a + b * x + u1[g1] + u2[g12], s, observed=y)
    fit = mle_ppl.fit(m)
    ref = _statsmodels(df, "g1", {"g2": "0 + C(g2)"}, "1")
    _check(fit, ref, ["a", "b"], ["sd_g1", "sd_g12"])
    assert fit.random_effects.mode.shape == (G1 + G1 * G2,)


def _crossed():
    rng = np.random.default_rng(2)
    A, B, n = 15, 10, 240
    ia = rng.integers(0, A, n)
    ib = rng.integers(0, B, n)
    x = rng.normal(size=n)
    y = 1 + 0.5 * x + rng.normal(0, 0.7, A)[ia] + rng.normal(0, 0.5, B)[ib] + rng.normal(0, 1, n)
    df = pd.DataFrame({"y": y, "x": x, "a": ia, "b": ib, "one": 1})
    with pm.Model(coords={"A": np.arange(A), "B": np.arange(B)}) as m:
        c = pm.Flat("c")
        d = pm.Flat("d")
        sa = pm.HalfFlat("sd_a")
        sb = pm.HalfFlat("sd_b")
        s = pm.HalfFlat("sigma")
        ua = pm.Normal("ua", 0, sa, dims="A")
        ub = pm.Normal("ub", 0, sb, dims="B")
        pm.Normal("y", c + d * x + ua[ia] + ub[ib], s, observed=y)
    return df, m


def test_crossed_groupings_match_statsmodels():
    df, m = _crossed()
    fit = mle_ppl.fit(m)
    ref = _statsmodels(df, "one", {"a": "0 + C(a)", "b": "0 + C(b)"}, "0")
    _check(fit, ref, ["c", "d"], ["sd_a", "sd_b"])
    assert fit.random_effects.mode.shape == (25,)


def test_crossed_gradient_is_exact():
    # crossed levels share one dense block whose sparsity pattern has holes; the gradient of
    # ½ log det H must use only the pattern's entries (a regression: it once lost some of them)
    _, m = _crossed()
    obj = objective_for(m, likelihood_only=False, mode="auto")
    x = obj.x0() + np.array([0.1, -0.1, 0.2, -0.2, 0.1])
    _, g = obj.value_and_grad(x)
    eps = 1e-5
    fd = [(obj.value(x + eps * e) - obj.value(x - eps * e)) / (2 * eps) for e in np.eye(5)]
    # central differences: truncation ~eps^2 |f'''|, rounding ~1e-16 |f| / eps ~ 1e-9
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-6)


def test_fixed_effects_integrated_out_give_statsmodels_reml():
    # The engine-level basis for REML (issue 14, not yet exposed as fit(reml=True)): integrating
    # the flat fixed effects out together with u (exact for a Gaussian LMM) gives the
    # restricted likelihood. statsmodels' REML loglik, with its profiled scale substituted, is
    # -½ log det V - ½ log det X'V⁻¹X - ½ r'V⁻¹r - (n - k)/2 log 2π, which is exactly
    # log ∫ p(y | β, θ) dβ: the same constant, nothing to add.
    import scipy.optimize as so
    from test_random_effects import _intercept_data, _intercept_model

    from mle_ppl._src.engine.laplace import LaplaceMarginal
    from mle_ppl._src.engine.random_effects import Roles

    df = _intercept_data()
    obj = LaplaceMarginal(_intercept_model(df), Roles(flat=("sd_u", "sigma"),
                                                      random=("u", "a", "b"), priors=(),
                                                      detected=False))
    res = so.minimize(obj.value_and_grad, obj.x0(), jac=True, method="BFGS",
                      options={"gtol": 1e-9})
    md = smf.mixedlm("y ~ x", df, groups=df["g"])
    ref = md.fit(reml=True, method="bfgs", gtol=1e-10)
    assert -res.fun == pytest.approx(ref.llf, rel=1e-6)
    np.testing.assert_allclose(np.exp(2 * res.x), [ref.cov_re.iloc[0, 0], ref.scale], rtol=1e-4)
    # the fixed effects' conditional modes are the GLS estimates at the REML variance components
    assert obj.u_layout.names[:2] == ("a", "b")  # the layout follows declaration order
    u, _ = obj.modes(res.x)
    np.testing.assert_allclose(u[:2], ref.fe_params, rtol=1e-6)
