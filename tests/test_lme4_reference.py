"""Mixed models on lme4's example data against lme4 and statsmodels (issue 14).

Data: ``tests/data/lme4/`` (lme4's sleepstudy, Dyestuff, Dyestuff2, Penicillin, Pastes; see its
README for sources and licence). Each model is fitted twice, as a hand-written ``pm.Model`` (flat
fixed effects and SDs, ``pm.Normal("u", 0, sd_u, dims=...)`` random effects) and through the
formula shorthand of a model file with lme4's terms, and compared with

- **lme4** (``REML = FALSE``): numbers from ``tests/data/lme4/lme4_reference.out`` (lme4 1.1-31,
  tight optimizer tolerances, 10 decimals), and where lme4's documentation or tests print the
  same number, that printed number to its printed digits (source next to it);
- **statsmodels** ``MixedLM(reml=False)``, fitted in the test (L-BFGS, then BFGS with
  ``gtol=1e-10``: its default stops short of the 1e-4 tolerance on variance components).

Tolerances (issue 14; the Laplace approximation is exact for Gaussian LMMs): log-likelihood
1e-6 relative (statsmodels) and 1e-7 absolute (lme4's 10 decimals at its tight optimum), fixed
effects 1e-6 relative, variance components (SDs) 1e-4 relative. Fixed-effect standard errors
1e-4 relative to lme4's ``vcov``: our Hessian in θ is by central differences of the exact
gradient (~1e-7), and for these designs the fixed effects are orthogonal to the variance
parameters at the MLE, so the full-information SE equals lme4's conditional one.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pymc as pm
import pytest

import mle_ppl

DATA = Path(__file__).parent / "data" / "lme4"


def _read(name: str) -> pd.DataFrame:
    return pd.read_csv(DATA / f"{name}.csv")


def _codes(col: pd.Series) -> tuple[np.ndarray, list]:
    levels = sorted(col.unique())
    return col.map({v: i for i, v in enumerate(levels)}).to_numpy(), levels


# ---------------------------------------------------------------- lme4's numbers (ML)
# From tests/data/lme4/lme4_reference.out (lme4 1.1-31, REML = FALSE) unless said otherwise.
# sds: the random-effect SDs in the order of `sd_names` of each case, then the residual SD.
LME4 = {
    "sleepstudy": dict(
        loglik=-875.9696722316, fixef=[251.4051048485, 10.4672859596],
        se=[6.6322775814, 1.5022366073],
        sds=[23.7805708823, 5.7168337139, 25.5918156386], corr=0.0813200371),
    "sleepstudy_uncorr": dict(
        loglik=-876.0016275699, fixef=[251.4051048485, 10.4672859596],
        se=[6.7076737602, 1.5193144866], sds=[24.1712654452, 5.7994085346, 25.5561346779]),
    "dyestuff": dict(
        loglik=-163.6635299406, fixef=[1527.5], se=[17.6945534581],
        sds=[37.2603453075, 49.5100999825]),
    "penicillin": dict(
        loglik=-166.0941743343, fixef=[22.9722222222], se=[0.7445958434],
        sds=[0.8455721906, 1.7706464013, 0.5499321944]),
    "pastes": dict(
        loglik=-123.9972329312, fixef=[60.0533333333], se=[0.6421353306],
        sds=[1.0950596309, 2.9040775992, 0.8234075513]),
}

# Printed by lme4 itself, to the digits printed:
# - Dyestuff: tests/testthat/test-lmer.R, `deviance(fm1ML) = 327.327059881135`,
#   `sigma(fm1ML) = 49.5100999308089`, `vcov(fm1ML)[1,1] = 313.09721874266`.
# - sleepstudy (Days | Subject): the `lmer` help page (docs/reference/lmer.html), the verbose
#   ML fit's last deviance `f(x) = 1751.939344`, and `anova(fm1, fm2)` logLik -875.97 (fm1,
#   correlated) and -876.00 (fm2, uncorrelated); also in Bates et al. (2015), J. Stat. Softw.
#   67(1), section 5 (the same anova table).
PRINTED = {
    "dyestuff": dict(deviance=(327.327059881135, 12), sigma=(49.5100999308089, 6),
                     var_fixef=(313.09721874266, 5)),
    "sleepstudy": dict(deviance=(1751.939344, 6), loglik=(-875.97, 2)),
    "sleepstudy_uncorr": dict(loglik=(-876.00, 2)),
}


# ---------------------------------------------------------------- the models, both ways
def _pm_sleepstudy(df, correlated=True):
    s, levels = _codes(df.Subject)
    days, y = df.Days.to_numpy(), df.Reaction.to_numpy()
    with pm.Model(coords={"Subject": levels, "effect": ["Intercept", "Days"]}) as m:
        b0, b1 = pm.Flat("b0"), pm.Flat("b1")
        sigma = pm.HalfFlat("sigma")
        if correlated:
            sds = pm.HalfFlat("sd_Subject", dims="effect")
            rho = pm.Uniform("rho_Subject", -1, 1)
            chol = pm.math.stack([sds[0], 0.0, rho * sds[1], pm.math.sqrt(1 - rho**2) * sds[1]])
            cov = chol.reshape((2, 2)) @ chol.reshape((2, 2)).T
            u = pm.MvNormal("u", mu=np.zeros(2), cov=cov, dims=("Subject", "effect"))
            mu = b0 + b1 * days + u[s, 0] + u[s, 1] * days
        else:
            sd_a, sd_b = pm.HalfFlat("sd_a"), pm.HalfFlat("sd_b")
            a = pm.Normal("a", 0, sd_a, dims="Subject")
            b = pm.Normal("b", 0, sd_b, dims="Subject")
            mu = b0 + b1 * days + a[s] + b[s] * days
        pm.Normal("y", mu, sigma, observed=y)
    return m


def _pm_dyestuff(df):
    g, levels = _codes(df.Batch)
    with pm.Model(coords={"Batch": levels}) as m:
        b0, sd, sigma = pm.Flat("b0"), pm.HalfFlat("sd_Batch"), pm.HalfFlat("sigma")
        u = pm.Normal("u", 0, sd, dims="Batch")
        pm.Normal("y", b0 + u[g], sigma, observed=df.Yield.to_numpy())
    return m


def _pm_penicillin(df):
    p, plates = _codes(df.plate)
    s, samples = _codes(df["sample"])
    with pm.Model(coords={"plate": plates, "sample": samples}) as m:
        b0, sigma = pm.Flat("b0"), pm.HalfFlat("sigma")
        sd_p, sd_s = pm.HalfFlat("sd_plate"), pm.HalfFlat("sd_sample")
        up = pm.Normal("u_plate", 0, sd_p, dims="plate")
        us = pm.Normal("u_sample", 0, sd_s, dims="sample")
        pm.Normal("y", b0 + up[p] + us[s], sigma, observed=df.diameter.to_numpy())
    return m


def _pm_pastes(df):
    b, batches = _codes(df.batch)
    c, samples = _codes(df["sample"])  # sample = batch:cask, 30 levels
    with pm.Model(coords={"batch": batches, "sample": samples}) as m:
        b0, sigma = pm.Flat("b0"), pm.HalfFlat("sigma")
        sd_b, sd_c = pm.HalfFlat("sd_batch"), pm.HalfFlat("sd_cask")
        ub = pm.Normal("u_batch", 0, sd_b, dims="batch")
        uc = pm.Normal("u_cask", 0, sd_c, dims="sample")
        pm.Normal("y", b0 + ub[b] + uc[c], sigma, observed=df.strength.to_numpy())
    return m


#: name -> (csv, formula, pm builder, fixed-effect labels (pm, formula),
#:          sd labels (pm, formula) in the order of LME4[...]["sds"])
CASES = {
    "dyestuff": ("Dyestuff", "Yield ~ 1 + (1 | Batch)", _pm_dyestuff,
                 (["b0"], ["beta[Intercept]"]),
                 (["sd_Batch", "sigma"], ["sd_Batch", "sigma"])),
    "penicillin": ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", _pm_penicillin,
                   (["b0"], ["beta[Intercept]"]),
                   (["sd_plate", "sd_sample", "sigma"], ["sd_plate", "sd_sample", "sigma"])),
    "pastes": ("Pastes", "strength ~ 1 + (1 | batch/cask)", _pm_pastes,
               (["b0"], ["beta[Intercept]"]),
               (["sd_batch", "sd_cask", "sigma"], ["sd_batch", "sd_batch_cask", "sigma"])),
    "sleepstudy": ("sleepstudy", "Reaction ~ Days + (1 + Days | Subject)", _pm_sleepstudy,
                   (["b0", "b1"], ["beta[Intercept]", "beta[Days]"]),
                   (["sd_Subject[Intercept]", "sd_Subject[Days]", "sigma"],
                    ["sd_Subject[Intercept]", "sd_Subject[Days]", "sigma"])),
    "sleepstudy_uncorr": ("sleepstudy", "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)",
                          lambda df: _pm_sleepstudy(df, correlated=False),
                          (["b0", "b1"], ["beta[Intercept]", "beta[Days]"]),
                          (["sd_a", "sd_b", "sigma"], ["sd_Subject", "sd_Subject_Days", "sigma"])),
}
FAST = ["dyestuff", "pastes", "penicillin"]
SLOW = ["sleepstudy", "sleepstudy_uncorr"]  # ~40-70 s per fit on a loaded 2-core machine
#: Penicillin's crossed design (one dense 30 x 30 block) fits in 35-50 s on a loaded machine
MARKS = {"penicillin": pytest.mark.slow}


def _cases(names):
    return [pytest.param(c, marks=MARKS[c]) if c in MARKS else c for c in names]


def _formula_model(formula: str, df: pd.DataFrame, tmp_path: Path):
    path = tmp_path / "model.toml"
    path.write_text(f'[model]\nformula = "{formula}"\n')
    model, _ = mle_ppl.load_model(path).model_for(df)
    return model


_FITS: dict = {}


def _fit(case: str, how: str, tmp_path: Path):
    """One fit per case and way, shared by the tests of this module."""
    key = (case, how)
    if key not in _FITS:
        csv, formula, build, _, _ = CASES[case]
        df = _read(csv)
        model = build(df) if how == "pm" else _formula_model(formula, df, tmp_path)
        _FITS[key] = mle_ppl.fit(model)
    return _FITS[key]


# ---------------------------------------------------------------- statsmodels, fitted here
def _statsmodels(case: str):
    import statsmodels.formula.api as smf
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, SingularMatrixWarning

    csv = CASES[case][0]
    df = _read(csv)
    if case == "dyestuff":
        md = smf.mixedlm("Yield ~ 1", df, groups=df["Batch"])
    elif case == "penicillin":  # crossed: one group, two variance components
        md = smf.mixedlm("diameter ~ 1", df.assign(one=1), groups="one", re_formula="0",
                         vc_formula={"plate": "0 + C(plate)", "sample": "0 + C(sample)"})
    elif case == "pastes":  # nested: groups = batch, casks within batch a variance component
        # (re_formula="1": with vc_formula, statsmodels adds no group intercept by itself)
        md = smf.mixedlm("strength ~ 1", df, groups=df["batch"], re_formula="1",
                         vc_formula={"cask": "0 + C(cask)"})
    elif case == "sleepstudy":
        md = smf.mixedlm("Reaction ~ Days", df, groups=df["Subject"], re_formula="~Days")
    else:  # independent intercept and slope
        md = smf.mixedlm("Reaction ~ Days", df, groups=df["Subject"], re_formula="0",
                         vc_formula={"a": "1", "b": "0 + Days"})
    with warnings.catch_warnings():
        # statsmodels' L-BFGS start may stop early (ConvergenceWarning), and its line search
        # may try a singular covariance on the way (SingularMatrixWarning); BFGS polishes it
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", SingularMatrixWarning)
        start = md.fit(reml=False, method="lbfgs")
        ref = md.fit(reml=False, method="bfgs", gtol=1e-10, start_params=start.params_object)
    var = list(np.diag(ref.cov_re)) + list(ref.vcomp) + [ref.scale]
    return ref, np.sqrt(var)


def _check(fit, case: str, how: str) -> None:
    ref = LME4[case]
    fixed, sds = (lab[0 if how == "pm" else 1] for lab in CASES[case][3:])
    # the fit itself: converged at an interior maximum with a positive-definite information
    assert fit.converged and not fit.warnings
    d = fit.to_dict()["diagnostics"]
    assert d["grad_norm"] < 1e-5 and d["hessian_min_eig"] > 0
    assert fit.n_obs == len(_read(CASES[case][0]))
    # lme4, 10 decimals at its tight optimum
    assert fit.loglik == pytest.approx(ref["loglik"], abs=1e-7)
    np.testing.assert_allclose(fit.estimates[fixed], ref["fixef"], rtol=1e-6)
    np.testing.assert_allclose(fit.std_errors[fixed], ref["se"], rtol=1e-4)
    np.testing.assert_allclose(fit.estimates[sds], ref["sds"], rtol=1e-4)
    # the printed numbers, to their digits
    for what, (value, digits) in PRINTED.get(case, {}).items():
        got = {"deviance": -2 * fit.loglik, "loglik": fit.loglik,
               "sigma": fit.estimates["sigma"],
               "var_fixef": fit.std_errors[fixed[0]] ** 2}[what]
        assert round(got, digits) == pytest.approx(value, abs=10.0 ** -digits), what


@pytest.mark.parametrize("case", _cases(FAST))
@pytest.mark.parametrize("how", ["pm", "formula"])
def test_lme4_ml_fits(case, how, tmp_path):
    _check(_fit(case, how, tmp_path), case, how)


@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW)
@pytest.mark.parametrize("how", ["pm", "formula"])
def test_lme4_ml_fits_sleepstudy(case, how, tmp_path):
    fit = _fit(case, how, tmp_path)
    _check(fit, case, how)
    if case == "sleepstudy":
        rho = "rho_Subject"
        assert fit.estimates[rho] == pytest.approx(LME4[case]["corr"], rel=1e-4)


@pytest.mark.parametrize("case", _cases(FAST))
def test_statsmodels_agrees(case, tmp_path):
    fit = _fit(case, "formula", tmp_path)
    ref, sds = _statsmodels(case)
    _, sd_labels = CASES[case][4]
    assert fit.loglik == pytest.approx(ref.llf, rel=1e-6)
    np.testing.assert_allclose(fit.estimates[CASES[case][3][1]], ref.fe_params, rtol=1e-6)
    # statsmodels' order: group-level covariance, variance components by name, residual
    np.testing.assert_allclose(fit.estimates[sd_labels].to_numpy(), sds, rtol=1e-4)


# ---------------------------------------------------------------- beyond the estimates
def _lme4_ranef(dataset: str) -> dict[str, tuple[float, float]]:
    """lme4's conditional modes and conditional SDs of the ML fit of ``dataset``:
    ``ranef(fm, condVar = TRUE)``, from lme4_reference.out, by our label."""
    out = {}
    for line in (DATA / "lme4_reference.out").read_text().splitlines():
        parts = line.split()
        if len(parts) == 8 and parts[0] == dataset and parts[4] == "mode":
            group, level = parts[1], parts[3]
            if group == "cask:batch":  # lme4 labels the interaction cask:batch as "a:A"
                group, level = "batch_cask", ":".join(reversed(level.split(":")))
            out[f"u_{group}[{level}]"] = (float(parts[5]), float(parts[7]))
    return out


@pytest.mark.parametrize("case", _cases(FAST))
def test_conditional_modes_match_lme4_ranef(case, tmp_path):
    fit = _fit(case, "formula", tmp_path)
    ref = _lme4_ranef(CASES[case][0])
    re_ = fit.random_effects.to_frame()
    assert sorted(ref) == sorted(re_.index)
    mode = np.array([ref[lab][0] for lab in re_.index])
    cond = np.array([ref[lab][1] for lab in re_.index])
    # modes are linear in y given θ̂: 1e-4 relative to their spread (θ̂ to 1e-4 moves them so)
    np.testing.assert_allclose(re_["mode"], mode, rtol=0, atol=1e-4 * np.abs(mode).max())
    # sd_conditional given θ̂ is lme4's condVar (it too treats β̂ and θ̂ as known)
    np.testing.assert_allclose(re_["sd_conditional"], cond, rtol=1e-4)
    # std_err adds the uncertainty of θ̂ (TMB's sdreport): never below the conditional SD
    assert np.all(re_["std_err"] >= re_["sd_conditional"] * (1 - 1e-12))


def test_boundary_fit_dyestuff2_like_lme4(tmp_path):
    """Dyestuff2: lme4 reports "boundary (singular) fit", the batch SD 0, and then the model
    is ordinary least squares: the intercept is the mean, σ̂² = RSS/n, and the loglik is
    -n/2 (log(2π RSS/n) + 1) (closed form, checked to 1e-9)."""
    df = _read("Dyestuff2")
    fit = mle_ppl.fit(_formula_model("Yield ~ 1 + (1 | Batch)", df, tmp_path))
    y = df.Yield.to_numpy()
    rss, n = ((y - y.mean()) ** 2).sum(), len(y)
    assert fit.random_effects.singular and fit.random_effects.boundary == ("sd_Batch",)
    assert fit.estimates["sd_Batch"] == 0 and np.isnan(fit.std_errors["sd_Batch"])
    assert fit.loglik == pytest.approx(-n / 2 * (np.log(2 * np.pi * rss / n) + 1), rel=1e-9)
    # lme4 1.1-31 (lme4_reference.out): logLik -81.4365183269, (Intercept) 5.6656 (se
    # 0.6669857396), residual SD 3.6532313514
    assert fit.loglik == pytest.approx(-81.4365183269, abs=1e-7)
    assert fit.estimates["beta[Intercept]"] == pytest.approx(5.6656, rel=1e-9)
    assert fit.std_errors["beta[Intercept]"] == pytest.approx(0.6669857396, rel=1e-4)
    assert fit.estimates["sigma"] == pytest.approx(3.6532313514, rel=1e-6)
    assert any("sd_Batch" in n for n in fit.notes)


def _dense_profile_end(df, y, groups, fixed_sd: int, value: float) -> float:
    """Our own reference: the ML log-likelihood of y ~ 1 + random intercepts of ``groups``
    maximised over the other SDs and σ with ``sds[fixed_sd] = value``, by dense algebra
    (V = Σ s_k² Z_k Z_kᵀ + σ² I; β by GLS), with SciPy's Nelder-Mead to 1e-12."""
    import scipy.optimize as so

    Zs = [np.equal.outer(df[g].to_numpy(), np.unique(df[g])).astype(float) for g in groups]
    ZZ = [Z @ Z.T for Z in Zs]
    n = len(y)
    X = np.ones((n, 1))

    def loglik(sds, sigma):
        V = sum(s * s * zz for s, zz in zip(sds, ZZ, strict=True)) + sigma**2 * np.eye(n)
        L = np.linalg.cholesky(V)
        Xw, yw = np.linalg.solve(L, X), np.linalg.solve(L, y)
        beta = np.linalg.lstsq(Xw, yw, rcond=None)[0]
        r = yw - Xw @ beta
        return -0.5 * (n * np.log(2 * np.pi) + 2 * np.log(np.diag(L)).sum() + r @ r)

    k = len(groups)

    def neg(p):  # log-SDs of the free components, then log σ
        sds = list(np.exp(p[:k - 1]))
        sds.insert(fixed_sd, value)
        return -loglik(sds, np.exp(p[-1]))

    start = np.full(k, np.log(np.std(y)))
    res = so.minimize(neg, start, method="Nelder-Mead",
                      options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000})
    return -res.fun


@pytest.mark.slow  # a profile: ~10-30 s on a loaded 2-core machine
def test_profile_interval_of_a_variance_component(tmp_path):
    """Dyestuff's batch SD: profile interval (ML) against our own dense computation (the
    profile log-likelihood at both ends is the maximum − χ²₁(0.95)/2, to 1e-7) and against
    lme4's `confint(profile(fm01ML))`, printed in lme4's `profile-methods` help page as
    12.19854, 84.06305 (lme4_reference.out: 12.19853522, 84.06304671). lme4 interpolates its
    profile by splines, which puts its lower end 2e-3 (1.7e-4 relative) from the exact profile's
    (ours and the dense computation agree to 1e-8), so lme4 is compared to 2e-4 relative."""
    from scipy import stats

    fit = _fit("dyestuff", "formula", tmp_path)
    df = _read("Dyestuff")
    pr = fit.profile("sd_Batch")
    assert not (pr.open_lower or pr.open_upper)
    cut = fit.loglik - stats.chi2.ppf(0.95, 1) / 2
    for end in (pr.lower, pr.upper):
        ll = _dense_profile_end(df, df.Yield.to_numpy(), ["Batch"], 0, end)
        assert ll == pytest.approx(cut, abs=1e-7)
    np.testing.assert_allclose([pr.lower, pr.upper], [12.19853522, 84.06304671], rtol=2e-4)


def test_mixed_model_has_no_closed_form_check(tmp_path):
    """A mixed model's closed-form check says why it does not apply (it once leaked an
    internal "SpecifyShape" assertion from the fixed-effects detector into --json)."""
    fit = _fit("dyestuff", "formula", tmp_path)
    check = fit.closed_form()
    assert check.applies is False
    assert "random effects (u_Batch) integrated out" in check.reason
    doc = fit.to_dict()["closed_form"]
    assert doc["applies"] is False and "SpecifyShape" not in doc["reason"]


def test_variance_table_shows_no_wald_end_outside_the_support(tmp_path, monkeypatch):
    """Pastes: the batch SD 1.095 has SE 0.94, so estimate − 1.96 SE < 0: a Wald "lower
    bound" of an SD below 0 is no confidence bound, so the table leaves it out and says why
    (lme4 gives no Wald intervals for SDs; its profile interval is [0, 2.9466]). Rendered at
    COLUMNS=60 with stdout not a terminal: $COLUMNS is honoured."""
    from mle_ppl._src.cli import _ui
    from mle_ppl._src.cli.fit import _residual_sds, variance_table

    fit = _fit("pastes", "formula", tmp_path)
    tab = fit.table()
    est, se = fit.estimates["sd_batch"], fit.std_errors["sd_batch"]
    assert est - 1.959963984540054 * se < 0  # the raw Wald end (about -0.75)
    # the API, the table and JSON: NaN / null with a note pointing to profile intervals
    assert np.isnan(tab.loc["sd_batch", "ci_lower"])
    assert np.isnan(fit.conf_int().loc["sd_batch", "lower"])
    assert tab.attrs["outside_support"] == {"sd_batch": (True, False)}
    doc = fit.to_dict()
    assert doc["parameters"]["sd_batch"]["ci_lower"] is None
    assert any(n.startswith("sd_batch: the 95% Wald lower end (-0.7") and "profile" in n
               for n in doc["notes"])
    # the residual SD is a variance component (lme4's "Residual"), not a fixed effect; found
    # in the graph as the Normal likelihood's sigma, for the formula and the pm.Model alike
    assert _residual_sds(fit) == ["sigma"] == _residual_sds(_fit("pastes", "pm", tmp_path))
    vp = list(fit.random_effects.variance_params) + ["sigma"]
    monkeypatch.setenv("COLUMNS", "60")
    con = _ui.stdout_console()
    assert con.width == 60
    with con.capture() as cap:
        con.print(variance_table(fit, tab.loc[vp], outside=tab.attrs["outside_support"]))
    text = cap.get()
    assert max(len(line) for line in text.splitlines()) <= 60
    words = " ".join(text.split())
    assert "-0.75" not in words and "—" in words
    assert "Wald lower end outside the support [0, inf]: not shown; see --ci profile" in words
    assert "sd_batch_cask" in words and "2.90" in words  # inside its support: shown
    assert "residual SD" in words


# ---------------------------------------------------------------- REML (lme4's default)
# lme4 1.1-31, REML = TRUE (lme4_reference.out); sds in the order of CASES[...][4].
LME4_REML = {
    "dyestuff": dict(loglik=-159.8271384211, fixef=[1527.5], se=[19.3834128327],
                     sds=[42.0005972034, 49.5100996176]),
    "penicillin": dict(loglik=-165.4302944955, fixef=[22.9722222222], se=[0.8085733467],
                       sds=[0.8467042778, 1.9315582993, 0.5499231460]),
    "pastes": dict(loglik=-123.4953729267, fixef=[60.0533333333], se=[0.6768700847],
                   sds=[1.2873650974, 2.9040775934, 0.8234075474]),
    "sleepstudy": dict(loglik=-871.8141359792, fixef=[251.4051048485, 10.4672859596],
                       se=[6.8245562616, 1.5457888929],
                       sds=[24.7404500812, 5.9221330819, 25.5918157386], corr=0.0655513776),
}
# Printed by lme4, to the printed digits: "REML criterion at convergence" in the help pages
# (docs/reference/*.html of lme4's repository): Dyestuff 319.6543, Penicillin 330.8606, Pastes
# 246.9907, sleepstudy (lmer) 1743.628; Dyestuff's `REMLcrit(fm1) = 319.654276842342` in
# tests/testthat/test-lmer.R; sleepstudy's "REML criterion at convergence: 1743.6" in Bates et
# al. (2015), J. Stat. Softw. 67(1) (logLik -1743.628 / 2 = -871.81).
# (REMLcrit is lme4's default optimizer's value, 8e-11 above ours: compared to 9 decimals)
PRINTED_REML = {"dyestuff": (319.654276842342, 9), "penicillin": (330.8606, 4),
                "pastes": (246.9907, 4), "sleepstudy": (1743.628, 3)}


def _statsmodels_reml_llf(case: str) -> float:
    import statsmodels.formula.api as smf

    df = _read(CASES[case][0])
    if case == "dyestuff":
        md = smf.mixedlm("Yield ~ 1", df, groups=df["Batch"])
    else:
        md = smf.mixedlm("strength ~ 1", df, groups=df["batch"], re_formula="1",
                         vc_formula={"cask": "0 + C(cask)"})
    return md.fit(reml=True, method="bfgs", gtol=1e-10).llf


def _check_reml(fit, case: str, how: str = "formula") -> None:
    ref = LME4_REML[case]
    fixed, sds = (lab[0 if how == "pm" else 1] for lab in CASES[case][3:])
    assert fit.converged and not fit.warnings and fit.criterion == "REML"
    # lme4's "REML criterion" is -2 x the restricted log-likelihood: the screen says which
    assert ("REML log-likelihood", f"{fit.loglik:.6g}") in fit._header()
    assert any("lme4 prints -2 x loglik as its 'REML criterion'" in n for n in fit.notes)
    assert fit.loglik == pytest.approx(ref["loglik"], abs=1e-7)
    value, digits = PRINTED_REML[case]
    assert round(-2 * fit.loglik, digits) == pytest.approx(value, abs=10.0 ** -digits)
    np.testing.assert_allclose(fit.estimates[fixed], ref["fixef"], rtol=1e-6)
    np.testing.assert_allclose(fit.std_errors[fixed], ref["se"], rtol=1e-4)
    np.testing.assert_allclose(fit.estimates[sds], ref["sds"], rtol=1e-4)


@pytest.mark.parametrize("how", ["pm", "formula"])
def test_lme4_reml_dyestuff(how, tmp_path):
    df = _read("Dyestuff")
    model = _pm_dyestuff(df) if how == "pm" else _formula_model(CASES["dyestuff"][1], df,
                                                                  tmp_path)
    fit = mle_ppl.fit(model, reml=True)
    _check_reml(fit, "dyestuff", how)
    assert fit.loglik == pytest.approx(_statsmodels_reml_llf("dyestuff"), rel=1e-6)
    # test-lmer.R: sigma(fm1) = 49.5101272946856 (tolerance 1e-6, lme4's default optimizer)
    assert fit.estimates["sigma"] == pytest.approx(49.5101272946856, rel=1e-6)


@pytest.mark.slow  # REML fits of 60-180 rows: 20-60 s each on a loaded 2-core machine
@pytest.mark.parametrize("case", ["pastes", "penicillin", "sleepstudy"])
def test_lme4_reml(case, tmp_path):
    csv, formula = CASES[case][:2]
    fit = mle_ppl.fit(_formula_model(formula, _read(csv), tmp_path), reml=True)
    _check_reml(fit, case)
    if case == "pastes":
        assert fit.loglik == pytest.approx(_statsmodels_reml_llf(case), rel=1e-6)
    if case == "sleepstudy":
        assert fit.estimates["rho_Subject"] == pytest.approx(LME4_REML[case]["corr"], rel=1e-4)
        assert round(fit.loglik, 2) == -871.81  # -1743.628 / 2, lme4's printed criterion


@pytest.mark.slow  # a profile with boundary-settled inner fits: ~1-3 min on a loaded machine
def test_profile_where_another_variance_component_goes_to_zero(tmp_path):
    """Pastes: profiling the cask SD up to its upper end pushes the batch SD's conditional
    maximum to 0; the inner fits hold it there (they once failed and the interval ended at the
    last profiled point, 4.009 instead of 4.054, after ~9 minutes). Ends against our own dense
    computation (1e-6 in loglik) and lme4's `confint` (lme4_reference.out: 2.1579337084,
    4.053588941; spline-interpolated, so 2e-4 relative)."""
    from scipy import stats

    fit = _fit("pastes", "formula", tmp_path)
    df = _read("Pastes")
    pr = fit.profile("sd_batch_cask")
    assert not (pr.open_lower or pr.open_upper) and not pr.notes
    cut = fit.loglik - stats.chi2.ppf(0.95, 1) / 2
    for end in (pr.lower, pr.upper):
        ll = _dense_profile_end(df, df.strength.to_numpy(), ["batch", "sample"], 1, end)
        assert ll == pytest.approx(cut, abs=1e-6)
    np.testing.assert_allclose([pr.lower, pr.upper], [2.1579337084, 4.053588941], rtol=2e-4)
    # the batch SD's own profile reaches 0 inside the cut-off: one-sided, as lme4's [0, 2.9466]
    pb = fit.profile("sd_batch")
    assert pb.open_lower and pb.lower == 0
    assert pb.upper == pytest.approx(2.946591111, rel=2e-4)
