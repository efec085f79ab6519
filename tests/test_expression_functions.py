"""Item 7 of issue 13: inverse trigonometric/hyperbolic functions, erfc and pi in model files, and
a transformed response (log y) modelled as a LogNormal on y."""

import numpy as np
import pandas as pd
import pytest
from scipy import special

import mle_ppl
from mle_ppl._src.model.expressions import FUNCTIONS, parse_expression

X = np.array([-0.9, -0.3, 0.0, 0.4, 0.8])
# reference implementations: NumPy / SciPy, elementwise on the same points
REF = {"tan": np.tan, "arcsin": np.arcsin, "arccos": np.arccos, "arctan": np.arctan,
       "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh, "erf": special.erf,
       "erfc": special.erfc, "sin": np.sin, "cos": np.cos}


def _value(t):
    return t.eval() if hasattr(t, "eval") else np.asarray(t)  # numbers stay numbers


@pytest.mark.parametrize("name", sorted(REF))
def test_function_values(name):
    assert name in FUNCTIONS
    e = parse_expression(f"{name}(x) + 0 * pi", known={"x": "data"})
    got = _value(e.to_tensor({"x": X}))
    np.testing.assert_allclose(got, REF[name](X), rtol=1e-14, atol=1e-15)  # float64 rounding


def test_pi_is_a_constant_unless_declared():
    e = parse_expression("2 * pi * x", known={"x": "data"})
    assert e.names == {"x"}
    np.testing.assert_allclose(_value(e.to_tensor({"x": np.ones(2)})), 2 * np.pi)
    # a data column named pi wins
    e = parse_expression("2 * pi", known={"pi": "data"})
    assert e.names == {"pi"}
    np.testing.assert_allclose(_value(e.to_tensor({"pi": np.full(2, 3.0)})), 6.0)


def test_arctan_model_file_fits():
    # a published-style model with arctan and pi: y = b1 + b2 * arctan(x) / pi + noise;
    # linear in (b1, b2), so the MLE is least squares on the column arctan(x)/pi
    rng = np.random.default_rng(7)
    x = np.linspace(-5, 5, 40)
    y = 1.0 + 3.0 * np.arctan(x) / np.pi + rng.normal(0, 0.1, 40)
    spec = mle_ppl.loads_model('''
[data]
x = "x"
y = "y"
[parameters]
b1 = {}
b2 = {}
sigma = { lower = 0 }
[likelihood]
y = { distribution = "Normal", mu = "b1 + b2 * arctan(x) / pi", sigma = "sigma" }
''', name="arctan")
    fit = mle_ppl.fit(spec, data=pd.DataFrame({"x": x, "y": y}))
    A = np.column_stack([np.ones_like(x), np.arctan(x) / np.pi])
    coef = np.linalg.lstsq(A, y, rcond=None)[0]
    np.testing.assert_allclose(fit.theta[:2], coef, rtol=1e-9)  # well-conditioned design


def test_log_response_is_a_lognormal():
    # A Normal on log y is a LogNormal on y: the same estimates, and log-likelihoods that
    # differ by exactly sum(log y) (the Jacobian of y -> log y). So AIC of the LogNormal is
    # comparable with other models of y; AIC of a Normal fitted to a log(y) column is not.
    rng = np.random.default_rng(8)
    x = rng.normal(size=60)
    y = np.exp(0.5 + 0.8 * x + rng.normal(0, 0.3, 60))
    body = '''
[data]
x = "x"
y = "{col}"
[parameters]
a = {{}}
b = {{}}
sigma = {{ lower = 0 }}
[likelihood]
y = {{ distribution = "{dist}", mu = "a + b * x", sigma = "sigma" }}
'''
    df = pd.DataFrame({"x": x, "y": y, "log_y": np.log(y)})
    lognormal = mle_ppl.fit(mle_ppl.loads_model(body.format(col="y", dist="LogNormal"),
                                                name="ln"), data=df)
    normal_log = mle_ppl.fit(mle_ppl.loads_model(body.format(col="log_y", dist="Normal"),
                                                 name="nl"), data=df)
    np.testing.assert_allclose(lognormal.theta, normal_log.theta, rtol=1e-9)
    np.testing.assert_allclose(lognormal.loglik, normal_log.loglik - np.sum(np.log(y)),
                               rtol=1e-12)
    # closed form: least squares on log y
    A = np.column_stack([np.ones_like(x), x])
    coef, rss, *_ = np.linalg.lstsq(A, np.log(y), rcond=None)
    np.testing.assert_allclose(lognormal.theta[:2], coef, rtol=1e-9)
    np.testing.assert_allclose(lognormal.estimates["sigma"], np.sqrt(rss[0] / 60), rtol=1e-9)
