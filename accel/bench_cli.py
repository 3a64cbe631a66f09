"""``accel bench``: arguments and error handling around ``accel.bench.run_bench``."""
from __future__ import annotations

from pathlib import Path


PEERS = "fbcache:0.3,taylorseer:3,magcache:0.2"
GENERIC = "plain,uniform:2,uniform:3,fbcache:0.3"


def default_methods(pipeline: str) -> str:
    """The rows of a bench given none: on a reference pipeline the shipped tuned config beside the plain pipeline,
    accel's uniform cache and the diffusers peers (the README's main job), elsewhere a few caches."""
    from .pipelines.reference import tuned_config

    path = tuned_config(pipeline)
    return f"plain,config:{path},uniform:2,{PEERS}" if path else GENERIC


def _run(a) -> None:
    from .bench import BenchConfig, run_bench
    from .bench.driver import check_context_parallel_rows
    from .bench.page import command_line
    from .bench.rows import make_row
    from .cli_args import check_call_args, parse_parallel, uneven_split
    from .devices import resolve_device
    from .errors import InputError

    check_call_args(a)
    parallel = parse_parallel(a)
    methods = tuple(m.strip() for m in (a.methods or default_methods(a.pipeline)).split(",") if m.strip())
    rows = []
    for m in methods:  # fail before loading anything
        try:
            rows.append(make_row(m))
        except (ValueError, FileNotFoundError, ImportError) as e:  # ImportError: a diffusers without that cache
            msg = str(e)
            raise InputError(msg if repr(m) in msg else f"bench method {m!r}: {msg}") from None
    if parallel is not None:
        try:
            check_context_parallel_rows(rows, a.full_size)
        except ValueError as e:
            raise InputError(str(e)) from None
    metrics = tuple(m.strip() for m in a.metrics.split(",") if m.strip()) if a.metrics else None
    if a.clip and not (Path(a.clip) / "config.json").exists():
        raise InputError(f"--clip {a.clip!r}: no CLIP model folder (config.json missing)")
    if a.ref_images and not Path(a.ref_images).is_dir():
        raise InputError(f"--ref-images {a.ref_images!r}: no such folder")
    prompts = None
    if a.prompts:
        if not Path(a.prompts).exists():
            raise InputError(f"prompt file {a.prompts!r} not found")
        prompts = [l.strip() for l in Path(a.prompts).read_text().splitlines() if l.strip()]
        if not prompts:
            raise InputError(f"prompt file {a.prompts!r} has no prompts")
    cfg = BenchConfig(pipeline=a.pipeline, methods=methods, prompts=prompts, num_images=a.num_images, steps=a.steps,
                      guidance=a.guidance, seed=a.seed, batch=a.batch, out=a.out, fd_effnet=not a.no_effnet,
                      quality_only=a.quality_only, full_size=a.full_size, full_size_repeats=a.full_size_repeats,
                      timing_rounds=a.timing_rounds, max_timing_rounds=a.max_timing_rounds,
                      timing_spread=a.timing_spread, height=a.height, width=a.width, num_frames=a.num_frames,
                      fps=a.fps, device=resolve_device(a.device),
                      dtype=a.dtype, metrics=metrics, ref_images=a.ref_images, ref_stats=a.ref_stats, clip=a.clip,
                      command=command_line([*_launcher(parallel is not None), *a.argv]),
                      context_parallel=str(parallel) if parallel is not None else None)
    try:
        results = run_bench(cfg)
    except (FileNotFoundError, RuntimeError) as e:
        raise InputError(str(e)) from None
    except ValueError as e:  # prompts a class-conditional pipeline lacks, a size a pipeline cannot take
        raise InputError(str(e)) from None
    except AssertionError as e:
        if parallel is None:
            raise
        raise InputError(f"--context-parallel {parallel}: {uneven_split(parallel, e)}") from None
    if not results:  # another process of `accelerate launch`: rank 0 writes
        return
    table = (Path(a.out) / "results.md").read_text()
    print(table)
    if a.readme_section:
        from .bench.readme import update_section

        update_section(a.readme, a.readme_section, table)
        print(f"README section {a.readme_section!r} updated in {a.readme}")
    if a.page:
        import json

        from .bench.page import write_page

        meta = json.loads((Path(a.out) / "results.json").read_text())["config"]
        print(f"results page written: {write_page(a.page, table, meta, a.out, title=a.page_title)}")
    print(f"written: {a.out}/results.json results.md pareto.png grid.png ({len(results)} rows)")


def _launcher(context_parallel: bool) -> list[str]:
    """How this process was started, as results record it: ``accel``, or a launcher script standing in for it
    (``ACCEL_PROG``); under context parallelism, with the ``torchrun --nproc_per_node N`` it needs."""
    import os

    world, prog = int(os.environ.get("WORLD_SIZE", "1")), os.environ.get("ACCEL_PROG", "accel")
    if world == 1 or not context_parallel:
        return [prog]
    return ["torchrun", "--nproc_per_node", str(world), *(["--no-python"] if prog == "accel" else []), prog]


def _usage(kind: str, fn) -> str:
    """A row kind's syntax: the first ``literal`` of its docstring, else its bare name."""
    import re

    m = re.search(r"``([^`]+)``", fn.__doc__ or "")
    return m.group(1) if m and m.group(1).startswith(kind) else kind


def add_bench_parser(sub) -> None:
    from .bench.rows import ROW_KINDS

    kinds = ", ".join(_usage(k, fn) for k, fn in sorted(ROW_KINDS.items()))
    s = sub.add_parser("bench", help="quality vs measured latency of accel methods and peers, one run")
    s.add_argument("--pipeline", default="pixart-eps", help="reference name or local pipeline folder")
    s.add_argument("--methods", help="comma-separated rows (default: on a reference pipeline the config accel tune "
                                     f"chose for it, uniform:2 and diffusers' caches: {PEERS}; elsewhere "
                                     f"{GENERIC}). Kinds: {kinds}".replace("%", "%%"))
    s.add_argument("--prompts", help="a text file, one prompt per line (default: held-out reference prompts)")
    s.add_argument("--num-images", type=int, default=100, help="images, or clips on a video pipeline")
    s.add_argument("--steps", type=int, default=20)
    s.add_argument("--guidance", type=float, default=4.5)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch", type=int, default=25)
    s.add_argument("--no-effnet", action="store_true", help="skip the EfficientNet metrics (fd_effnet, fd_plain, "
                                                             "fd_ref: the slowest)")
    s.add_argument("--metrics", help="comma-separated quality metrics (default: psnr, ssim, fd_plain on any pipeline; "
                                     "the reference pipelines add fd_domain, fd_effnet, alignment, clipping; clips add "
                                     "temporal_err). Known: psnr, ssim, lpips, fd_plain, fd_ref, fid, clip, fd_domain, "
                                     "fd_effnet, alignment, clipping; on clips only: temporal_err, fvd_plain, and on the video "
                                     "reference wan-motion fd_frames, item_acc, motion_acc (its defaults)")
    s.add_argument("--ref-images", help="a folder of real images of your domain: fd_ref (EfficientNet-Lite0 "
                                        "features) and fid (Inception weights needed)")
    s.add_argument("--clip", help="a local CLIP model folder (CLIPModel.save_pretrained with its tokenizer): the clip "
                                  "metric, CLIP score of each image against its prompt")
    s.add_argument("--ref-stats", help="EfficientNet statistics of your data (python -m accel.metrics.reference_stats "
                                       "--folder DIR --only effnet): fd_ref")
    s.add_argument("--quality-only", action="store_true", help="leave latency out of the table")
    s.add_argument("--full-size", action="store_true",
                   help="also time every row on a full-size PixArt-alpha-shaped transformer (28 x 1152, bf16; slow on CPU)")
    s.add_argument("--full-size-repeats", type=int, default=1)
    s.add_argument("--timing-rounds", type=int, default=3,
                   help="interleaved passes timing every row in turn after generation (0: time the generation batches)")
    s.add_argument("--max-timing-rounds", type=int, default=9,
                   help="more timing passes, up to this many, while a row's speed-up varies by more than "
                        "--timing-spread between passes; a row still that unsteady is flagged in the table")
    s.add_argument("--timing-spread", type=float, default=0.1,
                   help="the relative half-range of per-pass speed-ups a steady row stays within (default 0.1)")
    s.add_argument("--out", default="outputs/bench")
    s.add_argument("--readme-section", help="also write the table into README.md between <!-- bench:NAME --> markers")
    s.add_argument("--readme", default="README.md")
    s.add_argument("--page", help="also write a results page (command, machine, date, table, plots), e.g. "
                                  "docs/results/NAME.md")
    s.add_argument("--page-title", help="the results page's title (default: from its file name)")
    from .cli_args import add_call_args, add_device_args, add_parallel_args

    add_call_args(s)
    add_device_args(s)
    add_parallel_args(s)
    s.set_defaults(fn=_run)
