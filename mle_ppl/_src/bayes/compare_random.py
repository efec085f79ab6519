"""Empirical Bayes beside full Bayes: random-effect modes of a mixed-model fit vs their posterior.

The marginal MLE plugs the estimated variance parameters into the conditional distribution of
the random effects (their modes are empirical-Bayes predictions, lme4's ``ranef``); the posterior
averages over the variance parameters. The two agree when the variance parameters are well
determined. At a boundary fit (σ̂ = 0, lme4's singular fit) they do not: the modes are all shrunk
to 0, while the posterior of σ keeps mass away from 0 and the posterior of each effect keeps a
spread. :func:`random_effects_rows` puts the two side by side and says so in words.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

#: Columns of :attr:`Comparison.random_effects` (one row per random-effect entry).
RE_COLUMNS = ("mode", "std_err", "mean", "sd", "hdi_lower", "hdi_upper")


def _draws(post: xr.Dataset, name: str) -> np.ndarray:
    da = post[name]
    extra = tuple(d for d in da.dims if d not in ("chain", "draw"))
    arr = da.transpose("chain", "draw", *extra).values
    return arr.reshape(arr.shape[0] * arr.shape[1], -1)


def random_effects_rows(fit, posterior: xr.DataTree, level: float
                        ) -> tuple[pd.DataFrame | None, list[str]]:
    """The random effects' modes beside their posterior, and notes (boundary fits in words).

    Returns ``(None, [])`` for a fit without random effects, and ``(None, [note])`` when the
    posterior lacks the random-effect variables.
    """
    import arviz_stats

    re_ = getattr(fit, "random_effects", None)
    if re_ is None:
        return None, []
    post = posterior["posterior"].to_dataset()
    missing = [n for n in re_.names if n not in post]
    if missing:
        return None, [f"the posterior has no random-effect variable(s) {missing}; sample the "
                      "same model to compare the modes with their posterior."]
    cols = [_draws(post, n) for n in re_.names]
    draws = np.concatenate(cols, axis=1)
    if draws.shape[1] != len(re_.labels):
        return None, [f"the posterior's random effects have {draws.shape[1]} entries, the "
                      f"fit's {len(re_.labels)}; sample the same model and data."]
    hdi = np.array([arviz_stats.hdi(draws[:, j], prob=level) for j in range(draws.shape[1])])
    table = pd.DataFrame({"mode": re_.mode, "std_err": re_.std_err, "mean": draws.mean(0),
                          "sd": draws.std(0, ddof=1), "hdi_lower": hdi[:, 0],
                          "hdi_upper": hdi[:, 1]},
                         index=pd.Index(list(re_.labels), name="label"))
    notes = []
    labels = list(fit.labels)
    theta_post = {}
    for b in fit.likelihood.blocks:
        if b.name in post:
            theta_post.update(zip(labels[b.start:b.start + b.size],
                                  _draws(post, b.name).T, strict=True))
    for lab in re_.boundary:
        d = theta_post.get(lab)
        if d is None:
            continue
        lo, hi = arviz_stats.hdi(d, prob=level)
        spread = float(np.median(table["sd"]))
        notes.append(
            f"{lab}: the marginal MLE is 0, a maximum on the boundary (lme4's singular fit), but "
            f"the posterior of {lab} is not at 0: median {np.median(d):.3g}, mean "
            f"{np.mean(d):.3g}, {level:.0%} HDI [{lo:.3g}, {hi:.3g}]. Empirical Bayes plugs in "
            f"{lab} = 0 and shrinks every random effect to its mean (modes {_span(re_.mode)}); "
            f"full Bayes averages over {lab} and keeps a spread (posterior sd of the effects, "
            f"median {spread:.3g}). With few groups the data cannot rule out a between-group "
            "variation that the point estimate sets to 0.")
    if not re_.boundary:
        z = np.abs(table["mean"] - table["mode"]) / table["sd"]
        notes.append(f"random effects: the posterior means are within {np.nanmax(z):.2f} "
                     "posterior sd of the empirical-Bayes modes (the variance parameters are "
                     "well determined, so plugging in their MLE changes little).")
    return table, notes


def _span(values) -> str:
    v = np.asarray(values, dtype=float)
    if np.all(np.abs(v) < 1e-8):
        return "all 0 to 1e-8"
    return f"from {v.min():.3g} to {v.max():.3g}"
