"""The sparsity of the random effects' Hessian: groups, colouring, blocks, batched Cholesky.

Array layer (NumPy/SciPy). Random effects come in *groups*: the leading axis of a random-effect
variable (``u`` of shape ``(G,)`` or ``(G, k)`` has ``G`` groups of ``k`` entries). Each term of
the joint log-density (a row of the observed data, an element of a random effect's own density)
touches a few groups; the **incidence** ``Z`` (terms x groups) is found by probing the compiled
per-term log-density (:func:`incidence`), so any way of writing ``u[group_idx]`` (indexing, a
dummy matrix, nested and crossed factors) is understood without reading the graph.

The Hessian in the random effects then has the group pattern ``P = Z'Z``. From it:

- a distance-2 **colouring** of the entries, so that ``H`` is recovered from one Hessian-vector
  product per colour (one per random-effect column for a single grouping factor: a random
  intercept needs one product, intercept + slope two);
- the **connected components** of ``P``: ``H`` is block diagonal with one dense block per
  component (one per group for a single factor, one per top-level group for nested factors, one
  large block for crossed factors). Blocks of equal size are stacked and factorised together by
  NumPy's batched Cholesky; :class:`Blocks` solves, inverts and gives ``log det H``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from mle_ppl._src.errors import ModelError

#: Largest dense block (entries) the Laplace objective factorises (crossed random effects give
#: one block over all their entries; a 4000 x 4000 Cholesky takes ~1 s and 128 MB).
MAX_BLOCK = 4000


@dataclass(frozen=True)
class Layout:
    """Where each random-effect variable sits in the flat random-effects vector."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]  #: first entry of each variable
    group_offsets: tuple[int, ...]  #: first group of each variable

    @classmethod
    def from_shapes(cls, names, shapes) -> Layout:
        offsets, goffs, o, go = [], [], 0, 0
        for s in shapes:
            offsets.append(o)
            goffs.append(go)
            o += int(np.prod(s, dtype=int))
            go += s[0] if len(s) else 1
        return cls(tuple(names), tuple(tuple(s) for s in shapes), tuple(offsets), tuple(goffs))

    @property
    def size(self) -> int:
        return int(sum(np.prod(s, dtype=int) for s in self.shapes))

    @property
    def n_groups(self) -> int:
        return int(sum(s[0] if len(s) else 1 for s in self.shapes))

    def entry_group(self) -> tuple[np.ndarray, np.ndarray]:
        """For each entry: its global group and its index within the group."""
        grp, within = [], []
        for s, go in zip(self.shapes, self.group_offsets, strict=True):
            G = s[0] if len(s) else 1
            k = int(np.prod(s[1:], dtype=int)) if len(s) > 1 else 1
            grp.append(go + np.repeat(np.arange(G), k))
            within.append(np.tile(np.arange(k), G))
        return np.concatenate(grp), np.concatenate(within)


def incidence(terms: Callable[[np.ndarray], np.ndarray], u0: np.ndarray, layout: Layout,
              rng: np.random.Generator) -> sp.csr_matrix:
    """Which groups each term of the log-density touches, by perturbing groups of ``u``.

    ``terms(u)`` returns the per-term log-density at random effects ``u``. For each variable with
    ``G`` groups, ``2 ceil(log2 G)`` probes (groups whose index has bit b set / not set) give
    every term's group when a term touches at most one group of that variable; otherwise (a term
    touching several groups of one variable: multiple membership, a smooth) every group is
    probed on its own.
    """
    entry_group, _ = layout.entry_group()
    base_u = u0 + rng.uniform(0.1, 0.3, size=u0.shape) * rng.choice([-1.0, 1.0], size=u0.shape)
    base = np.asarray(terms(base_u), dtype=float)
    n = base.size
    rows, cols = [], []

    def changed(mask_groups: np.ndarray) -> np.ndarray:
        sel = mask_groups[entry_group]
        u = base_u.copy()
        u[sel] += rng.uniform(0.5, 1.0, size=int(sel.sum()))
        out = np.asarray(terms(u), dtype=float)
        return ~((out == base) | (np.isnan(out) & np.isnan(base)))

    for s, go in zip(layout.shapes, layout.group_offsets, strict=True):
        G = s[0] if len(s) else 1
        gids = np.arange(G)
        mine = np.zeros(layout.n_groups, dtype=bool)
        mine[go:go + G] = True
        touched = changed(mine)
        code = np.zeros(n, dtype=np.int64)
        ambiguous = np.zeros(n, dtype=bool)
        for b in range(int(np.ceil(np.log2(G))) if G > 1 else 0):
            on = np.zeros(layout.n_groups, dtype=bool)
            off = np.zeros(layout.n_groups, dtype=bool)
            on[go + gids[(gids >> b) & 1 == 1]] = True
            off[go + gids[(gids >> b) & 1 == 0]] = True
            c1, c0 = changed(on), changed(off)
            ambiguous |= c1 & c0
            code |= c1.astype(np.int64) << b
        if ambiguous.any() or np.any(code[touched] >= G):
            for g in range(G):  # several groups per term: probe each group
                one = np.zeros(layout.n_groups, dtype=bool)
                one[go + g] = True
                hit = np.flatnonzero(changed(one))
                rows.append(hit)
                cols.append(np.full(hit.size, go + g))
        else:
            hit = np.flatnonzero(touched)
            rows.append(hit)
            cols.append(go + code[hit])
    r = np.concatenate(rows) if rows else np.zeros(0, dtype=int)
    c = np.concatenate(cols) if cols else np.zeros(0, dtype=int)
    return sp.csr_matrix((np.ones(r.size), (r, c)), shape=(n, layout.n_groups))


class Structure:
    """Colouring and block layout of the Hessian in the random effects (see module docstring)."""

    def __init__(self, Z: sp.csr_matrix, layout: Layout):
        self.layout = layout
        q = layout.size
        entry_group, within = layout.entry_group()
        P = (Z.T @ Z).tocsr()
        P = ((P + sp.eye(layout.n_groups, format="csr")) != 0).astype(np.int8).tocsr()
        self.group_pattern = P
        # distance-2 colouring of groups (entries of one group share rows: one colour per
        # (group colour, index within group)). Groups coupled to every other group (REML's
        # fixed effects) would force a colour per entry: their entries get a colour each, the
        # others are coloured without them, and an entry in such a group's row is read from
        # the dense entry's own product instead (assemble, scatter)
        G = layout.n_groups
        dense = np.diff(P.indptr) == G if G >= 3 else np.zeros(G, dtype=bool)
        dense &= not dense.all()
        keep = sp.diags((~dense).astype(np.float64))
        Ps = (keep @ P @ keep).tocsr()
        P2 = (Ps @ Ps).tocsr()
        P2.eliminate_zeros()
        gcolor = _greedy_colour(P2)
        kmax = int(within.max()) + 1 if q else 1
        raw = gcolor[entry_group] * kmax + within
        self.dense = dense[entry_group]  #: entries of groups coupled to all others
        if self.dense.any():
            raw[self.dense] = raw.max() + 1 + np.arange(int(self.dense.sum()))
        uniq, color = np.unique(raw, return_inverse=True)
        self.color = color  #: colour of each entry
        self.n_colors = len(uniq)
        V = np.zeros((self.n_colors, q))
        V[color, np.arange(q)] = 1.0
        self.V = V  #: one probe vector per colour
        n_comp, comp = connected_components(P, directed=False)
        comp_of_entry = comp[entry_group]
        order = np.argsort(comp_of_entry, kind="stable")
        sizes = np.bincount(comp_of_entry, minlength=n_comp)
        starts = np.concatenate([[0], np.cumsum(sizes)])
        self.buckets = []  #: (idx (nb, s), colour of idx (nb, s), mask (nb, s, s))
        for s in np.unique(sizes):
            if s > MAX_BLOCK:
                raise ModelError(
                    f"the random effects form a block of {s} coupled entries (crossed groupings "
                    f"couple all their levels); the Laplace objective factorises dense blocks "
                    f"up to {MAX_BLOCK} entries. Use fewer levels or nest the groupings.")
            comps = np.flatnonzero(sizes == s)
            idx = np.stack([order[starts[c]:starts[c] + s] for c in comps])
            g = entry_group[idx]
            if s == 1:
                mask = np.ones((len(comps), 1, 1), dtype=bool)
            else:
                mask = _pattern_lookup(P, g[:, :, None], g[:, None, :])
            self.buckets.append((idx, color[idx], mask))
        self.n_blocks = int(n_comp)
        self.max_block = int(sizes.max()) if len(sizes) else 0

    def assemble(self, HV: np.ndarray) -> list[np.ndarray]:
        """Dense blocks of ``H`` from the products ``HV[c] = H @ V[c]`` (one per colour)."""
        out = []
        for idx, col, mask in self.buckets:
            B = HV[col[:, None, :], idx[:, :, None]] * mask
            d = self.dense[idx]
            if d.any():  # a dense row's entry in a shared colour is a sum: take its transpose
                B = np.where(d[:, :, None] & ~d[:, None, :], np.swapaxes(B, 1, 2), B)
            out.append(0.5 * (B + np.swapaxes(B, 1, 2)))
        return out

    def scatter(self, blocks: list[np.ndarray]) -> np.ndarray:
        """The inverse of :meth:`assemble`: ``M[c]`` holds each row's entry in colour ``c``.

        For a symmetric ``S`` given by blocks, ``sum_ab S_ab H_ab = sum_c M[c] @ (H V[c])``.
        """
        M = np.zeros_like(self.V)
        for (idx, col, mask), S in zip(self.buckets, blocks, strict=True):
            # only the pattern's entries: an off-pattern entry shares its colour with an
            # on-pattern one in the same row, and writing its 0 would overwrite that entry
            b, i, j = np.nonzero(mask)
            v = S[b, i, j]
            di, dj = self.dense[idx[b, i]], self.dense[idx[b, j]]
            if di.any():  # (dense row, other column) is counted in its transpose, twice
                ok = ~(di & ~dj)
                v = np.where(~di & dj, 2.0 * v, v)
                b, i, j, v = b[ok], i[ok], j[ok], v[ok]
            M[col[b, j], idx[b, i]] = v
        return M


def _greedy_colour(A: sp.csr_matrix) -> np.ndarray:
    n = A.shape[0]
    color = np.full(n, -1, dtype=np.int64)
    indptr, indices = A.indptr, A.indices
    if A.nnz == n:  # diagonal: one colour
        return np.zeros(n, dtype=np.int64)
    for v in np.argsort(-np.diff(indptr), kind="stable"):
        used = set(color[indices[indptr[v]:indptr[v + 1]]].tolist())
        c = 0
        while c in used:
            c += 1
        color[v] = c
    return color


def _pattern_lookup(P: sp.csr_matrix, gi: np.ndarray, gj: np.ndarray) -> np.ndarray:
    coo = P.tocoo()
    n = P.shape[0]
    keys = np.sort(coo.row.astype(np.int64) * n + coo.col)
    want = (gi.astype(np.int64) * n + gj)
    pos = np.clip(np.searchsorted(keys, want), 0, len(keys) - 1)
    return keys[pos] == want


class Blocks:
    """A symmetric block-diagonal matrix, factorised: solve, inverse, log-determinant."""

    def __init__(self, structure: Structure, blocks: list[np.ndarray]):
        self.structure = structure
        self.blocks = blocks
        self.chol = []
        self.pd = True
        for B in blocks:
            try:
                self.chol.append(np.linalg.cholesky(B))
            except np.linalg.LinAlgError:
                self.pd = False
                self.chol.append(None)

    @property
    def logdet(self) -> float:
        if not self.pd:
            return np.nan
        return float(sum(2.0 * np.sum(np.log(np.diagonal(L, axis1=1, axis2=2)))
                         for L in self.chol))

    def solve(self, r: np.ndarray) -> np.ndarray:
        """``H^{-1} r`` (damped to positive definiteness where ``H`` is not)."""
        out = np.empty_like(r)
        for (idx, _, _), B, L in zip(self.structure.buckets, self.blocks, self.chol, strict=True):
            rhs = r[idx][..., None]
            if L is not None:
                y = np.linalg.solve(L, rhs)
                x = np.linalg.solve(np.swapaxes(L, 1, 2), y)
            else:
                w, V = np.linalg.eigh(B)
                wmax = np.max(np.abs(w), axis=1, keepdims=True)
                w = np.maximum(np.abs(w), 1e-8 * wmax + 1e-300)
                x = V @ ((np.swapaxes(V, 1, 2) @ rhs) / w[..., None])
            out[idx] = x[..., 0]
        return out

    def inverse(self) -> list[np.ndarray]:
        out = []
        for L in self.chol:
            Li = np.linalg.inv(L)
            out.append(np.swapaxes(Li, 1, 2) @ Li)
        return out

    def diag_inverse(self) -> np.ndarray:
        q = self.structure.layout.size
        d = np.empty(q)
        for (idx, _, _), S in zip(self.structure.buckets, self.inverse(), strict=True):
            d[idx] = np.diagonal(S, axis1=1, axis2=2)
        return d
