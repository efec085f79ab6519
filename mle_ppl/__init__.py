"""mle-ppl: maximum-likelihood estimation as a first-class citizen of probabilistic programming.

Declare a conditional likelihood p(y | x; θ) as a PyMC model with flat priors; :func:`fit` finds
θ̂ by minimising the negative log-likelihood with compiled gradients and Hessians, and reports it
like a statistician expects.
"""

from typing import TYPE_CHECKING

from mle_ppl._src.errors import (
    BoundaryWarning,
    ConvergenceWarning,
    DataError,
    IdentifiabilityWarning,
    MLEError,
    MLEWarning,
    ModelError,
    ModelFileError,
    MultimodalityWarning,
    SamplingWarning,
    SeparationWarning,
)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time these load on first use (below)
    from mle_ppl._src.api.fit import fit
    from mle_ppl._src.api.result import MLEFit
    from mle_ppl._src.engine.likelihood import Likelihood, likelihood_for
    from mle_ppl._src.engine.optimize import METHODS
    from mle_ppl._src.model.library import list_models, load_model, loads_model
    from mle_ppl._src.model.priors import make_prior
    from mle_ppl._src.model.spec import ModelSpec

# Everything but the exceptions loads on first use: the engine needs PyMC (1.4 s to import), and
# ArviZ statistics and plots, matplotlib and sampling more still. `import mle_ppl` stays instant,
# so `mle-ppl --help` does too; `mle_ppl.fit` pays for PyMC when first touched.
_LAZY = {
    "fit": "api.fit",
    "Likelihood": "engine.likelihood",
    "likelihood_for": "engine.likelihood",
    "ModelSpec": "model.spec",
    "list_models": "model.library",
    "load_model": "model.library",
    "loads_model": "model.library",
    "make_prior": "model.priors",
    "METHODS": "engine.optimize",
    "MLEFit": "api.result",
    "sample": "bayes.sample",
    "BootstrapResult": "inference.bootstrap",
    "bootstrap": "inference.bootstrap",
    "ClosedFormCheck": "report.checks",
    "OptimizerComparison": "report.teaching",
    "UnderflowDemo": "report.teaching",
    "closed_form_check": "report.closed_form",
    "compare_optimizers": "report.teaching",
    "underflow_demo": "report.teaching",
    "Comparison": "bayes.compare",
    "compare": "bayes.compare",
    "LRTResult": "inference.lrt",
    "ic_table": "inference.lrt",
    "lrt": "inference.lrt",
    "MultiStartReport": "engine.multistart",
    "plot_densities": "bayes.plots",
    "plot_forest": "bayes.plots",
    "predict": "inference.predict",
    "Profile": "inference.profile",
    "profile": "inference.profile",
    "robust_cov": "inference.robust",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"mle_ppl._src.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mle_ppl' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "BootstrapResult",
    "BoundaryWarning",
    "ClosedFormCheck",
    "Comparison",
    "ConvergenceWarning",
    "DataError",
    "IdentifiabilityWarning",
    "LRTResult",
    "Likelihood",
    "MLEError",
    "MLEFit",
    "MLEWarning",
    "ModelError",
    "ModelFileError",
    "ModelSpec",
    "MultiStartReport",
    "MultimodalityWarning",
    "OptimizerComparison",
    "Profile",
    "SamplingWarning",
    "SeparationWarning",
    "UnderflowDemo",
    "bootstrap",
    "closed_form_check",
    "compare",
    "compare_optimizers",
    "fit",
    "ic_table",
    "likelihood_for",
    "list_models",
    "load_model",
    "loads_model",
    "lrt",
    "make_prior",
    "plot_densities",
    "plot_forest",
    "predict",
    "profile",
    "robust_cov",
    "sample",
    "underflow_demo",
]
