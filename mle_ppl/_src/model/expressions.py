"""Safe arithmetic expressions for model files: an AST whitelist turned into PyTensor graphs.

A model file says ``mu = "alpha + x @ beta"``. The text is parsed by :func:`ast.parse` (which
only builds a syntax tree, it runs nothing) and every node is checked against a whitelist:

- numbers (``int`` up to 2**53, finite ``float``; constant arithmetic such as ``10**10**10``
  must stay a finite float, see :mod:`~mle_ppl._src.model.literals`), data and parameter names;
- ``+ - * / ** @``, unary ``-``/``+``, parentheses;
- calls of the functions in :data:`FUNCTIONS` (positional arguments only), and the constants in
  :data:`CONSTANTS` (``pi``);
- indexing ``a[i]`` by an integer, a slice of integers, or a data name (``alpha[group]``).

Anything else (attributes, lambdas, comprehensions, strings, keywords, comparisons, ...) is a
:class:`~mle_ppl.ModelFileError` naming the key path. Nothing is ever passed to ``eval`` or
``exec``. The same parser reads prior strings such as ``"Normal(0, 2.5)"``
(:func:`parse_distribution_call`).
"""

from __future__ import annotations

import ast
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache

import pymc as pm
import pytensor.tensor as pt

from mle_ppl._src.errors import ModelFileError, did_you_mean
from mle_ppl._src.model.literals import check_numbers
from mle_ppl._src.model.names import normalize, normalize_keys

#: Longest expression text accepted (characters) and largest syntax tree (nodes).
MAX_LENGTH = 4000
MAX_NODES = 500


def _softmax(x):
    return pt.special.softmax(x, axis=-1)


def _log_softmax(x):
    return pt.special.log_softmax(x, axis=-1)


def _cloglog_inv(x):
    return 1.0 - pt.exp(-pt.exp(x))


@dataclass(frozen=True)
class Function:
    """A whitelisted function: its PyTensor implementation, arity and one-line meaning."""

    impl: Callable
    n_args: tuple[int, int]  #: (min, max) number of positional arguments
    doc: str
    axis_arg: bool = False  #: the optional last argument is an integer axis


#: The one registry of functions usable in expressions (and listed in error messages).
FUNCTIONS: dict[str, Function] = {
    "exp": Function(pt.exp, (1, 1), "exponential"),
    "log": Function(pt.log, (1, 1), "natural logarithm"),
    "log1p": Function(pt.log1p, (1, 1), "log(1 + x), accurate near 0"),
    "expm1": Function(pt.expm1, (1, 1), "exp(x) - 1, accurate near 0"),
    "sqrt": Function(pt.sqrt, (1, 1), "square root"),
    "square": Function(pt.sqr, (1, 1), "x ** 2"),
    "abs": Function(pt.abs, (1, 1), "absolute value"),
    "sigmoid": Function(pt.sigmoid, (1, 1), "logistic function 1 / (1 + exp(-x))"),
    "invlogit": Function(pt.sigmoid, (1, 1), "same as sigmoid"),
    "logit": Function(lambda p: pt.log(p) - pt.log1p(-p), (1, 1), "log(p / (1 - p))"),
    "probit": Function(pm.math.probit, (1, 1), "standard normal quantile"),
    "invprobit": Function(pm.math.invprobit, (1, 1), "standard normal CDF"),
    "cloglog_inv": Function(_cloglog_inv, (1, 1), "1 - exp(-exp(x))"),
    "softplus": Function(pt.softplus, (1, 1), "log(1 + exp(x))"),
    "softmax": Function(_softmax, (1, 1), "softmax over the last axis"),
    "log_softmax": Function(_log_softmax, (1, 1), "log of softmax over the last axis"),
    "sin": Function(pt.sin, (1, 1), "sine"),
    "cos": Function(pt.cos, (1, 1), "cosine"),
    "tan": Function(pt.tan, (1, 1), "tangent"),
    "arcsin": Function(pt.arcsin, (1, 1), "inverse sine"),
    "arccos": Function(pt.arccos, (1, 1), "inverse cosine"),
    "arctan": Function(pt.arctan, (1, 1), "inverse tangent"),
    "sinh": Function(pt.sinh, (1, 1), "hyperbolic sine"),
    "cosh": Function(pt.cosh, (1, 1), "hyperbolic cosine"),
    "tanh": Function(pt.tanh, (1, 1), "hyperbolic tangent"),
    "erf": Function(pt.erf, (1, 1), "error function"),
    "erfc": Function(pt.erfc, (1, 1), "complementary error function 1 - erf(x)"),
    "sum": Function(pt.sum, (1, 2), "sum (of all elements, or along an integer axis)", True),
    "mean": Function(pt.mean, (1, 2), "mean (of all elements, or along an integer axis)", True),
    "minimum": Function(pt.minimum, (2, 2), "elementwise minimum"),
    "maximum": Function(pt.maximum, (2, 2), "elementwise maximum"),
    "dot": Function(pt.dot, (2, 2), "matrix product (same as @)"),
}

#: Named constants usable in expressions (a data or parameter of the same name takes precedence).
CONSTANTS: dict[str, float] = {"pi": math.pi}

_BINOPS: dict[type, Callable] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a**b,
    ast.MatMult: lambda a, b: pt.dot(a, b),
}
_SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**",
            ast.MatMult: "@", ast.USub: "-", ast.UAdd: "+"}

_FORBIDDEN = {
    ast.Attribute: "attribute access (a.b)",
    ast.Lambda: "lambda",
    ast.Compare: "comparisons",
    ast.BoolOp: "and/or",
    ast.IfExp: "if/else expressions",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.JoinedStr: "f-strings",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.NamedExpr: "assignment (:=)",
    ast.Starred: "starred arguments",
    ast.List: "lists",
    ast.Dict: "dicts",
    ast.Set: "sets",
}


def _fail(where: str, msg: str) -> ModelFileError:
    return ModelFileError(f"{where}: {msg}" if where else msg)


@dataclass(frozen=True)
class Expression:
    """A parsed, validated expression: its text, syntax tree and the names it uses."""

    text: str
    tree: ast.Expression
    names: frozenset[str]  #: data/parameter names used (function names excluded)
    where: str = ""  #: context for error messages, e.g. "model file 'm.toml', likelihood.y.mu"

    def to_tensor(self, env: Mapping[str, object], *, index_names: frozenset[str] = frozenset()):
        """Build the PyTensor graph with ``env`` giving a tensor (or number) per name.

        ``index_names`` are the names allowed as an index (``alpha[group]``): integer data.
        """
        # names in the tree are NFKC-normalised by the parser (µ -> μ); normalise the env too
        env = normalize_keys(env)
        index_names = frozenset(normalize(n) for n in index_names)
        try:
            return _Builder(env, self.where, index_names).visit(self.tree.body)
        except ModelFileError:
            raise
        except Exception as err:  # noqa: BLE001 - PyTensor's shape/type errors are the file's
            msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            shapes = ", ".join(f"{n} {shape_text(env[n])}" for n in sorted(self.names)
                               if n in env)
            raise _fail(self.where, f"cannot build {self.text!r}: {msg}"
                        + (f" (shapes: {shapes}; n = rows of the data)" if shapes else "")
                        ) from None


def shape_text(value) -> str:
    """A value's static shape for messages: ``(n, 2)``, with ``n`` for the rows (unknown)."""
    shape = getattr(getattr(value, "type", None), "shape", None)
    if shape is None:
        return "(scalar)" if isinstance(value, int | float) else "(?)"
    dims = ["n" if i == 0 and d is None else "?" if d is None else str(d)
            for i, d in enumerate(shape)]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _syntax_tree(text: str, where: str) -> ast.Expression:
    if not isinstance(text, str):
        raise _fail(where, f"expected an expression string, got {type(text).__name__} "
                           f"{text!r:.60}")
    if not text.strip():
        raise _fail(where, "the expression is empty")
    if len(text) > MAX_LENGTH:
        raise _fail(where, f"the expression has {len(text)} characters; at most {MAX_LENGTH} "
                           "are accepted")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        col = f" at column {err.offset}" if err.offset else ""
        raise _fail(where, f"invalid expression {text!r}: {err.msg}{col}") from None
    except (ValueError, RecursionError, MemoryError, OverflowError) as err:
        raise _fail(where, f"invalid expression {text!r:.80}: {type(err).__name__}") from None
    n = sum(1 for _ in ast.walk(tree))
    if n > MAX_NODES:
        raise _fail(where, f"the expression is too large ({n} syntax nodes; at most {MAX_NODES})")
    check_numbers(tree, text=text, where=where)  # 10**10**10 would never finish
    return tree


def _check_int_constant(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        node = node.operand
    return (isinstance(node, ast.Constant) and type(node.value) is int
            and abs(node.value) < 2**31)


def _int_value(node: ast.AST) -> int:
    if isinstance(node, ast.UnaryOp):
        v = _int_value(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    return int(node.value)


def parse_expression(text: str, *, known: Mapping[str, str] | None = None,
                     where: str = "") -> Expression:
    """Parse and validate an expression string.

    Parameters
    ----------
    text : str
        The expression, e.g. ``"alpha + x @ beta"``.
    known : mapping, optional
        Names the expression may use, mapped to what they are (``"data"``, ``"parameter"``);
        with ``None`` any name is accepted (checked later by :meth:`Expression.to_tensor`).
    where : str
        Context for error messages (file and key path).

    Returns
    -------
    Expression

    Raises
    ------
    ModelFileError
        Syntax errors, forbidden constructs, unknown names or functions, wrong arity.

    Examples
    --------
    >>> e = parse_expression("alpha + x @ beta", known={"alpha": "parameter",
    ...                      "x": "data", "beta": "parameter"})
    >>> sorted(e.names)
    ['alpha', 'beta', 'x']
    """
    tree = _syntax_tree(text, where)
    names: set[str] = set()
    for node in ast.walk(tree):
        kind = type(node)
        if kind in _FORBIDDEN:
            raise _fail(where, f"{_FORBIDDEN[kind]} are not allowed in expressions "
                               f"({text!r}); use arithmetic, names and functions "
                               f"{sorted(FUNCTIONS)}")
        if isinstance(node, ast.Expression | ast.Load | ast.operator | ast.unaryop
                      | ast.Slice):
            if isinstance(node, ast.operator | ast.unaryop) and type(node) not in _SYMBOLS:
                raise _fail(where, f"operator {type(node).__name__} is not allowed in {text!r}; "
                                   "use + - * / ** @")
            continue
        if isinstance(node, ast.BinOp | ast.UnaryOp | ast.Tuple):
            continue
        if isinstance(node, ast.Constant):
            if type(node.value) not in (int, float):
                raise _fail(where, f"only numbers may appear as constants in {text!r}, found "
                                   f"{node.value!r:.40}")
            continue
        if isinstance(node, ast.Name):
            continue  # checked below, functions apart
        if isinstance(node, ast.Call):
            _check_call(node, text, where)
            continue
        if isinstance(node, ast.Subscript):
            _check_subscript(node, text, where)
            continue
        raise _fail(where, f"{type(node).__name__} is not allowed in expressions ({text!r})")
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and id(node) not in called:
            names.add(node.id)
    # a constant (pi) is a name of the expression only when the file declares it itself
    names -= {c for c in CONSTANTS if known is None or c not in normalize_keys(known)}
    if known is not None:
        known = normalize_keys(known)  # as Python does: µ (micro sign) is μ
        for name in sorted(names):
            if name not in known:
                if name in FUNCTIONS:
                    raise _fail(where, f"{name!r} is a function; call it, e.g. {name}(x)")
                raise _fail(where, f"unknown name {name!r} in {text!r}; known names are "
                                   f"{sorted(known)}.{did_you_mean(name, known)} Declare data "
                                   "in [data] and parameters in [parameters].")
    return Expression(text=text, tree=tree, names=frozenset(names), where=where)


def _check_call(node: ast.Call, text: str, where: str) -> None:
    if not isinstance(node.func, ast.Name):
        raise _fail(where, f"only named functions can be called in {text!r}")
    fname = node.func.id
    fn = FUNCTIONS.get(fname)
    if fn is None:
        raise _fail(where, f"unknown function {fname!r} in {text!r}."
                           f"{did_you_mean(fname, FUNCTIONS)}"
                           f" Available functions: {', '.join(sorted(FUNCTIONS))}.")
    if node.keywords:
        raise _fail(where, f"keyword arguments are not allowed in {text!r}; pass arguments by "
                           "position")
    lo, hi = fn.n_args
    if not lo <= len(node.args) <= hi:
        want = str(lo) if lo == hi else f"{lo} or {hi}"
        raise _fail(where, f"{fname}() takes {want} argument(s), got {len(node.args)} in "
                           f"{text!r}")
    if fn.axis_arg and len(node.args) == hi and not _check_int_constant(node.args[-1]):
        raise _fail(where, f"the axis of {fname}() must be an integer constant in {text!r}")


def _check_subscript(node: ast.Subscript, text: str, where: str) -> None:
    items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
    for item in items:
        if isinstance(item, ast.Slice):
            for part in (item.lower, item.upper, item.step):
                if part is not None and not _check_int_constant(part):
                    raise _fail(where, f"slice bounds must be integer constants in {text!r}")
        elif not (_check_int_constant(item) or isinstance(item, ast.Name)):
            raise _fail(where, f"an index must be an integer, a slice of integers or a data name "
                               f"(alpha[group]) in {text!r}")


class _Builder(ast.NodeVisitor):
    """Walks a validated tree and builds PyTensor operations (nothing else is ever called)."""

    def __init__(self, env, where, index_names):
        self.env = env
        self.where = where
        self.index_names = index_names

    def generic_visit(self, node):  # pragma: no cover - parse_expression rejects these
        raise _fail(self.where, f"{type(node).__name__} is not allowed in expressions")

    def visit_Constant(self, node):
        v = node.value
        if type(v) is int and abs(v) < 2**31:
            return v
        try:
            f = float(v)
        except OverflowError:
            raise _fail(self.where, f"the number {v:.3g}... is too large") from None
        if not math.isfinite(f):
            raise _fail(self.where, "numbers must be finite")
        return f

    def visit_Name(self, node):
        if node.id not in self.env and node.id in CONSTANTS:
            return CONSTANTS[node.id]
        if node.id not in self.env:
            known = [k for k in self.env]
            raise _fail(self.where, f"unknown name {node.id!r}; known names are {sorted(known)}."
                                    f"{did_you_mean(node.id, known)}")
        return self.env[node.id]

    def visit_BinOp(self, node):
        a, b = self.visit(node.left), self.visit(node.right)
        if isinstance(node.op, ast.MatMult):
            a, b = pt.as_tensor_variable(a), pt.as_tensor_variable(b)
            if a.ndim == 0 or b.ndim == 0:
                raise _fail(self.where, "@ needs vectors or matrices on both sides (use * for "
                                        "a scalar)")
        if isinstance(node.op, ast.Pow) and not _is_tensor(a) and not _is_tensor(b):
            a = pt.as_tensor_variable(float(a))  # keep huge powers of numbers symbolic
        return _BINOPS[type(node.op)](a, b)

    def visit_UnaryOp(self, node):
        v = self.visit(node.operand)
        return -v if isinstance(node.op, ast.USub) else v

    def visit_Call(self, node):
        fn = FUNCTIONS[node.func.id]
        args = [self.visit(a) for a in node.args]
        if fn.axis_arg and len(args) == 2:
            return fn.impl(pt.as_tensor_variable(args[0]), axis=_int_value(node.args[1]))
        return fn.impl(*[pt.as_tensor_variable(a) for a in args])

    def visit_Subscript(self, node):
        base = pt.as_tensor_variable(self.visit(node.value))
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if len(items) > base.ndim:
            raise _fail(self.where, f"too many indices: {len(items)} for a {base.ndim}-d value")
        index = []
        for item in items:
            if isinstance(item, ast.Slice):
                index.append(slice(*[None if p is None else _int_value(p)
                                     for p in (item.lower, item.upper, item.step)]))
            elif isinstance(item, ast.Name):
                if item.id not in self.index_names:
                    raise _fail(self.where, f"{item.id!r} cannot be used as an index: only "
                                            "categorical data (integer codes) can, e.g. "
                                            "alpha[group]")
                index.append(self.visit(item))
            else:
                index.append(_int_value(item))
        return base[tuple(index)]

    def visit_Tuple(self, node):  # pragma: no cover - only inside subscripts
        raise _fail(self.where, "tuples are only allowed as indices")


def _is_tensor(v) -> bool:
    return not isinstance(v, int | float)


# ---------------------------------------------------------------- distributions
#: PyMC classes that are not plain distributions with numeric parameters.
_NOT_PLAIN = {"Continuous", "Discrete", "Distribution", "Censored", "Truncated", "Mixture",
              "Simulator", "RandomWalk", "AR", "GARCH11", "EulerMaruyama", "Interpolated",
              "CAR", "ICAR", "CustomDist", "DensityDist", "SymbolicRandomVariable"}
_NOT_PARAMS = {"shape", "size", "dims", "observed", "initval", "transform", "rng",
               "return_next_rng", "dist_params", "init_dist", "steps", "ar_order", "constant",
               "lower_chol"}


@dataclass(frozen=True)
class DistributionInfo:
    """A PyMC distribution usable by name in a model file."""

    name: str
    cls: type
    params: tuple[str, ...]  #: its keyword parameters
    discrete: bool


@cache
def distributions() -> dict[str, DistributionInfo]:
    """The one registry of distributions accepted by name: every plain PyMC distribution."""
    from pymc.distributions.distribution import Distribution

    out = {}
    for name in pm.distributions.__all__:
        cls = getattr(pm.distributions, name, None)
        if not (inspect.isclass(cls) and issubclass(cls, Distribution)) or name in _NOT_PLAIN:
            continue
        try:
            sig = inspect.signature(cls.dist)
        except (TypeError, ValueError):  # pragma: no cover - PyMC classes all have one
            continue
        params = tuple(p.name for p in sig.parameters.values()
                       if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                       and p.name not in _NOT_PARAMS)
        out[name] = DistributionInfo(name, cls, params, issubclass(cls, pm.Discrete))
    return out


def get_distribution(name: str, *, where: str = "") -> DistributionInfo:
    """Look up a distribution by its PyMC name (``"Normal"``), with a did-you-mean error."""
    reg = distributions()
    if not isinstance(name, str) or name not in reg:
        lower = {k.lower(): k for k in reg}
        hint = (f" Did you mean {lower[name.lower()]!r}?" if isinstance(name, str)
                and name.lower() in lower else did_you_mean(str(name), reg))
        raise _fail(where, f"unknown distribution {name!r}.{hint} Any PyMC distribution can be "
                           "used by its class name, e.g. 'Normal', 'StudentT', 'Poisson', "
                           "'NegativeBinomial', 'Bernoulli', 'Binomial', 'Categorical'.")
    return reg[name]


def check_distribution_params(info: DistributionInfo, given, *, where: str = "") -> None:
    """Unknown keyword parameters of a distribution: a ModelFileError listing the valid ones."""
    for key in given:
        if key not in info.params:
            raise _fail(where, f"{info.name} has no parameter {key!r}."
                               f"{did_you_mean(key, info.params)}"
                               f" Its parameters are {list(info.params)}.")


@dataclass(frozen=True)
class DistributionCall:
    """A parsed ``"Normal(0, 2.5)"``: the distribution and its argument expressions."""

    info: DistributionInfo
    args: tuple[Expression, ...]
    kwargs: tuple[tuple[str, Expression], ...]

    def evaluate(self):
        """Arguments as PyTensor constants/graphs (no names allowed): ``(args, kwargs)``."""
        args = [pt.as_tensor_variable(a.to_tensor({})) for a in self.args]
        kwargs = {k: pt.as_tensor_variable(v.to_tensor({})) for k, v in self.kwargs}
        return args, kwargs


def parse_distribution_call(text: str, *, where: str = "") -> DistributionCall:
    """Parse a prior such as ``"Normal(0, 2.5)"`` or ``"HalfNormal(sigma=1)"``.

    Arguments are constant arithmetic (``1/2``, ``-3``, ``exp(1)``); names are not allowed.

    Examples
    --------
    >>> call = parse_distribution_call("Normal(0, 2.5)")
    >>> call.info.name, len(call.args)
    ('Normal', 2)
    """
    tree = _syntax_tree(text, where)
    body = tree.body
    if not (isinstance(body, ast.Call) and isinstance(body.func, ast.Name)):
        raise _fail(where, f"expected a distribution call such as 'Normal(0, 2.5)', got {text!r}")
    info = get_distribution(body.func.id, where=where)
    if len(body.args) > len(info.params):
        raise _fail(where, f"{info.name} takes at most {len(info.params)} positional "
                           f"parameters {list(info.params)}, got {len(body.args)} in {text!r}")
    kw_names = [k.arg for k in body.keywords]
    if None in kw_names:
        raise _fail(where, f"**kwargs are not allowed in {text!r}")
    check_distribution_params(info, kw_names, where=where)
    positional = set(info.params[: len(body.args)])
    dup = positional & set(kw_names)
    if dup or len(set(kw_names)) != len(kw_names):
        raise _fail(where, f"parameter(s) {sorted(dup) or kw_names} given twice in {text!r}")

    def sub(node):
        return parse_expression(ast.unparse(node), known={}, where=where)

    return DistributionCall(info, tuple(sub(a) for a in body.args),
                            tuple((k.arg, sub(k.value)) for k in body.keywords))
