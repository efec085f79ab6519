"""The expression whitelist: what parses, what is refused, and what the graphs compute.

Values are checked against NumPy evaluations of the same formulas (exact up to float64 rounding,
so ``rtol=1e-12``). The fuzz tests feed arbitrary text: the only outcomes allowed are an
:class:`Expression` or a :class:`ModelFileError`; nothing is ever executed.
"""

import os

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import expit, softmax

from mle_ppl import ModelFileError
from mle_ppl._src.model.expressions import (
    FUNCTIONS,
    Expression,
    distributions,
    get_distribution,
    parse_distribution_call,
    parse_expression,
)

KNOWN = {"alpha": "parameter", "beta": "parameter", "x": "data", "g": "data"}


def _eval(text, env, index_names=frozenset()):
    e = parse_expression(text, known={k: "x" for k in env})
    out = e.to_tensor({k: pt.as_tensor_variable(v) for k, v in env.items()},
                      index_names=index_names)
    # FAST_COMPILE: the Python implementations, no C compilation (these graphs are tiny)
    return np.asarray(pytensor.function([], pt.as_tensor_variable(out), mode="FAST_COMPILE")())


def test_names_exclude_functions():
    e = parse_expression("exp(alpha + x @ beta)", known=KNOWN)
    assert e.names == {"alpha", "x", "beta"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a + b * c - d / 2", lambda a, b, c, d, M, v: a + b * c - d / 2),
        ("-a ** 2 + (b - c) ** 3", lambda a, b, c, d, M, v: -a**2 + (b - c) ** 3),
        ("M @ v + a", lambda a, b, c, d, M, v: M @ v + a),
        ("dot(M, v)", lambda a, b, c, d, M, v: M @ v),
        ("exp(a) + log(b) + log1p(c) + expm1(d)",
         lambda a, b, c, d, M, v: np.exp(a) + np.log(b) + np.log1p(c) + np.expm1(d)),
        ("sqrt(b) + abs(-c) + square(d)", lambda a, b, c, d, M, v: np.sqrt(b) + c + d**2),
        ("sigmoid(M @ v)", lambda a, b, c, d, M, v: expit(M @ v)),
        ("logit(sigmoid(a))", lambda a, b, c, d, M, v: a),
        ("softplus(a)", lambda a, b, c, d, M, v: np.log1p(np.exp(a))),
        ("softmax(M)", lambda a, b, c, d, M, v: softmax(M, axis=-1)),
        ("log_softmax(M)", lambda a, b, c, d, M, v: np.log(softmax(M, axis=-1))),
        ("sum(M)", lambda a, b, c, d, M, v: M.sum()),
        ("sum(M, 0)", lambda a, b, c, d, M, v: M.sum(axis=0)),
        ("mean(M, -1)", lambda a, b, c, d, M, v: M.mean(axis=-1)),
        ("M[:, 1] + M[0, -1]", lambda a, b, c, d, M, v: M[:, 1] + M[0, -1]),
        ("maximum(a, b) - minimum(c, d)", lambda a, b, c, d, M, v: max(a, b) - min(c, d)),
        ("1e-3 * a + 2", lambda a, b, c, d, M, v: 1e-3 * a + 2),
    ],
)
def test_values_match_numpy(text, expected):
    env = {"a": 0.3, "b": 1.7, "c": 0.4, "d": -0.2,
           "M": np.array([[0.1, -0.5, 2.0], [1.5, 0.2, -0.7]]), "v": np.array([1.0, -2.0, 0.5])}
    np.testing.assert_allclose(_eval(text, env), expected(**env), rtol=1e-12, atol=1e-14)


def test_index_by_categorical_codes():
    env = {"alpha": np.array([10.0, 20.0, 30.0]), "g": np.array([2, 0, 0, 1])}
    np.testing.assert_array_equal(_eval("alpha[g]", env, frozenset({"g"})), [30, 10, 10, 20])
    with pytest.raises(ModelFileError, match="only categorical data"):
        _eval("alpha[g]", env)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("x.T", "attribute access"),
        ("__import__('os').system('echo hi')", "only named functions"),
        ("__import__('os')", "unknown function '__import__'"),
        ("open('/etc/passwd')", "unknown function 'open'"),
        ("eval('1')", "unknown function 'eval'"),
        ("(lambda: 1)()", "lambda"),
        ("[a for a in x]", "comprehensions"),
        ("'abc'", "only numbers"),
        ("x if alpha else beta", "if/else"),
        ("alpha < beta", "comparisons"),
        ("alpha and beta", "and/or"),
        ("exp(x=alpha)", "keyword arguments"),
        ("exp(alpha, beta)", r"exp\(\) takes 1 argument"),
        ("sum(x, alpha)", "axis of sum"),
        ("alpha[1.5]", "an index must be"),
        ("alpha[beta]", None),  # parses (a name index); refused when built: not categorical
        ("alpha // beta", "operator FloorDiv"),
        ("alpha % 2", "operator Mod"),
        ("(y := 2)", "assignment"),
        ("alpha +", "invalid expression"),
        ("", "empty"),
        ("f'{alpha}'", "f-strings"),
        ("True + alpha", "only numbers"),
        ("exp", "is a function; call it"),
        ("alpa + beta", "unknown name 'alpa'.*Did you mean 'alpha'"),
        ("expp(alpha)", "unknown function 'expp'.*Did you mean 'exp'"),
        ("x" * 5000, "characters"),
        ("+".join(["alpha"] * 400), "too large"),
    ],
)
def test_forbidden_constructs(text, match):
    if match is None:
        parse_expression(text, known=KNOWN)
        return
    with pytest.raises(ModelFileError, match=match):
        parse_expression(text, known=KNOWN, where="model file 'm.toml', key likelihood.y.mu")


def test_error_names_key_path():
    with pytest.raises(ModelFileError, match=r"model file 'm.toml', key likelihood\.y\.mu: "):
        parse_expression("alpa", known=KNOWN, where="model file 'm.toml', key likelihood.y.mu")


def test_deep_nesting_is_a_clean_error():
    with pytest.raises(ModelFileError):
        parse_expression("(" * 300 + "alpha" + ")" * 300, known=KNOWN)
    with pytest.raises(ModelFileError):
        parse_expression("-" * 100_000 + "alpha", known=KNOWN)


def test_build_errors_are_model_file_errors():
    e = parse_expression("M @ v", known={"M": "d", "v": "d"}, where="key likelihood.y.mu")
    with pytest.raises(ModelFileError, match=r"likelihood\.y\.mu: cannot build"):
        e.to_tensor({"M": pt.as_tensor_variable(np.ones((2, 3))),
                     "v": pt.as_tensor_variable(np.ones(4))})
    with pytest.raises(ModelFileError, match="@ needs vectors or matrices"):
        _eval("a @ b", {"a": 1.0, "b": 2.0})


def test_registry_is_the_source_of_error_lists():
    with pytest.raises(ModelFileError) as info:
        parse_expression("nope(alpha)", known=KNOWN)
    for name in FUNCTIONS:
        assert name in str(info.value)


def test_distribution_registry():
    reg = distributions()
    for name in ("Normal", "StudentT", "Poisson", "NegativeBinomial", "Bernoulli", "Binomial",
                 "Categorical", "Gamma"):
        assert name in reg
    assert "Truncated" not in reg and "Mixture" not in reg
    assert reg["Normal"].params[:2] == ("mu", "sigma")
    assert reg["Poisson"].discrete and not reg["Normal"].discrete
    with pytest.raises(ModelFileError, match="Did you mean 'Normal'"):
        get_distribution("normal")
    with pytest.raises(ModelFileError, match="Did you mean 'StudentT'"):
        get_distribution("StudentTT")


def test_parse_prior_values():
    call = parse_distribution_call("Normal(0, 2.5)")
    args, kwargs = call.evaluate()
    assert call.info.name == "Normal"
    assert [float(a.data) for a in args] == [0.0, 2.5]
    call = parse_distribution_call("StudentT(nu=3, mu=-1, sigma=1/2)")
    _, kwargs = call.evaluate()
    values = {k: float(pytensor.function([], v, mode="FAST_COMPILE")()) for k, v in kwargs.items()}
    assert values == {"nu": 3, "mu": -1, "sigma": 0.5}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("Normall(0, 1)", "Did you mean 'Normal'"),
        ("Normal(0, sd=1)", "Normal has no parameter 'sd'"),
        ("Normal(0, tau)", "unknown name 'tau'"),
        ("Normal(0, 1, 2, 3)", "at most 3 positional"),
        ("Normal(0, mu=1)", "given twice"),
        ("Normal", "expected a distribution call"),
        ("os.system('x')", "expected a distribution call"),
        ("Normal(**d)", r"\*\*kwargs"),
    ],
)
def test_prior_errors(text, match):
    with pytest.raises(ModelFileError, match=match):
        parse_distribution_call(text)


def test_payload_is_never_executed(tmp_path):
    target = tmp_path / "pwned"
    payloads = [
        f"__import__('os').system('touch {target}')",
        f"open('{target}', 'w').write('x')",
        f"[c for c in ().__class__.__base__.__subclasses__()][0]('{target}')",
        f"exp(__import__('pathlib').Path('{target}').touch())",
    ]
    for text in payloads:
        with pytest.raises(ModelFileError):
            parse_expression(text, known=KNOWN)
        with pytest.raises(ModelFileError):
            parse_distribution_call(text)
    assert not os.path.exists(target)


_TOKENS = st.sampled_from(
    ["alpha", "beta", "x", "g", "exp", "log", "sum", "softmax", "__import__", "os", "open",
     "lambda", "for", "in", "if", "else", "(", ")", "[", "]", ",", ".", ":", "+", "-", "*",
     "/", "**", "@", "//", "%", "<", "==", "'", '"', "0", "1", "2.5", "1e400", "-1", " ",
     "\\", "\n", "\x00", "=", ":=", "{", "}", "yield", "await", "not", "~", "j", "9" * 30])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_TOKENS, max_size=25).map("".join))
def test_fuzz_token_soup(text):
    env = {"alpha": pt.as_tensor_variable(0.5), "beta": pt.as_tensor_variable(np.ones(3)),
           "x": pt.as_tensor_variable(np.ones((4, 3))),
           "g": pt.as_tensor_variable(np.array([0, 1, 2, 0]))}
    try:
        e = parse_expression(text, known=KNOWN)
    except ModelFileError:
        return
    assert isinstance(e, Expression)
    try:
        e.to_tensor(env, index_names=frozenset({"g"}))
    except ModelFileError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_fuzz_any_text(text):
    for parse in (lambda t: parse_expression(t, known=KNOWN), parse_distribution_call):
        try:
            parse(text)
        except ModelFileError:
            pass
