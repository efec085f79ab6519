"""Nonlinear least squares: exponential decay y = a exp(-k t) + c with Gaussian noise.

The MLE of (a, k, c) is the nonlinear least-squares solution; sigma^2 = RSS/n. Written as a
Python model file: ``build(data)`` returns a PyMC model with flat priors.
"""

import numpy as np
import pymc as pm

#: One-line description shown by ``mle-ppl models``.
DESCRIPTION = ("Nonlinear least squares, exponential decay y = a exp(-k t) + c (Python model "
               "file): the MLE of (a, k, c) is the least-squares fit; sigma^2 = RSS/n")
#: Default data, relative to this file.
DATA = "data/exponential_decay.csv"
#: Priors for the Bayesian fit.
PRIORS = {"a": "Normal(0, 10)", "k": "HalfNormal(5)", "c": "Normal(0, 10)",
          "sigma": "HalfNormal(1)"}


def build(data, priors=None):
    """The decay model on ``data`` (columns ``t`` and ``y``); ``priors`` replace flat priors."""
    from mle_ppl import make_prior

    priors = priors or {}
    with pm.Model(coords={"obs_id": np.arange(len(data))}) as model:
        t = pm.Data("t", data["t"].to_numpy(dtype=float), dims="obs_id")
        y = pm.Data("y_data", data["y"].to_numpy(dtype=float), dims="obs_id")

        def param(name, lower=None, initval=None):
            if name in priors:
                return make_prior(name, priors[name], lower=lower)
            if lower == 0:
                return pm.HalfFlat(name, initval=initval)
            return pm.Flat(name, initval=initval)

        a = param("a", initval=1.0)
        k = param("k", lower=0, initval=1.0)
        c = param("c", initval=0.0)
        sigma = param("sigma", lower=0, initval=1.0)
        pm.Normal("y", mu=a * pm.math.exp(-k * t) + c, sigma=sigma, observed=y, dims="obs_id")
    return model
