"""Pictures of the MLE next to the posterior, drawn with arviz-plots (matplotlib backend).

- :func:`plot_forest`: per parameter, the MLE with its Wald interval next to the posterior mean
  with its HDI (same level; thick segment: 50 %).
- :func:`plot_densities`: posterior densities (and the Laplace approximation's) with the MLE as
  a dashed reference line.

Every mark is explained: colours by the model legend, reference lines and interval marks by a
key below the panels (``report/legend.py``).

Both return an :class:`arviz_plots.PlotCollection` (``pc.savefig(path)``; the matplotlib figure
is ``pc.viz["figure"].item()``); nothing is shown.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr
from scipy import stats

from mle_ppl._src.bayes.compare import posterior_draws  # noqa: F401 - same input checks
from mle_ppl._src.errors import MLEError
from mle_ppl._src.report.legend import add_key, figure_of

BACKEND = "matplotlib"
MLE_LABEL = "MLE ± Wald"
POSTERIOR_LABEL = "posterior mean ± HDI"
#: File types ``save_comparison_plots`` writes (matplotlib decides from the suffix).
PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def _posterior_ds(fit, posterior: xr.DataTree) -> xr.Dataset:
    posterior_draws(fit, posterior)  # validates names and shapes, with teaching errors
    names = [b.name for b in fit.likelihood.blocks]
    return posterior["posterior"].to_dataset()[names]


def _mle_ds(fit, like: xr.Dataset, offset: np.ndarray | float = 0.0) -> xr.Dataset:
    """MLE (+ offset·SE, when given) per variable, with the posterior's dims and coords."""
    se = fit.std_errors.to_numpy()
    out = {}
    for b in fit.likelihood.blocks:
        dims = tuple(d for d in like[b.name].dims if d not in ("chain", "draw"))
        val = (np.array(fit.theta[b.slice]) + offset * se[b.slice]).reshape(b.shape)
        out[b.name] = xr.DataArray(val, dims=dims, coords={d: like[d] for d in dims})
    return xr.Dataset(out)


def _wald_ds(fit, like: xr.Dataset, prob: float) -> xr.Dataset:
    z = stats.norm.ppf(0.5 + prob / 2)
    lo, hi = _mle_ds(fit, like, -z), _mle_ds(fit, like, z)
    return xr.concat([lo, hi], dim="ci_bound").assign_coords(ci_bound=["lower", "upper"])


def plot_forest(fit, posterior: xr.DataTree, *, level: float = 0.95, title: bool = True):
    """Forest plot: the MLE with its Wald interval beside the posterior mean with its HDI.

    Parameters
    ----------
    fit : MLEFit
    posterior : xarray.DataTree
        From :func:`mle_ppl.sample` on the same model.
    level : float
        Level of both intervals (thin line); the thick segment is the 50 % interval (the key
        below the panels says so).
    title : bool
        Add a title naming the model and the level.

    Returns
    -------
    arviz_plots.PlotCollection
        Visual elements in ``pc.viz``: ``twig`` (outer intervals), ``trunk`` (50 %),
        ``point_estimate``, by variable with a ``model`` dim (``"MLE ± Wald"``,
        ``"posterior mean ± HDI"``).

    Examples
    --------
    >>> pc = plot_forest(fit, posterior)      # doctest: +SKIP
    >>> pc.savefig("forest.png")              # doctest: +SKIP
    """
    import arviz_plots as azp
    import arviz_stats as azs

    if not 0 < level < 1:
        raise MLEError(f"level={level!r} must be between 0 and 1 (e.g. 0.95).")
    if np.any(~np.isfinite(fit.std_errors.to_numpy())):
        raise MLEError(f"the fit of {fit.model_name!r} has no finite standard errors "
                       f"({'; '.join(fit.warnings)}), so there is no Wald interval to plot; "
                       "use plot_densities, or fix the fit first.")
    post = _posterior_ds(fit, posterior)
    models = [MLE_LABEL, POSTERIOR_LABEL]

    def both(a, b):
        return xr.concat([a, b], dim="model", join="exact").assign_coords(model=models)

    stats_ = {
        "twig": both(_wald_ds(fit, post, level), azs.hdi(post, prob=level)),
        "trunk": both(_wald_ds(fit, post, 0.5), azs.hdi(post, prob=0.5)),
        "point_estimate": both(_mle_ds(fit, post), post.mean(("chain", "draw"))),
    }
    # plot_forest lays out one row per model entry from the draws; the intervals themselves
    # come from `stats`, so the posterior serves as the layout template for both entries.
    tree = xr.DataTree.from_dict({"posterior": post})
    pc = azp.plot_forest({m: tree for m in models}, combined=True, stats=stats_,
                         ci_probs=(0.5, level), backend=BACKEND)
    # The label column's tick labels only name its sub-columns ("variable", a dim name, "x"):
    # hide them (the ticks stay, so the sub-columns keep their room) and the axis line.
    labels_ax = pc.get_target(None, {"column": "labels"})
    labels_ax.tick_params(axis="x", length=0, labelbottom=False)
    labels_ax.spines["bottom"].set_visible(False)
    pc.add_legend("model", title="")
    add_key(pc, [(f"thin line: {level:.0%} interval", "thin"),
                 ("thick line: 50% interval", "thick"),
                 ("circle: MLE / posterior mean", {"marker": "o", "linestyle": "none",
                                                   "color": "0.3", "markerfacecolor": "white"})])
    if title:
        pc.add_title(f"{fit.model_name}: MLE ± {level:.0%} Wald vs posterior {level:.0%} HDI",
                     size=11)
    return pc


def _laplace_like(fit, post: xr.Dataset, random_seed) -> xr.Dataset:
    """Laplace draws with the posterior's (chain, draw) shape, so both share one plot."""
    n_chain, n_draw = post.sizes["chain"], post.sizes["draw"]
    lap = fit.to_datatree(laplace_draws=n_chain * n_draw, random_seed=random_seed)
    lap = lap["posterior"].to_dataset()[list(post.data_vars)]
    out = {}
    for k, v in lap.data_vars.items():
        arr = v.values.reshape((n_chain, n_draw) + v.shape[2:])
        out[k] = xr.DataArray(arr, dims=v.dims, coords=post[k].coords)
    return xr.Dataset(out)


def plot_densities(fit, posterior: xr.DataTree, *, laplace: bool = True, random_seed=0,
                   title: bool = True, level: float = 0.95):
    """Posterior densities (and the Laplace approximation's) with the MLE as a reference line.

    Parameters
    ----------
    fit : MLEFit
    posterior : xarray.DataTree
    laplace : bool
        Also draw the Laplace (normal, on the unconstrained scale) approximation around the MLE
        (needs finite standard errors).
    random_seed : int, optional
        Seed of the Laplace draws.
    title : bool
        Add a title.
    level : float
        Level of the HDI drawn under each density (with its mean as a dot).

    Returns
    -------
    arviz_plots.PlotCollection
        A key below the panels explains the dashed MLE line and the dot-and-bar marks.
        ``pc.viz["dist"]`` holds the density lines (``model`` dim when ``laplace``),
        ``pc.viz["ref_line"]`` the MLE lines.

    Examples
    --------
    >>> pc = plot_densities(fit, posterior)   # doctest: +SKIP
    """
    import arviz_plots as azp

    post = _posterior_ds(fit, posterior)
    laplace = laplace and bool(np.all(np.isfinite(fit.cov_unconstrained)))
    tree = xr.DataTree.from_dict({"posterior": post})
    data = tree
    if laplace:
        data = {"posterior": tree,
                "Laplace approximation": xr.DataTree.from_dict(
                    {"posterior": _laplace_like(fit, post, random_seed)})}
    n_panels = sum(int(np.prod(post[k].shape[2:], dtype=int)) for k in post.data_vars)
    n_cols = min(n_panels, 3)
    n_rows = -(-n_panels // n_cols)
    if not 0 < level < 1:
        raise MLEError(f"level={level!r} must be between 0 and 1 (e.g. 0.95).")
    pc = azp.plot_dist(data, kind="kde", backend=BACKEND, col_wrap=n_cols,
                       ci_kind="hdi", ci_prob=level,
                       visuals={"point_estimate_text": False},
                       figure_kwargs={"figsize": (3.6 * n_cols + 1.5, 2.8 * n_rows + 1.2),
                                      "figsize_units": "inches", "layout": "constrained"})
    azp.add_lines(pc, _mle_ds(fit, post), visuals={"ref_line": {"linestyle": "--",
                                                                "color": "0.3"}})
    if laplace:
        pc.add_legend("model", title="")
    add_key(pc, [("MLE", "dashed"), (f"mean and {level:.0%} HDI", "interval")])
    if title:
        figure_of(pc).suptitle(f"{fit.model_name}: posterior densities and the MLE",
                               fontsize=11)
    return pc


def densities_path(path: str | Path) -> Path:
    """Where :func:`save_comparison_plots` writes the densities next to ``path``."""
    path = Path(path)
    return path.with_name(f"{path.stem}_densities{path.suffix}")


def check_plot_path(path: str | Path) -> Path:
    """``path`` as a Path if it ends in .png/.svg/.pdf and its folder exists (else MLEError)."""
    path = Path(path)
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise MLEError(f"plot file {str(path)!r}: expected a name ending in "
                       f"{', '.join(PLOT_SUFFIXES)} (e.g. comparison.png).")
    if not path.parent.exists():
        raise MLEError(f"plot file {str(path)!r}: the folder {str(path.parent)!r} does not "
                       "exist.")
    return path


def save_comparison_plots(fit, posterior: xr.DataTree, path: str | Path, *,
                          level: float = 0.95, random_seed=0) -> list[Path]:
    """Save the forest plot to ``path`` and the densities to ``<stem>_densities<suffix>``.

    Returns the paths written. ``path`` must end in .png, .svg or .pdf.
    """
    import matplotlib.pyplot as plt

    path = check_plot_path(path)
    written = []
    pcs = []
    if np.all(np.isfinite(fit.std_errors.to_numpy())):
        pcs.append((plot_forest(fit, posterior, level=level), path))
        pcs.append((plot_densities(fit, posterior, random_seed=random_seed, level=level),
                    densities_path(path)))
    else:
        pcs.append((plot_densities(fit, posterior, random_seed=random_seed, level=level), path))
    for pc, target in pcs:
        fig = pc.viz["figure"].item()
        fig.savefig(target, bbox_inches="tight", dpi=120)
        plt.close(fig)
        written.append(target)
    return written
