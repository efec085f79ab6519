"""The least-squares closed-form check on chunked data (streamed, Dask): a QR reduced by chunks.

For a Gaussian likelihood whose mean is linear in the coefficients, everything the check needs is
a function of the augmented design ``[X, z]`` (``z = y − offset``) through its Gram matrix: the
least-squares solution, the RSS, ``(XᵀX)⁻¹`` and the RSS at the fit's θ̂. Instead of the Gram
matrix (which squares the condition number), each chunk returns the R factor of its own
``[X, z]`` (``numpy.linalg.qr``, Householder) and the driver takes the R factor of the stacked
factors (a tall-skinny QR): ``[X, z] = Q R`` with ``Rᵀ R`` the Gram matrix of all rows, so the
least-squares problem on ``R`` has the same solution, residual norms and singular values as the
problem on all rows, at the accuracy of a QR of the whole design. The chunk's design is found
by :func:`.detect.detect` on that chunk, bound into the model by
:meth:`~mle_ppl._src.engine.chunked.ChunkedObjective.map_chunks`; the reduced problem then goes
through the in-memory :func:`.checks.regression_check`.

The cross-entropy checks (Bernoulli, binomial, categorical) need a Newton reference over the
rows; on chunked data they are reported as not available.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mle_ppl._src.report.checks import ClosedFormCheck, regression_check
from mle_ppl._src.report.detect import Detected, NotApplicable, detect

if TYPE_CHECKING:
    from mle_ppl._src.engine.estimate import Estimate

REFERENCE = ("NumPy Householder QR of [X, y] per chunk, the QR of the stacked R factors on the "
             "driver (tall-skinny QR), then SVD least squares on the column-equilibrated R "
             "(+1 refinement step)")


def chunk_factor(lik, x) -> tuple:
    """One chunk's summary (runs where the chunk is bound; module level so Dask can pickle it).

    ``("ls", R, rows, σ min, σ max, detected)`` for a linear Gaussian mean, ``("ce", family)``
    for a cross-entropy structure, ``("na", reason)`` when no closed form applies."""
    try:
        det = detect(lik, x)
    except NotApplicable as na:
        return ("na", na.reason)
    if det.family != "normal":
        return ("ce", det.family)
    z = det.y - det.offset
    R = np.linalg.qr(np.c_[det.design, z], mode="r")
    sig = np.asarray(det.aux[0], dtype=float)
    meta = {"cols": det.cols, "theta_hat": det.theta_hat, "aux_blocks": det.aux_blocks,
            "mean_names": det.mean_names, "observed": det.observed}
    return ("ls", R, int(z.shape[0]), float(sig.min()), float(sig.max()), meta)


def chunked_check(fit: Estimate, *, se_tol: float, loglik_tol: float) -> ClosedFormCheck:
    """The closed-form check of a fit whose objective reads its data in chunks."""
    lik = fit.likelihood
    kind = lik.data_source.get("kind")
    parts = lik.map_chunks(chunk_factor, np.asarray(fit.x, dtype=float))
    if not parts:
        raise NotApplicable("the data have no rows.")
    for part in parts:
        if part[0] == "na":
            raise NotApplicable(part[1])
    if any(part[0] == "ce" for part in parts):
        raise NotApplicable(
            f"the {parts[0][1]} likelihood's cross-entropy check needs a Newton reference over "
            f"the rows, which is not computed for chunked data ({kind}); only the least-squares "
            "check (Normal with a linear mean) reduces to sums over chunks. Fit a sample that "
            "fits in memory for this check.")
    R = np.linalg.qr(np.vstack([part[1] for part in parts]), mode="r")
    n = sum(part[2] for part in parts)
    meta = parts[0][5]
    m = len(meta["cols"])
    design = R[:, :m]
    det = Detected(family="normal", link="identity", observed=meta["observed"], y=R[:, m],
                   design=design, offset=np.zeros(R.shape[0]), cols=meta["cols"],
                   theta_hat=meta["theta_hat"], eta_hat=design @ meta["theta_hat"],
                   aux=(np.array([min(p[3] for p in parts), max(p[4] for p in parts)]),),
                   aux_blocks=meta["aux_blocks"], mean_names=meta["mean_names"])
    check = regression_check(fit, det, se_tol=se_tol, loglik_tol=loglik_tol, n_obs=n,
                             reference=REFERENCE)
    return check
