"""The seed's two practical points (underflow, gradient descent) and `mle-ppl check`."""

import json
import math

import numpy as np
import pymc as pm
import pytest
import statsmodels.api as sm
from scipy import special

import mle_ppl
from mle_ppl._src.cli import main

# ------------------------------------------------------------------------------ underflow


def _running_product_reference(terms):
    """First n at which a plain Python product of exp(terms) is exactly 0.0 (or inf)."""
    prod, zero_at, inf_at = 1.0, None, None
    for i, t in enumerate(terms, start=1):
        try:
            prod *= math.exp(t)
        except OverflowError:
            prod = math.inf
        if prod == 0.0 and zero_at is None:
            zero_at = i
        if prod == math.inf and inf_at is None:
            inf_at = i
    return zero_at, inf_at


def test_underflow_constant_terms():
    demo = mle_ppl.underflow_demo(np.full(1000, -1.4))
    assert (demo.n_underflow, demo.n_overflow) == (_running_product_reference([-1.4] * 1000))
    # log of the smallest subnormal is −744.44: 1.4·n crosses it near n = 532
    assert demo.n_underflow == pytest.approx(744.44 / 1.4, abs=2)
    assert demo.loglik_at_underflow == pytest.approx(-1.4 * demo.n_underflow, rel=1e-12)
    assert demo.product == 0.0 and math.isfinite(demo.loglik)
    assert demo.n_predicted == pytest.approx(744.44 / 1.4, rel=1e-4)


def test_underflow_of_a_fit_at_its_mle():
    rng = np.random.default_rng(0)
    y = rng.normal(10.0, 3.0, size=600)
    with pm.Model() as m:
        mu = pm.Flat("mu")
        sigma = pm.HalfFlat("sigma")
        pm.Normal("y", mu, sigma, observed=y)
    fit = mle_ppl.fit(m)
    demo = mle_ppl.underflow_demo(fit)
    # independent terms: scipy's normal log density at the closed-form MLE (mean, ddof=0 sd)
    from scipy import stats

    terms = stats.norm.logpdf(y, y.mean(), y.std())
    zero_at, _ = _running_product_reference(terms)
    assert demo.n_underflow == zero_at and zero_at is not None
    assert demo.loglik == pytest.approx(fit.loglik, rel=1e-12)
    assert demo.loglik_at_underflow == pytest.approx(float(np.sum(terms[:zero_at])), rel=1e-10)
    assert f"after n = {zero_at}" in str(demo)
    assert json.dumps(demo.to_dict(), allow_nan=False)


def test_densities_above_one_overflow_instead():
    demo = mle_ppl.underflow_demo(np.full(400, 2.0))
    assert demo.n_underflow is None
    assert demo.n_overflow == _running_product_reference([2.0] * 400)[1] == 355
    assert "overflows" in str(demo)


def test_underflow_rejects_bad_input():
    with pytest.raises(mle_ppl.MLEError, match="finite"):
        mle_ppl.underflow_demo([0.1, np.nan])


# -------------------------------------------------------------------- optimizer comparison


@pytest.fixture(scope="module")
def logistic_model():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((120, 2))
    y = (rng.random(120) < special.expit(0.4 + X @ [1.0, -0.7])).astype("int64")
    with pm.Model() as m:
        a = pm.Flat("a")
        b = pm.Flat("b", shape=2)
        pm.Bernoulli("y", logit_p=a + pm.Data("X", X) @ b, observed=y)
    return m, X, y


def test_gradient_descent_reaches_the_same_mle(logistic_model):
    m, X, y = logistic_model
    cmp = mle_ppl.compare_optimizers(m, learning_rate=2.0, max_iter=20000)
    tab = cmp.table()
    assert tab["converged"].all()
    ref = sm.Logit(y, sm.add_constant(X)).fit(disp=0, method="newton", tol=1e-12)
    for name, f in cmp.fits.items():
        # gd stops when the gradient of the mean NLL is < 1e-6 (max-norm): with the mean
        # information ~0.2 that is ~5e-6 in the coefficients, i.e. ~2e-5 SE at n=120.
        tol = 1e-3 if name == "gd" else 2e-5
        assert np.all(np.abs(f.theta - ref.params) <= tol * ref.bse), name
    assert tab.loc["newton", "iterations"] < tab.loc["lbfgs", "iterations"] \
        < tab.loc["gd", "iterations"]
    h = cmp.histories["gd"]
    assert len(h) == tab.loc["gd", "iterations"] + 1
    assert np.all(np.diff(h) <= 1e-15)  # convex loss, small step: monotone descent
    # the histories are mean NLL (cross-entropy per observation): last ≈ −loglik/n
    for name, f in cmp.fits.items():
        assert cmp.histories[name][-1] == pytest.approx(-f.loglik / len(y), rel=1e-6)
    assert json.dumps(cmp.to_dict(), allow_nan=False)
    assert "newton" in str(cmp)


def test_compare_optimizers_plot_and_bad_method(logistic_model):
    import matplotlib.pyplot as plt

    m, _, _ = logistic_model
    cmp = mle_ppl.compare_optimizers(m, methods=("newton", "gd"), learning_rate=2.0,
                                     max_iter=5)
    assert not cmp.fits["gd"].converged
    assert cmp.table().loc["gd", "max_dev_se"] > 1e-3
    fig = cmp.plot()
    assert isinstance(fig, plt.Figure)
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["newton", "gd"]
    assert ax.get_xlim()[0] == 0  # no negative iterations on the axis
    plt.close(fig)
    with pytest.raises(mle_ppl.MLEError, match="not an optimization method"):
        mle_ppl.compare_optimizers(m, methods=("newtn",))


# ------------------------------------------------------------------------------ CLI check

TOML = """
[model]
name = "tiny_ols"

[data]
y = "y"
x = ["x1"]

[parameters]
alpha = {}
beta = { dims = "x" }
sigma = { lower = 0 }

[likelihood]
y = { distribution = "Normal", mu = "alpha + x @ beta", sigma = "sigma" }
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("check")
    rng = np.random.default_rng(9)
    x = rng.standard_normal(30)
    y = 2 + 3 * x + rng.standard_normal(30)
    (d / "m.toml").write_text(TOML)
    (d / "d.csv").write_text("x1,y\n" + "\n".join(f"{a:.17g},{b:.17g}" for a, b in zip(x, y)))
    return d, x, y


def test_cli_check_json_agrees(tiny, capsys):
    d, x, y = tiny
    status = main(["check", str(d / "m.toml"), "--data", str(d / "d.csv"), "--json",
                   "--underflow", "--optimizers", "--learning-rate", "0.5"])
    out = capsys.readouterr().out
    doc = json.loads(out)
    assert status == 0, out
    cf = doc["closed_form"]
    assert cf["applies"] and cf["agrees"] and cf["kind"] == "least_squares"
    ols = sm.OLS(y, sm.add_constant(x)).fit()
    rows = {r["quantity"]: r for r in cf["rows"]}
    assert rows["alpha"]["closed_form"] == pytest.approx(ols.params[0], rel=1e-10)
    assert {"underflow", "optimizers"} <= set(doc)
    assert set(doc["optimizers"]) == {"newton", "lbfgs", "gd"}


def test_cli_check_text_and_early_stop(tiny, capsys):
    d, _, _ = tiny
    assert main(["check", str(d / "m.toml"), "--data", str(d / "d.csv")]) == 0
    out = capsys.readouterr().out
    assert "all identities agree" in out and "RSS/(n−p)" in out
    status = main(["check", str(d / "m.toml"), "--data", str(d / "d.csv"), "--method", "gd",
                   "--max-iter", "3"])
    out = capsys.readouterr().out
    assert status == 1 and "DISAGREEMENT" in out and "check failed" in out


def test_cli_check_bad_input_exits_2(tiny, capsys):
    d, _, _ = tiny
    assert main(["check", str(d / "m.toml"), "--data", str(d / "d.csv"), "--se-tol", "-1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "--se-tol" in captured.err
    assert main(["check", str(d / "nope.toml"), "--json"]) == 2
    assert capsys.readouterr().out == ""


# ------------------------------------------------------------------------- bundled models


@pytest.mark.parametrize("name,kind", [("linear_regression", "least_squares"),
                                       ("logistic_regression", "cross_entropy"),
                                       ("multinomial_logistic", "cross_entropy"),
                                       ("binomial_trials", "cross_entropy")])
def test_bundled_models_agree_with_their_closed_form(name, kind):
    fit = mle_ppl.fit(name)
    check = fit.closed_form()
    assert check.applies and check.kind == kind
    assert check.agrees, str(check)


# PyTensor's Numba backend (used by PyMC's initial-point function) runs the negative binomial's
# trigamma in object mode and says so; harmless here.
@pytest.mark.filterwarnings("ignore:Numba will use object mode:UserWarning")
@pytest.mark.parametrize("name", ["poisson_exposure", "heteroscedastic", "negative_binomial"])
def test_bundled_models_without_closed_form(name):
    fit = mle_ppl.fit(name, warn=False)
    check = fit.closed_form()
    assert not check.applies and check.reason
