"""NLL, gradient and Hessian of a likelihood with linear predictors, the data products in NumPy.

When the parameters ``β`` enter the negative log-likelihood only through linear predictors
``tⱼ = Dⱼ β[aⱼ:bⱼ]`` and the NLL is a sum of per-row terms (proven from the graph by
:func:`~mle_ppl._src.engine.structured.cut_predictors`), everything that touches the n x k data
matrices is a matrix product, and everything else is elementwise on n-vectors:

- value and gradient: ``tⱼ = Dⱼ βⱼ`` (one read of each ``Dⱼ``), a compiled function of ``(x, t)``
  for the NLL, ``∂NLL/∂tⱼ`` (n-vectors) and the gradient in the other parameters (an intercept,
  σ, a dispersion), then ``Dⱼᵀ ∂NLL/∂tⱼ`` (one read);
- Hessian: a second compiled function of ``(x, t)`` for the weights ``wⱼₗ = ∂²ℓᵢ/∂tⱼᵢ∂tₗᵢ``, the
  mixed vectors ``vⱼₒ = ∂²ℓᵢ/∂tⱼᵢ∂xₒ`` and the other parameters' block, then
  ``Dⱼᵀ diag(wⱼₗ) Dₗ`` and ``Dⱼᵀ vⱼₒ`` in **one** read of the data.

The products run over blocks of rows that fit in the CPU cache (:func:`block_rows`): a weighted
cross-product ``Dᵀ diag(w) D`` is then the symmetric rank-k update ``AᵀA`` of ``A = D √w`` per
block (BLAS ``syrk``, half the flops of a general product; negative weights, which non-canonical
links give, are a second update subtracted), with no n x k temporary: PyTensor's kernels
materialise ``w ∘ D`` (n x k, page-faulted in on every call) and, at 1e6 x 50, took 4.8 s for a
Hessian that the blocks compute in 0.2-0.6 s. Small BLAS calls also stay single-threaded, which on
a loaded 2-core machine keeps OpenBLAS's threads from spinning against other processes (measured
there: a 2-thread ``Dᵀ(w ∘ D)`` at 1e6 x 51 took 11-18 s, the blocks 0.6 s).

Reads of the data that would only repeat earlier results are skipped, each only where it is exact
(to rounding) for the arrays at hand:

- the predictors of the last evaluation are kept (with references to the data arrays they were
  computed from): the Hessian at the point of the last gradient, and a gradient after a step that
  changed only the other parameters (a root search on log σ), skip the read for ``Dβ``;
- after such a step, a ``∂NLL/∂t`` (or a mixed vector ``vⱼₒ``) that is elementwise a multiple of
  the last gradient's (a Gaussian's ``(t - y)/σ²``) reuses ``Dᵀ ∂NLL/∂t`` times the ratio;
- a weight or mixed vector equal in every row (a Gaussian's ``1/σ²``) uses ``DᵀD`` or ``Dᵀ1``,
  computed once per fit (:func:`~mle_ppl._src.engine.alloc.fit_scope`: never across fits, so data
  changed in place between fits are read again).
"""

from __future__ import annotations

import numpy as np

#: Bytes of one block of rows of a data matrix (about the size of a core's L2 cache).
BLOCK_BYTES = 1 << 20


def block_rows(k: int) -> int:
    """Rows per block for an n x k float64 matrix (512 ... 16384)."""
    return int(min(16384, max(512, BLOCK_BYTES // (8 * max(k, 1)))))


def matvec(D: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``D @ b`` in blocks of rows."""
    n = D.shape[0]
    out = np.empty(n)
    step = block_rows(D.shape[1])
    for s in range(0, n, step):
        np.dot(D[s:s + step], b, out=out[s:s + step])
    return out


def rmatvec(D: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``Dᵀ r`` (``r``: n-vector or n x m) in blocks of rows."""
    n = D.shape[0]
    step = block_rows(D.shape[1])
    acc = np.zeros((D.shape[1],) + r.shape[1:])
    for s in range(0, n, step):
        acc += D[s:s + step].T @ r[s:s + step]
    return acc


def _rows(v, n: int) -> np.ndarray:
    """An n-vector from a per-row output (a length-1 or 0-d one broadcasts)."""
    v = np.asarray(v, dtype=float)
    return v.reshape(-1) if v.size == n else np.broadcast_to(v.reshape(-1)[:1], (n,))


def gram_products(Ds, pairs, vs):
    """``{(j, l): Dⱼᵀ diag(w) Dₗ}`` for ``pairs = {(j, l): w}`` and ``{j: Dⱼᵀ Vⱼ}`` for
    ``vs = {j: Vⱼ (n x m)}``, in one pass over the rows of the data matrices ``Ds``.

    A weight of length 1 applies to every row.
    """
    n = Ds[0].shape[0]
    step = block_rows(sum(D.shape[1] for D in Ds))
    out = {jl: np.zeros((Ds[jl[0]].shape[1], Ds[jl[1]].shape[1])) for jl in pairs}
    cross = {j: np.zeros((Ds[j].shape[1], V.shape[1])) for j, V in vs.items()}
    plan = {}
    for jl, w in pairs.items():
        w = np.asarray(w, dtype=float).reshape(-1)
        if jl[0] == jl[1]:
            # symmetric: AᵀA with A = D √w⁺, minus the same with √w⁻ where weights are negative
            neg = bool(np.any(w < 0))
            plan[jl] = (np.sqrt(np.maximum(w, 0.0)), np.sqrt(np.maximum(-w, 0.0)) if neg else None)
        else:
            plan[jl] = (w, None)
    buf = np.empty((step, max(D.shape[1] for D in Ds)))
    for s in range(0, n, step):
        e = min(s + step, n)
        blocks = [D[s:e] for D in Ds]
        for jl, (wp, wn) in plan.items():
            j, k = jl
            if j == k:
                for sq, sign in ((wp, 1.0), (wn, -1.0)):
                    if sq is None:
                        continue
                    A = buf[:e - s, :blocks[j].shape[1]]
                    np.multiply(blocks[j], sq[s:e, None] if sq.size > 1 else sq[0], out=A)
                    if sign > 0:
                        out[jl] += A.T @ A
                    else:
                        out[jl] -= A.T @ A
            else:
                wb = wp[s:e, None] if wp.size > 1 else wp[0]
                out[jl] += blocks[j].T @ (blocks[k] * wb)
        for j, V in vs.items():
            cross[j] += blocks[j].T @ V[s:e]
    return out, cross


#: ``∂NLL/∂t`` counts as a multiple of the last one when every element agrees to this relative
#: tolerance (a few roundings: a Gaussian's ``(t - y)/σ²`` after a step in σ alone).
SCALED_RTOL = 8 * np.finfo(float).eps


def _scaled_product(gt, gt_old, part_old):
    """``Dᵀ gt`` as ``c Dᵀ gt_old`` when ``gt = c gt_old`` elementwise to :data:`SCALED_RTOL`
    (same predictors, only a scale parameter changed), else None. The two differ by rounding
    of the order of the sum's own (``SCALED_RTOL Σ |Dᵢ gtᵢ|``), and a read of D is saved."""
    head = slice(0, 64)  # a cheap rejection first: most vectors are not multiples at all
    for sub in (head, slice(None)):
        a, b = gt_old[sub], gt[sub]
        k = int(np.argmax(np.abs(a)))
        if a[k] == 0 or not np.isfinite(b[k]):
            return None
        c = b[k] / a[k]
        if not np.all(np.abs(b - c * a) <= SCALED_RTOL * np.abs(b)):
            return None
    return c * part_old


def _data(source):
    """The current value of a data matrix (a shared variable's, or a constant's)."""
    arr = source.get_value(borrow=True) if hasattr(source, "get_value") else source
    if arr.dtype != np.float64 or arr.ndim != 2:
        arr = np.asarray(arr, dtype=float)  # e.g. integer dummies: converted for this call
    return arr


def _source(D):
    """The shared variable or constant array behind the data matrix ``D`` (through the model's
    SpecifyShape), or None when ``D`` is computed (then the graph's own products are used)."""
    from pytensor.compile.sharedvalue import SharedVariable
    from pytensor.tensor.shape import SpecifyShape
    from pytensor.tensor.variable import TensorConstant

    while D.owner is not None and isinstance(D.owner.op, SpecifyShape):
        D = D.owner.inputs[0]
    if isinstance(D, SharedVariable):
        return D
    if isinstance(D, TensorConstant):
        return np.asarray(D.data)
    return None


def predictor_eval(x, n_params: int, cut, compile):
    """A :class:`PredictorEval` for ``cut`` (from
    :func:`~mle_ppl._src.engine.structured.cut_predictors`), or None when a data matrix is
    computed in the graph rather than stored (a shared variable or constant)."""
    sources = [_source(D) for _, D, _ in cut[0]]
    if any(s is None for s in sources):
        return None
    return PredictorEval(x, n_params, cut, sources, compile)


class PredictorEval:
    """Value, gradient and Hessian of the NLL through its linear predictors (see module doc).

    ``compile(inputs, outputs)`` compiles a PyTensor function the way the objective does (data
    lifted to inputs, the model's mode and ``check_bounds``).
    """

    def __init__(self, x, n_params: int, cut, sources, compile):
        import pytensor

        terms, ts, nll_r, others = cut
        self.n_params = n_params
        self.ranges = [rng for _, _, rng in terms]
        self.sources = sources
        self.others = np.asarray(others, dtype=int)
        gx = pytensor.grad(nll_r, x, disconnected_inputs="ignore")
        gts = pytensor.grad(nll_r, ts, disconnected_inputs="ignore")
        self._fn_vg = compile([x, *ts], [nll_r, gx, *gts])
        hess_out, self._pairs, self._mixed = [], [], []
        for j in range(len(ts)):
            for k in range(j, len(ts)):
                w = pytensor.grad(gts[j].sum(), ts[k], disconnected_inputs="ignore",
                                  return_disconnected="None")
                if w is not None:
                    self._pairs.append((j, k))
                    hess_out.append(w)
        for o in self.others.tolist():
            for j in range(len(ts)):
                v = pytensor.grad(gx[o], ts[j], disconnected_inputs="ignore",
                                  return_disconnected="None")
                if v is not None:
                    self._mixed.append((o, j))
                    hess_out.append(v)
            hess_out.append(pytensor.grad(gx[o], x, disconnected_inputs="ignore"))
        self._fn_h = compile([x, *ts], hess_out) if hess_out else None
        self.forget()

    def forget(self) -> None:
        """Drop what earlier evaluations kept (all of it: the fit cache restores an evaluator
        without it, engine.fitcache)."""
        self._last = None  # (x, data arrays, predictors) of the last evaluation
        self._kept_sums = {}  # "gram" / "colsum": (fit, data matrix, DᵀD or Dᵀ1)
        self._kept_grad = None  # per predictor: (t, ∂NLL/∂t, Dᵀ ∂NLL/∂t) of the last gradient

    def _predictors(self, x):
        Ds = [_data(s) for s in self.sources]
        last = self._last
        ts = []
        for j, (D, (a, b)) in enumerate(zip(Ds, self.ranges, strict=True)):
            if (last is not None and last[1][j] is D
                    and np.array_equal(last[0][a:b], x[a:b])):
                ts.append(last[2][j])  # β and the data unchanged since the last evaluation
            else:
                ts.append(matvec(D, x[a:b]))
        self._last = (x.copy(), Ds, ts)
        return Ds, ts

    def _per_fit(self, what: str, D: np.ndarray) -> np.ndarray:
        """``DᵀD`` (``"gram"``) or ``Dᵀ1`` (``"colsum"``), computed once per fit and data matrix
        (see :func:`~mle_ppl._src.engine.alloc.fit_scope`; outside a fit, every time)."""
        from mle_ppl._src.engine.alloc import current_fit

        fit = current_fit()
        kept = self._kept_sums.get(what)
        if fit is not None and kept is not None and kept[0] == fit and kept[1] is D:
            return kept[2]
        if what == "gram":
            val = gram_products([D], {(0, 0): np.ones(1)}, {})[0][(0, 0)]
        else:
            val = rmatvec(D, np.ones(D.shape[0]))
        self._kept_sums[what] = None if fit is None else (fit, D, val)
        return val

    def value_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        # non-finite values (a step outside the support) are the optimizers' to reject
        with np.errstate(all="ignore"):
            return self._value_and_grad(x)

    def hessian(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return self._hessian(x)

    def _value_and_grad(self, x):
        Ds, ts = self._predictors(x)
        f, gx, *gts = self._fn_vg(x, *ts)
        g = np.array(gx, dtype=float)
        kept = self._kept_grad
        self._kept_grad = []
        for j, (D, gt, (a, b)) in enumerate(zip(Ds, gts, self.ranges, strict=True)):
            gt = np.array(_rows(gt, D.shape[0]))
            part = None
            if kept is not None and kept[j][0] is ts[j]:
                part = _scaled_product(gt, kept[j][1], kept[j][2])
            if part is None:
                part = rmatvec(D, gt)
            self._kept_grad.append((ts[j], gt, part))
            g[a:b] += part
        return float(f), g

    def _hessian(self, x):
        Ds, ts = self._predictors(x)
        H = np.zeros((self.n_params, self.n_params))
        if self._fn_h is None:
            return H
        out = list(self._fn_h(x, *ts))
        n = Ds[0].shape[0]
        pairs = {jk: out.pop(0) for jk in self._pairs}
        mixed_v = {}
        rows_o = {}
        for o in self.others.tolist():
            for oj in [m for m in self._mixed if m[0] == o]:
                mixed_v[oj] = _rows(out.pop(0), n)
            rows_o[o] = np.asarray(out.pop(0), dtype=float)
        known = {}  # Dⱼᵀ vₒⱼ without a read of Dⱼ
        kept = self._kept_grad
        for (o, j), v in mixed_v.items():
            if v.size and np.all(v == v[0]):  # the same in every row (a Gaussian's intercept)
                known[(o, j)] = v[0] * self._per_fit("colsum", Ds[j])
            elif kept is not None and kept[j][0] is ts[j]:  # a multiple of ∂NLL/∂t (σ's)
                part = _scaled_product(v, kept[j][1], kept[j][2])
                if part is not None:
                    known[(o, j)] = part
        vs = {}
        for j in range(len(Ds)):
            cols = [(o, mixed_v[(o, jj)]) for (o, jj) in self._mixed
                    if jj == j and (o, jj) not in known]
            if cols:
                vs[j] = (np.column_stack([c for _, c in cols]), [o for o, _ in cols])
        fixed = {}
        for jk, w in list(pairs.items()):
            w = np.asarray(w, dtype=float).reshape(-1)
            if jk[0] == jk[1] and w.size and np.all(w == w[0]):
                # the same weight in every row (a Gaussian's 1/σ²): w DᵀD, DᵀD kept for the fit
                fixed[jk] = w[0] * self._per_fit("gram", Ds[jk[0]])
                del pairs[jk]
        grams, cross = gram_products(Ds, pairs, {j: V for j, (V, _) in vs.items()})
        grams.update(fixed)
        for (j, k), block in grams.items():
            (a, b), (c, d) = self.ranges[j], self.ranges[k]
            H[a:b, c:d] += block
            if j != k:
                H[c:d, a:b] += block.T
        for j, (_, os_) in vs.items():
            for col, o in enumerate(os_):
                known[(o, j)] = cross[j][:, col]
        for (o, j), col in known.items():
            a, b = self.ranges[j]
            H[a:b, o] = col
            H[o, a:b] = col
        oth = self.others
        if len(oth):
            block = np.array([rows_o[o][oth] for o in oth.tolist()])
            H[np.ix_(oth, oth)] = 0.5 * (block + block.T)
        return H
