"""Learned step placement, LD3-style (Tong et al., "Learning to Discretize Denoising Diffusion ODEs", ICLR 2025):
``accel calibrate --method steps``.

Only the NFE evaluation points of a given solver are learned, on the pipeline's own teacher trajectories (a
many-step solve of its own scheduler from the same noise, at the calls' guidance). As in LD3:

- the points are a softmax over learnable logits, cumulated, between fixed ends (the solver's first point and
  the end of the solve);
- the student starts from noise x' kept in an L2 ball of radius 0.001 * d / NFE^2 around the teacher's noise x
  (d the latent size), moved by SGD (lr 12 / NFE) and projected back after each step, and a sample's x' is
  kept only where it lowered that sample's loss: the slack that keeps matching the teacher well posed;
- the logits follow RMSprop (lr 5e-3, momentum 0.9, gradient norm clipped to 1), the best logits on held-back
  validation prompts (solved from their own noise) are kept, and after 5 evaluations without improvement the
  best are restored and the learning rate decays by 0.8, down to 5e-5.

Departures from the paper and its official code (vinhsuhi/LD3), each for a reason:
- the loss is the latent MSE to the teacher's final latent, not LPIPS on decoded images: the target here is the
  latent a many-step solve reaches, and no LPIPS weights load offline;
- the logits start at the solver's own default steps (the official code starts uniform in time or log-SNR), so
  learning starts from the placement it is measured against;
- the teacher is the pipeline's own scheduler at ``--teacher-steps`` (default 200), the ground truth accel's
  solvers are judged against (the paper: UniPC at 20 NFE);
- the decoupled model time (the official "version 2") is left out: a step file holds one time per step;
- batches of ``--train-batch`` prompts per step (the official code: 1-2 images), to use a CPU's cores; x' takes
  its SGD step on the batch's mean loss, as the official code does, so at batch B its per-sample step is B times
  smaller than at batch 1 (the official code also keeps a moved x' when the loss after the logits' step and
  the move is lower than before both, as here);
- validation solves from the teacher's own noise, as a call does (the official code also moves the validation
  samples' noise inside the ball);
- gradients flow through the solver's own ``step`` (diffusers' code, or accel's for DC), so the forward is
  exactly the arithmetic of a call. Where that code builds coefficients as plain numbers (UniPC's corrector
  weights, DC's interpolation time) they count as constants in the gradient (within a few percent of central
  differences on the reference pipelines); v3's integrals are all plain numbers, so its logits' gradient is
  taken by central differences of the loss instead.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from accel.solvers.learned_steps import StepFile, default_points, schedule_kind


@dataclass(frozen=True)
class LD3Config:
    """The learning's settings (defaults: the official code's, module docstring)."""

    iters: int = 120
    train_batch: int = 8
    lr: float = 5e-3
    momentum: float = 0.9
    min_lr: float = 5e-5
    lr_decay: float = 0.8
    patience: int = 5
    eval_every: int = 4
    bound_scale: float = 1e-3  # radius = bound_scale * d / NFE^2
    shift_lr_scale: float = 12.0  # SGD lr of x' = shift_lr_scale / NFE
    teacher_steps: int = 200


class _Chunk:
    """One batch of prompts: its guided denoiser, its teacher noise and final latent, its student noise x'."""

    def __init__(self, fn, noise: torch.Tensor, target: torch.Tensor):
        self.fn, self.noise, self.target = fn, noise, target
        self.start = noise.clone()


def points_of(logits: torch.Tensor, first: float, end: float = 0.0) -> torch.Tensor:
    """NFE points from ``first`` towards ``end``: the gaps are softmax(logits) of the span (LD3's parametrisation)."""
    gaps = torch.softmax(logits, 0) * (first - end)
    return first - torch.cat([gaps.new_zeros(1), torch.cumsum(gaps, 0)[:-1]])


def logits_for(points: list[float], end: float = 0.0) -> torch.Tensor:
    """The logits whose ``points_of`` are ``points``."""
    p = np.append(np.asarray(points, dtype=np.float64), end)
    gaps = np.maximum(-np.diff(p), 1e-9)
    return torch.tensor(np.log(gaps / gaps.sum()), dtype=torch.float64)


def solve(template, chunk_fn, x: torch.Tensor, points: torch.Tensor, mu: float | None) -> torch.Tensor:
    """The solver's final latent from ``x`` with its steps at ``points`` (differentiable in both); NaN where the
    solver refuses a non-finite result (v3), so a placement it cannot solve from counts as infinitely bad."""
    try:
        return _solve(template, chunk_fn, x, points, mu)
    except FloatingPointError:
        return x * float("nan")


def _solve(template, chunk_fn, x: torch.Tensor, points: torch.Tensor, mu: float | None) -> torch.Tensor:
    sched = copy.deepcopy(template)
    sched.learned_steps = None
    model_t = sched.use_points(points, x.device, mu)
    x = x * getattr(sched, "init_noise_sigma", 1.0)
    for i, t in enumerate(sched.timesteps):
        m = chunk_fn(sched.scale_model_input(x, t), model_t[i])
        x = sched.step(m, t, x).prev_sample
    return x


@torch.no_grad()
def _fd_gradient(loss, logits: torch.Tensor, h: float = 1e-3) -> torch.Tensor:
    """Central differences of ``loss(logits)``."""
    grad = torch.zeros_like(logits)
    for k in range(len(logits)):
        e = torch.zeros_like(logits)
        e[k] = h
        grad[k] = (loss(logits + e) - loss(logits - e)) / (2 * h)
    return grad


def _per_sample_mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((x.float() - y.float()) ** 2).flatten(1).mean(1)


def _fingerprint_of_run(solver: str, nfe: int, guidance: float, prompts: list[str], seed: int, cfg: LD3Config,
                        extra: list) -> str:
    text = json.dumps([solver, nfe, guidance, prompts, seed, cfg.__dict__, extra], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def learn_steps(pipe, solver: str, nfe: int, train_prompts: list[str], valid_prompts: list[str], guidance: float,
                cfg: LD3Config = LD3Config(), seed: int = 0, batch: int = 64, call_kwargs: dict | None = None,
                checkpoint: str | Path | None = None, progress: bool = True, deadline: float | None = None,
                clock: Callable[[], float] = time.time) -> StepFile:
    """Learn the ``nfe`` points of ``solver`` (a name of ``accel.solvers.named``) on ``pipe``; returns the step file.
    ``checkpoint``: a file the run saves to after every evaluation and resumes from (deleted at the end).
    ``deadline``: a reading of ``clock`` (default ``time.time``) after which learning stops at the next iteration
    and keeps its best points."""
    from accel.pipelines.calls import condition
    from accel.pipelines.families import find_denoiser
    from accel.solvers.named import solver_from_name, with_guidance
    from accel.solvers.provenance import made_for

    from .dc import sample
    from .model_fn import GuidedDenoiser

    if nfe < 2:
        raise ValueError("learned steps need --nfe of at least 2 (one step has no placement to learn)")
    started = time.perf_counter()
    _, den = find_denoiser(pipe)
    stamp = made_for(den)
    template = solver_from_name(pipe, with_guidance(solver, guidance))
    kind = schedule_kind(template)
    run_id = _fingerprint_of_run(solver, nfe, guidance, train_prompts + ["|"] + valid_prompts, seed, cfg,
                                 [batch, sorted((call_kwargs or {}).items(), key=str), stamp["fingerprint"]])
    ckpt = Path(checkpoint) if checkpoint else None
    state = torch.load(ckpt, weights_only=False) if ckpt is not None and ckpt.exists() else None
    if state is not None and state.get("run") != run_id:
        raise ValueError(f"{ckpt} belongs to another run (other prompts, solver, NFE, guidance or settings); "
                         "delete it to start again")

    def chunks(prompts: list[str], size: int, salt: int) -> list[_Chunk]:
        out = []
        for c, b in enumerate(range(0, len(prompts), size)):
            fn = GuidedDenoiser(pipe, condition(pipe, prompts[b: b + size], guidance), guidance, call_kwargs)
            gen = torch.Generator().manual_seed(seed * 1_000_003 + salt * 10_007 + c)
            noise = torch.randn((fn.batch, *fn.latent_shape), generator=gen).to(den.device)
            out.append(_Chunk(fn, noise, None))
        return out

    train, valid = chunks(train_prompts, cfg.train_batch, 1), chunks(valid_prompts, batch, 2)
    teacher = type(pipe.scheduler).from_config(pipe.scheduler.config)  # the pipeline's own solver
    if state is not None:
        if len(state["targets"]) != len(train + valid) or any(
                t.shape != c.noise.shape for t, c in zip(state["targets"], train + valid)):
            raise ValueError(f"{ckpt} does not fit this run's batches; delete it to start again")
        for ch, tgt in zip(train + valid, state["targets"]):
            ch.target = tgt
    else:
        for ch in tqdm(train + valid, desc=f"steps: teacher ({cfg.teacher_steps} steps)", disable=not progress):
            ch.target = sample(ch.fn, teacher, ch.noise, cfg.teacher_steps)[0]
    mu = train[0].fn.timestep_kwargs.get("mu")
    start_points = default_points(template, nfe)
    first = start_points[0]
    logits = torch.nn.Parameter(logits_for(start_points))
    opt = torch.optim.RMSprop([logits], lr=cfg.lr, momentum=cfg.momentum)
    d = math.prod(train[0].fn.latent_shape)
    radius = cfg.bound_scale * d / nfe**2
    shift_lr = cfg.shift_lr_scale / nfe

    @torch.no_grad()
    def validate(lg: torch.Tensor) -> float:
        pts = points_of(lg.detach(), first)
        losses = [_per_sample_mse(solve(template, ch.fn, ch.noise, pts, mu), ch.target) for ch in valid]
        loss = float(torch.cat(losses).mean())
        return loss if math.isfinite(loss) else float("inf")

    it, best, best_logits, worse = 0, None, logits.detach().clone(), 0
    loss_default = None
    if state is not None:
        logits.data.copy_(state["logits"])
        opt.load_state_dict(state["opt"])
        for ch, x in zip(train, state["starts"]):
            ch.start = x
        it, best, best_logits, worse = state["it"], state["best"], state["best_logits"], state["worse"]
        loss_default = state["loss_default"]
    if loss_default is None:
        loss_default = best = validate(logits)
    # a solver whose coefficients are computed from plain numbers (v3's integrals) has no gradient in them: its
    # logits' gradient is taken by central differences of the same loss (2 NFE more solves per iteration)
    exact = getattr(template, "points_differentiable", True)
    requires = [p.requires_grad for p in den.parameters()]
    for p in den.parameters():
        p.requires_grad_(False)
    order = np.random.default_rng(seed).permutation(cfg.iters * len(train)) % len(train)
    bar = tqdm(total=cfg.iters, initial=it, desc=f"steps: LD3 {solver} NFE {nfe}", disable=not progress)
    try:
        while it < cfg.iters and opt.param_groups[0]["lr"] > cfg.min_lr * (1 + 1e-9) and \
                (deadline is None or clock() < deadline):
            ch = train[order[it]]
            x = ch.start.clone().requires_grad_(True)
            lg = logits if exact else logits.detach()
            per = _per_sample_mse(solve(template, ch.fn, x, points_of(lg, first), mu), ch.target)
            opt.zero_grad()
            per.mean().backward()
            if not exact:
                logits.grad = _fd_gradient(lambda v: float(_per_sample_mse(
                    solve(template, ch.fn, ch.start, points_of(v, first), mu), ch.target).mean()), logits.detach())
            grads = (logits.grad, x.grad)
            if not (torch.isfinite(per).all() and all(g is not None and torch.isfinite(g).all() for g in grads)):
                it += 1  # a placement the solver cannot solve from: no step on this batch
                bar.update()
                continue
            torch.nn.utils.clip_grad_norm_([logits], 1.0)
            opt.step()
            with torch.no_grad():  # the slack: x' one SGD step on, projected into the ball, kept where it helped
                moved = x - shift_lr * x.grad
                diff = (moved - ch.noise).flatten(1)
                norm = diff.norm(dim=1, keepdim=True).clamp_min(1e-12)
                diff = torch.where(norm > radius, diff * (radius / norm), diff)
                moved = ch.noise + diff.view_as(moved)
                new = _per_sample_mse(solve(template, ch.fn, moved, points_of(logits.detach(), first), mu), ch.target)
                keep = (new < per.detach()).view(-1, *([1] * (moved.dim() - 1)))
                ch.start = torch.where(keep, moved, ch.start)
            it += 1
            bar.update()
            if it % cfg.eval_every == 0 or it == cfg.iters:
                loss = validate(logits)
                if loss < best:
                    best, best_logits, worse = loss, logits.detach().clone(), 0
                else:
                    worse += 1
                    if worse >= cfg.patience:
                        logits.data.copy_(best_logits)
                        for g in opt.param_groups:
                            g["lr"] = max(g["lr"] * cfg.lr_decay, cfg.min_lr)
                        worse = 0
                bar.set_postfix(valid=f"{loss:.5f}", best=f"{best:.5f}", default=f"{loss_default:.5f}")
                if ckpt is not None:
                    tmp = ckpt.with_name(ckpt.name + ".tmp")
                    torch.save({"run": run_id, "targets": [c.target for c in train + valid], "logits": logits.detach(),
                                "opt": opt.state_dict(), "starts": [c.start for c in train], "it": it, "best": best,
                                "best_logits": best_logits, "worse": worse, "loss_default": loss_default}, tmp)
                    os.replace(tmp, ckpt)
    finally:
        bar.close()
        for p, r in zip(den.parameters(), requires):
            p.requires_grad_(r)
    points = [float(v) for v in points_of(best_logits, first)]
    meta = {"method": "LD3 (accel.calibrate.steps)", "teacher": f"{type(pipe.scheduler).__name__}, "
            f"{cfg.teacher_steps} steps", "train_prompts": len(train_prompts), "valid_prompts": len(valid_prompts),
            "iterations": it, "seed": seed, "valid_mse_default": loss_default, "valid_mse_learned": best,
            "default_points": start_points, "seconds": round(time.perf_counter() - started, 1)}
    if call_kwargs:
        meta["call"] = {k: v for k, v in call_kwargs.items() if isinstance(v, (int, float, str))}
    if ckpt is not None and ckpt.exists():
        ckpt.unlink()
    return StepFile(kind, tuple(points), solver.split(":")[0], float(guidance), stamp["fingerprint"],
                    tuple(stamp["weights"]), meta)


def _cli_args(p) -> None:
    p.add_argument("--iters", type=int, default=LD3Config.iters, help="steps: learning iterations")
    p.add_argument("--train-batch", type=int, default=LD3Config.train_batch, help="steps: prompts per iteration")
    p.add_argument("--teacher-steps", type=int, default=LD3Config.teacher_steps,
                   help="steps: steps of the teacher solve (the pipeline's own scheduler)")


def _cli_run(a) -> None:
    from accel.devices import load_from_args
    from accel.errors import InputError
    from accel.solvers.named import split_steps

    from .cli_common import read_prompts, size_args

    try:
        nfe = int(a.nfe)
    except (TypeError, ValueError):
        raise InputError(f"--nfe {a.nfe}: steps learns the steps of one NFE (a whole number), e.g. --nfe 5") from None
    if nfe < 2 or a.iters < 1 or a.train_batch < 1 or a.teacher_steps <= nfe:
        raise InputError("steps needs --nfe >= 2, --iters >= 1, --train-batch >= 1 and --teacher-steps above --nfe")
    a.solver = a.solver or "unipc"
    if split_steps(a.solver)[1] is not None:
        raise InputError(f"--solver {a.solver}: give the solver without a step file")
    pipe = load_from_args(a)
    pipe.set_progress_bar_config(disable=True)
    prompts = read_prompts(a, pipe)
    if len(prompts) < 2:
        raise InputError("steps needs at least 2 prompts (half learn the steps, half validate them)")
    half = len(prompts) // 2
    cfg = LD3Config(iters=a.iters, train_batch=a.train_batch, teacher_steps=a.teacher_steps)
    from accel.solvers.named import solver_from_name, with_guidance

    try:
        solver_from_name(pipe, with_guidance(a.solver, a.guidance))
    except (ValueError, FileNotFoundError) as e:
        raise InputError(str(e)) from None
    steps = learn_steps(pipe, a.solver, nfe, prompts[:half], prompts[half:], a.guidance, cfg, a.seed, a.batch,
                        size_args(a, pipe) or None, checkpoint=str(a.out) + ".partial")
    steps.save(a.out)
    m = steps.meta
    print(f"{a.solver} at NFE {nfe}: validation MSE {m['valid_mse_default']:.5f} (default steps) -> "
          f"{m['valid_mse_learned']:.5f} (learned), {m['seconds']:.0f} s")
    print(f"points: {', '.join(f'{v:.4g}' for v in steps.points)} (default {', '.join(f'{v:.4g}' for v in m['default_points'])})")
    print(f"-> {a.out}")


from .registry import CalibrationMethod, register  # noqa: E402

register(CalibrationMethod("steps", "learned step placement of a solver at one NFE (LD3)", _cli_args, _cli_run))
