"""lme4-style random-effect terms of the formula shorthand: ``y ~ x + (1 + x | g) + (1 | a/b)``.

formulaic does not parse ``|`` terms, so they are split out of the right-hand side here (at
parentheses depth 0, joined by ``+``), validated (the left side by the same factor whitelist as
the fixed part, the grouping as column names joined by ``/`` or ``:``), and turned into model-file
declarations: a categorical grouping item, a design matrix of the left side (slopes), flat
variance parameters, and a ``[random]`` entry. As in lme4, ``(1 | a/b)`` is ``(1 | a) + (1 | a:b)``
and ``a:b`` groups by the interaction (unique per combination of labels), so labels of ``b`` may
repeat across levels of ``a``; ``(1 | a) + (1 | b)`` is crossed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mle_ppl._src.errors import ModelFileError
from mle_ppl._src.model.data import DataItem
from mle_ppl._src.model.formula import check_rhs

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class RandomTerm:
    """One ``(lhs | group)`` term, with nesting already expanded (``a/b`` -> ``a`` and ``a:b``)."""

    text: str
    lhs: str
    groups: tuple[str, ...]  #: grouping columns; several: their interaction
    n_effects: int
    intercept_only: bool
    effects: tuple[str, ...] = ()  #: formulaic's names of the effects left of ``|``


def _top_level_split(text: str, sep: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _enclosed(piece: str) -> bool:
    """``(...)`` with the first parenthesis closing at the end."""
    if not (piece.startswith("(") and piece.endswith(")")):
        return False
    depth = 0
    for i, ch in enumerate(piece):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and i < len(piece) - 1:
            return False
    return True


def split_random(rhs: str, *, where: str) -> tuple[str, list[RandomTerm]]:
    """Split ``rhs`` into the fixed part (for formulaic) and its random-effect terms."""
    if "|" not in rhs:
        return rhs, []
    if rhs.count("(") != rhs.count(")"):
        raise ModelFileError(f"{where}: unbalanced parentheses in {rhs!r}.")
    fixed, terms = [], []
    for raw in _top_level_split(rhs, "+"):
        piece = raw.strip()
        if "|" not in piece:
            fixed.append(piece)
            continue
        if not _enclosed(piece):
            raise ModelFileError(f"{where}: a random-effect term is written in parentheses and "
                                 f"joined by +, e.g. y ~ x + (1 + x | g); got {piece!r}.")
        inner = piece[1:-1]
        if "||" in inner:
            raise ModelFileError(f"{where}: {piece!r}: '||' (uncorrelated effects) is not "
                                 "supported; write separate terms, e.g. (1 | g) + (0 + x | g).")
        sides = _top_level_split(inner, "|")
        if len(sides) != 2 or not sides[0].strip() or not sides[1].strip():
            raise ModelFileError(f"{where}: {piece!r} must read (effects | grouping), e.g. "
                                 "(1 | g), (1 + x | g), (1 | g1/g2).")
        lhs, grp = sides[0].strip(), sides[1].strip()
        check_rhs(lhs, where=f"{where}, term {piece}")
        effects = _effects(lhs, piece, where)
        for groups in _groupings(grp, piece, where):
            terms.append(RandomTerm(piece, lhs, groups, len(effects), effects == ("1",),
                                    effects))
    rest = [f for f in fixed if f]
    if len(rest) != len(fixed):
        raise ModelFileError(f"{where}: empty term in {rhs!r} (a '+' with nothing on one side).")
    return (" + ".join(rest) if rest else "1"), terms


def _effects(lhs: str, piece: str, where: str) -> tuple[str, ...]:
    """The names of the effects left of ``|`` (``("1", "x")`` for ``1 + x``)."""
    from formulaic import Formula

    terms = list(Formula(lhs))
    for term in terms:
        for factor in term.factors:
            method = getattr(factor.eval_method, "value", str(factor.eval_method))
            if method == "python" and factor.expr.replace(" ", "").startswith("C("):
                raise ModelFileError(f"{where}: {piece!r}: categorical effects (C(...)) are not "
                                     "supported left of '|'; use numeric columns, or group by "
                                     "the interaction (1 | g:h).")
    names = [str(t) for t in terms]
    if not names:
        raise ModelFileError(f"{where}: {piece!r} has no effect left of '|' (use 1 for a "
                             "random intercept).")
    return tuple(names)


def _groupings(grp: str, piece: str, where: str) -> list[tuple[str, ...]]:
    levels = [s.strip() for s in grp.split("/")]
    out = []
    for lev in levels:
        cols = tuple(c.strip() for c in lev.split(":"))
        for c in cols:
            if not _NAME.match(c):
                raise ModelFileError(f"{where}: {piece!r}: the grouping must be column names "
                                     f"joined by '/' (nested) or ':' (interaction); {c!r} is "
                                     "not a column name.")
        if len(set(cols)) != len(cols):
            raise ModelFileError(f"{where}: {piece!r} repeats a column in {lev!r}.")
        out.append(cols)
    # nesting a/b/c: a, a:b, a:b:c (lme4)
    return [tuple(c for g in out[: i + 1] for c in g) for i in range(len(out))]


def _slug(text: str) -> str:
    """``log(x)`` -> ``log_x``: a formula term as a part of a parameter name."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_") or "effect"


def random_decls(terms: list[RandomTerm], taken: set[str], *, where: str):
    """Declarations of the random terms: (items, parameters table, [random] table, eta terms).

    ``taken``: names already used by the formula (outcome, X, beta, ...).
    """
    items: dict[str, DataItem] = {}
    params: dict[str, dict] = {}
    random: dict[str, dict] = {}
    eta: list[str] = []
    used = set(taken)

    def fresh(base: str) -> str:
        name, i = base, 2
        while name in used:
            name, i = f"{base}_{i}", i + 1
        used.add(name)
        return name

    group_names: dict[tuple[str, ...], str] = {}
    for t in terms:
        if t.n_effects > 2:
            raise ModelFileError(
                f"{where}: {t.text!r} has {t.n_effects} correlated effects; at most two (an "
                "intercept and a slope, or two slopes) are supported per term. Split it into "
                "terms of one or two effects, e.g. (1 + x | g) + (0 + z | g).")
        if t.groups not in group_names:
            g = fresh("_".join(t.groups))
            group_names[t.groups] = g
            items[g] = DataItem(g, "model.formula", "categorical", t.groups, dim=g)
        g = group_names[t.groups]
        # a single slope (0 + x | g) is named after its effect: u_g_x, sd_g_x (lme4 prints
        # the effect's name beside the grouping); intercepts and pairs after the grouping
        base = g if t.n_effects != 1 or t.intercept_only else f"{g}_{_slug(t.effects[0])}"
        u, sd = fresh(f"u_{base}"), fresh(f"sd_{base}")
        if t.intercept_only:
            params[sd] = {"lower": 0}
            random[u] = {"distribution": "Normal", "mu": 0, "sigma": sd, "dims": g}
            eta.append(f"{u}[{g}]")
            continue
        z = fresh(f"Z_{base}")
        effect = fresh(f"{u}_effect")
        items[z] = DataItem(z, "model.formula", "design", dim=effect, formula=t.lhs)
        if t.n_effects == 1:
            params[sd] = {"lower": 0}
            random[u] = {"distribution": "Normal", "mu": 0, "sigma": sd, "dims": g}
            eta.append(f"{z}[:, 0] * {u}[{g}]")
        else:
            rho = fresh(f"rho_{base}")
            params[sd] = {"lower": 0, "dims": effect}
            params[rho] = {"lower": -1, "upper": 1}
            random[u] = {"distribution": "MvNormal", "sigma": sd, "corr": rho,
                         "dims": [g, effect]}
            eta.append(f"sum({z} * {u}[{g}], 1)")
    return list(items.values()), params, random, eta
