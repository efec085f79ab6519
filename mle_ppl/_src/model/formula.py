"""Formula shorthand for generalized linear models: ``formula = "y ~ x1 + C(group)"``.

The right-hand side becomes a design matrix built by ``formulaic``; the family and link choose
the likelihood. Before formulaic sees a formula, every factor is checked against a whitelist
(column names, ``C()``, ``log()``, ``exp()``, ``center()``, ``scale()``, ``I()`` with arithmetic,
``poly(x, k)``), because formulaic evaluates factors as Python code; numbers must be of a sane
size (no ``10**10**10``) and the formula must expand to a bounded number of terms, so no formula
can hang.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mle_ppl._src.errors import DataError, ModelFileError, did_you_mean, rows_text
from mle_ppl._src.model.literals import check_numbers
from mle_ppl._src.model.names import find_column, normalize

#: Functions allowed inside formula factors (they are formulaic's transforms of these names).
FORMULA_FUNCTIONS = ("C", "I", "log", "log2", "log10", "exp", "center", "scale", "poly")

#: Most products of terms a formula may expand to before duplicates merge (``(a + b + c)**2`` is
#: 9), bounded before formulaic expands it: ``(x1 + ... + x9)**9`` would enumerate 9**9 products
#: (formulaic takes about 20 microseconds per product, so the cap is about 2 seconds).
MAX_FORMULA_TERMS = 100_000
#: Highest power ``(a + b)**k`` in a formula (the order of interactions).
MAX_FORMULA_POWER = 20
#: Highest degree of ``poly(x, k)``.
MAX_POLY_DEGREE = 20
#: Largest syntax tree of one Python factor (``I(...)``).
MAX_FACTOR_NODES = 500

#: Python operators allowed inside factors (no shifts or bit operations: ``1 << 10**10``).
_FACTOR_OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow,
                     ast.USub, ast.UAdd)


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


def split_formula(text: str, *, where: str, check: bool = True) -> tuple[str, str]:
    """Split ``"y ~ x1 + x2"`` into the outcome column and a validated right-hand side
    (``check=False``: not validated, for a caller that splits off random-effect terms first)."""
    if not isinstance(text, str) or text.count("~") != 1:
        raise ModelFileError(f"{where}: a formula has the form 'y ~ x1 + x2 + C(group)' with one "
                             f"'~'; got {text!r:.80}.")
    lhs, rhs = (s.strip() for s in text.split("~"))
    if not lhs:
        raise ModelFileError(f"{where}: the formula {text!r} has no outcome left of '~'.")
    if not rhs:
        raise ModelFileError(f"{where}: the formula {text!r} has nothing right of '~' (use "
                             "'y ~ 1' for an intercept only).")
    if check:
        check_rhs(rhs, where=where)
    return lhs, rhs


def check_rhs(rhs: str, *, where: str) -> None:
    """Whitelist every factor of a formula's right-hand side (formulaic runs them as Python).

    Everything is checked before formulaic expands or evaluates anything: the formula's operator
    tree (formulaic's parser, which only tokenises) must expand to at most
    :data:`MAX_FORMULA_TERMS` terms, and a formula power ``(a + b)**k`` needs
    ``1 <= k <=`` :data:`MAX_FORMULA_POWER`; each Python factor (``I(...)``, ``poly(x, k)``,
    ``{...}``) is checked on its syntax tree (names, whitelisted calls, arithmetic, and numbers
    of a sane size: :func:`~mle_ppl._src.model.literals.check_numbers`).
    """
    from formulaic import Formula
    from formulaic.parser import DefaultFormulaParser

    if len(rhs) > 2000:
        raise ModelFileError(f"{where}: the formula is too long ({len(rhs)} characters).")
    try:
        tree = DefaultFormulaParser().get_ast(rhs)
    except Exception as err:  # noqa: BLE001 - formulaic's parser raises many kinds; all are ours
        raise ModelFileError(f"{where}: cannot parse the formula right-hand side {rhs!r}: "
                             f"{_first_line(err)}") from None
    _check_formula_tree(tree, rhs, where)
    try:
        terms = list(Formula(rhs))
    except Exception as err:  # noqa: BLE001 - formulaic's parser raises many kinds; all are ours
        raise ModelFileError(f"{where}: cannot parse the formula right-hand side {rhs!r}: "
                             f"{_first_line(err)}") from None
    for term in terms:
        for factor in term.factors:
            method = getattr(factor.eval_method, "value", str(factor.eval_method))
            if method == "python":
                _check_factor(factor.expr, where)
            elif method == "lookup":
                pass
            elif method != "literal":  # pragma: no cover - formulaic has only these three
                raise ModelFileError(f"{where}: unsupported formula factor {factor.expr!r}.")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _check_formula_tree(tree, rhs: str, where: str) -> None:
    """Bound the expansion of formulaic's operator tree and check its leaves (no evaluation).

    The number of terms each node expands to (``a*b + a + b`` for ``*``, ``a**k`` products for
    a power, ...) is bounded bottom-up with saturation, so the bound itself stays small.
    """
    from formulaic.parser.types import ASTNode, Token

    cap = MAX_FORMULA_TERMS + 1
    bound: dict[int, int] = {}
    stack: list[tuple[object, bool]] = [(tree, False)]
    while stack:
        node, done = stack.pop()
        if isinstance(node, Token):
            _check_token(node, rhs, where)
            bound[id(node)] = 1
            continue
        if not isinstance(node, ASTNode):  # pragma: no cover - None for an empty formula
            continue
        if not done:
            stack.append((node, True))
            stack.extend((a, False) for a in node.args)
            continue
        sym = node.operator.symbol
        sizes = [bound.get(id(a), 1) for a in node.args]
        if sym in ("**", "^"):
            k = _formula_power(node.args[1], rhs, where)
            b = (1 if sizes[0] <= 1
                 else cap if k * math.log(sizes[0]) >= math.log(cap) else sizes[0] ** k)
        elif len(sizes) == 2 and sym == "*":
            b = sizes[0] * sizes[1] + sizes[0] + sizes[1]
        elif len(sizes) == 2 and sym in ("/", "in"):
            b = sizes[0] + sizes[0] * sizes[1]
        elif len(sizes) == 2 and sym == ":":
            b = sizes[0] * sizes[1]
        elif sym in ("+", "-", "~", "|", "."):
            b = sum(sizes) or 1
        else:  # pragma: no cover - formulaic's default operators are all above
            b = math.prod(s + 1 for s in sizes)
        bound[id(node)] = min(b, cap)
        if b >= cap:
            raise ModelFileError(
                f"{where}: the formula right-hand side {rhs!r:.100} expands to more than "
                f"{MAX_FORMULA_TERMS} products of terms; write fewer interactions (e.g. "
                "(a + b + c)**2 rather than a higher power).")


def _formula_power(node, rhs: str, where: str) -> int:
    """The exponent of ``(a + b)**k`` in a formula: an integer 1..MAX_FORMULA_POWER."""
    from formulaic.parser.types import Token

    text = node.token if isinstance(node, Token) else None
    k = int(text) if (text is not None and len(text) < 20 and text.isascii()
                      and text.isdigit()) else None
    if k is None or not 1 <= k <= MAX_FORMULA_POWER:
        shown = text if text is not None else "an expression"
        raise ModelFileError(
            f"{where}: the power in the formula {rhs!r:.100} must be an integer from 1 to "
            f"{MAX_FORMULA_POWER} (the highest order of interactions), got {shown[:40]}.")
    return k


def _check_token(token, rhs: str, where: str) -> None:
    kind = token.kind.name
    if kind == "PYTHON":
        _check_factor(token.token, where)
    elif kind == "VALUE":
        try:
            tree = ast.parse(token.token.strip(), mode="eval")
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return  # a string literal or the like: formulaic reports it
        check_numbers(tree, text=rhs, where=where)


def _check_factor(expr: str, where: str) -> None:
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ModelFileError(f"{where}: invalid formula factor {expr!r}.") from None
    n_nodes = sum(1 for _ in ast.walk(tree))
    if n_nodes > MAX_FACTOR_NODES:
        raise ModelFileError(f"{where}: the formula factor {expr!r:.80} is too large ({n_nodes} "
                             f"syntax nodes; at most {MAX_FACTOR_NODES}).")
    for node in ast.walk(tree):
        ok = isinstance(node, ast.Expression | ast.Name | ast.Load | ast.BinOp | ast.UnaryOp
                        | ast.Call)
        if isinstance(node, ast.operator | ast.unaryop):
            ok = isinstance(node, _FACTOR_OPERATORS)
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
            if node.func.id == "poly":
                _check_poly(node, expr, where)
        if not ok:
            what = (f"the operator {_OPERATOR_TEXT.get(type(node), type(node).__name__)}"
                    if isinstance(node, ast.operator | ast.unaryop) else type(node).__name__)
            raise ModelFileError(
                f"{where}: {what} is not allowed in the formula factor {expr!r}; use column "
                f"names, arithmetic (+ - * / // % **) inside I(), and "
                f"{', '.join(FORMULA_FUNCTIONS)}.")
    check_numbers(tree, text=expr, where=where)


_OPERATOR_TEXT = {ast.LShift: "<<", ast.RShift: ">>", ast.BitOr: "|", ast.BitAnd: "&",
                  ast.BitXor: "^", ast.MatMult: "@", ast.Invert: "~", ast.Not: "not"}


def _check_poly(node: ast.Call, expr: str, where: str) -> None:
    """``poly(x)`` or ``poly(x, k)`` with an integer degree 1..MAX_POLY_DEGREE."""
    if not 1 <= len(node.args) <= 2:
        raise ModelFileError(f"{where}: poly() takes a column and a degree, e.g. poly(x, 3); "
                             f"got {expr!r:.80}.")
    if len(node.args) == 2:
        deg = node.args[1]
        if not (isinstance(deg, ast.Constant) and type(deg.value) is int
                and 1 <= deg.value <= MAX_POLY_DEGREE):
            shown = ast.unparse(deg)
            raise ModelFileError(
                f"{where}: the degree of poly() in {expr!r:.80} must be an integer from 1 to "
                f"{MAX_POLY_DEGREE}, got {shown if len(shown) <= 40 else shown[:39] + '…'}.")


def design_matrix(rhs: str, table: pd.DataFrame, *, file: str | None,
                  key: str) -> tuple[np.ndarray, list[str]]:
    """Build the design matrix of ``rhs`` on ``table`` with formulaic (checks missing columns)."""
    from formulaic import Formula, model_matrix

    where = f"model file {file!r}, key {key}" if file else f"key {key}"
    check_rhs(rhs, where=where)
    # identifiers as Python reads them (NFKC: µ is μ), matched to columns the same way
    formula = normalize(rhs)
    cols = [str(c) for c in table.columns]
    used: dict[str, str] = {}  # column -> name in the formula
    for term in Formula(formula):
        for factor in term.factors:
            method = getattr(factor.eval_method, "value", str(factor.eval_method))
            names = [factor.expr] if method == "lookup" else (
                [n.id for n in ast.walk(ast.parse(factor.expr, mode="eval"))
                 if isinstance(n, ast.Name) and n.id not in FORMULA_FUNCTIONS]
                if method == "python" else [])
            for name in names:
                col = find_column(table.columns, name, where=where, identifier=True)
                if col is None:
                    raise DataError(f"{where}: column {name!r} of the formula is not in the data "
                                    f"table.{did_you_mean(name, cols)} Columns are {cols[:20]}.")
                used.setdefault(col, name)
    sub = table[list(used)].rename(columns=used)
    used = list(used.values())
    for c in used:
        s = sub[c]
        if pd.api.types.is_numeric_dtype(s.dtype) and s.dtype != bool:
            bad = ~np.isfinite(s.to_numpy(dtype=float))
        else:
            bad = s.isna().to_numpy()
        if bad.any():
            raise DataError(f"{where}: column {c!r} has {int(bad.sum())} missing or infinite "
                            f"value(s), first at {rows_text(np.flatnonzero(bad))}. "
                            "Drop or impute those rows before fitting.")
    try:
        mm = model_matrix(formula, sub, na_action="raise", output="pandas")
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
