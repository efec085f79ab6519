"""Terminal helpers shared by the subcommands: rich consoles, a progress spinner, tables.

Progress goes to **stderr** and only when stderr is a terminal, so piped output (``--json``,
``> out.txt``) and captured stderr stay clean; results go to stdout.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: Width used for tables when stdout is not a terminal (rich would otherwise wrap at 80).
PIPE_WIDTH = 120


def stdout_console(*, quiet: bool = False):
    """A rich console on stdout (or a silent one with ``quiet``)."""
    from rich.console import Console

    if quiet:
        return Console(quiet=True)
    width = None if sys.stdout.isatty() else PIPE_WIDTH
    return Console(width=width, highlight=False)


def progress_enabled(quiet: bool = False) -> bool:
    """Show progress only on an interactive stderr, and never with ``--quiet``."""
    return not quiet and sys.stderr.isatty()


@contextmanager
def step(description: str, *, enabled: bool = True) -> Iterator:
    """A transient spinner with elapsed time on stderr while the block runs.

    Yields a function ``update(text)`` that changes the description (e.g. an optimizer's loss).
    Nothing is drawn when ``enabled`` is False or stderr is not a terminal.
    """
    if not (enabled and sys.stderr.isatty()):
        yield lambda text: None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                   console=Console(stderr=True), transient=True, redirect_stdout=False,
                   redirect_stderr=False)
    with bar:
        task = bar.add_task(description, total=None)
        yield lambda text: bar.update(task, description=text)


def esc(text) -> str:
    """Escape ``[...]`` in user text (labels like ``beta[x1]``) from rich markup."""
    from rich.markup import escape

    return escape(str(text))


def fmt(value, digits: int = 6) -> str:
    """A number with ``digits`` significant digits; NaN/inf and None spelled out."""
    if value is None:
        return "—"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}g}"


def fit_table(fit, title: str | None = None):
    """The MLE table (estimate, SE, z, p, 95 % Wald interval) as a rich Table."""
    from rich.table import Table

    tab = fit.table()
    t = Table(title=title, title_justify="left", header_style="bold")
    t.add_column("parameter")
    for col, head in (("estimate", "estimate"), ("std_err", "std. error"), ("z", "z"),
                      ("p_value", "P>|z|"), ("ci_lower", "95% CI lower"),
                      ("ci_upper", "95% CI upper")):
        t.add_column(head, justify="right")
    for lab, r in tab.iterrows():
        t.add_row(esc(lab), fmt(r.estimate), fmt(r.std_err), fmt(r.z, 4), fmt(r.p_value, 3),
                  fmt(r.ci_lower), fmt(r.ci_upper))
    return t


def check_table(check, title: str | None = None):
    """The closed-form identities of a :class:`ClosedFormCheck` as a rich Table."""
    from rich.table import Table

    t = Table(title=title, title_justify="left", header_style="bold")
    t.add_column("quantity")
    t.add_column("MLE", justify="right")
    t.add_column("closed form", justify="right")
    t.add_column("|difference|", justify="right")
    t.add_column("tolerance", justify="right")
    t.add_column("tolerance rule")
    t.add_column("agrees", justify="center")
    for r in check.rows:
        mark = "[green]yes[/green]" if r.agrees else "[bold red]NO[/bold red]"
        t.add_row(esc(r.quantity), fmt(r.mle, 10), fmt(r.closed_form, 10), fmt(r.abs_diff, 2),
                  fmt(r.tol, 2), esc(r.tol_rule), mark)
    return t


def comparison_table(cmp, title: str | None = None):
    """MLE vs posterior per parameter (a :class:`Comparison`) as a rich Table.

    ESS and R-hat are summarised in the caption (lowest bulk ESS, highest R-hat).
    """
    import numpy as np
    from rich import box
    from rich.table import Table

    tab = cmp.table
    pct = f"{cmp.level:.0%}"
    caption = (f"lowest bulk ESS {np.nanmin(tab['ess_bulk']):.0f}, highest R-hat "
               f"{fmt(np.nanmax(tab['r_hat']), 4)}; shift = (posterior mean − MLE)/SE")
    t = Table(title=title, title_justify="left", caption=caption, caption_justify="left",
              header_style="bold", box=box.SIMPLE_HEAD)
    t.add_column("parameter", no_wrap=True)
    for head in ("MLE", "SE", f"{pct} Wald", "mean", "sd", f"{pct} HDI", "shift", "sd/SE",
                 "agrees"):
        t.add_column(head, justify="right", no_wrap=True)
    for lab, r in tab.iterrows():
        t.add_row(esc(lab), fmt(r.mle, 4), fmt(r.std_err, 3),
                  esc(f"[{fmt(r.wald_lower, 3)}, {fmt(r.wald_upper, 3)}]"), fmt(r["mean"], 4),
                  fmt(r.sd, 3), esc(f"[{fmt(r.hdi_lower, 3)}, {fmt(r.hdi_upper, 3)}]"),
                  fmt(r.shift_se, 2), fmt(r.sd_ratio, 3),
                  "[green]yes[/green]" if r.agrees else "[yellow]no[/yellow]")
    return t
