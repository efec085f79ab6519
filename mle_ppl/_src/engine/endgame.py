"""What a stationary point of the NLL is: a maximum, a saddle to leave, a flat ridge, or a runaway.

Newton's decrement vanishes at every stationary point, not only at maxima of the likelihood.
Where the (Jacobi-scaled) observed information is singular or indefinite at such a point, the
optimizer asks this module:

- :func:`probe` looks along the flat and negative-curvature directions, from 0.1 % to 10 times
  the size of the coordinates involved, for a lower NLL (a saddle, or a degenerate stationary
  point such as two equal rates in a sum of exponentials, is left along them);
- :func:`shake` breaks exact ties (interchangeable parameters sitting at equal values keep the
  gradient symmetric forever) by a small seeded perturbation, from which the optimizer restarts;
- :func:`ran_off` names the coordinates that ran off: part of a direction along which the data
  carry no information at the end point, and far from where the optimizer started (1e3 times
  their size there, or, for a log/logit-scale coordinate, 10 units: a factor e^10 in σ). These
  are ratios, so the test does not depend on the units of the data: a regression on y·1e9
  converges at an interior optimum with a positive definite information, and is never flagged.

All of it runs only at an end point whose information is not safely positive definite, so easy
problems pay nothing.
"""

from __future__ import annotations

import numpy as np

EPS = np.finfo(float).eps

#: Scaled eigenvalue (relative to the largest) at or below which a direction of the observed
#: information counts as flat for the end-game checks (a well-posed ill-conditioned optimum, e.g.
#: Bennett5 or NIST Longley, stays above ~1e-9).
FLAT = 1e-10
#: Relative sizes of the probe steps along a flat direction (fractions of the coordinates' size).
PROBE_STEPS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
#: A move counts as progress when it lowers the NLL by more than this (log-likelihood units)
#: plus the rounding noise of the NLL.
MARGIN = 1e-9
#: A coordinate in a flat direction "ran off" when it grew beyond this factor of its size at the
#: start (unbounded coordinates) ...
RUNAWAY_RATIO = 1e3
#: ... or moved by more than this on its log/logit scale (bounded coordinates).
RUNAWAY_LOG = 10.0
#: While iterating: a rise of the log-likelihood below this (log-likelihood units) over a window
#: of iterations in which coordinates far from their start kept growing is a runaway.
CREEP = 0.1
#: Relative sizes of the perturbations that break ties, one per escape round.
SHAKES = (1e-3, 0.1, 0.5)


def margin(f: float) -> float:
    return MARGIN + 1e3 * EPS * max(abs(f), 1.0)


def flat_directions(d, w, V, limit=3):
    """Directions (in x) of the smallest scaled eigenvalues at or below :data:`FLAT`."""
    wmax = max(float(np.max(np.abs(w))), 1e-300)
    return [d * V[:, j] for j in range(min(limit, len(w))) if w[j] <= FLAT * wmax]


def needs_check(w) -> bool:
    """Whether the end point's scaled information is not safely positive definite."""
    return bool(w[0] <= FLAT * max(float(np.max(np.abs(w))), 1e-300))


def probe(value_and_grad, x, f, directions):
    """The lowest point found along ``directions`` (both signs), if lower than ``f`` by more
    than :func:`margin`; else None. Returns ``(x, f, g)``."""
    best = None
    size = np.abs(x)
    for u in directions:
        r = float(np.max(np.abs(u) / np.maximum(size, np.abs(u) * 1e-300 + 1e-300)))
        if not np.isfinite(r) or r == 0:
            continue
        for sign in (1.0, -1.0):
            for t in PROBE_STEPS:
                cand = x + sign * (t / r) * u
                fc, gc = value_and_grad(cand)
                if not np.isfinite(fc):
                    break
                if fc < f - margin(f) and (best is None or fc < best[1]):
                    best = (cand, fc, gc)
    return best


def shake(x, d, seed=0, scale=1e-3):
    """``x`` moved by ``scale`` times each coordinate's size (or its scale ``d``), seeded."""
    rng = np.random.default_rng(seed)
    return x + scale * np.maximum(np.abs(x), d) * rng.standard_normal(x.size)


def ran_off(x, x_start, x_first, bounded, d, w, V):
    """Coordinates that ran off: involved in a flat direction at ``x`` and far from the start.

    An unbounded coordinate is measured against its size at the start, or, when it starts at 0,
    at ``x_first``, the first accepted iterate (a linear model's first step lands on its optimum).
    """
    dirs = flat_directions(d, w, V)
    if not dirs:
        return ()
    bounded = np.zeros(x.size, bool) if bounded is None else np.asarray(bounded, bool)
    out = set()
    for u in dirs:
        involved = np.abs(u) > 0.05 * np.max(np.abs(u))
        for i in np.flatnonzero(involved):
            if bounded[i]:
                far = abs(x[i] - x_start[i]) > RUNAWAY_LOG
            else:
                ref = abs(x_start[i]) if x_start[i] != 0 else abs(x_first[i])
                far = abs(x[i]) > RUNAWAY_RATIO * ref
            if far:
                out.add(int(i))
    return tuple(sorted(out))


def running_off(x, x_window, x_start, x_first, bounded, rise):
    """Coordinates running off while iterating: far from the start (as in :func:`ran_off`),
    still growing over the last window (by 20 %, or 1 unit on a log/logit scale), while the
    log-likelihood rose by less than :data:`CREEP` in that window."""
    if rise >= CREEP:
        return ()
    bounded = np.zeros(x.size, bool) if bounded is None else np.asarray(bounded, bool)
    far = _far(x, x_start, x_first, bounded)
    growing = np.where(bounded, np.abs(x - x_start) > np.abs(x_window - x_start) + 1.0,
                       np.abs(x) > 1.2 * np.abs(x_window))
    return tuple(int(i) for i in np.flatnonzero(far & growing))


def _far(x, x_start, x_first, bounded):
    ref = np.where(x_start != 0, np.abs(x_start),
                   np.abs(x_first if x_first is not None else x_start))
    return np.where(bounded, np.abs(x - x_start) > RUNAWAY_LOG, np.abs(x) > RUNAWAY_RATIO * ref)


def far_from_start(x, x_start, x_first, bounded):
    """Coordinates far from the start (as in :func:`ran_off`), for an end point whose
    information is not even finite."""
    bounded = np.zeros(x.size, bool) if bounded is None else np.asarray(bounded, bool)
    return tuple(int(i) for i in np.flatnonzero(_far(x, x_start, x_first, bounded)))
