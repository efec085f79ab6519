"""Model files: validation errors (file + key path), Python files, bundled names, compile-once,
categorical outcomes with a reference level, formulas, priors, and fuzzing of the loader.

References: statsmodels (MNLogit, GLM) and closed-form least squares, with tolerances stated
where they are used.
"""

import textwrap

import numpy as np
import pandas as pd
import pymc as pm
import pytest
import statsmodels.api as sm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mle_ppl
from mle_ppl import DataError, MLEError, ModelFileError, load_model, loads_model, make_prior
from mle_ppl._src.engine import likelihood as likelihood_module
from mle_ppl._src.model.library import spec_from_toml

LINEAR = """
[model]
name = "lin"
description = "toy"
[data]
y = "y"
x = ["x1", "x2"]
[parameters]
alpha = {}
beta = { dims = "x" }
sigma = { lower = 0 }
[likelihood]
y = { distribution = "Normal", mu = "alpha + x @ beta", sigma = "sigma" }
"""


def _linear_data(n, seed):
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    return pd.DataFrame({"x1": x1, "x2": x2, "y": 1 + 2 * x1 - x2 + rng.normal(size=n)})


def _ols(df):
    X = np.column_stack([np.ones(len(df)), df.x1, df.x2])
    coef, rss, *_ = np.linalg.lstsq(X, df.y.to_numpy(), rcond=None)
    return coef, np.sqrt(rss[0] / len(df))


# ------------------------------------------------------------------ validation
def _replace(old, new):
    assert old in LINEAR
    return LINEAR.replace(old, new)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (LINEAR + "[prior]\n", r"key prior: unknown section \[prior\]\. Did you mean 'priors'"),
        (_replace('description = "toy"', 'descripton = "toy"'),
         r"key model\.descripton: unknown key 'descripton'\. Did you mean 'description'"),
        (_replace('"Normal"', '"Normall"'),
         r"key likelihood\.y\.distribution: unknown distribution 'Normall'\. Did you mean"),
        (_replace('sigma = "sigma" }', 'sd = "sigma" }'),
         r"key likelihood\.y\.sd: Normal has no parameter 'sd'"),
        (_replace('"alpha + x @ beta"', '"alpa + x @ beta"'),
         r"key likelihood\.y\.mu: unknown name 'alpa'.*Did you mean 'alpha'"),
        (_replace('"alpha + x @ beta"', '"alpha + x.T @ beta"'),
         r"key likelihood\.y\.mu: attribute access"),
        (_replace("sigma = { lower = 0 }", "sigma = { lower = 0 }\ngamma = {}"),
         r"key parameters\.gamma: parameter 'gamma' is not used by any likelihood"),
        (_replace('y = { distribution', 'z = { distribution'),
         r"key likelihood\.z: likelihood 'z' has no data"),
        (_replace('beta = { dims = "x" }', 'beta = { dims = "xx" }'),
         r"key parameters\.beta\.dims: unknown dim 'xx'\. Did you mean 'x'"),
        (_replace('beta = { dims = "x" }', 'beta = { dim = "x" }'),
         r"key parameters\.beta\.dim: unknown key 'dim'\. Did you mean 'dims'"),
        (_replace("sigma = { lower = 0 }", "sigma = { lower = 1, upper = 0 }"),
         r"key parameters\.sigma: lower = 1\.0 must be below upper = 0\.0"),
        (_replace("sigma = { lower = 0 }", "sigma = { lower = 0, start = -1 }"),
         r"key parameters\.sigma\.start: start = -1 is outside the support of sigma, \(0, inf\)"),
        (_replace('x = ["x1", "x2"]', 'x = 3'), r"key data\.x: expected a column name"),
        (_replace('y = "y"', 'exp = "y"'), r"key data\.exp: 'exp' is reserved"),
        (_replace('y = "y"', 'y = { column = "y", colour = 1 }'),
         r"key data\.y\.colour: unknown key 'colour'\. Did you mean 'column'"),
        (_replace('alpha = {}', 'x = {}'), r"'x' is both a \[data\] name and a parameter"),
        (_replace('sigma = "sigma" }', 'sigma = [1] }'),
         r"key likelihood\.y\.sigma: expected an expression string or a number"),
        (_replace('[likelihood]\ny = { distribution = "Normal", mu = "alpha + x @ beta", '
                  'sigma = "sigma" }', '[likelihood]'),
         r"key likelihood: \[likelihood\] must name at least one"),
        (_replace('{ distribution = "Normal", ', '{ '), "missing key 'distribution'"),
        (_replace('distribution = "Normal"', 'distribution = "Flat"'), "Flat has no likelihood"),
        (LINEAR + '[priors]\nbetta = "Normal(0, 1)"\n',
         r"key priors\.betta: 'betta' is not a parameter\. Did you mean 'beta'"),
        (LINEAR + '[priors]\nbeta = "Normal(0, sd=1)"\n',
         r"key priors\.beta: Normal has no parameter 'sd'"),
        (LINEAR + '[priors]\nbeta = "Normal(0, __import__)"\n', r"key priors\.beta: unknown name"),
        ("[data\n", "invalid TOML"),
        ('[model]\nformula = "y ~ x"\n' + LINEAR.split("[data]")[1].join(["[data]", ""]),
         r"\[data\] cannot be combined with model\.formula"),
        ('[model]\nformula = "y ~ x"\nfamily = "gausian"\n',
         r"key model\.family: unknown family 'gausian'\. Did you mean 'gaussian'"),
        ('[model]\nformula = "y ~ x"\nlink = "logitt"\n', r"unknown link 'logitt'"),
        ('[model]\nformula = "y ~ np.log(x)"\n', r"function 'np\.log' is not allowed.*'log'"),
        ('[model]\nformula = "y ~ __import__(\'os\').getcwd()"\n', r"key model\.formula: "),
        ('[model]\nformula = "y ~ eval(x)"\n', "function 'eval' is not allowed in formulas"),
        ('[model]\nformula = "y ~ x ~ z"\n', "one '~'"),
        ('[model]\nformula = "y ~ x"\nfamily = "poisson"\ntrials = "n"\n',
         "trials is for family = 'binomial'"),
        (_replace('description = "toy"', 'family = "poisson"'),
         r"key model\.family: family only applies with model\.formula"),
        ('[model]\nname = "m"\n', r"missing section \[data\]"),
    ],
)
def test_validation_errors(text, match):
    with pytest.raises(ModelFileError, match=match):
        loads_model(text, name="m")


def test_error_names_the_file(tmp_path):
    path = tmp_path / "mymodel.toml"
    path.write_text(_replace('"alpha + x @ beta"', '"alpha + z @ beta"'))
    with pytest.raises(ModelFileError,
                       match=r"^model file 'mymodel\.toml', key likelihood\.y\.mu: unknown name"):
        load_model(path)


def test_unknown_bundled_name_lists_models():
    with pytest.raises(ModelFileError, match=r"unknown model: 'logistic_regresion'\. Did you mean "
                                             r"'logistic_regression'\?.*linear_regression"):
        load_model("logistic_regresion")
    with pytest.raises(ModelFileError, match="model file does not exist: 'nope/m.toml'"):
        load_model("nope/m.toml")


def test_list_models_and_bundled_names():
    names = dict(mle_ppl.list_models())
    assert "linear_regression" in names and "exponential_decay" in names
    assert all(desc for desc in names.values())
    spec = load_model("linear_regression")
    assert spec.path.name == "linear_regression.toml" and spec.default_data() is not None


# ------------------------------------------------------------------ Python model files
PY_OK = '''
"""A normal mean."""
import pymc as pm
DATA = "d.csv"

def build(data):
    with pm.Model() as m:
        mu = pm.Flat("mu")
        pm.Normal("y", mu, 1.0, observed=data["y"].to_numpy())
    return m
'''


def test_python_model_file(tmp_path):
    (tmp_path / "m.py").write_text(PY_OK)
    pd.DataFrame({"y": [1.0, 2.0, 6.0]}).to_csv(tmp_path / "d.csv", index=False)
    spec = load_model(tmp_path / "m.py")
    assert spec.description == "A normal mean." and spec.kind == "python"
    fit = mle_ppl.fit(spec)
    assert fit.estimates["mu"] == pytest.approx(3.0, rel=1e-9)  # closed form: the sample mean
    with pytest.raises(ModelFileError, match="build\\(data\\) takes no priors"):
        spec.build_model({"y": [1.0]}, priors={"mu": "Normal(0, 1)"})
    with pytest.raises(DataError, match="asked for column 'y'.*Did you mean 'Y'"):
        spec.model_for({"Y": [1.0, 2.0]})


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("x = 1\n", r"must define build\(data\)"),
        ("def build(data:\n", "syntax error at line 1"),
        ("raise RuntimeError('boom')\n", "failed to load: RuntimeError: boom"),
        ("def build(data):\n    return 3\n", "must return a pymc.Model, got int"),
        ("def build(data):\n    return 1 / 0\n", "raised ZeroDivisionError"),
        ("PRIORS = {'a': 'Normall(0, 1)'}\ndef build(data):\n    pass\n", "Did you mean 'Normal'"),
    ],
)
def test_python_model_file_errors(tmp_path, source, match):
    path = tmp_path / "bad.py"
    path.write_text(source)
    with pytest.raises(ModelFileError, match=match):
        spec = load_model(path)
        spec.model_for({"y": [1.0]})


# ------------------------------------------------------------------ compile once
def test_refit_same_structure_does_not_recompile():
    spec = loads_model(LINEAR, name="lin")
    d1, d2 = _linear_data(40, 1), _linear_data(73, 2)
    fit1 = mle_ppl.fit(spec, data=d1)
    count = likelihood_module.COMPILE_COUNT
    model1, _ = spec.model_for(d1)
    fit2 = mle_ppl.fit(spec, data=d2)
    model2, _ = spec.model_for(d2)
    assert likelihood_module.COMPILE_COUNT == count, "a refit on new data recompiled"
    assert model1 is model2
    assert fit2.n_obs == 73
    # Closed form: OLS coefficients and sigma^2 = RSS/n; the Newton optimum agrees to ~1e-8
    # relative (gradient tolerance 1e-10 on a well-conditioned problem).
    for fit, d in ((fit1, d1), (fit2, d2)):
        coef, sigma = _ols(d)
        np.testing.assert_allclose(fit.theta[:3], coef, rtol=1e-7)
        assert fit.estimates["sigma"] == pytest.approx(sigma, rel=1e-7)
    # a different structure (another column set) builds a new model
    d3 = d1.rename(columns={"x2": "x3"})
    spec2 = loads_model(_replace('["x1", "x2"]', '["x1", "x3"]'), name="lin2")
    assert spec2.model_for(d3)[0] is not model1


# ------------------------------------------------------------------ categorical outcome
MULTI = """
[model]
name = "multi"
[data]
k = { column = "kind", reference = "b" }
x = ["x1", "x2"]
[parameters]
alpha = { dims = "k" }
beta = { dims = ["x", "k"] }
[likelihood]
k = { distribution = "Categorical", p = "softmax(alpha + x @ beta)" }
"""


def test_multinomial_reference_level_vs_statsmodels():
    rng = np.random.default_rng(3)
    n = 300
    X = rng.normal(size=(n, 2))
    eta = np.column_stack([np.zeros(n), 0.5 + X @ [1.0, -1.0], -0.3 + X @ [-0.5, 0.8]])
    p = np.exp(eta) / np.exp(eta).sum(1, keepdims=True)
    codes = np.array([rng.choice(3, p=row) for row in p])
    labels = np.array(["b", "a", "c"])[codes]  # reference 'b' is code 0 of the simulation
    df = pd.DataFrame({"x1": X[:, 0], "x2": X[:, 1], "kind": labels})
    fit = mle_ppl.fit(loads_model(MULTI, name="multi"), data=df)
    assert list(fit.labels) == ["alpha[a]", "alpha[c]", "beta[x1, a]", "beta[x1, c]",
                                "beta[x2, a]", "beta[x2, c]"]
    # statsmodels MNLogit with the reference category as code 0
    y = pd.Categorical(labels, categories=["b", "a", "c"]).codes
    ref = sm.MNLogit(y, sm.add_constant(X)).fit(disp=0, method="newton", tol=1e-12)
    sm_params = ref.params  # rows: const, x1, x2; columns: a, c
    mine = np.array([[fit.estimates[f"alpha[{c}]"] for c in "ac"],
                     [fit.estimates[f"beta[x1, {c}]"] for c in "ac"],
                     [fit.estimates[f"beta[x2, {c}]"] for c in "ac"]])
    # Both are Newton optima of the same concave log-likelihood: agree to ~1e-6 relative.
    np.testing.assert_allclose(mine, sm_params, rtol=1e-6, atol=1e-8)
    assert fit.loglik == pytest.approx(ref.llf, rel=1e-10)
    se = np.array([[fit.std_errors[f"alpha[{c}]"] for c in "ac"],
                   [fit.std_errors[f"beta[x1, {c}]"] for c in "ac"],
                   [fit.std_errors[f"beta[x2, {c}]"] for c in "ac"]])
    np.testing.assert_allclose(se, ref.bse, rtol=1e-5)  # observed information, both


# ------------------------------------------------------------------ formulas
def test_formula_poisson_offset_vs_statsmodels():
    rng = np.random.default_rng(4)
    n = 200
    df = pd.DataFrame({"x": rng.normal(size=n), "g": rng.choice(["u", "v", "w"], size=n),
                       "t": rng.uniform(1, 3, size=n)})
    mu = df.t * np.exp(0.2 + 0.5 * df.x + (df.g == "v") * 0.4)
    df["y"] = rng.poisson(mu)
    spec = loads_model('[model]\nformula = "y ~ x + C(g)"\nfamily = "poisson"\n'
                       'exposure = "t"\n', name="pois")
    fit = mle_ppl.fit(spec, data=df)
    assert list(fit.labels) == ["beta[Intercept]", "beta[x]", "beta[C(g)[T.v]]",
                                "beta[C(g)[T.w]]"]
    X = np.column_stack([np.ones(n), df.x, df.g == "v", df.g == "w"]).astype(float)
    ref = sm.GLM(df.y, X, family=sm.families.Poisson(), exposure=df.t).fit(tol=1e-12)
    # IRLS and Newton on the same concave likelihood: ~1e-7 relative.
    np.testing.assert_allclose(fit.theta, ref.params, rtol=1e-6)
    np.testing.assert_allclose(fit.std_errors, ref.bse, rtol=1e-5)  # canonical link: E = O
    assert fit.loglik == pytest.approx(ref.llf, rel=1e-10)
    # offset = log(t) is the same model
    df["lt"] = np.log(df.t)
    spec2 = loads_model('[model]\nformula = "y ~ x + C(g)"\nfamily = "poisson"\n'
                        'offset = "lt"\n', name="pois2")
    np.testing.assert_allclose(mle_ppl.fit(spec2, data=df).theta, fit.theta, rtol=1e-8)
    df.loc[5, "t"] = 0.0
    with pytest.raises(DataError, match=r"key model\.exposure: column 't' must be positive"):
        spec.model_for(df)
    with pytest.raises(DataError, match=r"column 'xx' of the formula is not in the data.*'x'"):
        loads_model('[model]\nformula = "y ~ xx"\n', name="f").model_for(df)


def test_formula_gaussian_is_ols():
    df = _linear_data(50, 5)
    fit = mle_ppl.fit(loads_model('[model]\nformula = "y ~ x1 + x2"\n', name="g"), data=df)
    coef, sigma = _ols(df)
    np.testing.assert_allclose(fit.theta[:3], coef, rtol=1e-7)  # closed form, as above
    assert fit.estimates["sigma"] == pytest.approx(sigma, rel=1e-7)


# ------------------------------------------------------------------ priors
def test_priors_table_and_build_model():
    spec = loads_model(LINEAR + '[priors]\nbeta = "Normal(0, 2.5)"\nsigma = "HalfNormal(1)"\n',
                       name="lin")
    assert spec.priors == {"beta": "Normal(0, 2.5)", "sigma": "HalfNormal(1)"}
    d = _linear_data(20, 6)
    flat = spec.build_model(d)
    ops = {rv.name: type(rv.owner.op).__name__ for rv in flat.free_RVs}
    assert ops == {"alpha": "FlatRV", "beta": "FlatRV", "sigma": "HalfFlatRV"}
    m = spec.build_model(d, priors=spec.priors)
    ops = {rv.name: type(rv.owner.op).__name__ for rv in m.free_RVs}
    assert ops == {"alpha": "FlatRV", "beta": "NormalRV", "sigma": "HalfNormalRV"}
    assert m.named_vars_to_dims["beta"] == ("x",)
    with pytest.raises(ModelFileError, match="unknown parameter 'gamma'"):
        spec.build_model(d, priors={"gamma": "Normal(0, 1)"})


def test_make_prior_truncates_only_when_needed():
    with pm.Model() as m:
        a = make_prior("a", "Normal(0, 1)", lower=0)
        b = make_prior("b", "HalfNormal(1)", lower=0)
        make_prior("c", "Normal(0, 2.5)", dims=None, shape=3)
    # Normal truncated at 0 is twice the normal density on (0, inf)
    from scipy import stats

    lp = float(pm.logp(a, 0.7).eval(mode="FAST_COMPILE"))
    assert lp == pytest.approx(np.log(2 * stats.norm.pdf(0.7)), rel=1e-10)
    assert type(b.owner.op).__name__ == "HalfNormalRV"
    assert m["c"].type.shape == (3,)
    with pytest.raises(ModelFileError, match="Did you mean 'Normal'"):
        with pm.Model():
            make_prior("d", "normal(0, 1)")


# ------------------------------------------------------------------ fuzzing
_KEYS = st.sampled_from(["model", "data", "parameters", "likelihood", "priors", "name",
                         "description", "formula", "family", "link", "y", "x", "alpha", "beta",
                         "sigma", "distribution", "mu", "dims", "lower", "upper", "shape",
                         "start", "column", "columns", "levels", "reference", "observed",
                         "categorical", "trials", "offset", "exposure", "p", "logit_p", "n"])
_STRINGS = st.sampled_from(["y", "x1", "x2", "g", "x", "Normal", "Bernoulli", "Poisson",
                            "Categorical", "alpha + x @ beta", "sigma", "exp(alpha)",
                            "softmax(alpha + x @ beta)", "alpha[g]", "y ~ x1 + C(g)",
                            "Normal(0, 1)", "HalfNormal(1)", "gaussian", "poisson", "binomial",
                            "log", "__import__('os')", "x.T", "a", ""])
_VALUES = st.recursive(
    st.one_of(_STRINGS, st.integers(-3, 5), st.floats(allow_nan=True), st.booleans()),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(_KEYS, inner, max_size=4)),
    max_leaves=12)
_DOCS = st.dictionaries(_KEYS, st.dictionaries(_KEYS, _VALUES, max_size=4), max_size=5)

_FUZZ_DATA = pd.DataFrame({"y": [0, 1, 1, 0, 1], "x1": [0.1, 0.5, -0.3, 1.2, 0.0],
                           "x2": [1.0, 2.0, 0.5, 0.2, 0.3], "g": list("ababa")})


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(_DOCS)
def test_fuzz_loader_gives_a_spec_or_a_clean_error(doc):
    try:
        spec = spec_from_toml(doc, file="fuzz.toml")
    except ModelFileError:
        return
    try:
        model, _ = spec.model_for(_FUZZ_DATA)
    except MLEError:
        return
    assert isinstance(model, pm.Model)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_raw_toml_text(text):
    try:
        loads_model(text, name="fuzz")
    except ModelFileError:
        pass


def test_fuzz_found_examples_stay_fixed():
    """Valid documents built by hand from the fuzz vocabulary do load and build."""
    doc = {"data": {"y": "y", "g": {"column": "g", "reference": "a"}},
           "parameters": {"alpha": {"dims": "g"}, "c": {}},
           "likelihood": {"y": {"distribution": "Bernoulli", "logit_p": "c + alpha[g]"}}}
    model, _ = spec_from_toml(doc, file="f.toml").model_for(_FUZZ_DATA)
    assert [rv.name for rv in model.free_RVs] == ["alpha", "c"]
    text = textwrap.dedent(LINEAR)
    assert loads_model(text).name == "lin"


@pytest.mark.parametrize("family", ["gaussian", "bernoulli", "binomial", "poisson",
                                    "negative_binomial", "gamma", "student_t"])
def test_every_family_builds_its_distribution(family):
    from mle_ppl._src.model.formula import FAMILIES

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=12), "y": rng.integers(0, 2, size=12) + 1,
                       "n": np.full(12, 3)})
    trials = 'trials = "n"\n' if family == "binomial" else ""
    spec = loads_model(f'[model]\nformula = "y ~ x"\nfamily = "{family}"\n{trials}', name="f")
    model, _ = spec.model_for(df)
    op = type(model.observed_RVs[0].owner.op).__name__
    dist = FAMILIES[family].distribution
    assert op == {"NegativeBinomial": "NegBinomialRV"}.get(dist, dist + "RV")
    assert [rv.name for rv in model.free_RVs] == ["beta", *FAMILIES[family].extra]
    assert model.coords["coef"] == ("Intercept", "x")
