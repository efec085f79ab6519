"""Width-aware terminal tables in which every number and label is shown whole or not at all.

rich shrinks a table that is too wide by ellipsizing or folding cells (``-3.4822…``), which
puts wrong numbers on screen. :class:`FitTable` lays the table out itself at render time, for
the width it is given:

1. a horizontal table whose number, label and mark columns are never broken, and whose prose
   columns wrap only between words (a bracketed label such as ``beta[sepal, versicolor]`` is
   one word);
2. if that does not fit, the same with fewer significant digits per number (each column has a
   floor; the digits shown stay a correct rounding of the value);
3. if that does not fit either, the columns split into two or three tables one below the other,
   each repeating the first (label) column, with fewer digits only if needed;
4. if even that does not fit, a vertical layout: one block per row, ``header  value`` lines.

Cells are plain strings (never parsed as markup), :class:`Num` (a number formatted at layout
time), tuples of strings and ``Num`` (``("[", Num(lo), ", ", Num(hi), "]")``) or ``rich.text.Text``
(for coloured marks).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from mle_ppl._src.engine.numbers import fmt, fmt_p

#: Spaces between columns: rich's SIMPLE_HEAD box puts one pad and a blank divider.
GAP = 2
#: Largest number of digit reductions tried.
MAX_LEVEL = 3
#: Largest number of side-by-side parts a wide table is split into (each repeats the first
#: column) before the vertical layout.
MAX_PARTS = 3


@dataclass(frozen=True)
class Num:
    """A number shown with ``digits`` significant digits, at least ``min_digits`` when narrow."""

    value: object
    digits: int = 6
    min_digits: int = 4
    p_value: bool = False

    def text(self, level: int = 0) -> str:
        d = max(min(self.min_digits, self.digits), self.digits - 2 * level)
        return fmt_p(self.value, d) if self.p_value else fmt(self.value, d)


@dataclass(frozen=True)
class Col:
    """A column: ``kind`` is "num" / "label" / "mark" (never broken) or "text" (wraps)."""

    head: str
    kind: str = "num"

    @property
    def justify(self) -> str:
        return {"num": "right", "mark": "center"}.get(self.kind, "left")


def _cell_text(cell, level: int):
    from rich.text import Text

    if isinstance(cell, Text):
        return cell
    if isinstance(cell, Num):
        return Text(cell.text(level))
    if isinstance(cell, tuple):
        return Text("".join(p.text(level) if isinstance(p, Num) else str(p) for p in cell))
    return Text("" if cell is None else str(cell))


_TOKEN = re.compile(r"(?:\[[^\]]*\]|\S)+")


def tokens(text: str) -> list[str]:
    """Words of ``text``, keeping a bracketed part (``beta[sepal, versicolor]``) in one word."""
    return _TOKEN.findall(text)


def wrap(text: str, width: int) -> list[str]:
    """Greedy line filling at word boundaries (:func:`tokens`); a word is never broken."""
    from rich.cells import cell_len

    out: list[str] = []
    for para in text.split("\n"):
        line = ""
        for tok in tokens(para):
            cand = f"{line} {tok}" if line else tok
            if cell_len(cand) <= width or not line:
                line = cand
            else:
                out.append(line)
                line = tok
        out.append(line)
    return out


def _longest_word(text: str) -> int:
    from rich.cells import cell_len

    return max((cell_len(t) for t in tokens(text)), default=0)


class FitTable:
    """A table that chooses its layout for the width it is rendered at (see the module doc)."""

    def __init__(self, columns: Sequence[Col], rows: Sequence[Sequence], *, title=None,
                 caption: str | None = None):
        self.columns = list(columns)
        self.rows = [list(r) for r in rows]
        self.title = title
        self.caption = caption

    # ------------------------------------------------------------------ layout
    def _texts(self, level: int):
        return [[_cell_text(c, level) for c in row] for row in self.rows]

    def _widths(self, texts, width: int, cols: Sequence[int]) -> list[int] | None:
        """Widths of the columns ``cols`` in ``width``, or None if they cannot fit whole."""
        from rich.cells import cell_len

        n = len(cols)
        mins, wants = [], []
        for j in cols:
            col = self.columns[j]
            cells = [t[j].plain for t in texts]
            full = max((cell_len(line) for c in cells for line in c.split("\n")), default=0)
            if col.kind == "text":
                low = max((_longest_word(c) for c in cells), default=0)
            else:
                low = full
            mins.append(max(low, _longest_word(col.head), 1))
            wants.append(max(full, cell_len(col.head), mins[-1]))
        avail = width - GAP * (n - 1)
        if sum(mins) > avail:
            return None
        widths = list(mins)
        extra = avail - sum(widths)
        while extra > 0:
            deficits = [w - c for w, c in zip(wants, widths, strict=True)]
            j = max(range(n), key=lambda k: deficits[k])
            if deficits[j] <= 0:
                break
            widths[j] += 1
            extra -= 1
        return widths

    def _horizontal(self, texts, widths, cols):
        from rich import box
        from rich.table import Table
        from rich.text import Text

        t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0),
                  header_style="bold", collapse_padding=False)
        columns = [self.columns[j] for j in cols]
        for col, w in zip(columns, widths, strict=True):
            # "ellipsis" never triggers (the widths fit every cell); if it ever did, the "…"
            # would show, and the pseudo-terminal tests look for it.
            t.add_column(Text("\n".join(wrap(col.head, w)), justify=col.justify),
                         justify=col.justify, width=w, no_wrap=True, overflow="ellipsis")
        for full_row in texts:
            row = [full_row[j] for j in cols]
            cells = []
            for col, w, cell in zip(columns, widths, row, strict=True):
                if col.kind == "text":
                    cell = Text("\n".join(wrap(cell.plain, w)))
                cell = cell.copy()
                cell.justify = col.justify
                cell.overflow = "ellipsis"
                cells.append(cell)
            t.add_row(*cells)
        return t

    def _vertical(self, texts, width: int):
        from rich.cells import cell_len
        from rich.text import Text

        heads = [c.head for c in self.columns[1:]]
        key_w = max((cell_len(h) for h in heads), default=0)
        lines = []
        for row in texts:
            lines.append(Text(row[0].plain, style="bold"))
            for head, cell in zip(heads, row[1:], strict=True):
                value = cell.plain
                room = width - 2 - key_w - GAP
                key = Text(f"  {head:<{key_w}}" + " " * GAP, style="dim")
                if room >= max((_longest_word(value), 1)):
                    parts = wrap(value, room) if value else [""]
                    first = key + Text(parts[0], style=cell.style)
                    lines.append(first)
                    lines += [Text(" " * (2 + key_w + GAP) + p) for p in parts[1:]]
                else:  # too narrow for key and value side by side: value on its own lines
                    lines.append(Text(f"  {head}", style="dim"))
                    lines += [Text("    " + p, style=cell.style)
                              for p in wrap(value, max(width - 4, 1))]
        return lines

    def _parts(self, texts, width: int) -> list[list[int]] | None:
        """Contiguous groups of columns (each led by column 0) that fit, greedily filled."""
        n = len(self.columns)
        parts: list[list[int]] = []
        cur = [0]
        for j in range(1, n):
            if self._widths(texts, width, [*cur, j]) is not None:
                cur.append(j)
            elif len(cur) > 1:
                parts.append(cur)
                cur = [0, j]
                if self._widths(texts, width, cur) is None:
                    return None
            else:
                return None
        parts.append(cur)
        return parts

    def layout(self, width: int) -> tuple[str, int, list[list[int]]]:
        """``(kind, digit level, column groups)`` that :meth:`__rich_console__` draws."""
        for n_parts in range(1, MAX_PARTS + 1):
            for level in range(MAX_LEVEL + 1):
                parts = self._parts(self._texts(level), width)
                if parts is not None and len(parts) <= n_parts:
                    return "horizontal", level, parts
        return "vertical", 0, [list(range(len(self.columns)))]

    def __rich_console__(self, console, options):
        from rich.text import Text

        width = options.max_width
        if self.title:
            yield Text(self.title, style="bold") if isinstance(self.title, str) else self.title
        kind, level, parts = self.layout(width)
        texts = self._texts(level)
        if kind == "horizontal":
            for k, cols in enumerate(parts):
                if k:
                    yield Text("")
                yield self._horizontal(texts, self._widths(texts, width, cols), cols)
        else:
            yield from self._vertical(texts, width)
        if self.caption:
            yield Text(self.caption, style="dim")
