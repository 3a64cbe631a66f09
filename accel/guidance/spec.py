"""Guidance methods from short text specs, shared by the CLI and the bench: ``apg:W[:ETA:MOMENTUM:R]``,
``facfg:W_LOW:W_HIGH[:CUTOFF]`` (what is left out takes the class defaults; R = 0: no norm threshold)."""
from __future__ import annotations

from .methods import APG, FrequencyAwareCFG


def guidance_from_spec(spec: str) -> APG | FrequencyAwareCFG:
    """``guidance_from_spec("apg:7.5")`` -> ``APG(7.5)``; a clear ``ValueError`` for anything else.

    Example:
        >>> guidance_from_spec("facfg:4.5:7.5").scale_high
        7.5
    """
    kind, _, arg = spec.partition(":")
    try:
        vals = [float(x) for x in arg.split(":")] if arg else []
    except ValueError:
        vals = None
    if kind == "apg" and vals and len(vals) <= 4:
        d = APG(vals[0])
        eta, mom, r = (vals[1:] + [d.eta, d.momentum, d.norm_threshold or 0.0][len(vals) - 1 :])[:3]
        return APG(vals[0], eta=eta, momentum=mom, norm_threshold=r or None)
    if kind == "facfg" and vals and 2 <= len(vals) <= 3:
        return FrequencyAwareCFG(vals[0], vals[1], vals[2] if len(vals) > 2 else 0.5)
    raise ValueError(f"guidance {spec!r}: write apg:W[:ETA:MOMENTUM:R] or facfg:W_LOW:W_HIGH[:CUTOFF]")


def call_scale(method: APG | FrequencyAwareCFG) -> float:
    """The ``guidance_scale`` a pipeline call needs for ``method`` (> 1, so the pipeline builds the CFG batch)."""
    if isinstance(method, APG):
        return method.scale
    return max(method.scale_low, method.scale_high, 1.01)
