"""Parameter random variables: flat on a declared support, or a prior from a string.

:func:`make_param` creates a declared parameter in the current ``pm.Model``: flat (``Flat``,
``HalfFlat``, or ``Flat`` with an interval transform; ``Uniform`` when both bounds are given) for
the likelihood, or the prior named for it. :func:`make_prior` turns a string such as
``"Normal(0, 2.5)"`` (parsed by the expression whitelist, never evaluated) into a prior.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pymc as pm

from mle_ppl._src.errors import MLEError, ModelFileError, first_line
from mle_ppl._src.model.expressions import parse_distribution_call
from mle_ppl._src.model.toml import ParamDecl


def make_param(p: ParamDecl, prior: str | None, file: str):
    """The random variable of parameter ``p``: flat on its support, or ``prior`` when given."""
    dims = p.dims or None
    shape = p.shape
    if prior is not None:
        return make_prior(p.name, prior, dims=dims, shape=shape, lower=p.lower, upper=p.upper,
                          where=f"model file {file!r}, key priors.{p.name}")
    kw: dict[str, Any] = {"dims": dims} if dims else ({"shape": shape} if shape else {})
    lo, hi = p.lower, p.upper
    start = p.start
    if lo is not None and hi is not None:
        return pm.Uniform(p.name, lo, hi, initval=_initval(start, p, (lo + hi) / 2), **kw)
    if lo == 0.0:
        return pm.HalfFlat(p.name, initval=_initval(start, p, None), **kw)
    if lo is not None or hi is not None:
        tr = pm.distributions.transforms.Interval(lower=lo, upper=hi)
        default = lo + 1.0 if lo is not None else hi - 1.0
        return pm.Flat(p.name, transform=tr, initval=_initval(start, p, default), **kw)
    return pm.Flat(p.name, initval=_initval(start, p, None), **kw)


def _initval(start, p: ParamDecl, default):
    return start if start is not None else default



def make_prior(name: str, text: str, *, dims=None, shape=None, lower: float | None = None,
               upper: float | None = None, where: str = ""):
    """Create a prior from a string such as ``"Normal(0, 2.5)"`` in the current ``pm.Model``.

    The string is parsed by the expression whitelist (never evaluated). When ``lower``/``upper``
    are given (a parameter declared with a bounded support) and the distribution puts mass
    outside them, it is truncated there (``"Normal(0, 1)"`` with ``lower=0`` is a half-normal).

    Parameters
    ----------
    name : str
        Variable name.
    text : str
        ``"Dist(args...)"`` with constant arguments, e.g. ``"HalfNormal(1)"``,
        ``"StudentT(nu=3, mu=0, sigma=2)"``.
    dims, shape : optional
        Passed to PyMC.
    lower, upper : float, optional
        Support of the parameter.

    Returns
    -------
    TensorVariable
        The random variable.

    Raises
    ------
    ModelFileError
        Unknown distribution or parameter, names in arguments, invalid syntax.

    Examples
    --------
    >>> import pymc as pm
    >>> with pm.Model() as m:
    ...     beta = make_prior("beta", "Normal(0, 2.5)", shape=3)
    >>> m["beta"].type.shape
    (3,)
    """
    where = where or f"prior of {name!r}"
    call = parse_distribution_call(text, where=where)
    try:
        args, kwargs = call.evaluate()
    except MLEError:
        raise
    except Exception as err:  # noqa: BLE001 - PyTensor errors on odd constants
        raise ModelFileError(f"{where}: cannot evaluate {text!r}: {first_line(err)}") from None
    kw: dict[str, Any] = {}
    if dims:
        kw["dims"] = dims
    elif shape:
        kw["shape"] = shape
    cls = call.info.cls
    try:
        if lower is not None or upper is not None:
            base = cls.dist(*args, **kwargs)
            outside_lo = lower is not None and _has_mass(base, lower - 1e-3 * max(1, abs(lower)))
            outside_hi = upper is not None and _has_mass(base, upper + 1e-3 * max(1, abs(upper)))
            if outside_lo or outside_hi:
                return pm.Truncated(name, base, lower=lower if outside_lo else None,
                                    upper=upper if outside_hi else None, **kw)
        return cls(name, *args, **kwargs, **kw)
    except MLEError:
        raise
    except Exception as err:  # noqa: BLE001 - PyMC's errors for bad parameters
        raise ModelFileError(f"{where}: cannot create prior {text!r}: {first_line(err)}"
                             ) from None


def _has_mass(dist, value: float) -> bool:
    lp = np.asarray(pm.logp(dist, value).eval())
    return bool(np.any(np.isfinite(lp)))
