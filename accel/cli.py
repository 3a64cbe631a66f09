"""The ``accel`` command: ``generate``, ``calibrate``, ``bench``, ``info``.

Every subcommand runs offline on the embedded reference pipelines by default (``--pipeline``
takes a reference name or a local diffusers pipeline folder).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli_args import (add_call_args, add_device_args, add_parallel_args, check_call_args, enable_parallel,
                       parse_parallel, uneven_split)
from .devices import load_from_args, resolve_device
from .errors import InputError

DEFAULT_PIPELINE = "pixart-eps"


def parse_cache(spec: str | None, pipe, steps: int):
    """``uniform:K`` (recompute every K steps), ``full``, or the path of a schedule JSON."""
    import accel

    if spec is None:
        return None
    if spec == "full":
        return accel.CacheSchedule.full(pipe, steps)
    if spec.startswith("uniform:"):
        try:
            k = int(spec.split(":", 1)[1])
        except ValueError:
            raise InputError(f"bad cache spec {spec!r}: use uniform:K with an integer K") from None
        return accel.CacheSchedule.uniform(pipe, steps, k)
    if not Path(spec).exists():
        raise InputError(f"cache schedule {spec!r} not found (give a JSON file, 'full' or 'uniform:K')")
    return accel.CacheSchedule.load(spec)


def cmd_info(a) -> None:
    import diffusers
    import torch

    import accel
    from .pipelines.families import supported_families
    from .pipelines.reference import REFERENCES, is_available

    print(f"accel {accel.__version__}  torch {torch.__version__}  diffusers {diffusers.__version__}")
    auto = resolve_device("auto")
    print(f"--device auto: {auto}" + (f" ({torch.cuda.get_device_name(torch.device(auto))})" if auto != "cpu" else
                                       " (torch sees no CUDA device)"))
    try:
        import triton

        print(f"triton {triton.__version__} (kernels {'usable' if torch.cuda.is_available() else 'interpreter only: no CUDA'})")
    except ImportError:
        print("triton: not installed (attention falls back to torch SDPA)")
    print("families:")
    for fam, classes in supported_families().items():
        print(f"  {fam:8s} {', '.join(classes)}")
    print("reference pipelines:")
    for name, desc in REFERENCES.items():
        print(f"  {name:12s} {'ready' if is_available(name) else 'weights missing'}  {desc}")


def _stack_of(a):
    """The ``Stack`` of ``--config`` (None without it); refused with the parts it replaces, or when it does not load."""
    if a.config is None:
        return None
    given = [f"--{n.replace('_', '-')}" for n in ("cache", "solver", "guidance_method") if getattr(a, n)]
    if given:
        raise InputError(f"--config is the whole stack: leave out {', '.join(given)}")
    from .stack import Stack

    try:
        return Stack.load(a.config)
    except (ValueError, FileNotFoundError) as e:
        raise InputError(str(e)) from None


def cmd_generate(a) -> None:
    import torch

    import accel

    from .pipelines.calls import call_kwargs, default_prompts, is_class_conditional, makes_clips
    from .pipelines.prompt_sets import CLIPS, prompt_set

    check_call_args(a)
    parallel = parse_parallel(a)
    stack = _stack_of(a)
    pipe = load_from_args(a)
    rank = enable_parallel(pipe, parallel)  # before accel.apply: accel's hooks sit outside diffusers' split
    pipe.set_progress_bar_config(disable=not sys.stderr.isatty() or rank > 0)
    defaults = getattr(pipe, "accel_defaults", {})  # a one-step pipeline's defaults fix steps and guidance
    if stack is not None:  # then the stack's steps and guidance scale, unless given on the command line
        defaults = {**defaults, **stack.call_defaults()}
    steps = a.steps if a.steps is not None else defaults.get("num_inference_steps", 20)
    guidance = a.guidance if a.guidance is not None else defaults.get("guidance_scale", 4.5)
    prompts = a.prompt or (default_prompts(pipe, 1, a.seed) if is_class_conditional(pipe) or prompt_set(pipe) is CLIPS
                           else ["a photo of a sneaker"])
    try:
        call = call_kwargs(pipe, prompts, steps, guidance, a.height, a.width, a.num_frames, a.fps)
    except ValueError as e:  # a prompt that is no class name of a class-conditional pipeline, a fixed size
        raise InputError(str(e)) from None
    if stack is not None:
        try:
            accel.apply(pipe, **stack.apply_kwargs(pipe, steps, call.get("guidance_scale")))
        except (ValueError, KeyError, FileNotFoundError, NotImplementedError) as e:
            raise InputError(f"--config {a.config}: {e}") from None
    try:
        cache = parse_cache(a.cache, pipe, steps)
    except (ValueError, KeyError) as e:  # a schedule for another model, a broken file, uniform:0
        raise InputError(f"--cache {a.cache}: {e}") from None
    try:
        from .guidance.spec import call_scale, guidance_from_spec
        from .solvers.named import with_guidance

        method = guidance_from_spec(a.guidance_method) if a.guidance_method else None
        if method is not None and a.guidance is None:
            call.update(call_kwargs(pipe, prompts, steps, call_scale(method), a.height, a.width, a.num_frames, a.fps))
        solver = with_guidance(a.solver, call.get("guidance_scale", guidance)) if a.solver else None
        if stack is None:
            accel.apply(pipe, cache=cache, solver=solver, guidance=method)
    except (ValueError, KeyError, FileNotFoundError, NotImplementedError) as e:  # a file for another model, ...
        raise InputError(str(e)) from None
    out = Path(a.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    if makes_clips(pipe):
        call.setdefault("output_type", "pt")  # the clips as one tensor, written below
    try:
        result = pipe(generator=torch.Generator().manual_seed(a.seed), **call)
    except FloatingPointError as e:  # a solver that refuses to hand back non-finite latents
        raise InputError(str(e)) from None
    except AssertionError as e:
        if parallel is None:
            raise
        raise InputError(f"--context-parallel {parallel}: {uneven_split(parallel, e)}") from None
    if rank > 0:  # every rank made the same images: rank 0 writes them
        return
    print(accel.stats(pipe))  # under context parallelism: no collective, the MACs were counted in the call
    print(_write_outputs(pipe, result, out, a.fps))


def _write_outputs(pipe, result, out: Path, fps: int | None) -> str:
    """Write a call's images as PNGs, or a video pipeline's clips as video files and a contact sheet; what was
    written, as one line."""
    from .pipelines.calls import frame_rate, makes_clips, output_tensor

    if not makes_clips(pipe):
        for i, img in enumerate(result.images):
            img.save(out / f"{i:03d}.png")
        return f"{len(result.images)} images -> {out}"
    from .clips import write_clips

    clips = output_tensor(result)
    w = write_clips(clips, out, frame_rate(pipe, fps))
    n, f, _, h, wd = clips.shape
    hint = " (GIF: pip install 'accel[video]' for mp4)" if w.format == "gif" else ""
    files = ", ".join(str(p) for p in w.files)
    return f"{n} clip{'s' * (n > 1)} of {f} frames, {wd}x{h}, {w.fps} fps -> {files}{hint}; contact sheet {w.sheet}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="accel", description="Inference acceleration for diffusers pipelines.")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("info", help="versions, supported families, reference pipelines")
    s.set_defaults(fn=cmd_info)

    s = sub.add_parser("generate", help="generate images (or a video pipeline's clips) with an (accelerated) pipeline")
    s.add_argument("--pipeline", default=DEFAULT_PIPELINE, help="reference name or local pipeline folder")
    s.add_argument("--prompt", action="append", help="a prompt (repeatable); a class name on class-conditional "
                                                      "pipelines (DiT)")
    s.add_argument("--steps", type=int, help="num_inference_steps (default: the pipeline's, else 20)")
    s.add_argument("--guidance", type=float, help="guidance_scale (default: the pipeline's, else 4.5)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--cache", help="schedule JSON, 'full' or 'uniform:K'")
    s.add_argument("--solver", help="a solver name: dpm++, unipc, v3[:EMS_FILE], dc[:RATIO_FILE][:GUIDANCE], "
                                    "onestep:PRESET")
    s.add_argument("--guidance-method", help="apg:W[:ETA:MOMENTUM:R] or facfg:W_LOW:W_HIGH[:CUTOFF] (sets the call's "
                                             "guidance scale unless --guidance is given)")
    s.add_argument("--config", help="a stack config file (solver, steps, cache, guidance; accel.stack.Stack) in "
                                    "place of --cache / --solver / --guidance-method")
    s.add_argument("--out", default="outputs/generate")
    add_call_args(s)
    add_device_args(s)
    add_parallel_args(s)
    s.set_defaults(fn=cmd_generate)

    from .calibrate_cli import add_calibrate_parser
    from .bench_cli import add_bench_parser
    from .distill_cli import add_distill_parser
    from .tune_cli import add_tune_parser

    add_calibrate_parser(sub)
    add_distill_parser(sub)
    add_bench_parser(sub)
    add_tune_parser(sub)

    a = p.parse_args(argv)
    a.argv = list(sys.argv[1:] if argv is None else argv)  # what the bench records as its command
    try:
        a.fn(a)
    except InputError as e:
        print(f"accel {a.cmd}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
