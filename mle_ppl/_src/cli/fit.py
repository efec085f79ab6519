"""``mle-ppl fit MODEL``: maximum-likelihood fit of a model file on a data table."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

HELP = "fit a model file (or bundled model) by maximum likelihood"

EXAMPLES = """\
  mle-ppl fit linear_regression                      # a bundled model on its own data
  mle-ppl fit model.toml --data mydata.csv           # your model file on your data
  mle-ppl fit model.toml --data d.parquet --json     # one JSON document on stdout
  mle-ppl fit logistic_regression --out fit.nc       # also save the ArviZ DataTree
  mle-ppl fit model.py --data d.csv --method lbfgs --quiet; echo $?
  mle-ppl fit poisson_exposure --ci profile --json  # profile-likelihood intervals
  mle-ppl fit model.toml --data d.csv --cov cluster --cluster firm   # cluster-robust errors
  mle-ppl fit exponential_decay --starts 20 --seed 1   # multi-start: do the optima agree?
  mle-ppl fit linear_mixed --reml                    # REML for a linear mixed model
  mle-ppl fit model.toml --data 'big/*.parquet' --chunk-rows 1000000   # streamed, out of core
  mle-ppl fit model.toml --data 'big/*.parquet' --scheduler tcp://host:8786  # on a Dask cluster

exit status: 0 fitted; 1 fitted but not trustworthy (not converged, non-identifiable,
separation, boundary: the output says why); 2 bad input (message on stderr, nothing on stdout).
--out is checked (format, folder, writable) before the fit; if writing it still fails (e.g. a
full disk), the exit status is 2, nothing is printed and no file is left behind.
"""

def add_arguments(parser) -> None:
    from mle_ppl._src.cli._common import (
        MAX_STARTS,
        add_model_arguments,
        int_range,
        memory_size,
        positive_int,
        seed,
    )
    from mle_ppl._src.engine.optimize import METHODS
    from mle_ppl._src.engine.quadrature import MAX_NODES

    add_model_arguments(parser)
    parser.add_argument("--json", action="store_true",
                        help="print exactly one JSON document on stdout")
    parser.add_argument("--method", default="newton", choices=list(METHODS),
                        help="optimizer (default: newton)")
    parser.add_argument("--max-iter", type=positive_int, default=None, metavar="N",
                        help="iteration cap of the optimizer")
    parser.add_argument("--out", metavar="FILE", default=None,
                        help="also write the fit as an ArviZ DataTree: FILE.nc (netCDF) or "
                             "FILE.zarr")
    parser.add_argument("--ci", default="wald", choices=["wald", "profile"],
                        help="confidence intervals: wald (default) or profile likelihood "
                             "(open ends are null in JSON, with ci_open flags)")
    parser.add_argument("--cov", default="nonrobust",
                        choices=["nonrobust", "HC0", "HC1", "cluster"],
                        help="covariance behind std_err and Wald intervals: the inverse observed "
                             "information (default) or a sandwich (HC0, HC1, cluster)")
    parser.add_argument("--cluster", metavar="COLUMN", default=None,
                        help="grouping column of the data for --cov cluster")
    parser.add_argument("--starts", type=int_range(1, MAX_STARTS), default=1, metavar="K",
                        help="optimizer starts (1 + K-1 jittered); reports whether they agree")
    parser.add_argument("--seed", type=seed, default=None,
                        help="random seed of the jittered starts (0 to 2**32 - 1)")
    parser.add_argument("--chunk-rows", type=int_range(1, 2**62), default=None, metavar="N",
                        help="stream Parquet --data (a file, a quoted glob or a directory) in "
                             "chunks of N rows: memory bounded by a chunk")
    parser.add_argument("--memory-budget", type=memory_size, default=None, metavar="SIZE",
                        help="Parquet data needing more memory than SIZE (e.g. 4G; default "
                             "$MLE_PPL_MEMORY_BUDGET or 2G) are streamed automatically")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="fit on a running Dask scheduler (tcp://host:8786); --data is read "
                             "with dask.dataframe (needs pip install 'mle-ppl[dask]')")
    parser.add_argument("--n-quadrature", type=int_range(1, MAX_NODES), default=None,
                        metavar="K",
                        help="integrate a scalar random effect per group (random intercepts) by "
                             "adaptive Gauss-Hermite quadrature with K nodes (glmer's nAGQ; 1 "
                             "is Laplace) instead of the Laplace approximation")
    parser.add_argument("--reml", action="store_true",
                        help="restricted maximum likelihood (REML) for a Gaussian linear mixed "
                             "model: the fixed effects integrated out with the random effects "
                             "(as lme4's REML=TRUE, statsmodels' MixedLM(reml=True))")
    parser.add_argument("--quiet", action="store_true",
                        help="print nothing but the JSON document (with --json); the exit "
                             "status tells the outcome")


def _check_out(out: str | None) -> Path | None:
    from mle_ppl._src.cli._common import check_out_file
    from mle_ppl._src.errors import MLEError

    if out is None:
        return None
    path = check_out_file("--out", out, {".nc": "netCDF", ".zarr": "zarr"})
    if path.suffix.lower() == ".zarr":
        try:
            import zarr  # noqa: F401
        except ImportError:
            raise MLEError("--out FILE.zarr needs the zarr package (pip install zarr); or use "
                           "FILE.nc.") from None
    return path


def write_datatree(tree, path: Path, *, option: str = "--out", shown: str | None = None) -> None:
    """Write ``tree`` to ``path`` atomically: a temporary sibling, then a rename.

    Nothing is left half-written: on any failure the temporary file is removed, and the
    MLEError names ``option`` and the path as the user gave it (``shown``).
    """
    from mle_ppl._src.cli._common import write_file

    def writer(target: Path) -> None:
        if path.suffix.lower() == ".nc":
            tree.to_netcdf(target, engine="netcdf4")
        else:
            with warnings.catch_warnings():
                # zarr 3 notes that consolidated metadata is not in its v3 spec; xarray reads it.
                warnings.filterwarnings("ignore", message="Consolidated metadata")
                tree.to_zarr(target)

    write_file(option, shown if shown is not None else str(path), path, writer)


def _check_cluster(result, column: str) -> None:
    """--cluster names a column of the fitted data with at least two groups (CLI wording)."""
    from mle_ppl._src.errors import DataError, did_you_mean

    table = result.data
    if table is None:  # pragma: no cover - every CLI fit has a data table
        raise DataError("--cov cluster needs the data table; this model has none.")
    cols = [str(c) for c in table.columns]
    if column not in cols:
        raise DataError(f"--cluster {column!r} is not a column of the data; columns are "
                        f"{cols[:20]}.{did_you_mean(column, cols)}")
    groups = table[column]
    if groups.isna().any():
        rows = [int(i) for i in groups.index[groups.isna()][:5]]
        raise DataError(f"--cluster {column!r} has missing values at row(s) {rows}; every row "
                        "needs a group.")
    if groups.nunique() < 2:
        raise DataError(f"--cluster {column!r} has a single group; cluster-robust standard "
                        "errors need at least 2 groups.")


def run(args) -> int:
    from mle_ppl._src.api.fit import fit
    from mle_ppl._src.errors import MLEError

    out = _check_out(args.out)
    if (args.cov == "cluster") != (args.cluster is not None):
        raise MLEError("--cov cluster and --cluster COLUMN go together: name the grouping "
                       "column of the data with --cluster.")
    from mle_ppl._src.cli._ui import progress_enabled

    chunked = args.chunk_rows is not None or args.scheduler is not None
    with _scheduler(args) as data:
        # progress on stderr: on a terminal; for chunked data a line per iteration always
        result = fit(args.model, data, method=args.method, max_iter=args.max_iter, warn=False,
                     starts=args.starts, random_seed=args.seed, chunk_rows=args.chunk_rows,
                     memory_budget=args.memory_budget, n_quadrature=args.n_quadrature,
                     reml=args.reml,
                     progress=progress_enabled(args.quiet) or (chunked and not args.quiet))
        if args.cluster is not None and result.data is not None:
            _check_cluster(result, args.cluster)
        return _report(args, result, out)


def _report(args, result, out) -> int:
    doc_kw = {"ci": args.ci, "cov_type": args.cov, "groups": args.cluster}
    status = 0 if result.trustworthy else 1
    # everything printed is computed before anything is written: an error here leaves no file
    text = None
    if args.json:
        text = json.dumps(result.to_dict(**doc_kw), allow_nan=False)
    elif not args.quiet:
        spec = result.spec
        head = []
        if spec is not None and spec.description:
            head.append(f"{spec.name}: {spec.description}")
        if out is not None:
            head.append(f"DataTree written to {args.out}")
        reading = result.source.reading
        if reading.get("kind") == "streamed":
            head.append(f"data: {reading['rows']:,} rows streamed from {reading['files']} "
                        f"Parquet file(s) in {reading['chunks']} chunks of at most "
                        f"{reading['chunk_rows']:,} rows")
        elif reading.get("kind") == "dask":
            head.append(f"data: {reading['rows']:,} rows in {reading['partitions']} Dask "
                        f"partitions, scheduler {reading['scheduler']}")
        text = _fit_renderables(result, head, **doc_kw)
    elif args.cov != "nonrobust":
        result.table(cov_type=args.cov, groups=args.cluster)  # its errors are exit 2 too
    if out is not None:
        write_datatree(result.to_datatree(), out, shown=args.out)
    if isinstance(text, str):
        sys.stdout.write(text + "\n")
    elif text is not None:
        _print_renderables(text)
    return status


class _scheduler:
    """``--scheduler ADDRESS``: a ``distributed.Client`` for the fit, and ``--data`` as a Dask
    DataFrame (closed afterwards); without it, ``--data`` as given."""

    def __init__(self, args):
        self.args = args
        self.client = None

    def __enter__(self):
        from mle_ppl._src.errors import MLEError

        args = self.args
        if args.scheduler is None:
            return args.data
        if args.chunk_rows is not None:
            raise MLEError("--scheduler and --chunk-rows exclude each other: on a cluster the "
                           "Dask partitions are the chunks.")
        if args.data is None:
            raise MLEError("--scheduler needs --data: the Parquet or CSV files (a quoted glob "
                           "or a directory) that the workers read.")
        try:
            import dask.dataframe as dd
            from distributed import Client
        except ImportError:
            raise MLEError("--scheduler needs Dask: pip install 'mle-ppl[dask]'.") from None
        try:
            self.client = Client(args.scheduler, timeout="20s")
        except (OSError, ValueError, TypeError) as err:
            raise MLEError(f"--scheduler {args.scheduler!r}: cannot connect: "
                           f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
                           ) from None
        from mle_ppl._src.model.chunks import parquet_files

        path = str(args.data)
        if path.lower().endswith(".csv"):
            return dd.read_csv(path)
        return dd.read_parquet([str(f) for f in parquet_files(path)])

    def __exit__(self, *exc):
        if self.client is not None:
            self.client.close()
        return False


def _fit_renderables(result, head: list[str], *, ci: str, cov_type: str, groups) -> list:
    """The fit as screen items: header lines, one labelled table (the requested SEs and CIs).

    Computed in full (profile intervals included) before anything is printed or written.
    """
    from rich.text import Text

    from mle_ppl._src.cli import _ui

    items: list = [Text(line) for line in head]
    items.append(lambda width: Text(_ui.packed([f"{k} {v}" for k, v in result._header()],
                                               width, lead=f"{result._title()}:")))
    tab, title = _inference_table(result, ci=ci, cov_type=cov_type, groups=groups)
    ci_label = "95% profile" if ci == "profile" else "95% Wald"
    re_ = result.random_effects
    shown: set = set()  # labels whose Wald ends outside the support the variance table notes
    if re_ is None:
        items += [Text(""), _ui.fit_table(result, title=title, tab=tab, ci_label=ci_label)]
    else:  # mixed model: fixed effects, then the variance components in their own table
        # the residual SD of a Gaussian likelihood is a variance component too (lme4's
        # "Residual"): not in the fixed-effects table
        vp = [lab for lab in [*re_.variance_params, *_residual_sds(result)] if lab in tab.index]
        shown = set(vp)
        fixed_title = title.replace("Estimates", "Fixed effects" + (
            " (GLS at the REML variance components)" if result.criterion == "REML" else ""), 1)
        items += [Text(""), _ui.fit_table(result, title=fixed_title, tab=tab.drop(index=vp),
                                          ci_label=ci_label),
                  Text(""), variance_table(result, tab.loc[vp], ci_label=ci_label,
                                           outside=tab.attrs.get("outside_support", {}))]
    items += [Text(f"WARNING: {w}") for w in result.warnings]
    items += [Text(f"Note: {n}") for n in result.notes]
    if ci != "profile":  # Wald ends outside a parameter's support (blank in the table)
        items += [Text(f"Note: {n}") for lab, n in zip(tab.attrs.get("outside_support", {}),
                                                       tab.attrs.get("notes", []), strict=True)
                  if lab not in shown]
    return items


def variance_table(result, tab, *, ci_label: str = "95% Wald", outside=None):
    """The variance components of a mixed model (rows of ``tab``) as a :class:`FitTable`:
    the parameters of the random effects' distributions, with a note at a boundary (σ̂ = 0).
    ``outside``: label -> (lower, upper) Wald ends outside the support (``table().attrs``)."""
    from mle_ppl._src.cli._table import Col, FitTable, Num

    re_ = result.random_effects
    counts: dict[str, int] = {}
    for lab in re_.labels:
        var = lab.split("[", 1)[0]
        counts[var] = counts.get(var, 0) + 1
    effects = ", ".join(f"{v} ({counts.get(v, 0)} modes)" for v in re_.names)
    title = (f"Variance components of the random effects {effects}, integrated out by "
             f"{re_.method}; modes in fit.random_effects and --json")
    cols = [Col("parameter", "label"), Col("estimate"), Col("std. error"),
            Col(f"{ci_label} lower"), Col(f"{ci_label} upper"), Col("note", "text")]
    rows = []
    for lab, r in tab.iterrows():
        note = ("boundary (singular) fit: estimate 0, a maximum on the boundary; SE NaN, "
                "one-sided profile interval (--ci profile)" if lab in re_.boundary else
                "residual SD" if lab not in re_.variance_params else "")
        lo, hi = r.ci_lower, r.ci_upper
        lo_out, hi_out = (outside or {}).get(lab, (False, False))
        if ci_label.endswith("Wald") and (lo_out or hi_out):
            # an SD's (or a correlation's) Wald interval may leave its support: such an end
            # is no confidence bound, so it is NaN (lme4 gives no Wald interval here)
            low, high = _support(result, lab)
            out = [side for side, bad in (("lower", lo_out), ("upper", hi_out)) if bad]
            lo, hi = (None if lo_out else lo), (None if hi_out else hi)
            note = (f"Wald {' and '.join(out)} end outside the support [{low:g}, "
                    f"{high:g}]: not shown; see --ci profile")
        rows.append([str(lab), Num(r.estimate, 6, 4), Num(r.std_err, 6, 3),
                     Num(lo, 6, 3), Num(hi, 6, 3), note])
    return FitTable(cols, rows, title=title)


def _residual_sds(result) -> list[str]:
    """Labels of free parameters that are the ``sigma`` of a Normal observed variable."""
    lik = result.likelihood
    model = getattr(lik, "model", None)
    if model is None:
        return []
    from pytensor.tensor.elemwise import DimShuffle

    free = {rv: rv.name for rv in model.free_RVs}
    names = set()
    for rv in model.observed_RVs:
        if type(rv.owner.op).__name__ != "NormalRV":
            continue
        sigma = rv.owner.inputs[-1]
        while sigma.owner is not None and isinstance(sigma.owner.op, DimShuffle):
            sigma = sigma.owner.inputs[0]  # broadcast to the data: the same parameter
        if sigma in free:
            names.add(free[sigma])
    return [lab for b in lik.blocks if b.name in names for lab in b.labels]


def _support(result, label: str) -> tuple[float, float]:
    """The support (lower, upper) of the parameter ``label`` (from its block's bounds)."""
    lik = result.likelihood
    i = list(lik.labels).index(label)
    block = next(b for b in lik.blocks if b.start <= i < b.start + b.size)
    return float(block.lower), float(block.upper)


def _print_renderables(items) -> None:
    """Print :func:`_fit_renderables` on stdout at the terminal's width (or PIPE_WIDTH)."""
    from mle_ppl._src.cli import _ui

    con = _ui.stdout_console()
    for item in items:
        if callable(item):
            con.print(item(con.width), soft_wrap=True)
        else:
            con.print(item)


#: What ``--cov`` puts behind the standard errors, for the table's title.
COV_WORDS = {"nonrobust": "inverse observed information", "HC0": "sandwich HC0",
             "HC1": "sandwich HC1", "cluster": "cluster-robust sandwich"}


def _inference_table(result, *, ci: str, cov_type: str, groups):
    """The table with the requested covariance and intervals (--cov, --ci), and its title."""
    tab = result.table(cov_type=cov_type, groups=groups)
    where = f" by {groups}" if cov_type == "cluster" else ""
    title = f"Estimates; std. error: {COV_WORDS[cov_type]}{where}"
    if ci == "profile":
        pci = result.conf_int(method="profile")
        tab["ci_lower"], tab["ci_upper"] = pci["lower"], pci["upper"]
        opened = [lab for lab, (lo, hi) in pci.attrs["open"].items() if lo or hi]
        title += "; 95% profile-likelihood intervals" + (
            f" (open, not reached: {', '.join(opened)})" if opened else "")
    else:
        title += "; 95% Wald intervals"
    return tab, title
