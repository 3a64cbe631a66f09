"""Few-step solvers against a 200-step ground truth (not a test).

For each reference pipeline and NFE: MSE of the final latent to the 200-step solve of the
pipeline's own scheduler from the same noise, plus fd_domain and alignment of the decoded images,
for DPM-Solver++ (2M), UniPC (bh2), DPM-Solver-v3 and DC-Solver. The statistics and ratio files
come from ``accel calibrate --method ems`` / ``--method dc`` (calibration prompts, disjoint from
the evaluation prompts).

    python benchmarks/solvers.py --pipeline pixart-eps --ems ems-eps.safetensors --dc dc-eps.json \
        --num-images 200 --readme README.md
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

import accel
from accel import metrics
from accel.pipelines import load_reference
from accel.pipelines.data import eval_prompts


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
    p.add_argument("--ems", required=True, help="EMS file for DPM-Solver-v3")
    p.add_argument("--dc", required=True, help="DC ratio file")
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
    solvers = {"DPM-Solver++ (2M)": "dpm++", "UniPC (bh2)": "unipc", "DPM-Solver-v3": f"v3:{a.ems}",
               "DC-Solver": f"dc:{a.dc}:{a.guidance}"}
    nfes = [int(v) for v in a.nfe.split(",")]
    gt = latents(pipe, prompts, a.gt_steps, a.guidance, a.seed, a.batch)
    gt_img = decode(pipe, gt)
    rows = [{"solver": f"{type(pipe.scheduler).__name__} (ground truth)", "nfe": a.gt_steps, "mse": 0.0,
             "median_mse": 0.0,
             "fd_domain": metrics.fd_domain(gt_img), "alignment": metrics.alignment(gt_img, labels)}]
    bar = tqdm(total=len(nfes) * len(solvers), desc="solvers")
    for nfe in nfes:
        for label, name in solvers.items():
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
    md = (f"{a.pipeline}, {a.num_images} images, guidance {a.guidance:g}; MSE of the final latent to the "
          f"{a.gt_steps}-step solve from the same noise (the mean over images, the issue's measure, and the median "
          "of the per-image MSEs, which a few images with extreme latents cannot decide).\n\n"
          "| solver | NFE | MSE to ground truth | median per-image MSE | fd_domain | alignment |\n"
          "|---|---:|---:|---:|---:|---:|\n")
    md += "\n".join(f"| {r['solver']} | {r['nfe']} | {r['mse']:.4f} | {r['median_mse']:.4f} | {r['fd_domain']:.2f} "
                    f"| {r['alignment']:.1%} |" for r in rows)
    print(md)
    if a.readme:
        from accel.bench.readme import update_section

        cmd = "python " + " ".join(shlex.quote(v) for v in sys.argv)
        update_section(a.readme, f"solvers-{a.pipeline}", md, command=cmd)


if __name__ == "__main__":
    main()
