"""Terminal helpers shared by the subcommands: rich consoles, a progress spinner, tables.

Progress goes to **stderr** and only when stderr is a terminal, so piped output (``--json``,
``> out.txt``) and captured stderr stay clean; results go to stdout.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from mle_ppl._src.cli._table import Col, FitTable, Num
from mle_ppl._src.engine.numbers import fmt, fmt_p  # noqa: F401 - re-exported for commands

#: Width used for tables when stdout is not a terminal and $COLUMNS is not set (rich would
#: otherwise wrap at 80).
PIPE_WIDTH = 120


def stdout_console(*, quiet: bool = False):
    """A rich console on stdout (or a silent one with ``quiet``)."""
    from rich.console import Console

    if quiet:
        return Console(quiet=True)
    # a terminal's own width; else $COLUMNS when set (`COLUMNS=60 mle-ppl fit ... | less`,
    # which rich reads itself when width is None); else PIPE_WIDTH
    columns = os.environ.get("COLUMNS", "")
    width = None if sys.stdout.isatty() or (columns.isdigit() and int(columns) > 0) else PIPE_WIDTH
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


def fit_table(fit, title: str | None = None, *, tab=None, ci_label: str = "95% CI"):
    """The MLE table (estimate, SE, z, p, interval) as a width-aware :class:`FitTable`.

    ``tab`` is a table like ``fit.table()`` (default), e.g. with robust standard errors.
    """
    tab = fit.table() if tab is None else tab
    cols = [Col("parameter", "label"), Col("estimate"), Col("std. error"), Col("z"),
            Col("P>|z|"), Col(f"{ci_label} lower"), Col(f"{ci_label} upper")]
    rows = [[str(lab), Num(r.estimate, 6, 4), Num(r.std_err, 6, 3), Num(r.z, 4, 3),
             Num(r.p_value, 3, 2, p_value=True), Num(r.ci_lower, 6, 3), Num(r.ci_upper, 6, 3)]
            for lab, r in tab.iterrows()]
    return FitTable(cols, rows, title=title)


def check_table(check, title: str | None = None):
    """The closed-form identities of a :class:`ClosedFormCheck` as a :class:`FitTable`."""
    from rich.text import Text

    cols = [Col("quantity", "text"), Col("MLE"), Col("closed form"), Col("|difference|"),
            Col("tolerance"), Col("tolerance rule", "text"), Col("agrees", "mark")]
    rows = [[r.quantity, Num(r.mle, 10, 6), Num(r.closed_form, 10, 6), Num(r.abs_diff, 2, 2),
             Num(r.tol, 2, 2), r.tol_rule,
             Text("yes", style="green") if r.agrees else Text("NO", style="bold red")]
            for r in check.rows]
    return FitTable(cols, rows, title=title)


def comparison_table(cmp, title: str | None = None):
    """MLE vs posterior per parameter (a :class:`Comparison`) as a :class:`FitTable`.

    ESS and R-hat are summarised in the caption (lowest bulk ESS, highest R-hat).
    """
    import numpy as np
    from rich.text import Text

    tab = cmp.table
    pct = f"{cmp.level:.0%}"
    caption = (f"lowest bulk ESS {np.nanmin(tab['ess_bulk']):.0f}, highest R-hat "
               f"{fmt(np.nanmax(tab['r_hat']), 4)}; shift = (posterior mean − MLE)/SE")
    cols = [Col("parameter", "label"), Col("MLE"), Col("SE"), Col(f"{pct} Wald"), Col("mean"),
            Col("sd"), Col(f"{pct} HDI"), Col("shift"), Col("sd/SE"), Col("agrees", "mark")]
    rows = [[str(lab), Num(r.mle, 4, 3), Num(r.std_err, 3, 2),
             ("[", Num(r.wald_lower, 3, 2), ", ", Num(r.wald_upper, 3, 2), "]"),
             Num(r["mean"], 4, 3), Num(r.sd, 3, 2),
             ("[", Num(r.hdi_lower, 3, 2), ", ", Num(r.hdi_upper, 3, 2), "]"),
             Num(r.shift_se, 2, 2), Num(r.sd_ratio, 3, 2),
             Text("yes", style="green") if r.agrees else Text("no", style="yellow")]
            for lab, r in tab.iterrows()]
    return FitTable(cols, rows, title=title, caption=caption)


def packed(items: list[str], width: int, *, lead: str = "", sep: str = ", ") -> str:
    """``items`` joined by ``sep`` into lines of at most ``width`` cells, never splitting one.

    For ``key value`` pairs on screen: a line break falls only between pairs.
    """
    from rich.cells import cell_len

    lines, line = [], lead
    for k, item in enumerate(items):
        piece = item + (sep.rstrip() if k < len(items) - 1 else "")
        cand = f"{line} {piece}" if line.strip() else line + piece
        if cell_len(cand) <= width or not line.strip():
            line = cand
        else:
            lines.append(line)
            line = "  " + piece
    lines.append(line)
    return "\n".join(lines)


def frame_table(frame, title: str | None = None, *, digits: int = 4, index_name: str = ""):
    """A DataFrame of numbers (index: labels) as a :class:`FitTable`, ``digits`` significant."""
    cols = [Col(index_name or str(frame.index.name or ""), "label")]
    cols += [Col(str(c)) for c in frame.columns]
    rows = [[str(lab), *(Num(v, digits, min(3, digits)) for v in r)]
            for lab, r in zip(frame.index, frame.itertuples(index=False), strict=True)]
    return FitTable(cols, rows, title=title)
