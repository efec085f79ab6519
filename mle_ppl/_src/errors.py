"""Exceptions and warning categories raised by mle-ppl.

Every user mistake is a subclass of :class:`MLEError` (itself a ``ValueError``), so the command line
can turn it into a one-paragraph message and exit status 2 without a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MLEError(ValueError):
    """Base class of every error caused by the user's model, data or arguments.

    ``cli``, when given, is the same message worded for the command line (``--prior NAME=DIST``
    rather than ``priors={...}``); ``mle-ppl`` prints it instead of the Python wording.
    """

    def __init__(self, *args, cli: str | None = None):
        super().__init__(*args)
        self.cli = cli


class ModelError(MLEError):
    """The model cannot be fitted by maximum likelihood as given (priors, discrete params...)."""


class DataError(MLEError):
    """The data do not fit the model (missing columns, NaN, wrong shapes, ...)."""


class ModelFileError(MLEError):
    """A model file (TOML or Python) is malformed; the message names the file and the key path."""


class MLEWarning(UserWarning):
    """Base class of the diagnostics mle-ppl raises as Python warnings."""


class ConvergenceWarning(MLEWarning):
    """The optimizer stopped before it met its convergence criterion."""


class IdentifiabilityWarning(MLEWarning):
    """The observed information is singular or not positive definite at the optimum."""


class BoundaryWarning(MLEWarning):
    """An estimate lies on (or runs to) the boundary of its support; the likelihood may be
    unbounded."""


class SeparationWarning(MLEWarning):
    """(Quasi-)complete separation in a Bernoulli, binomial or categorical likelihood."""


class SamplingWarning(MLEWarning):
    """Posterior sampling diagnostics (R-hat, ESS, divergences) are poor, or the posterior is
    improper."""


class MultimodalityWarning(MLEWarning):
    """Optimizer starts ended at different local optima (``fit(..., starts=K)``)."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest candidate, or an empty string."""
    close = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name if the message is empty)."""
    s = str(err).strip()
    return s.splitlines()[0] if s else type(err).__name__


def rows_text(rows, limit: int = 5) -> str:
    """``"row(s) [2, 7] (0-based; 3, 8 counting from 1)"``: rows for messages, unambiguous.

    Row numbers are 0-based like a pandas DataFrame's default index; counting from 1 they are
    the data lines of a CSV file after its header.

    Examples
    --------
    >>> rows_text([2])
    'row(s) [2] (0-based; 3 counting from 1)'
    """
    rows = [int(r) for r in rows]
    shown, more = rows[:limit], (" ..." if len(rows) > limit else "")
    return (f"row(s) {shown}{more} (0-based; {', '.join(str(r + 1) for r in shown)}{more} "
            "counting from 1)")
