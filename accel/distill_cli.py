"""``accel distill``: teacher pairs with a fast accel solver, then reflow and one-step distillation."""
from __future__ import annotations

import json
from pathlib import Path


def add_distill_parser(sub) -> None:
    s = sub.add_parser("distill", help="distil a flow pipeline into a one-step generator (SlimFlow-style)")
    s.add_argument("--pipeline", default="pixart-flow", help="reference name or local pipeline folder (flow prediction)")
    s.add_argument("--num-pairs", type=int, default=24000, help="teacher pairs (noise, teacher sample)")
    s.add_argument("--solver", default="unipc", help="accel solver the teacher samples with (accel.solvers.named)")
    s.add_argument("--solver-steps", type=int, default=10)
    s.add_argument("--guidance", type=float, default=4.5, help="CFG of the teacher; baked into the student")
    s.add_argument("--prompts", help="training prompts, one per line (default: the reference training captions)")
    s.add_argument("--reflow-steps", type=int, default=600)
    s.add_argument("--distill-steps", type=int, default=1800)
    s.add_argument("--batch", type=int, default=128)
    s.add_argument("--lr", type=float, default=1e-4)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--work", help="pairs and checkpoints (default: $ACCEL_RUNS/distill-<name>); reruns resume there")
    s.add_argument("--transformer-only", action="store_true", help="write only the student transformer (fp16)")
    s.add_argument("--out", required=True, help="output folder: a diffusers pipeline (or the transformer)")
    from .cli_args import add_device_args

    add_device_args(s)  # the student trains in float32 on the same device
    s.set_defaults(fn=run)


def run(a) -> None:
    import torch

    from .devices import load_from_args
    from .errors import InputError
    from .distill import DistillConfig, PairConfig, make_pairs, train_student
    from .pipelines.calls import makes_clips
    from .pipelines.training.common import runs_dir

    from .distill.train import require_flow
    from .solvers.named import solver_from_name

    pipe = load_from_args(a)
    try:  # before the teacher pairs, which take most of the run
        require_flow(pipe)
        solver_from_name(pipe, a.solver)
    except (ValueError, FileNotFoundError) as e:
        raise InputError(str(e)) from None
    if makes_clips(pipe):
        raise InputError(f"accel distill trains one-step students of image pipelines (PixArt, DiT, SD3, FLUX); "
                         f"{type(pipe).__name__} makes clips")
    if a.prompts:
        if not Path(a.prompts).exists():
            raise InputError(f"prompt file {a.prompts!r} not found")
        prompts = [l.strip() for l in Path(a.prompts).read_text().splitlines() if l.strip()]
    else:
        from .pipelines.data import train_captions

        if getattr(pipe, "accel_reference", None) is None:
            raise InputError("a local pipeline needs --prompts (training prompts for the teacher pairs)")
        prompts = [c for c, _ in train_captions()]
    work = Path(a.work) if a.work else runs_dir() / f"distill-{Path(str(a.pipeline)).name}"
    pcfg = PairConfig(num_pairs=a.num_pairs, solver=a.solver, steps=a.solver_steps, guidance=a.guidance, seed=a.seed)
    make_pairs(pipe, prompts, work / "pairs", pcfg)
    dcfg = DistillConfig(reflow_steps=a.reflow_steps, distill_steps=a.distill_steps, batch=a.batch, lr=a.lr, seed=a.seed)
    try:
        student = train_student(pipe, work / "pairs", work / "student.ckpt", dcfg)
    except ValueError as e:
        raise InputError(str(e)) from e
    out = Path(a.out)
    meta = {"teacher": str(a.pipeline), "pairs": a.num_pairs, "solver": a.solver, "solver_steps": a.solver_steps,
            "guidance_baked_in": a.guidance, "reflow_steps": a.reflow_steps, "distill_steps": a.distill_steps,
            "call_defaults": {"num_inference_steps": 1, "guidance_scale": 1.0}}
    if a.transformer_only:
        student.to(torch.float16).save_pretrained(out)
    else:
        pipe.transformer = student
        pipe.save_pretrained(out)
    (out / "accel_onestep.json").write_text(json.dumps(meta, indent=1))
    print(f"one-step student -> {out} (call it with num_inference_steps=1, guidance_scale=1)")
