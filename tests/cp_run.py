"""Run under ``torchrun --nproc_per_node 2 tests/cp_run.py OUT.json [flux|wan|wan22]``: a tiny FLUX (or Wan 2.1, or
Wan 2.2 with its two experts) pipeline
with and without diffusers' Ulysses context parallelism, with each accel capability; rank 0 writes what it measured
to OUT.json.

Every rank first runs every case in one process (no parallelism, same weights and seeds), then enables context
parallelism and runs them again, so the two results come from the same model object.

Test launcher only: diffusers places rank r on accelerator ``r % torch.accelerator.device_count()`` and a CPU
has none, so the count is stood in by 1 here (each rank then runs on "cpu").
"""
from __future__ import annotations

import json
import sys
import warnings

import torch

torch.accelerator.device_count = lambda: 1  # the stand-in (see the module docstring)

import accel  # noqa: E402
from accel.parallel import ContextParallel, enable_context_parallel  # noqa: E402
from tiny import tiny_flux  # noqa: E402
from tiny_families import tiny_wan, tiny_wan22, wan22_inputs, wan_inputs  # noqa: E402

STEPS, W = 6, 4.0
FAMILY = sys.argv[2] if len(sys.argv) > 2 else "flux"


def inputs(cfg: bool = False) -> dict:
    return flux_inputs(cfg) if FAMILY == "flux" else wan_call(cfg)


def wan_call(cfg: bool) -> dict:
    """Batch 1, 5 frames of 32 x 32: 2 latent frames of 2 x 2 patches, 8 video tokens split over 2 ranks (Wan's plan
    keeps the 6 text tokens whole); CFG: Wan's second call with negative embeddings."""
    if FAMILY == "wan22":  # the high-noise expert for the first 2 of 6 steps, the low-noise one after
        return wan22_inputs(batch=1, steps=STEPS, guidance=W if cfg else 1.0, guidance_2=W if cfg else 1.0, seed=1000,
                            frames=5) | {"output_type": "latent"}
    return wan_inputs(batch=1, steps=STEPS, guidance=W if cfg else 1.0, seed=1000, frames=5) | {"output_type": "latent"}


def build(seed: int = 0):
    return {"flux": tiny_flux, "wan": tiny_wan, "wan22": tiny_wan22}[FAMILY](seed=seed)


def flux_inputs(cfg: bool = False) -> dict:
    """Batch 1, 16 x 16 pixels: 16 image tokens and 6 text tokens, both split evenly over 2 ranks."""
    g = torch.Generator().manual_seed(1000)
    kw = dict(prompt_embeds=torch.randn(1, 6, 32, generator=g), pooled_prompt_embeds=torch.randn(1, 16, generator=g),
              num_inference_steps=STEPS, height=16, width=16, output_type="latent",
              generator=torch.Generator().manual_seed(0))
    if cfg:  # FLUX's true CFG: a second denoiser call per step with the negative embeddings
        kw.update(true_cfg_scale=W, negative_prompt_embeds=torch.zeros(1, 6, 32),
                  negative_pooled_prompt_embeds=torch.zeros(1, 16))
    return kw


def cases(pipe) -> dict:
    """name -> (apply kwargs, whether the call uses true CFG)."""
    rng = torch.Generator().manual_seed(3)
    table = accel.CacheSchedule.uniform(pipe, STEPS, 1)
    table.table[1:] = (torch.rand(table.table[1:].shape, generator=rng) < 0.5).numpy()  # an ECAD/BAC-like table
    return {
        "plain": ({}, False),
        "counting only": (dict(cache=None), False),
        "uniform every 2": (dict(cache=accel.CacheSchedule.uniform(pipe, STEPS, 2)), False),
        "uniform every 3, forecast": (dict(cache=accel.CacheSchedule.uniform(pipe, STEPS, 3, reuse="taylor")), False),
        "per-component table": (dict(cache=table), False),
        "APG + uniform every 2": (dict(cache=accel.CacheSchedule.uniform(pipe, STEPS, 2), guidance=accel.APG(W)), True),
        "FA-CFG": (dict(guidance=accel.FrequencyAwareCFG(1.0, W)), True),
        "solver unipc": (dict(solver="unipc"), False),
    }


def run(pipe, name: str, kw: dict, cfg: bool) -> tuple[torch.Tensor, dict | None]:
    if name != "plain":
        accel.apply(pipe, **kw)
    res = pipe(**inputs(cfg))
    out = torch.as_tensor(res.images if FAMILY == "flux" else res.frames)
    st = None
    if name != "plain":
        s = accel.stats(pipe)
        st = {"macs_full": s.macs_full, "macs_fraction": s.macs_fraction, "reused": s.reused,
              "context_parallel": s.extra.get("context_parallel")}
        accel.remove(pipe)
    return out, st


def main(out_path: str) -> None:
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    pipe = build()
    pipe.set_progress_bar_config(disable=True)
    todo = cases(pipe)
    single = {name: run(pipe, name, kw, cfg) for name, (kw, cfg) in todo.items()}

    # accel applied before context parallelism: the first call is refused with the fix; applying again works
    accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, STEPS, 2))
    enable_context_parallel(pipe, ContextParallel.parse("ulysses:2"))
    report: dict = {"rank": torch.distributed.get_rank(), "cases": {}}
    try:
        pipe(**inputs())
        report["applied_before"] = "ran"
    except ValueError as e:
        report["applied_before"] = str(e)
    accel.remove(pipe)

    for name, (kw, cfg) in todo.items():
        out, st = run(pipe, name, kw, cfg)
        ref, st1 = single[name]
        report["cases"][name] = {"max_abs_diff": float((out - ref).abs().max()), "scale": float(ref.abs().max()),
                                 "stats": st, "stats_single": st1}
    refusals = {}
    for what, kw in (("token refresh", dict(cache=accel.TokenRefresh(2, 0.5))), ("attention", dict(attention="torch"))):
        try:
            accel.apply(pipe, **kw)
            refusals[what] = "applied"
        except ValueError as e:
            refusals[what] = str(e)
    other = build(seed=1)  # ring attention with PyTorch's native backend: refused before anything changes
    try:
        enable_context_parallel(other, ContextParallel.parse("ring:2"))
        refusals["ring"] = "enabled"
    except ValueError as e:
        refusals["ring"] = str(e)
    report["refusals"] = refusals
    if torch.distributed.get_rank() == 0:
        with open(out_path, "w") as f:
            json.dump(report, f, indent=1)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
