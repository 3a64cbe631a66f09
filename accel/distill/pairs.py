"""Teacher pairs for one-step distillation: (noise z, prompt, teacher ODE sample x from z).

The teacher is the pipeline itself, run with a fast accel solver at a few steps (SlimFlow caches its
pairs the same way, with the teacher's ODE solver). Pairs are written in chunks, so a killed run
resumes at the first missing chunk; chunk i always holds the same noises and prompts (seeded by i).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm


@dataclass
class PairConfig:
    num_pairs: int = 24000
    solver: str = "unipc"  # any accel solver name (accel.solvers.named)
    steps: int = 10
    guidance: float = 4.5
    chunk: int = 500
    batch: int = 100
    seed: int = 0


def latent_shape(pipe) -> tuple[int, int, int]:
    """Channels, height and width of the pipeline's default latents."""
    from ..pipelines.families import latent_hw

    return pipe.transformer.config.in_channels, *latent_hw(pipe)


@torch.no_grad()
def make_pairs(pipe, prompts: list[str], out_dir: str | Path, cfg: PairConfig, progress: bool = True) -> Path:
    """Write ``cfg.num_pairs`` pairs to ``out_dir`` (chunk files ``pairs-00000.pt`` ...); resumable.

    Each chunk holds ``z`` [n, C, H, W], ``x`` (the teacher's latent sample from ``z``) and ``prompt``
    (indices into ``prompts``, drawn uniformly with the chunk's seed).
    """
    import accel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "prompts.txt").write_text("\n".join(prompts) + "\n")
    n_chunks = -(-cfg.num_pairs // cfg.chunk)
    shape = latent_shape(pipe)
    accel.apply(pipe, solver=cfg.solver)
    pipe.set_progress_bar_config(disable=True)
    bar = tqdm(total=n_chunks * cfg.chunk, desc=f"pairs ({cfg.solver}, {cfg.steps} steps)", disable=not progress)
    try:
        for c in range(n_chunks):
            path = out / f"pairs-{c:05d}.pt"
            if path.exists():
                bar.update(cfg.chunk)
                continue
            g = torch.Generator().manual_seed(cfg.seed * 100003 + c)
            z = torch.randn((cfg.chunk, *shape), generator=g)
            idx = torch.randint(0, len(prompts), (cfg.chunk,), generator=g)
            xs = []
            for b in range(0, cfg.chunk, cfg.batch):
                kw = dict(getattr(pipe, "accel_defaults", {}))
                xs.append(pipe([prompts[i] for i in idx[b : b + cfg.batch]], latents=z[b : b + cfg.batch].clone(),
                               num_inference_steps=cfg.steps, guidance_scale=cfg.guidance, output_type="latent",
                               **{k: v for k, v in kw.items() if k not in ("num_inference_steps", "guidance_scale")}
                               ).images.float())
                bar.update(len(xs[-1]))
            tmp = path.with_suffix(".tmp")
            torch.save({"z": z, "x": torch.cat(xs).cpu(), "prompt": idx}, tmp)  # on the CPU, wherever made
            tmp.replace(path)
    finally:
        accel.remove(pipe)
        bar.close()
    return out


def load_pairs(out_dir: str | Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """All chunks of a pair folder: z, x, prompt indices and the prompt list."""
    out = Path(out_dir)
    files = sorted(out.glob("pairs-*.pt"))
    if not files:
        raise FileNotFoundError(f"no teacher pairs in {out}; make them with `accel distill` (it starts there)")
    parts = [torch.load(f, map_location="cpu") for f in files]
    prompts = [l for l in (out / "prompts.txt").read_text().splitlines() if l]
    return (torch.cat([p["z"] for p in parts]), torch.cat([p["x"] for p in parts]),
            torch.cat([p["prompt"] for p in parts]), prompts)
