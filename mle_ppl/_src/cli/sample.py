"""``mle-ppl sample MODEL``: NUTS on the same model the MLE fits (flat or file/CLI priors)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HELP = "sample the posterior of a model with NUTS (PyMC), flat priors unless priors are given"

EXAMPLES = """\
  mle-ppl sample logistic_regression                 # the file's [priors] table, if any
  mle-ppl sample logistic_regression --flat          # flat priors: posterior ∝ likelihood
  mle-ppl sample model.toml --data d.csv --prior 'beta=Normal(0, 2.5)' --out post.nc
  mle-ppl sample poisson_exposure --draws 500 --chains 2 --seed 1 --json

--out FILE saves the ArviZ DataTree: .nc (netCDF4) or .zarr.
exit status: 0 sampled with good diagnostics; 1 sampled, but divergences, R-hat > 1.01 or low
ESS (the output says which); 2 bad input, or an improper posterior under flat priors.
"""

OUT_SUFFIXES = (".nc", ".zarr")


def add_sampling_arguments(parser) -> None:
    """Options shared by ``sample`` and ``compare``."""
    from mle_ppl._src.cli._common import (
        MAX_CHAINS,
        MAX_DRAWS,
        add_model_arguments,
        int_range,
        nonnegative_int,
        probability,
        seed,
    )

    add_model_arguments(parser)
    parser.add_argument("--prior", metavar="NAME=DIST", action="append", default=[],
                        help="proper prior for a parameter, e.g. 'beta=Normal(0, 2.5)' "
                             "(repeatable; overrides the file's [priors] table)")
    parser.add_argument("--flat", action="store_true",
                        help="ignore the model file's [priors] table: flat priors everywhere "
                             "(except --prior ones)")
    parser.add_argument("--draws", type=int_range(1, MAX_DRAWS), default=1000, metavar="N",
                        help="draws per chain (default 1000)")
    parser.add_argument("--tune", type=nonnegative_int, default=1000, metavar="N",
                        help="tuning steps per chain (default 1000)")
    parser.add_argument("--chains", type=int_range(1, MAX_CHAINS), default=4, metavar="N",
                        help="number of chains (default 4)")
    parser.add_argument("--cores", type=int_range(1, MAX_CHAINS), default=None, metavar="N",
                        help="chains run in parallel (default: PyMC's, up to 4)")
    parser.add_argument("--target-accept", type=probability, default=0.8, metavar="P",
                        help="NUTS target acceptance rate (default 0.8)")
    parser.add_argument("--init", default="mle", choices=["mle", "pymc"],
                        help="where NUTS starts: mle (default: at the MLE, mass matrix from the "
                             "observed information) or pymc (PyMC's jitter+adapt_diag)")
    parser.add_argument("--seed", type=seed, default=None, metavar="S",
                        help="random seed, for reproducible draws (0 to 2**32 - 1)")
    parser.add_argument("--progress", action="store_true",
                        help="show PyMC's progress bar (on stderr)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def add_arguments(parser) -> None:
    add_sampling_arguments(parser)
    parser.add_argument("--out", metavar="FILE", default=None,
                        help="save the DataTree to FILE (.nc netCDF4, or .zarr)")


def priors_from_args(args) -> dict | str | None:
    """``--prior NAME=DIST`` options as the ``priors=`` of ``sample``."""
    from mle_ppl._src.errors import MLEError

    priors: dict[str, str] = {}
    for item in args.prior:
        name, sep, dist = item.partition("=")
        if not sep or not name.strip() or not dist.strip():
            raise MLEError(f"--prior {item!r}: expected NAME=DIST, e.g. --prior "
                           "'beta=Normal(0, 2.5)'.")
        priors[name.strip()] = dist.strip()
    return priors or None


def run_sample(args):
    """Run :func:`mle_ppl.sample` with the shared options; returns the DataTree."""
    import warnings

    from mle_ppl._src.bayes.sample import sample
    from mle_ppl._src.cli._ui import step
    from mle_ppl._src.errors import SamplingWarning

    priors = priors_from_args(args)
    # a spinner on stderr (terminal only) unless PyMC's own progress bar is asked for
    spinner = step(f"sampling {args.model} with NUTS ({args.chains} chains × {args.draws} "
                   "draws; compiling first)", enabled=not args.progress)
    with spinner, warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)  # reported in the output instead
        return sample(args.model, args.data, priors=priors, file_priors=not args.flat,
                      draws=args.draws, tune=args.tune, chains=args.chains, cores=args.cores,
                      target_accept=args.target_accept, init=args.init,
                      random_seed=args.seed, progress=args.progress)


def check_out_path(out: str) -> Path:
    """``--out`` as a Path ending in .nc or .zarr in an existing, writable folder (else
    MLEError)."""
    from mle_ppl._src.cli._common import check_out_file

    return check_out_file("--out", out, {".nc": "netCDF4", ".zarr": "zarr"})


def save_tree(tree, out: str) -> Path:
    """Save a DataTree as netCDF4 (.nc) or zarr (.zarr), atomically (nothing left on failure)."""
    from mle_ppl._src.cli._common import write_file

    path = check_out_path(out)

    def writer(target: Path) -> None:
        if path.suffix.lower() == ".nc":
            tree.to_netcdf(target, engine="netcdf4")
        else:
            tree.to_zarr(target, mode="w", consolidated=False)

    write_file("--out", out, path, writer)
    return path


#: HDI bounds are named as in ``mle-ppl compare`` and :attr:`Comparison.table` (the level is
#: given separately), not arviz-stats' ``hdi95_lb``/``hdi95_ub``.
HDI_NAMES = {"lb": "hdi_lower", "ub": "hdi_upper"}


def summary_table(tree, level: float = 0.95):
    """Mean, sd, HDI (``hdi_lower``/``hdi_upper``), ESS and R-hat per label (arviz-stats)."""
    import re
    import warnings

    import arviz_stats

    names = [k for k in tree["posterior"].data_vars]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        tab = arviz_stats.summary(tree, var_names=names, ci_prob=level, ci_kind="hdi",
                                  round_to="none")
    return tab.rename(columns=lambda c: re.sub(r"^hdi\d*_(lb|ub)$",
                                               lambda m: HDI_NAMES[m.group(1)], str(c)))


def run(args) -> int:
    from mle_ppl._src.bayes.compare import _num

    if args.out:
        check_out_path(args.out)  # fail before the (slow) sampling
    tree = run_sample(args)
    attrs = tree["posterior"].attrs
    problems = [p for p in attrs.get("mle_ppl_sampling_problems", "").split("\n") if p]
    notes = [p for p in attrs.get("mle_ppl_notes", "").split("\n") if p]
    priors = json.loads(attrs.get("mle_ppl_priors", "{}"))
    table = summary_table(tree)
    status = 1 if problems else 0
    if args.json:
        params = {str(lab): {str(c): _num(v) for c, v in row.items()}
                  for lab, row in table.iterrows()}
        doc = {"model": attrs.get("mle_ppl_model"), "level": 0.95,
               "draws": int(tree["posterior"].sizes["draw"]),
               "chains": int(tree["posterior"].sizes["chain"]), "priors": priors,
               "init": attrs.get("mle_ppl_init"), "parameters": params, "warnings": problems,
               "notes": notes,
               "out": str(Path(args.out)) if args.out else None}
        text = json.dumps(doc, allow_nan=False)  # computed before the file is written
        if args.out:
            save_tree(tree, args.out)
        sys.stdout.write(text + "\n")
        return status
    out = save_tree(tree, args.out) if args.out else None
    from mle_ppl._src.cli import _ui

    con = _ui.stdout_console()
    con.print(f"NUTS posterior of {attrs.get('mle_ppl_model')!r}: "
              f"{tree['posterior'].sizes['chain']} chains × {tree['posterior'].sizes['draw']} "
              "draws", markup=False)
    con.print("priors: " + ", ".join(f"{k} ~ {v}" for k, v in priors.items()), markup=False)
    if attrs.get("mle_ppl_init"):
        con.print(f"init: {attrs['mle_ppl_init']}", markup=False)
    con.print()
    con.print(_ui.frame_table(table, index_name="parameter"))
    for p in problems:
        con.print(f"WARNING: {p}", markup=False)
    for n in notes:
        con.print(f"Note: {n}", markup=False)
    if out:
        con.print(f"saved: {out}", markup=False)
    return status
