"""Few-step solvers against a 200-step ground truth (not a test).

For each reference pipeline and NFE: MSE of the final latent to the 200-step solve of the
pipeline's own scheduler from the same noise, plus fd_domain and alignment of the decoded images,
for DPM-Solver++ (2M), UniPC (bh2), DPM-Solver-v3 and DC-Solver (or the ``--solvers`` given). The
statistics and ratio files come from ``accel calibrate --method ems`` / ``--method dc``, learned
steps (``--learned``, one row each at its own NFE, beside its solver's default steps) from
``accel calibrate --method steps``, all on calibration prompts, disjoint from the evaluation prompts.

    python benchmarks/solvers.py --pipeline pixart-eps --ems ems-eps.safetensors --dc dc-eps.json \
        --num-images 200 --readme README.md
    python benchmarks/solvers.py --pipeline pixart-eps --solvers unipc --nfe 4,5 \
        --learned steps-unipc-4.json,steps-unipc-5.json --readme docs/results/learned-steps.md
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

import accel
from accel import metrics
from accel.pipelines.reference import load_reference
from accel.pipelines.data import eval_prompts
from accel.solvers.learned_steps import StepFile

LABELS = {"dpm++": "DPM-Solver++ (2M)", "unipc": "UniPC (bh2)", "v3": "DPM-Solver-v3", "dc": "DC-Solver"}


def latents(pipe, prompts: list[str], steps: int, guidance: float, seed: int, batch: int) -> torch.Tensor:
    out = []
    for i, b in enumerate(range(0, len(prompts), batch)):
        out.append(pipe(prompts[b : b + batch], num_inference_steps=steps, guidance_scale=guidance,
                        generator=torch.Generator().manual_seed(seed + i), output_type="latent",
                        **pipe.accel_defaults).images.float())
    return torch.cat(out)


@torch.no_grad()
def decode(pipe, lat: torch.Tensor, batch: int = 100) -> torch.Tensor:
    imgs = []
    for b in range(0, len(lat), batch):
        x = pipe.vae.decode(lat[b : b + batch] / pipe.vae.config.scaling_factor).sample
        imgs.append((x / 2 + 0.5).clamp(0, 1))
    return torch.cat(imgs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", default="pixart-eps")
    p.add_argument("--ems", help="EMS file for DPM-Solver-v3 (default: the one shipped for the pipeline)")
    p.add_argument("--dc", help="DC ratio file (default: the one shipped for the pipeline)")
    p.add_argument("--solvers", default="dpm++,unipc,v3,dc", help="comma-separated solvers at their default steps")
    p.add_argument("--learned", default="", help="comma-separated step files (accel calibrate --method steps): a row "
                                                 "for each at its NFE, with its solver's default steps beside it")
    p.add_argument("--nfe", default="5,6,8,10")
    p.add_argument("--num-images", type=int, default=200)
    p.add_argument("--guidance", type=float, default=4.5)
    p.add_argument("--gt-steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="outputs/solvers.json")
    p.add_argument("--readme", help="also write the table into this README (section solvers-PIPELINE)")
    a = p.parse_args()
    pipe = load_reference(a.pipeline)
    pipe.set_progress_bar_config(disable=True)
    prompts, labels = eval_prompts(a.num_images, seed=a.seed)
    files = {"v3": f"v3:{a.ems}" if a.ems else "v3", "dc": f"dc:{a.dc}:{a.guidance}" if a.dc else f"dc:{a.guidance}"}
    solvers = {LABELS[n]: files.get(n, n) for n in a.solvers.split(",") if n}
    nfes = [int(v) for v in a.nfe.split(",")]
    learned: dict[int, list[tuple[str, str]]] = {}
    step_files = {path: StepFile.load(path) for path in a.learned.split(",") if path}
    for path, sf in step_files.items():
        name = files.get(sf.solver, sf.solver)
        learned.setdefault(sf.nfe, []).append((f"{LABELS[sf.solver]}, learned steps ({Path(path).name})",
                                               f"{name}:steps={path}"))
        if LABELS[sf.solver] not in solvers:
            solvers[LABELS[sf.solver]] = name
    nfes = sorted(set(nfes) | set(learned))
    gt = latents(pipe, prompts, a.gt_steps, a.guidance, a.seed, a.batch)
    gt_img = decode(pipe, gt)
    rows = [{"solver": f"{type(pipe.scheduler).__name__} (ground truth)", "nfe": a.gt_steps, "mse": 0.0,
             "median_mse": 0.0,
             "fd_domain": metrics.fd_domain(gt_img), "alignment": metrics.alignment(gt_img, labels)}]
    bar = tqdm(total=len(nfes) * len(solvers) + sum(map(len, learned.values())), desc="solvers")
    for nfe in nfes:
        for label, name in list(solvers.items()) + learned.get(nfe, []):
            accel.apply(pipe, solver=name)
            try:
                lat = latents(pipe, prompts, nfe, a.guidance, a.seed, a.batch)
            finally:
                accel.remove(pipe)
            img = decode(pipe, lat)
            per_image = ((lat - gt) ** 2).mean((1, 2, 3))
            rows.append({"solver": label, "nfe": nfe, "mse": float(per_image.mean()),
                         "median_mse": float(per_image.median()),
                         "fd_domain": metrics.fd_domain(img), "alignment": metrics.alignment(img, labels)})
            bar.update()
    bar.close()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"pipeline": a.pipeline, "num_images": a.num_images, "rows": rows}, indent=1))
    md = (f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}. Date: {datetime.date.today().isoformat()}.\n\n"
          f"{a.pipeline}, {a.num_images} images, guidance {a.guidance:g}; MSE of the final latent to the "
          f"{a.gt_steps}-step solve from the same noise (the mean over images, the issue's measure, and the median "
          "of the per-image MSEs, which a few images with extreme latents cannot decide).\n\n"
          "| solver | NFE | MSE to ground truth | median per-image MSE | fd_domain | alignment |\n"
          "|---|---:|---:|---:|---:|---:|\n")
    md += "\n".join(f"| {r['solver']} | {r['nfe']} | {r['mse']:.4f} | {r['median_mse']:.4f} | {r['fd_domain']:.2f} "
                    f"| {r['alignment']:.1%} |" for r in rows)
    if learned:
        md += ("\n\nThe learned step files, as their calibration recorded it (validation: the MSE to its teacher on "
               "the held-back half of its calibration prompts):\n\n"
               "| step file | solver | NFE | points (default) | prompts (learn / validate) | iterations | "
               "validation MSE default -> learned | calibration time |\n|---|---|---:|---|---:|---:|---:|---:|\n")
        for path, sf in step_files.items():
            m = sf.meta
            md += (f"| {Path(path).name} | {sf.solver} | {sf.nfe} | {', '.join(f'{v:.4g}' for v in sf.points)} "
                   f"({', '.join(f'{v:.4g}' for v in m.get('default_points', []))}) | {m.get('train_prompts')} / "
                   f"{m.get('valid_prompts')} | {m.get('iterations')} | {m.get('valid_mse_default', float('nan')):.4f} -> "
                   f"{m.get('valid_mse_learned', float('nan')):.4f} | {m.get('seconds', float('nan')):.0f} s |\n")
    print(md)
    if a.readme:
        from accel.bench.readme import update_section

        cmd = "python " + " ".join(shlex.quote(v) for v in sys.argv)
        update_section(a.readme, f"solvers-{a.pipeline}", md, command=cmd)


if __name__ == "__main__":
    main()
