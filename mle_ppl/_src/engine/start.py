"""The starting point of a fit: ``start=`` values checked, and a non-finite start explained.

- :func:`start_vector` turns ``start={"sigma": 2.0, "beta": [0, 1]}`` into the flat unconstrained
  vector, with an :class:`~mle_ppl.MLEError` naming the parameter for every mistake (not a
  mapping, unknown name, not numbers, wrong number of values, outside the parameter's support).
- :func:`explain_nonfinite_start` says *where* the log-likelihood is ``-inf`` or NaN: the
  observed variable, the rows, the values and the distribution's support, when the data lie
  outside the support (a Bernoulli outcome of 2, a Poisson count of -1) and no parameter value
  could give them a positive likelihood.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mle_ppl._src.errors import DataError, MLEError, did_you_mean, rows_text
from mle_ppl._src.model.names import normalize

#: The support of common distributions, for messages (by PyTensor op name).
SUPPORTS = {
    "BernoulliRV": "0 or 1",
    "BinomialRV": "integers 0..n",
    "BetaBinomialRV": "integers 0..n",
    "CategoricalRV": "integer codes 0..K-1",
    "PoissonRV": "integers >= 0",
    "NegBinomialRV": "integers >= 0",
    "GeometricRV": "integers >= 1",
    "DiscreteUniformRV": "integers lower..upper",
    "GammaRV": "> 0",
    "ExponentialRV": "> 0",
    "LogNormalRV": "> 0",
    "WeibullRV": "> 0",
    "HalfNormalRV": ">= 0",
    "HalfCauchyRV": ">= 0",
    "InvGammaRV": "> 0",
    "ChiSquareRV": "> 0",
    "BetaRV": "strictly between 0 and 1",
    "UniformRV": "between lower and upper",
}


#: PyMC class names where the op's name differs.
_NAMES = {"NegBinomialRV": "NegativeBinomial", "InvGammaRV": "InverseGamma",
          "DiscreteUniformRV": "DiscreteUniform"}


def _numbers(name: str, value) -> np.ndarray:
    if isinstance(value, str | bytes):
        raise MLEError(f"start[{name!r}] = {value!r:.40}: expected a number or an array of "
                       "numbers, not text.")
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError, OverflowError):
        raise MLEError(f"start[{name!r}]: expected a number or an array of numbers, got "
                       f"{type(value).__name__} {value!r:.40}.") from None
    if not np.all(np.isfinite(arr)):
        raise MLEError(f"start[{name!r}] = {value!r:.60}: starting values must be finite.")
    return arr


def start_vector(lik, x0: np.ndarray, start) -> np.ndarray:
    """The unconstrained start with ``start`` (user scale, by parameter name) applied to ``x0``.

    Raises
    ------
    MLEError
        Naming the parameter: ``start`` not a mapping, an unknown name, a value that is not
        numbers, a wrong number of values, or a value outside the parameter's support.
    """
    blocks = {b.name: b for b in lik.blocks}
    if not isinstance(start, Mapping):
        raise MLEError(f"start= must be a mapping {{parameter name: value}}, e.g. "
                       f"start={{'{next(iter(blocks), 'sigma')}': 1.0}}; got "
                       f"{type(start).__name__}.")
    by_name = {normalize(b): b for b in blocks}
    values = lik.constrained(x0)
    for key, value in start.items():
        name = by_name.get(normalize(key)) if isinstance(key, str) else None
        if name is None:
            raise MLEError(f"start= names unknown parameters [{key!r}]; the model's parameters "
                           f"are {list(blocks)}.{did_you_mean(str(key), blocks)}")
        b = blocks[name]
        arr = _numbers(name, value)
        size = int(np.prod(b.shape)) if b.shape else 1
        if arr.size == 1 and size > 1:
            arr = np.full(b.shape, float(arr.reshape(-1)[0]))  # one value for every element
        if arr.size != size:
            labels = ", ".join(b.labels[:6]) + (", ..." if len(b.labels) > 6 else "")
            raise MLEError(f"start[{name!r}] has {arr.size} value(s); {name} has {size} "
                           f"({labels}). Give one value per element, or a single number for "
                           "all of them.")
        outside = (arr <= b.lower) | (arr >= b.upper) if (np.isfinite(b.lower)
                                                          or np.isfinite(b.upper)) else None
        if outside is not None and np.any(outside):
            bad = arr.reshape(-1)[np.flatnonzero(outside.reshape(-1))[:3]].tolist()
            raise MLEError(f"start[{name!r}] = {bad if arr.size > 1 else bad[0]} is outside "
                           f"the support of {name}, ({_bound(b.lower)}, {_bound(b.upper)}); "
                           "give a value strictly inside.")
        values[name] = arr.reshape(b.shape)
    x = lik.unconstrain(values)
    if not np.all(np.isfinite(x)):  # pragma: no cover - the support check above catches it
        raise MLEError("start= values map to a non-finite point of the unconstrained space.")
    return x


def _bound(v: float) -> str:
    return "-inf" if v == -np.inf else "inf" if v == np.inf else f"{v:g}"


def explain_nonfinite_start(lik, x0: np.ndarray) -> None:
    """Raise a DataError naming the rows whose data lie outside the distribution's support.

    The rows whose log-likelihood term is ``-inf``/NaN at ``x0`` and at four other points of
    the parameter space (moved by ±0.5 and ±2 on the unconstrained scale) have a likelihood of
    0 whatever the parameters: their data are outside the support. Returns quietly when there
    are none (the start itself is the problem; the caller then looks for a finite start).
    """
    pointwise = getattr(lik, "pointwise", None)
    if pointwise is None or not np.all(np.isfinite(x0)):
        return
    try:
        bad = {k: ~np.isfinite(v) for k, v in pointwise(x0).items()}
        for step in (0.5, -0.5, 2.0, -2.0):
            for k, v in pointwise(x0 + step).items():
                bad[k] &= ~np.isfinite(v)
    except (ValueError, IndexError, FloatingPointError):  # pragma: no cover - shape errors
        return
    observed = lik.current_observed() if hasattr(lik, "current_observed") else {}
    ops = dict(zip(getattr(lik, "observed_names", ()), getattr(lik, "observed_ops", ()),
                   strict=False))
    parts = []
    for name, mask in bad.items():
        if not np.any(mask):
            continue
        rows_mask = mask.reshape(mask.shape[0], -1).any(axis=1) if mask.ndim > 1 else mask
        rows = np.flatnonzero(rows_mask)
        data = observed.get(name)
        shown = ""
        if data is not None and np.ndim(data) >= 1 and len(data) == len(rows_mask):
            vals = np.asarray(data)[rows[:5]]
            shown = f", value(s) {_values(vals)}"
        op = ops.get(name, "")
        dist = _NAMES.get(op, op.removesuffix("RV")) if op else "its distribution"
        support = SUPPORTS.get(op)
        where = rows_text(rows)
        parts.append(f"observed variable {name!r} ({dist}) has {rows.size} value(s) outside "
                     f"the support{f' ({support})' if support else ''}: {where}{shown}")
    if parts:
        raise DataError("; ".join(parts) + ". The likelihood of those rows is 0 whatever the "
                        "parameters: correct or drop them (or choose a distribution whose "
                        "support contains them).")


def _values(vals: np.ndarray) -> str:
    flat = [float(v) for v in np.asarray(vals, dtype=float).reshape(-1)[:5]]
    return "[" + ", ".join(f"{int(v)}" if v.is_integer() else f"{v:g}" for v in flat) + "]"
