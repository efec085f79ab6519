"""A key below an arviz-plots figure for what its aesthetics do not label: reference lines, marks.

``arviz_plots`` legends explain aesthetics mapped to a dimension (colour by model); a dashed
reference line or a dot-and-bar interval gets no entry. :func:`add_key` adds one figure legend
for them, below the axes (``outside lower center`` with matplotlib's constrained layout, else
in a strip kept free at the bottom of the figure).
"""

from __future__ import annotations

#: Height kept free for the key below the axes of a figure without constrained layout.
KEY_INCHES = 0.35

#: Styles of the key's handles, by kind of mark.
STYLES = {
    "dashed": {"linestyle": "--", "color": "0.3"},
    "interval": {"marker": "o", "linewidth": 1.5, "color": "0.3", "markersize": 5},
    "thick": {"linewidth": 2.5, "color": "0.3"},
    "thin": {"linewidth": 0.8, "color": "0.3"},
}


def figure_of(pc):
    """The matplotlib Figure of an arviz-plots PlotCollection."""
    return pc.viz["figure"].item()


def add_key(pc, entries, *, title: str | None = None):
    """Add a legend of ``(label, style)`` entries below the figure; returns the Legend.

    ``style`` is a key of :data:`STYLES` or a dict of ``Line2D`` keyword arguments.
    """
    from matplotlib.layout_engine import ConstrainedLayoutEngine
    from matplotlib.lines import Line2D

    fig = figure_of(pc)
    handles = [Line2D([], [], label=label, **(STYLES[style] if isinstance(style, str) else style))
               for label, style in entries]
    kw = {"handles": handles, "ncols": len(handles), "frameon": False, "fontsize": "small",
          "title": title}
    if isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine):
        return fig.legend(loc="outside lower center", **kw)
    # fixed layout: keep KEY_INCHES at the bottom of the figure free for the key
    bottom = min(0.4, KEY_INCHES / fig.get_figheight() + fig.subplotpars.bottom)
    fig.subplots_adjust(bottom=bottom)
    return fig.legend(loc="lower center", bbox_to_anchor=(0.5, 0.0), **kw)
