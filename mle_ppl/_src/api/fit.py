"""``mle_ppl.fit``: the engine's estimate, returned as the user-facing :class:`~mle_ppl.MLEFit`."""

from __future__ import annotations

import inspect

from mle_ppl._src.api.result import MLEFit
from mle_ppl._src.engine.fit import estimate


def fit(model, data=None, **options) -> MLEFit:
    return MLEFit.from_estimate(estimate(model, data, **options))


# One signature and one docstring for both: the options are the engine's.
fit.__doc__ = estimate.__doc__
fit.__signature__ = inspect.signature(estimate).replace(return_annotation="MLEFit")
