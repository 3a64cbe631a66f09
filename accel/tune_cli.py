"""``accel tune``: arguments and error handling around ``accel.calibrate.tune.tune``."""
from __future__ import annotations

import argparse


def _numbers(text: str, kind, flag: str) -> tuple:
    from .errors import InputError

    try:
        vals = tuple(kind(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InputError(f"{flag} {text!r}: a comma-separated list") from None
    if not vals:
        raise InputError(f"{flag} is empty")
    return vals


def add_tune_parser(sub) -> None:
    from .cli_args import add_call_args, add_device_args

    s = sub.add_parser("tune", help="search solver, NFE, step placement, cache schedule and guidance together for a "
                                    "speed or quality target; writes the Pareto set and the chosen stack config")
    s.add_argument("--pipeline", default="pixart-eps", help="reference name or local pipeline folder")
    s.add_argument("--prompts", help="prompts, one per line: half search, half validate (default: on the reference "
                                     "pipelines prompts of templates they were neither trained nor evaluated on; a "
                                     "class-conditional pipeline's class names)")
    s.add_argument("--num-prompts", type=int, default=256, help="how many default prompts when --prompts is not given")
    target = s.add_mutually_exclusive_group()
    target.add_argument("--max-quality-loss", type=float,
                        help="the fastest config within this quality loss (default 0.1): on the reference pipelines "
                             "fd_domain at most this fraction above the plain pipeline's (and alignment at most "
                             "--max-alignment-drop points below); elsewhere 1 - SSIM to the plain pipeline's images")
    target.add_argument("--target-speedup", type=float, help="the best quality at this denoising speed-up or more")
    s.add_argument("--max-alignment-drop", type=float, default=2.0, help="reference pipelines: alignment points the "
                                                                         "chosen config may lose")
    s.add_argument("--budget-minutes", type=float, default=60.0, help="the search's time (validation comes after "
                                                                      "85%% of it and is not cut short)")
    s.add_argument("--steps", type=int, default=20, help="steps of the plain pipeline every candidate is measured against")
    s.add_argument("--guidance", type=float, default=4.5, help="CFG scale of the plain pipeline")
    s.add_argument("--solvers", default="dpm++,unipc,v3,dc",
                   help="solvers to search (v3[:EMS_FILE], dc[:RATIO_FILE]; v3 and dc without a file use the files "
                        "shipped for the reference pipelines and are left out elsewhere)")
    s.add_argument("--nfe", default="3,4,5,6,8", help="solver step counts to search")
    s.add_argument("--guidance-methods", help="guidance to search: cfg (the pipeline's, at --guidance) and specs "
                                              "apg:W... / facfg:... (default: cfg, apg at --guidance and 5/3 of it)")
    s.add_argument("--learned-steps", type=int, default=2, help="configurations that get learned steps (LD3), at the "
                                                                "lowest NFEs (0: none)")
    s.add_argument("--cache-searches", type=int, default=2, help="configurations an ECAD schedule is searched in "
                                                                 "(0: none)")
    s.add_argument("--validation-repeats", type=int, default=8,
                   help="images per held-out prompt the validation may make, with new noises, as far as the budget "
                        "allows (1: each prompt once)")
    s.add_argument("--batch", type=int, default=32, help="prompts per pipeline call")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="output folder (a rerun with the same arguments resumes there)")
    add_call_args(s)
    add_device_args(s)
    s.set_defaults(fn=run)


def run(a: argparse.Namespace) -> None:
    from .calibrate.cli_common import read_prompts, size_args
    from .calibrate.tune import TuneConfig, tune
    from .pipelines.calls import is_class_conditional
    from .pipelines.prompt_sets import prompt_set
    from .cli_args import check_call_args
    from .devices import load_from_args, resolve_device
    from .errors import InputError

    check_call_args(a)
    g = a.guidance
    methods = tuple(m.strip() for m in a.guidance_methods.split(",") if m.strip()) if a.guidance_methods else \
        ("cfg", f"apg:{g:g}", f"apg:{round(g * 5 / 3, 2):g}")
    try:
        cfg = TuneConfig(steps=a.steps, guidance=g, solvers=tuple(s.strip() for s in a.solvers.split(",") if s.strip()),
                         nfes=_numbers(a.nfe, int, "--nfe"), guidance_methods=methods,
                         max_quality_loss=a.max_quality_loss, max_alignment_drop=a.max_alignment_drop,
                         target_speedup=a.target_speedup, budget_minutes=a.budget_minutes,
                         learned_steps=a.learned_steps, cache_searches=a.cache_searches, batch=a.batch, seed=a.seed,
                         validation_repeats=a.validation_repeats)
    except ValueError as e:
        raise InputError(str(e)) from None
    if a.learned_steps < 0 or a.cache_searches < 0 or a.num_prompts < 2:
        raise InputError("--learned-steps and --cache-searches must be >= 0, --num-prompts >= 2")
    pipe = load_from_args(a)
    pipe.set_progress_bar_config(disable=True)
    if a.prompts is None and (ps := prompt_set(pipe)) is not None and not is_class_conditional(pipe):
        prompts = ps.tune(a.num_prompts, a.seed + 1)  # captions the model was not trained on
    else:
        prompts = read_prompts(a, pipe)
    try:
        res = tune(pipe, a.pipeline, prompts, cfg, a.out, size_args(a, pipe) or None, device=resolve_device(a.device),
                   dtype=a.dtype)
    except ValueError as e:
        raise InputError(str(e)) from None
    from .dist import rank_world

    if rank_world()[0] == 0:
        print(f"tune: {res.message}")
        print(f"Pareto set: {len(res.pareto)} configs -> {a.out}/pareto/, index.json, pareto.png"
              + (f"; chosen -> {res.chosen}" if res.chosen else ""))
