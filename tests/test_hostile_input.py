"""Hostile input (issue 12): every class of bad input gets a clean, located error and leaves
nothing behind.

One test per class, parametrised over several cases of the class:

- expressions and formulas that would never finish (Python's unbounded integers evaluated by
  formulaic, formula expansions with billions of products) are refused quickly, naming the key;
- command-line mistakes exit 2 with one line on stderr, no traceback, nothing on stdout and no
  file written (invalid options, unwritable ``--out``, a ``--cluster`` that is not a column);
- a column named twice in a data file is refused, naming the column;
- a name typed with the micro sign (µ, U+00B5) is the same identifier as μ, as in Python;
- a failed ``--out`` write (full disk, netCDF error) reports the user's path and leaves no file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mle_ppl
from mle_ppl import DataError, MLEError, ModelFileError
from mle_ppl._src.cli.main import main
from mle_ppl._src.model.data import read_table
from mle_ppl._src.model.expressions import parse_distribution_call, parse_expression
from mle_ppl._src.model.library import loads_model


def _formula_model(rhs: str, family: str = "gaussian") -> str:
    return f'[model]\nformula = "y ~ {rhs}"\nfamily = "{family}"\n'


def _likelihood_model(mu: str) -> str:
    return textwrap.dedent(f"""
        [data]
        y = "y"
        x = ["x1", "x2"]
        [parameters]
        alpha = {{}}
        beta = {{ dims = "x" }}
        sigma = {{ lower = 0 }}
        [likelihood]
        y = {{ distribution = "Normal", mu = "{mu}", sigma = "sigma" }}
        """)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(12)
    n = 40
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    df = pd.DataFrame({"y": 1 + 2 * x1 - x2 + rng.normal(size=n), "x1": x1, "x2": x2,
                       "g": rng.choice(["a", "b", "c"], n)})
    df.to_csv(d / "d.csv", index=False)
    (d / "line.toml").write_text(_formula_model("x1 + x2"))
    return d


# ------------------------------------------------------------------ 1. nothing hangs
# Each case, evaluated by Python, would run for hours or exhaust memory (10**10**10 has ten
# billion digits; (x1 + ... )**20 enumerates 8**20 products in formulaic).
HANGING_FORMULAS = [
    "x1 + I(10**10**10)",
    "poly(x1, 9**9**9)",
    "poly(x1, 100000000)",
    "{x1 * 9**9**9}",
    "I(x1 + 2**2**2**2**2**2)",
    "I(x1 * (10**10)**(10**10))",
    "I(1 << 10**10)",
    "(x1 + x2)**10**10",
    "(x1 + x2 + g + x1:x2 + x1:g + x2:g + x1:x2:g + I(x1**2))**20",
    "x1 + I(x1 * 100000000000000000000000000000)",
]
HANGING_EXPRESSIONS = [
    "alpha + 10**10**10",
    "alpha + x @ beta * 9**9**9",
    "alpha + (10**300)**2",
    "alpha + 1e999",
    "alpha + " + "9" * 401,
]
HANGING_PRIORS = ["Normal(0, 10**10**10)", "Normal(0, " + "9" * 401 + ")"]


def test_no_expression_or_formula_hangs(data_dir):
    # run in a child process with a timeout: a regression must fail, not hang the suite
    cases = ([("formula", f, _formula_model(f)) for f in HANGING_FORMULAS]
             + [("expression", e, _likelihood_model(e)) for e in HANGING_EXPRESSIONS]
             + [("prior", p, p) for p in HANGING_PRIORS])
    script = textwrap.dedent("""
        import json, sys
        from mle_ppl._src.model.library import loads_model
        from mle_ppl._src.model.expressions import parse_distribution_call
        out = []
        for kind, text, source in json.load(sys.stdin):
            try:
                if kind == "prior":
                    parse_distribution_call(source, where="key priors.beta")
                else:
                    loads_model(source, name="m")
                out.append([kind, text, "no error", ""])
            except Exception as err:
                out.append([kind, text, type(err).__name__, str(err)])
        json.dump(out, sys.stdout)
        """)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(root), *filter(None, [os.environ.get("PYTHONPATH")])])}
    res = subprocess.run([sys.executable, "-c", script], input=json.dumps(cases),
                         capture_output=True, text=True, timeout=240, cwd=root, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads(res.stdout)
    assert len(results) == len(HANGING_FORMULAS) + len(HANGING_EXPRESSIONS) + len(HANGING_PRIORS)
    for kind, text, err_type, msg in results:
        assert err_type == "ModelFileError", (kind, text, err_type, msg)
        key = {"formula": "key model.formula", "expression": "key likelihood.y.mu",
               "prior": "key priors.beta"}[kind]
        assert key in msg, (text, msg)
        assert len(msg) < 600 and "\n" not in msg, msg


def test_hanging_formula_from_the_command_line(data_dir):
    (data_dir / "hang.toml").write_text(_formula_model("x1 + I(10**10**10)"))
    res = subprocess.run([sys.executable, "-m", "mle_ppl", "fit", str(data_dir / "hang.toml"),
                          "--data", str(data_dir / "d.csv")], capture_output=True, text=True,
                         timeout=240)
    assert res.returncode == 2 and res.stdout == ""
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "key model.formula" in res.stderr and "10 ** 10 ** 10" in res.stderr


@pytest.mark.parametrize("text", ["x ** 2 + 2**0.5", "exp(-(x / 3)**2)", "x * 1e300",
                                  "9007199254740992 * x", "x / (2**52)", "(1 + 1e-9)**1000"])
def test_sane_numbers_are_accepted(text):
    # the guard is about size, not style: ordinary constants and powers still parse
    parse_expression(text, known={"x": "data"}, where="key mu")
    parse_distribution_call("Normal(0, 2**0.5)")


def test_formula_guards_keep_ordinary_formulas(data_dir):
    # interactions, powers of sums and polynomials within the limits still fit
    spec = loads_model(_formula_model("(x1 + g)**2 + poly(x2, 3) + I(x1**2 * 1e-3)"),
                       name="ok")
    pm_model, _ = spec.model_for(pd.read_csv(data_dir / "d.csv"))
    # (x1 + g)**2: intercept, x1, g[b], g[c], x1:g[b], x1:g[c]; poly(x2, 3): 3 columns;
    # I(...): 1 column. 10 coefficients.
    assert len(pm_model.coords["coef"]) == 10


# ------------------------------------------------------------------ 2/6. CLI: one line, no file
def _cli(argv, capsys, cwd: Path):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        status = main([str(a) for a in argv])
    finally:
        os.chdir(old)
    out, err = capsys.readouterr()
    return status, out, err


def _assert_one_line_error(status, out, err, command, *fragments):
    assert status == 2, err
    assert out == "", out
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"mle-ppl {command}: error:"), err
    for f in fragments:
        assert f in err, (f, err)


CLI_MISTAKES = [
    (["fit", "linear_regression", "--starts", "3", "--seed", "-1"], ["--seed", "-1"]),
    (["fit", "linear_regression", "--seed", "9" * 30], ["--seed"]),
    (["fit", "linear_regression", "--seed", "9" * 5000], ["--seed", "5000 characters"]),
    (["fit", "linear_regression", "--starts", "0"], ["--starts"]),
    (["fit", "linear_regression", "--max-iter", "-3"], ["--max-iter"]),
    (["fit", "linear_regression", "--out", "fit.csv"], ["--out", ".nc"]),
    (["fit", "linear_regression", "--out", "nowhere/fit.nc"], ["nowhere"]),
    (["fit", "linear_regression", "--json", "--bogus"], ["--bogus"]),
    (["check", "linear_regression", "--learning-rate", "nan"], ["--learning-rate"]),
    (["check", "linear_regression", "--se-tol", "inf"], ["--se-tol"]),
    (["sample", "linear_regression", "--draws", "-5"], ["--draws"]),
    (["sample", "linear_regression", "--chains", "0"], ["--chains"]),
    (["sample", "linear_regression", "--target-accept", "1.5"], ["--target-accept"]),
    (["sample", "linear_regression", "--seed", "-1"], ["--seed"]),
    (["compare", "linear_regression", "--level", "nan"], ["--level"]),
    (["compare", "linear_regression", "--laplace-draws", "-1"], ["--laplace-draws"]),
    (["demo", "--max-iter", "0"], ["--max-iter"]),
    # upper limits: a typo must not become a run that never ends
    (["fit", "linear_regression", "--starts", "1000000000"], ["--starts", "at most 10,000"]),
    (["fit", "linear_regression", "--max-iter", "99999999999"], ["--max-iter", "at most"]),
    (["sample", "linear_regression", "--draws", "100000000000"], ["--draws", "at most"]),
    (["sample", "linear_regression", "--chains", "100000"], ["--chains", "at most"]),
    (["fit", "linear_regression", "--memory-budget", "1e999G"], ["--memory-budget"]),
    (["fit", "linear_regression", "--memory-budget", "9" * 500 + "G"], ["--memory-budget"]),
    (["fit", "linear_regression", "--memory-budget", "abc"], ["--memory-budget", "'abc'"]),
]


@pytest.mark.parametrize("argv, fragments", CLI_MISTAKES,
                         ids=[" ".join(a)[:60] for a, _ in CLI_MISTAKES])
def test_cli_option_mistakes_are_one_line(argv, fragments, capsys, tmp_path):
    status, out, err = _cli(argv, capsys, tmp_path)
    _assert_one_line_error(status, out, err, argv[0], *fragments)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("folder", ["/proc", "/sys"])
def test_out_on_a_filesystem_that_refuses_writes(folder, capsys, tmp_path):
    if not Path(folder).is_dir():
        pytest.skip(f"{folder} does not exist on this system")
    path = f"{folder}/mle_ppl_fit.nc"
    status, out, err = _cli(["fit", "linear_regression", "--out", path], capsys, tmp_path)
    # refused before the fit, naming the user's path (not an internal temporary one)
    _assert_one_line_error(status, out, err, "fit", f"--out {path!r}", "cannot write")
    assert ".mle-ppl-probe" not in err and not Path(path).exists()


@pytest.mark.parametrize("exc", [
    OSError(28, "No space left on device"),
    RuntimeError("NetCDF: HDF error"),
])
def test_failed_out_write_after_the_fit(exc, capsys, tmp_path, monkeypatch):
    # a full disk shows up only while writing, after the fit: exit 2, one line with the user's
    # path and the reason, nothing printed, and no file (not even a temporary one) left behind
    import xarray as xr

    def refuse(self, target, *args, **kwargs):
        Path(target).write_bytes(b"partial")  # a half-written file that must not survive
        raise exc

    monkeypatch.setattr(xr.DataTree, "to_netcdf", refuse)
    status, out, err = _cli(["fit", "linear_regression", "--out", "fit.nc"], capsys, tmp_path)
    _assert_one_line_error(status, out, err, "fit", "--out 'fit.nc'",
                           exc.strerror if isinstance(exc, OSError) else str(exc))
    assert list(tmp_path.iterdir()) == []


def test_cluster_not_a_column_writes_nothing(capsys, tmp_path):
    status, out, err = _cli(["fit", "logistic_regression", "--cov", "cluster", "--cluster",
                             "nope", "--out", "fit.nc"], capsys, tmp_path)
    _assert_one_line_error(status, out, err, "fit", "--cluster 'nope'")
    assert "groups=" not in err  # the command line's words, not the Python API's
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ 4. a column named twice
@pytest.mark.parametrize("fmt", ["csv", "parquet", "dataframe", "mapping"])
def test_column_named_twice_is_refused(fmt, tmp_path, capsys, data_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {"y": [1.0, 2.0, 3.5], "x1": [0.5, 1.5, 2.0], "x2": [3.0, 1.0, 2.0],
            "x1_": [9.0, 9.0, 9.0]}
    if fmt == "csv":
        data = tmp_path / "d.csv"
        data.write_text("y,x1,x2,x1\n1,0.5,3,9\n2,1.5,1,9\n3.5,2,2,9\n")
    elif fmt == "parquet":
        data = tmp_path / "d.parquet"
        pq.write_table(pa.table(list(cols.values()), names=["y", "x1", "x2", "x1"]), data)
    elif fmt == "dataframe":
        data = pd.DataFrame(cols).rename(columns={"x1_": "x1"})
    else:
        data = {"y": cols["y"], "x1": cols["x1"], 1: cols["x2"], "1": cols["x1_"]}
    with pytest.raises(DataError, match="twice") as info:
        read_table(data)
    assert ("'1'" if fmt == "mapping" else "'x1'") in str(info.value)
    if fmt in ("csv", "parquet"):
        status, out, err = _cli(["fit", data_dir / "line.toml", "--data", data], capsys,
                                tmp_path)
        _assert_one_line_error(status, out, err, "fit", "'x1' twice", str(data))


# ------------------------------------------------------------------ 5. µ is μ
MICRO, MU = "\u00b5", "\u03bc"


@pytest.mark.parametrize("where", ["expression", "formula column", "formula I()", "column"])
def test_micro_sign_matches_mu(where, data_dir):
    df = pd.read_csv(data_dir / "d.csv")
    if where == "expression":
        # a name declared with one spelling and used with the other
        e = parse_expression(f"{MICRO} + x", known={MU: "parameter", "x": "data"})
        assert MU in e.names
        e = parse_expression(f"{MU} + x", known={MICRO: "parameter", "x": "data"})
        assert MU in e.names
        return
    if where == "column":
        spec = loads_model(_likelihood_model("alpha + x @ beta").replace('"x1"', f'"{MU}"'),
                           name="m")
        pm_model, _ = spec.model_for(df.rename(columns={"x1": MICRO}))
        assert list(pm_model.coords["x"]) == [MU, "x2"]
        return
    rhs = f"{MU} + x2" if where == "formula column" else f"I({MU}**2) + x2"
    spec = loads_model(_formula_model(rhs), name="m")
    pm_model, _ = spec.model_for(df.rename(columns={"x1": MICRO}))
    assert len(pm_model.coords["coef"]) == 3


@pytest.mark.parametrize("spelling", [MICRO, MU])
def test_two_columns_that_are_one_identifier_are_refused(spelling, data_dir):
    # a formula is read as Python, where µ and μ are one name: two such columns are ambiguous
    df = pd.read_csv(data_dir / "d.csv").rename(columns={"x1": MICRO, "x2": MU})
    spec = loads_model(_formula_model(f"I({spelling}**2)"), name="m")
    with pytest.raises(DataError, match="same name"):
        spec.model_for(df)


# ------------------------------------------------------------------ 2. absurd numbers and nesting
BIG = "9" * 401


@pytest.mark.parametrize("body, key", [
    (f'[data]\ny = "y"\n[parameters]\nmu = {{ lower = -{BIG} }}\nsigma = {{ lower = 0 }}\n'
     '[likelihood]\ny = { distribution = "Normal", mu = "mu", sigma = "sigma" }\n',
     "key parameters.mu.lower"),
    (f'[data]\ny = "y"\n[parameters]\nmu = {{ upper = {BIG} }}\nsigma = {{ lower = 0 }}\n'
     '[likelihood]\ny = { distribution = "Normal", mu = "mu", sigma = "sigma" }\n',
     "key parameters.mu.upper"),
    (f'[data]\ny = "y"\n[parameters]\nmu = {{ start = {BIG} }}\n'
     f'[likelihood]\ny = {{ distribution = "Normal", mu = "mu", sigma = {BIG} }}\n',
     "key parameters.mu.start"),
    (f'[data]\ny = "y"\n[parameters]\nmu = {{}}\n'
     f'[likelihood]\ny = {{ distribution = "Normal", mu = "mu", sigma = {BIG} }}\n',
     "key likelihood.y.sigma"),
    (f'[data]\ny = "y"\n[parameters]\nmu = {{}}\n'
     f'[likelihood]\ny = {{ distribution = "Normal", mu = "mu", sigma = "{BIG}" }}\n',
     "key likelihood.y.sigma"),
    ('[data]\ny = "y"\n[parameters]\nmu = { lower = ' + "9" * 5000 + " }\n", "4300 digits"),
    ('[data]\ny = "y"\n[parameters]\nmu = { start = ' + "[" * 5000 + "]" * 5000 + " }\n",
     "nested too deeply"),
    ("a = " + "{ b = " * 5000 + "1" + " }" * 5000 + "\n", "nested too deeply"),
    ('[data]\ny = "y"\n[parameters]\nmu = { start = ' + "[" * 900 + "]" * 900 + " }\n"
     '[likelihood]\ny = { distribution = "Normal", mu = "mu", sigma = 1 }\n',
     "key parameters.mu.start"),
])
def test_absurd_numbers_and_nesting_in_a_model_file(body, key, tmp_path, capsys, data_dir):
    path = tmp_path / "m.toml"
    path.write_text(body)
    with pytest.raises(ModelFileError) as info:
        loads_model(body, name="m")
    assert "Traceback" not in str(info.value) and len(str(info.value)) < 600
    status, out, err = _cli(["fit", path, "--data", data_dir / "d.csv"], capsys, tmp_path)
    _assert_one_line_error(status, out, err, "fit", "'m.toml'", key)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.toml"]


# ------------------------------------------------------------------ 5. µ in model-file keys
@pytest.mark.parametrize("declared, used", [(MICRO, MICRO), (MICRO, MU), (MU, MICRO)])
def test_micro_sign_in_model_file_keys(declared, used, data_dir):
    body = (f'[data]\ny = "y"\n"{declared}x" = "x1"\n[parameters]\n"{declared}" = {{}}\n'
            f'b = {{}}\nsigma = {{ lower = 0 }}\n[priors]\n"{declared}" = "Normal(0, 10)"\n'
            f'[likelihood]\ny = {{ distribution = "Normal", mu = "{used} + b * {used}x", '
            'sigma = "sigma" }\n')
    spec = loads_model(body, name="m")
    assert spec.parameter_names == (MU, "b", "sigma")  # as Python names it
    pm_model, _ = spec.model_for(pd.read_csv(data_dir / "d.csv"))
    assert MU in pm_model.named_vars


def test_one_name_declared_twice_by_spelling():
    body = (f'[data]\ny = "y"\n[parameters]\n"{MICRO}" = {{}}\n"{MU}" = {{}}\n'
            '[likelihood]\ny = { distribution = "Normal", mu = "μ", sigma = 1 }\n')
    with pytest.raises(ModelFileError, match="declared twice"):
        loads_model(body, name="m")


# ------------------------------------------------------------------ 5. shape errors name the key
@pytest.mark.parametrize("params, mu, fragment", [
    ("beta = { shape = 3 }", "alpha + x @ beta", "beta (3,), x (n, 2)"),
    ('beta = { dims = "x" }', "alpha + beta", "'alpha + beta' has shape (2,)"),
    ('beta = { dims = "x" }', "alpha + x * beta", "'alpha + x * beta' has shape (n, 2)"),
    ("beta = { shape = [2, 2] }", "alpha + x @ beta", "has shape (n, 2)"),
])
def test_shape_errors_name_the_key(params, mu, fragment, data_dir):
    body = _likelihood_model(mu).replace('beta = { dims = "x" }', params)
    spec = loads_model(body, name="m")
    with pytest.raises(ModelFileError) as info:
        spec.model_for(pd.read_csv(data_dir / "d.csv"))
    msg = str(info.value)
    assert "key likelihood.y.mu" in msg and fragment in msg, msg
    assert "one row per observation" not in msg


# ------------------------------------------------------------------ 5. data outside the support
@pytest.mark.parametrize("family, values, support", [
    ("bernoulli", {2: 2}, "(0 or 1)"),
    ("bernoulli", {2: -1, 7: 3}, "(0 or 1)"),
    ("poisson", {4: -1}, "(integers >= 0)"),
    ("negative_binomial", {0: -2}, "(integers >= 0)"),
    ("gamma", {5: -1.5}, "(> 0)"),
])
def test_data_outside_the_support_names_rows_and_values(family, values, support, data_dir):
    df = pd.read_csv(data_dir / "d.csv")
    y = (df["x1"] > 0).astype(float) if family == "bernoulli" else np.round(np.exp(df["x1"]))
    if family == "gamma":
        y = np.exp(df["x1"])
    for row, v in values.items():
        y.iloc[row] = v
    df["y"] = y
    spec = loads_model(_formula_model("x1", family), name="m")
    with pytest.raises(DataError) as info:
        mle_ppl.fit(spec, data=df)
    msg = str(info.value)
    dist = {"bernoulli": "Bernoulli", "poisson": "Poisson", "negative_binomial": "NegativeBinomial",
            "gamma": "Gamma"}[family]
    rows = sorted(values)
    assert f"'{'y'}' ({dist})" in msg and support in msg, msg
    assert f"row(s) {rows}" in msg and f"{', '.join(str(r + 1) for r in rows)} counting" in msg
    for v in values.values():
        assert (f"{v:g}" if not float(v).is_integer() else str(int(v))) in msg
    assert "starting point" not in msg


# ------------------------------------------------------------------ 5. start= mistakes
@pytest.mark.parametrize("start, fragment", [
    ({"sigma": -1.0}, "start['sigma'] = -1.0 is outside the support of sigma, (0, inf)"),
    ({"sigma": 0.0}, "outside the support of sigma"),
    ({"beta": [1.0, 2.0, 3.0]}, "start['beta'] has 3 value(s); beta has 2 (beta[x1], beta[x2])"),
    ({"beta": "abc"}, "start['beta'] = 'abc': expected a number"),
    ({"alpha": None}, "start['alpha']"),
    ({"alpha": float("nan")}, "start['alpha']"),
    ({"gamma": 1.0}, "unknown parameters ['gamma']"),
    ("sigma=1", "start= must be a mapping"),
    ([1.0, 2.0], "start= must be a mapping"),
])
def test_start_mistakes_are_mle_errors_naming_the_parameter(start, fragment, data_dir):
    spec = loads_model(_likelihood_model("alpha + x @ beta"), name="m")
    with pytest.raises(MLEError) as info:
        mle_ppl.fit(spec, data=pd.read_csv(data_dir / "d.csv"), start=start)
    assert fragment in str(info.value), str(info.value)


def test_start_accepts_one_number_for_a_vector(data_dir):
    df = pd.read_csv(data_dir / "d.csv")
    spec = loads_model(_likelihood_model("alpha + x @ beta"), name="m")
    ref = mle_ppl.fit(spec, data=df)
    fit = mle_ppl.fit(spec, data=df, start={"beta": 0.5, "sigma": 3})
    # the same maximum from another start (Newton to 1e-10 in log-likelihood units)
    np.testing.assert_allclose(fit.theta, ref.theta, rtol=1e-7)


# ------------------------------------------------------------------ 5. no library chatter
def test_missing_values_in_a_python_model_file(tmp_path, data_dir):
    # PyMC's ImputationWarning must not reach stderr; the refusal names the variable and row
    (tmp_path / "m.py").write_text(textwrap.dedent("""
        import pymc as pm
        def build(data):
            with pm.Model() as m:
                a = pm.Flat("a"); s = pm.HalfFlat("s")
                pm.Normal("y", a, s, observed=data["y"].to_numpy())
            return m
        """))
    df = pd.read_csv(data_dir / "d.csv")
    df.loc[6, "y"] = np.nan
    df.to_csv(tmp_path / "d.csv", index=False)
    res = subprocess.run([sys.executable, "-m", "mle_ppl", "fit", "m.py", "--data", "d.csv"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 2 and res.stdout == ""
    assert "Warning" not in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "'y': 1 value(s), row(s) [6]" in res.stderr


# ------------------------------------------------------------------ 3. messages in CLI words
@pytest.mark.parametrize("argv, said, not_said", [
    (["fit", "line.toml"], "--data FILE", "data="),
    (["fit", "logistic_regression", "--cov", "cluster", "--cluster", "regio"], "--cluster 'regio'",
     "groups="),
    (["sample", "logistic_regression", "--prior", "gamma=Normal(0, 1)"], "--prior names 'gamma'",
     "priors="),
])
def test_cli_messages_use_the_options_words(argv, said, not_said, capsys, data_dir):
    status, out, err = _cli(argv, capsys, data_dir)
    _assert_one_line_error(status, out, err, argv[0], said)
    assert not_said not in err


@pytest.mark.parametrize("method, hint", [("newton", False), ("gd", True)])
def test_non_convergence_hint_never_suggests_the_method_used(method, hint, capsys, tmp_path):
    status, out, err = _cli(["fit", "logistic_regression", "--method", method, "--max-iter", "1",
                             "--json"], capsys, tmp_path)
    assert status == 1 and err == ""
    warnings_ = json.loads(out)["warnings"]
    text = " ".join(warnings_)
    assert "did not converge" in text and "--max-iter" in text
    assert ("--method newton" in text) is hint


def test_one_improper_prior_is_singular():
    import pymc as pm

    with pm.Model() as m:
        a = pm.Normal("a", 0, 1)
        pm.Normal("y", a, 1, observed=np.array([0.1, -0.3]))
    with pytest.raises(mle_ppl.ModelError) as info:
        mle_ppl.fit(m)
    assert "a (Normal) has a proper prior" in str(info.value)


def test_micro_sign_in_prior_names_of_a_pm_model():
    import pymc as pm

    from mle_ppl._src.bayes.sample import with_priors

    with pm.Model() as m:
        mu = pm.Flat(MU)
        pm.Normal("y", mu, 1, observed=np.array([0.2, -0.1]))
    m2 = with_priors(m, {MICRO: "Normal(0, 3)"})  # typed with the micro sign
    assert type(m2[MU].owner.op).__name__ == "NormalRV"
