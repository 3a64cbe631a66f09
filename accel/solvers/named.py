"""Solvers by name, for ``accel.apply(pipe, solver="...")``, the CLI and the bench.

Names: ``dpm++`` (DPM-Solver++ 2M, diffusers), ``unipc`` (UniPC bh2, diffusers), ``v3[:EMS_FILE]``
(DPM-Solver-v3 with statistics from ``accel calibrate --method ems``), ``dc[:RATIO_FILE]:GUIDANCE``
(DC-Solver with ratios from ``accel calibrate --method dc``, for calls at that CFG scale); on the
reference pipelines the files default to the ones shipped with accel,
``onestep:PRESET`` (scheduler, steps, timesteps and guidance of a known one-step checkpoint, ``accel.solvers.presets``).
Any of ``dpm++``, ``unipc``, ``v3``, ``dc`` takes learned steps: ``NAME:steps=FILE`` (a step file from
``accel calibrate --method steps``, ``accel.solvers.learned_steps``), e.g. ``unipc:steps=steps.json``.
Every scheduler is configured from the pipeline's own noise schedule (``NoiseSchedule.of``): VP from
its ``alphas_cumprod`` config with its prediction type (epsilon, v), flow matching with the pipeline's
own scheduler deciding the timesteps (its shift, dynamic shifting with the ``mu`` the pipeline passes,
custom sigmas).
"""
from __future__ import annotations

from typing import Callable

import torch

from .noise_schedule import NoiseSchedule, follow_pipeline

_NAMED: dict[str, Callable] = {}


def named_solver(prefix: str):
    """Register ``fn(pipe, arg) -> scheduler`` for solver names ``prefix`` or ``prefix:ARG``."""
    def deco(fn):
        _NAMED[prefix] = fn
        return fn
    return deco


def solver_names() -> list[str]:
    return sorted(_NAMED)


def with_guidance(name: str, guidance: float) -> str:
    """``"dc"`` / ``"dc:FILE"`` -> the same name serving calls at ``guidance`` (DC ratios depend on it); names that
    already end in a guidance, and other solvers, are returned as they are."""
    base, steps = split_steps(name)
    if base.split(":")[0] != "dc":
        return name
    try:
        float(base.rsplit(":", 1)[-1])
        return name
    except ValueError:
        return f"{base}:{guidance}" + (f":steps={steps}" if steps else "")


def split_steps(name: str) -> tuple[str, str | None]:
    """``"unipc:steps=FILE"`` -> ``("unipc", "FILE")``: a solver name without its learned step file, and the file."""
    parts = name.split(":")
    files = [p[len("steps="):] for p in parts if p.startswith("steps=")]
    if len(files) > 1 or any(not f for f in files):
        raise ValueError(f"solver {name!r}: give one learned step file, as 'NAME:steps=FILE'")
    return ":".join(p for p in parts if not p.startswith("steps=")), (files[0] if files else None)


def solver_from_name(pipe, name: str):
    """A scheduler instance for ``name`` on ``pipe`` (see the module docstring for the names)."""
    base, steps = split_steps(name)
    kind, _, arg = base.partition(":")
    if kind not in _NAMED:
        raise ValueError(f"unknown solver {name!r}; known: {', '.join(solver_names())}")
    sched = _NAMED[kind](pipe, arg)
    if steps is not None:
        from .learned_steps import StepFile, check_steps_for
        from .noise_schedule import PipelineTimesteps

        if not isinstance(sched, PipelineTimesteps):
            raise ValueError(f"solver {kind!r} does not take learned steps (dpm++, unipc, v3 and dc do)")
        sched.learned_steps = StepFile.load(steps)
        check_steps_for(sched.learned_steps, sched, kind)
    return sched


def build_solver(cls, pipe, **overrides):
    """``cls`` (a ``PipelineTimesteps`` scheduler class) configured for ``pipe``'s noise schedule."""
    return build_solver_for(cls, pipe.scheduler, **overrides)


# what pipelines read off ``pipe.scheduler.config`` to compute the ``mu`` of their dynamic shift (FLUX, Qwen-Image,
# LTX: ``calculate_shift``): carried over to the solver that replaces their scheduler
_SHIFT_KEYS = ("base_image_seq_len", "max_image_seq_len", "base_shift", "max_shift")


def build_solver_for(cls, scheduler, **overrides):
    """``cls`` configured for the noise schedule of ``scheduler`` (a pipeline's own). A VP schedule the solver's
    config cannot express (CogVideoX's ``snr_shift_scale``) is given to it as ``trained_betas`` from the source's
    ``alphas_cumprod``; the source's dynamic-shift settings stay readable in the solver's config."""
    ns = NoiseSchedule.of(scheduler)
    keys = cls._get_init_keys(cls)
    cfg = {k: v for k, v in ns.solver_config().items() if k in keys}  # the source's own options stay with it
    sched = cls.from_config(cfg, **overrides)
    if not ns.is_flow and not torch.allclose(sched.alphas_cumprod.float(), ns.alphas_cumprod, rtol=1e-5, atol=1e-7):
        sched = cls.from_config({**cfg, "trained_betas": _betas_of(ns.alphas_cumprod)}, **overrides)
    source = ns.source.config
    sched.register_to_config(**{k: source[k] for k in _SHIFT_KEYS if k in source and k not in sched.config})
    return follow_pipeline(sched, ns)


def _betas_of(alphas_cumprod: torch.Tensor) -> list[float]:
    """The betas whose cumulative product of (1 - beta) is ``alphas_cumprod``."""
    acp = alphas_cumprod.double()
    alphas = torch.cat([acp[:1], acp[1:] / acp[:-1]])
    return (1 - alphas).tolist()


def scheduler_for_class(pipe, cls):
    """An instance of the scheduler class ``cls`` for ``pipe``: diffusers' DPM-Solver and UniPC (and accel's
    solvers) configured from the noise schedule, following the pipeline's flow timesteps; any other class
    from the pipeline scheduler's config, as diffusers swaps schedulers."""
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

    from .baselines import DPMSolverPlusPlus, UniPC
    from .noise_schedule import PipelineTimesteps

    cls = {DPMSolverMultistepScheduler: DPMSolverPlusPlus, UniPCMultistepScheduler: UniPC}.get(cls, cls)
    if issubclass(cls, PipelineTimesteps):
        return build_solver(cls, pipe)
    return cls.from_config(pipe.scheduler.config)


def _no_arg(name: str, arg: str) -> None:
    if arg:
        raise ValueError(f"solver {name!r} takes no argument, got {name}:{arg}")


@named_solver("dpm++")
def _dpmpp(pipe, arg: str):
    from .baselines import DPMSolverPlusPlus

    _no_arg("dpm++", arg)
    return build_solver(DPMSolverPlusPlus, pipe, algorithm_type="dpmsolver++", solver_order=2)


@named_solver("unipc")
def _unipc(pipe, arg: str):
    from .baselines import UniPC

    _no_arg("unipc", arg)
    return build_solver(UniPC, pipe, solver_type="bh2", solver_order=2)


def shipped_file(pipe, kind: str) -> str | None:
    """The statistics (``ems``) or ratio (``dc``) file shipped for a reference pipeline, if any."""
    from accel.pipelines.components import WEIGHTS_DIR

    ref = getattr(pipe, "accel_reference", None)
    path = WEIGHTS_DIR / "solvers" / (f"ems-{ref}.safetensors" if kind == "ems" else f"dc-{ref}.json")
    return str(path) if ref and path.exists() else None


@named_solver("v3")
def _v3(pipe, arg: str):
    from .dpm_solver_v3 import DPMSolverV3Scheduler

    path = arg or shipped_file(pipe, "ems")
    if not path:
        raise ValueError("solver 'v3' needs its statistics file: 'v3:EMS_FILE' (from `accel calibrate --method ems`)")
    return build_solver(DPMSolverV3Scheduler, pipe, ems_path=path)


@named_solver("dc")
def _dc(pipe, arg: str):
    from .dc_solver import DCSolverScheduler

    parts = arg.split(":") if arg else []
    try:
        g = float(parts[-1]) if parts else None
    except ValueError:
        g = None
    if g is not None:
        parts = parts[:-1]
    path = ":".join(parts) or shipped_file(pipe, "dc")
    if not path or g is None:
        raise ValueError("solver 'dc' needs 'dc:RATIO_FILE:GUIDANCE' (ratios from `accel calibrate --method dc`; "
                         "the file may be left out on the reference pipelines: 'dc:4.5')")
    return build_solver(DCSolverScheduler, pipe, dc_path=path, cpr_guidance_scale=g)


@named_solver("onestep")
def _onestep(pipe, arg: str):
    from .presets import PRESETS, preset_scheduler

    if not arg:
        raise ValueError(f"solver 'onestep' needs a preset: 'onestep:NAME' with NAME one of {', '.join(sorted(PRESETS))}")
    return preset_scheduler(pipe, arg)
