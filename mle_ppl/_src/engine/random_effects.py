"""Which free variables of a model are parameters, random effects or priors (the detection rule).

The rule (README, "Random effects"): a free variable whose distribution is *proper* and whose
parameters depend on free parameters (flat ones, or other random effects, or — with
``likelihood_only=True`` — dropped priors) is a **random effect**; it is integrated out of the
likelihood (:mod:`~mle_ppl._src.engine.laplace`). A proper distribution whose parameters are all
constants is a **prior**: refused, or dropped with ``likelihood_only=True``. ``random=[names]``
overrides the detection; ``random=[]`` turns it off (every proper variable is then a prior).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pymc as pm
from pytensor.graph.traversal import ancestors

from mle_ppl._src.engine.likelihood import FLAT_OPS
from mle_ppl._src.errors import ModelError, did_you_mean


@dataclass(frozen=True)
class Roles:
    """The role of every free variable, by name, in declaration order."""

    flat: tuple[str, ...]  #: flat parameters (estimated)
    random: tuple[str, ...]  #: random effects (integrated out)
    priors: tuple[str, ...]  #: proper distributions with constant parameters (priors)
    detected: bool  #: True when ``random`` came from the rule, False when given by ``random=``

    def notes(self) -> tuple[str, ...]:
        """Sentences for the result: what was treated how, and why."""
        if not self.random:
            return ()
        how = ("detected: their distributions are proper and their parameters depend on free "
               "parameters" if self.detected else "named by random=")
        return (f"random effects {', '.join(self.random)} ({how}) are integrated out by the "
                "Laplace approximation; the estimates maximise the marginal likelihood of "
                f"{', '.join(self.flat + self.priors) or 'no parameter'}.",)


def _op_name(rv) -> str:
    return type(rv.owner.op).__name__


def _params(rv):
    op = rv.owner.op
    if hasattr(op, "dist_params"):
        return list(op.dist_params(rv.owner))
    return list(rv.owner.inputs[2:])


def classify(model: pm.Model, *, random: Sequence[str] | None = None,
             likelihood_only: bool = False) -> Roles:
    """Split the free variables of ``model`` into flat parameters, random effects and priors.

    Raises
    ------
    ModelError
        ``random=`` names an unknown or a flat variable; a random effect is discrete; a
        random effect that no observed variable depends on.
    """
    free = list(model.free_RVs)
    names = [rv.name for rv in free]
    flat = [rv for rv in free if _op_name(rv) in FLAT_OPS]
    proper = [rv for rv in free if _op_name(rv) not in FLAT_OPS]
    if random is not None:
        random = [str(r) for r in random]
        for r in random:
            if r not in names:
                raise ModelError(f"random= names {r!r}, which is not a free variable of the "
                                 f"model; free variables are {names}.{did_you_mean(r, names)}")
            if any(rv.name == r for rv in flat):
                raise ModelError(
                    f"random= names {r!r}, but it has a flat distribution "
                    f"({_op_name(model[r]).removesuffix('RV')}): a random effect needs a proper "
                    "distribution whose parameters are estimated, e.g. "
                    f"pm.Normal({r!r}, 0, sd_{r}, dims=...) with sd_{r} = pm.HalfFlat(...).")
        rand = [rv for rv in proper if rv.name in random]
        detected = False
    else:
        # in declaration order: a variable's parameters can only depend on earlier ones
        params = set(flat)
        if likelihood_only:
            params |= {rv for rv in proper if not _depends(rv, set(flat) | set(proper))}
        rand = []
        for rv in proper:
            if rv in params:
                continue
            if _depends(rv, params | set(rand)):
                rand.append(rv)
        detected = True
    discrete = [rv.name for rv in rand if "int" in rv.dtype]
    if discrete:
        raise ModelError(f"random effects {discrete} are discrete; the Laplace approximation "
                         "integrates continuous random effects only. Sum them out in the model "
                         "(pm.Mixture / pm.CustomDist) instead.")
    priors = [rv for rv in proper if rv not in rand]
    if rand:
        _check_used(model, rand)
    return Roles(flat=tuple(rv.name for rv in flat), random=tuple(rv.name for rv in rand),
                 priors=tuple(rv.name for rv in priors), detected=detected)


def _depends(rv, on: set) -> bool:
    if not on:
        return False
    return any(a in on for a in ancestors(_params(rv), blockers=None) if a is not rv)


def _check_used(model: pm.Model, rand) -> None:
    """Every random effect must reach an observed variable (else it integrates to 1)."""
    obs = model.replace_rvs_by_values(
        [model.rvs_to_values[rv] for rv in model.observed_RVs]
        + [p for rv in model.observed_RVs for p in _params(rv)])
    reached = set(ancestors(obs))
    # a random effect reaches the data through another one (u2 ~ N(u1[g], s); y ~ N(u2[h], ...))
    used = set()
    vals = {rv: model.rvs_to_values[rv] for rv in rand}
    for rv in rand:
        if vals[rv] in reached:
            used.add(rv)
    changed = True
    while changed:
        changed = False
        for rv in rand:
            if rv in used:
                continue
            for other in used:
                deps = set(ancestors(model.replace_rvs_by_values(_params(other))))
                if vals[rv] in deps:
                    used.add(rv)
                    changed = True
                    break
    unused = [rv.name for rv in rand if rv not in used]
    if unused:
        raise ModelError(
            f"random effect {', '.join(unused)}: no observed variable depends on it, so it "
            "integrates to 1 and its variance parameters are not identified by the data. Use it "
            "in the likelihood (e.g. mu = ... + u[group_idx]) or remove it.")


def refuse_priors(roles: Roles, model: pm.Model, *, likelihood_only: bool) -> tuple[str, ...]:
    """Priors (proper, constant parameters) are refused by name, or dropped with a note."""
    if not roles.priors:
        return ()
    desc = ", ".join(f"{n} ({_op_name(model[n]).removesuffix('RV')})" for n in roles.priors)
    if not likelihood_only:
        has = "has a proper prior" if len(roles.priors) == 1 else "have proper priors"
        raise ModelError(
            f"maximum likelihood needs flat priors, but {desc} {has} whose parameters are "
            "constants (a proper distribution is a random effect only when its parameters "
            "depend on estimated parameters, e.g. pm.Normal('u', 0, sd_u) with "
            "sd_u = pm.HalfFlat('sd_u')). Use pm.Flat / pm.HalfFlat (or pm.Uniform for a "
            "bounded parameter) in the model, make the scale a free parameter to estimate it "
            "as a variance component, or, from Python, fit(..., likelihood_only=True) to drop "
            "the prior terms and maximise the likelihood alone.")
    return (f"likelihood_only=True: the prior terms of {desc} were dropped; the estimates "
            "maximise the likelihood alone (not the MAP).",)
