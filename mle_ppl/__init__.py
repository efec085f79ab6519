"""mle-ppl: maximum-likelihood estimation as a first-class citizen of probabilistic programming.

Declare a conditional likelihood p(y | x; θ) as a PyMC model with flat priors; :func:`fit` finds
θ̂ by minimising the negative log-likelihood with compiled gradients and Hessians, and reports it
like a statistician expects.
"""

from mle_ppl._src.bayes import sample
from mle_ppl._src.bootstrap import BootstrapResult, bootstrap
from mle_ppl._src.closed_form import (
    ClosedFormCheck,
    OptimizerComparison,
    UnderflowDemo,
    closed_form_check,
    compare_optimizers,
    underflow_demo,
)
from mle_ppl._src.compare import Comparison, compare
from mle_ppl._src.engine import fit
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
from mle_ppl._src.likelihood import Likelihood, likelihood_for
from mle_ppl._src.lrt import LRTResult, ic_table, lrt
from mle_ppl._src.modelfile import ModelSpec, list_models, load_model, loads_model, make_prior
from mle_ppl._src.multistart import MultiStartReport
from mle_ppl._src.optimize import METHODS
from mle_ppl._src.plots import plot_densities, plot_forest
from mle_ppl._src.predict import predict
from mle_ppl._src.profile import Profile, profile
from mle_ppl._src.result import MLEFit
from mle_ppl._src.robust import robust_cov

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
