"""The random-effects report of a mixed-model fit: conditional modes, their SDs, boundary facts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class RandomEffects:
    """Random effects integrated out of a fit (``fit.random_effects``).

    ``mode`` are the conditional modes ``û(θ̂)`` (the empirical-Bayes predictions, lme4's
    ``ranef``), ``std_err`` their standard deviations including the uncertainty of θ̂ (TMB's
    ``sdreport``: ``H⁻¹ + (dû/dθ) Σ_θ (dû/dθ)ᵀ``), ``sd_conditional`` the conditional SDs given θ̂
    alone (``diag H⁻¹``).
    """

    names: tuple[str, ...]  #: random-effect variables
    labels: tuple[str, ...]  #: one per entry, e.g. ``u[school_3]``
    mode: np.ndarray
    std_err: np.ndarray
    sd_conditional: np.ndarray
    variance_params: tuple[str, ...]  #: labels of the parameters of their distributions
    boundary: tuple[str, ...]  #: variance parameters estimated on the boundary (σ̂ = 0)
    method: str  #: "laplace" (or "laplace (exact: Gaussian)"), with REML if used
    notes: tuple[str, ...] = ()

    def to_frame(self) -> pd.DataFrame:
        """Modes and SDs as a DataFrame indexed by label."""
        var = [lab.split("[", 1)[0] for lab in self.labels]
        return pd.DataFrame({"variable": var, "mode": self.mode, "std_err": self.std_err,
                             "sd_conditional": self.sd_conditional}, index=list(self.labels))

    @property
    def modes(self) -> pd.Series:
        return pd.Series(np.array(self.mode), index=list(self.labels), name="mode")

    @property
    def singular(self) -> bool:
        """lme4's "boundary (singular) fit": a variance component estimated at 0."""
        return bool(self.boundary)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the section ``random_effects`` of ``fit.to_dict()``."""
        return {"variables": list(self.names), "method": self.method,
                "variance_parameters": list(self.variance_params),
                "boundary": list(self.boundary), "singular": self.singular,
                "modes": {lab: {"mode": _num(m), "std_err": _num(s),
                                "sd_conditional": _num(c)}
                          for lab, m, s, c in zip(self.labels, self.mode, self.std_err,
                                                  self.sd_conditional, strict=True)},
                "notes": list(self.notes)}

    def __str__(self) -> str:
        head = (f"Random effects {', '.join(self.names)} ({len(self.labels)} entries, "
                f"{self.method}); variance parameters: {', '.join(self.variance_params)}")
        if self.boundary:
            head += f"\nboundary (singular) fit: {', '.join(self.boundary)} = 0"
        with pd.option_context("display.float_format", "{:.6g}".format, "display.max_rows", 20):
            return f"{head}\n{self.to_frame().to_string()}"


def _num(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None
