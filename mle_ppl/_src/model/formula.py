"""Formula shorthand for generalized linear models: ``formula = "y ~ x1 + C(group)"``.

The right-hand side becomes a design matrix built by ``formulaic``; the family and link choose
the likelihood. Before formulaic sees a formula, every factor is checked against a whitelist
(column names, ``C()``, ``log()``, ``exp()``, ``center()``, ``scale()``, ``I()`` with arithmetic,
``poly(x, k)``), because formulaic evaluates factors as Python code.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mle_ppl._src.errors import DataError, ModelFileError, did_you_mean

#: Functions allowed inside formula factors (they are formulaic's transforms of these names).
FORMULA_FUNCTIONS = ("C", "I", "log", "log2", "log10", "exp", "center", "scale", "poly")


@dataclass(frozen=True)
class Family:
    """A GLM family: the PyMC distribution, its mean parameter, default link, extra parameters."""

    distribution: str
    default_link: str
    extra: dict  #: name -> (parameter spec for [parameters], likelihood keyword, expression)
    doc: str


#: The one registry of GLM families for ``family = ...``.
FAMILIES: dict[str, Family] = {
    "gaussian": Family("Normal", "identity", {"sigma": ({"lower": 0}, "sigma", "sigma")},
                       "Normal(mu, sigma); MLE of beta = least squares, sigma^2 = RSS/n"),
    "bernoulli": Family("Bernoulli", "logit", {}, "Bernoulli(p), 0/1 outcome"),
    "binomial": Family("Binomial", "logit", {},
                       "Binomial(n = trials, p); a Bernoulli when no trials column is given"),
    "poisson": Family("Poisson", "log", {}, "Poisson(mu), counts"),
    "negative_binomial": Family("NegativeBinomial", "log",
                                {"alpha": ({"lower": 0}, "alpha", "alpha")},
                                "NegativeBinomial(mu, alpha): var = mu + mu^2/alpha"),
    "gamma": Family("Gamma", "log", {"shape": ({"lower": 0}, "alpha", "shape")},
                    "Gamma(alpha = shape, beta = shape/mu): mean mu, var mu^2/shape"),
    "student_t": Family("StudentT", "identity",
                        {"sigma": ({"lower": 0}, "sigma", "sigma"),
                         "nu": ({"lower": 0}, "nu", "nu")},
                        "StudentT(nu, mu, sigma): robust regression"),
}

#: The one registry of links: inverse link as an expression of ``eta``.
LINKS: dict[str, str] = {
    "identity": "{eta}",
    "log": "exp({eta})",
    "logit": "sigmoid({eta})",
    "probit": "invprobit({eta})",
    "cloglog": "cloglog_inv({eta})",
    "inverse": "1 / ({eta})",
}

#: The likelihood keyword of each family's mean (``mu`` or ``p``).
MEAN_PARAM = {"Normal": "mu", "Bernoulli": "p", "Binomial": "p", "Poisson": "mu",
              "NegativeBinomial": "mu", "StudentT": "mu"}


def split_formula(text: str, *, where: str) -> tuple[str, str]:
    """Split ``"y ~ x1 + x2"`` into the outcome column and a validated right-hand side."""
    if not isinstance(text, str) or text.count("~") != 1:
        raise ModelFileError(f"{where}: a formula has the form 'y ~ x1 + x2 + C(group)' with one "
                             f"'~'; got {text!r:.80}.")
    lhs, rhs = (s.strip() for s in text.split("~"))
    if not lhs:
        raise ModelFileError(f"{where}: the formula {text!r} has no outcome left of '~'.")
    if not rhs:
        raise ModelFileError(f"{where}: the formula {text!r} has nothing right of '~' (use "
                             "'y ~ 1' for an intercept only).")
    check_rhs(rhs, where=where)
    return lhs, rhs


def check_rhs(rhs: str, *, where: str) -> None:
    """Whitelist every factor of a formula's right-hand side (formulaic runs them as Python)."""
    from formulaic import Formula

    if len(rhs) > 2000:
        raise ModelFileError(f"{where}: the formula is too long ({len(rhs)} characters).")
    try:
        parsed = Formula(rhs)
        terms = list(parsed)
    except Exception as err:  # noqa: BLE001 - formulaic's parser raises many kinds; all are ours
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelFileError(f"{where}: cannot parse the formula right-hand side {rhs!r}: "
                             f"{msg}") from None
    for term in terms:
        for factor in term.factors:
            method = getattr(factor.eval_method, "value", str(factor.eval_method))
            if method == "python":
                _check_factor(factor.expr, where)
            elif method == "lookup":
                pass
            elif method != "literal":  # pragma: no cover - formulaic has only these three
                raise ModelFileError(f"{where}: unsupported formula factor {factor.expr!r}.")


def _check_factor(expr: str, where: str) -> None:
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ModelFileError(f"{where}: invalid formula factor {expr!r}.") from None
    for node in ast.walk(tree):
        ok = isinstance(node, ast.Expression | ast.Name | ast.Load | ast.BinOp | ast.UnaryOp
                        | ast.operator | ast.unaryop | ast.Call)
        if isinstance(node, ast.Constant):
            ok = type(node.value) in (int, float)
        if isinstance(node, ast.Call):
            ok = (isinstance(node.func, ast.Name) and node.func.id in FORMULA_FUNCTIONS
                  and not node.keywords)
            if not ok:
                fname = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
                hint = did_you_mean(fname.rsplit(".", 1)[-1], FORMULA_FUNCTIONS)
                raise ModelFileError(
                    f"{where}: function {fname!r} is not allowed in formulas.{hint} Allowed: "
                    f"{', '.join(FORMULA_FUNCTIONS)} (positional arguments only).")
        if not ok:
            raise ModelFileError(
                f"{where}: {type(node).__name__} is not allowed in the formula factor {expr!r}; "
                f"use column names, arithmetic inside I(), and {', '.join(FORMULA_FUNCTIONS)}.")


def design_matrix(rhs: str, table: pd.DataFrame, *, file: str | None,
                  key: str) -> tuple[np.ndarray, list[str]]:
    """Build the design matrix of ``rhs`` on ``table`` with formulaic (checks missing columns)."""
    from formulaic import Formula, model_matrix

    where = f"model file {file!r}, key {key}" if file else f"key {key}"
    cols = [str(c) for c in table.columns]
    used: list[str] = []
    for term in Formula(rhs):
        for factor in term.factors:
            method = getattr(factor.eval_method, "value", str(factor.eval_method))
            names = [factor.expr] if method == "lookup" else (
                [n.id for n in ast.walk(ast.parse(factor.expr, mode="eval"))
                 if isinstance(n, ast.Name) and n.id not in FORMULA_FUNCTIONS]
                if method == "python" else [])
            for name in names:
                if name not in table.columns:
                    raise DataError(f"{where}: column {name!r} of the formula is not in the data "
                                    f"table.{did_you_mean(name, cols)} Columns are {cols[:20]}.")
                if name not in used:
                    used.append(name)
    sub = table[used]
    for c in used:
        s = sub[c]
        if pd.api.types.is_numeric_dtype(s.dtype) and s.dtype != bool:
            bad = ~np.isfinite(s.to_numpy(dtype=float))
        else:
            bad = s.isna().to_numpy()
        if bad.any():
            raise DataError(f"{where}: column {c!r} has {int(bad.sum())} missing or infinite "
                            f"value(s), first at row(s) {np.flatnonzero(bad)[:5].tolist()}. "
                            "Drop or impute those rows before fitting.")
    try:
        mm = model_matrix(rhs, table, na_action="raise", output="pandas")
    except Exception as err:  # noqa: BLE001 - formulaic raises many kinds for bad data
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{where}: cannot build the design matrix of {rhs!r}: {msg}") from None
    arr = np.asarray(mm, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != table.shape[0]:
        raise DataError(f"{where}: the design matrix of {rhs!r} has shape {arr.shape}, expected "
                        f"one row per observation ({table.shape[0]}).")
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{where}: the design matrix of {rhs!r} has NaN or infinite entries "
                        "(e.g. log of a non-positive value).")
    return arr, [str(c) for c in mm.columns]
