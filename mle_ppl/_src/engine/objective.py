"""The objective: the one interface through which the optimizers and diagnostics see a likelihood.

An *objective* is the negative log-likelihood of a model as a function of one flat vector ``x`` of
unconstrained parameters (σ as log σ, a Uniform(a, b) parameter on the logit-interval scale), with
what the layers above it need and nothing about how it is computed. Everything above the engine's
``likelihood`` module (the optimizers in :mod:`~mle_ppl._src.engine.optimize`, the diagnostics in
:mod:`~mle_ppl._src.engine.uncertainty`, ``fit``, multistart, the sandwich, profile likelihood)
talks to an :class:`Objective` and never to PyMC or PyTensor directly.

Implementations
---------------
- :class:`~mle_ppl._src.engine.likelihood.Likelihood` (in memory): PyTensor functions compiled
  once per model on the flat vector; data live in ``pm.Data`` containers.
- A Laplace-marginal objective (random effects integrated out: an inner Newton per call, the
  log-determinant, the implicit-function gradient) and a streamed/distributed objective (the same
  compiled pieces summed over row chunks or Dask partitions) implement the same protocol, so they
  plug in without touching any optimizer.

The protocol
------------
Parameter layout (fixed for the objective's life):

``blocks``
    tuple of :class:`ParamBlock`, one per free variable, in declaration order: name, shape,
    position in ``x``, transform name, support ``[lower, upper]``, dims and labels.
``labels``, ``n_params``
    the flat labels (``beta[GNP]``) and their number.
``bounded``
    read-only bool mask over ``x``: coordinates behind a transform, whose estimate can sit on a
    bound of the user's scale (log σ → −∞ is σ → 0).
``notes``
    sentences the result must carry (e.g. "likelihood_only=True: the prior terms ... were dropped").
``discrete_outcome``
    True when an observed variable is Bernoulli/binomial/categorical/multinomial (separation is
    possible, so the diagnostics look at fitted probabilities).

Evaluation (``x`` is a float vector of length ``n_params``; all sums are over observations):

``x0()``
    the default start on the unconstrained scale.
``value(x)``, ``value_and_grad(x)``
    the negative log-likelihood ``-Σ log p(yᵢ | θ)`` and its gradient in ``x``; a non-finite value
    means "outside the support" and optimizers treat it as a rejected step.
``hessian(x)``
    the exact symmetric Hessian of the NLL in ``x``, ``n_params × n_params``.
``count_obs(x=None)``
    number of observations ``n`` (BIC, mean-NLL gradient descent).
``pointwise(x)``
    per-observation log-likelihood terms by observed variable (LOO, cross-entropy, separation).
    An objective that cannot hold them all (streamed data) raises :class:`NotAvailable`.
``scores(x)``
    ``(n_rows, n_params)`` per-row gradients of the log-likelihood in ``x`` (sandwich SEs, the
    bootstrap's influence values). Raises :class:`NotAvailable` where rows are not independent or
    not in memory; such objectives provide ``meat(x, groups)`` (a sum) instead.
``constrained_and_jacobian(x)``
    the user-scale values by variable name (and deterministics) and ``dθ/dx`` (flat, label order),
    for the delta method ``Σ_θ = J Σ_x Jᵀ``. ``constrained(x)``, ``constrained_flat(x)`` and
    ``unconstrain(values)`` are the obvious relatives.
``meat(x, groups=None)`` (objectives without ``scores``)
    ``(Σ sᵢsᵢᵀ, n)`` summed chunk by chunk, or per cluster of the data column ``groups``:
    ``(Σ_g S_g S_gᵀ, G)``; the sandwich uses it. Such objectives set ``rows_in_memory = False``
    (no bootstrap, no LOO) and describe their reading in ``data_source``.
``snapshot()``
    the data the objective currently evaluates (opaque; a result keeps it so that it can be
    re-bound later, see ``MLEFit.bound``).

Where to change what
--------------------
A new way of *evaluating* a likelihood (another backend, marginalisation, chunking) is a new
implementation of this protocol. A new way of *optimizing* is a function in ``optimize`` taking an
objective. A new *uncertainty* method takes the objective and the optimum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from mle_ppl._src.errors import MLEError


class NotAvailable(MLEError):
    """This objective cannot provide that quantity (e.g. per-row terms of streamed data)."""


@dataclass(frozen=True)
class ParamBlock:
    """One free variable of the model as it sits in the flat parameter vector."""

    name: str  #: the variable's name (``beta``)
    value_name: str  #: its value variable (``sigma_log__`` when transformed)
    shape: tuple[int, ...]
    start: int  #: first index in the flat vector
    transform: str | None  #: transform class name, or None
    lower: float
    upper: float
    dims: tuple[str, ...]
    labels: tuple[str, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=int))

    @property
    def slice(self) -> slice:
        return slice(self.start, self.start + self.size)


@runtime_checkable
class Objective(Protocol):
    """The negative log-likelihood on a flat unconstrained vector (see the module docstring)."""

    blocks: tuple[ParamBlock, ...]
    labels: tuple[str, ...]
    n_params: int
    bounded: np.ndarray
    notes: tuple[str, ...]

    @property
    def discrete_outcome(self) -> bool: ...

    def x0(self) -> np.ndarray: ...

    def value(self, x: np.ndarray) -> float: ...

    def value_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]: ...

    def hessian(self, x: np.ndarray) -> np.ndarray: ...

    def count_obs(self, x: np.ndarray | None = None) -> int: ...

    def pointwise(self, x: np.ndarray) -> dict[str, np.ndarray]: ...

    def constrained_and_jacobian(self, x: np.ndarray
                                 ) -> tuple[dict[str, np.ndarray], np.ndarray]: ...

    def constrained(self, x: np.ndarray) -> dict[str, np.ndarray]: ...

    def constrained_flat(self, x: np.ndarray) -> np.ndarray: ...

    def unconstrain(self, values: dict[str, np.ndarray]) -> np.ndarray: ...

    def snapshot(self) -> tuple: ...


class Callables:
    """The part of an objective an optimizer uses, from two functions (for sub-problems).

    A profile likelihood holds one coordinate fixed and optimizes the rest; a bootstrap replicate
    re-weights the rows. Both hand the optimizer ``Callables(value_and_grad, hessian)``.
    """

    __slots__ = ("value_and_grad", "hessian")

    def __init__(self, value_and_grad, hessian):
        self.value_and_grad = value_and_grad
        self.hessian = hessian
