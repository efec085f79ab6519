"""``mle-ppl compare MODEL``: fit by maximum likelihood, sample with NUTS, compare side by side."""

from __future__ import annotations

import json
import sys

from mle_ppl._src.cli.sample import add_sampling_arguments, run_sample

HELP = "fit a model by maximum likelihood and with NUTS, and compare them (tables, plots)"

EXAMPLES = """\
  mle-ppl compare poisson_exposure --flat               # flat priors: MLE vs posterior ∝ likelihood
  mle-ppl compare logistic_regression --plot cmp.png    # also writes cmp_densities.png
  mle-ppl compare model.toml --data d.csv --prior 'sigma=HalfNormal(1)' --json
  mle-ppl compare linear_regression --draws 500 --chains 2 --seed 1 --plot cmp.svg

--plot FILE (.png, .svg or .pdf) writes a forest plot (MLE ± Wald beside the posterior HDI) to
FILE and the posterior densities with the MLE as a dashed line to FILE_densities.
Priors: the model file's [priors] table unless --flat; --prior NAME=DIST adds or overrides.
exit status: 0 compared, fit and sampling healthy; 1 the MLE is not trustworthy or sampling
diagnostics are poor (the output says why); 2 bad input, or an improper posterior under flat
priors (give --prior for the named parameters).
"""


def add_arguments(parser) -> None:
    from mle_ppl._src.cli._common import nonnegative_int, probability

    add_sampling_arguments(parser)
    parser.add_argument("--level", type=probability, default=0.95, metavar="P",
                        help="level of the Wald interval and the HDI (default 0.95)")
    parser.add_argument("--laplace-draws", type=nonnegative_int, default=1000, metavar="N",
                        help="draws from the Laplace approximation for its ELPD-LOO "
                             "(default 1000; 0 skips)")
    parser.add_argument("--plot", metavar="FILE", default=None,
                        help="save plots: FILE (.png/.svg/.pdf) and FILE_densities")


def run(args) -> int:
    import warnings

    from mle_ppl._src.api.fit import fit
    from mle_ppl._src.bayes.compare import compare
    from mle_ppl._src.errors import SamplingWarning

    if args.plot:
        from pathlib import Path

        from mle_ppl._src.bayes.plots import check_plot_path
        from mle_ppl._src.cli._common import check_writable_folder

        check_plot_path(args.plot)  # fail before the (slow) sampling
        folder = Path(args.plot).parent
        check_writable_folder("--plot", args.plot, folder if str(folder) else Path("."))
    from mle_ppl._src.cli._ui import progress_enabled

    result = fit(args.model, args.data, warn=False,
                 progress=progress_enabled())  # on stderr, only on a terminal
    tree = run_sample(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)  # in cmp.warnings, printed below
        cmp = compare(result, tree, level=args.level, laplace_draws=args.laplace_draws,
                      random_seed=args.seed)
    plots = []
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        from mle_ppl._src.bayes.plots import save_comparison_plots

        plots = [str(p) for p in save_comparison_plots(result, tree, args.plot,
                                                       level=args.level)]
    sampling_bad = bool(tree["posterior"].attrs.get("mle_ppl_sampling_problems"))
    status = 0 if result.trustworthy and not sampling_bad else 1
    if args.json:
        doc = cmp.to_dict()
        doc["fit_warnings"] = list(result.warnings)
        doc["init"] = tree["posterior"].attrs.get("mle_ppl_init")
        doc["plots"] = plots
        json.dump(doc, sys.stdout, allow_nan=False)
        sys.stdout.write("\n")
        return status
    _print_comparison(cmp, result, plots, tree["posterior"].attrs.get("mle_ppl_init"))
    return status


def _print_comparison(cmp, result, plots, init) -> None:
    """The comparison as width-aware text on stdout (every number whole, see cli/_table.py)."""
    from mle_ppl._src.cli import _ui

    con = _ui.stdout_console()
    pct = f"{cmp.level:.0%}"
    con.print(f"MLE vs posterior: {cmp.model_name} ({pct} Wald interval vs {pct} HDI)",
              markup=False)
    con.print("priors: " + ", ".join(f"{k} ~ {v}" for k, v in cmp.priors.items()),
              markup=False)
    if init:
        con.print(f"init: {init}", markup=False)
    con.print()
    con.print(_ui.comparison_table(cmp))
    con.print()
    if cmp.random_effects is not None:  # mixed model: empirical-Bayes modes vs posterior
        con.print(_ui.frame_table(cmp.random_effects, title="Random effects: conditional "
                                  "modes (empirical Bayes) vs posterior (full Bayes)",
                                  index_name="random effect"))
        con.print()
    con.print(_ui.packed([f"{k} {v}" for k, v in cmp._model_rows()], con.width,
                         lead="model:"), markup=False, soft_wrap=True)
    for n in cmp.notes:
        con.print(f"Note: {n}", markup=False)
    for w in cmp.warnings:
        con.print(f"WARNING: {w}", markup=False)
    for w in result.warnings:
        con.print(f"MLE WARNING: {w}", markup=False)
    for p in plots:
        con.print(f"saved: {p}", markup=False)
