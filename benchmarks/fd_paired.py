"""How sure is an fd_domain difference between two solvers? A paired bootstrap (not a test).

Every solver runs on the same prompts and noises (the bench's: generator seed NOISE_SEED + batch index,
batch 25 by default). The bootstrap redraws the images with one index draw shared by all solvers, so the
interval of a difference says how much it depends on which images were drawn; the reference statistics (the
Fashion-MNIST test set) are held fixed.

    python benchmarks/fd_paired.py --pipeline pixart-eps --num-images 1000 --seed 0 --nfe 5,6 \
        --target v3 --baselines dpm++,unipc
"""
from __future__ import annotations

import argparse

import numpy as np
from tqdm.auto import tqdm

import accel
from accel.metrics.features import domain_features
from accel.metrics.frechet import FeatureStats
from accel.metrics.quality import REF_STATS, fd_domain_of_features
from accel.pipelines.reference import load_reference
from accel.pipelines.data import calibration_prompts, eval_prompts
from accel.solvers.named import with_guidance
from solvers import decode, latents  # benchmarks/solvers.py: the same seeding and decoding


def features(pipe, solver: str, prompts: list[str], nfe: int, guidance: float, noise_seed: int,
             batch: int = 25) -> np.ndarray:
    """fd_domain features of the images ``solver`` makes at ``nfe`` steps, batch i seeded ``noise_seed + i``
    (DC-Solver names get the guidance of the call, as in ``accel bench``)."""
    accel.apply(pipe, solver=with_guidance(solver, guidance))
    try:
        lat = latents(pipe, prompts, nfe, guidance, noise_seed, batch)
    finally:
        accel.remove(pipe)
    return domain_features(decode(pipe, lat)).double().numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", default="pixart-eps")
    p.add_argument("--num-images", type=int, default=1000)
    p.add_argument("--prompt-set", default="eval", choices=("eval", "calibration"),
                   help="eval: eval_prompts(N, seed); calibration: calibration_prompts(N, seed) (training templates)")
    p.add_argument("--seed", type=int, default=0, help="prompt draw")
    p.add_argument("--noise-seed", type=int, help="first generator seed (default: --seed, as `accel bench` does)")
    p.add_argument("--nfe", default="5,6")
    p.add_argument("--target", default="v3", help="solver name (accel.apply(pipe, solver=...))")
    p.add_argument("--baselines", default="dpm++,unipc")
    p.add_argument("--guidance", type=float, default=4.5)
    p.add_argument("--batch", type=int, default=25, help="images per call (the bench's default; seeds follow batches)")
    p.add_argument("--reps", type=int, default=500, help="bootstrap draws")
    a = p.parse_args()
    pipe = load_reference(a.pipeline)
    pipe.set_progress_bar_config(disable=True)
    prompts = (eval_prompts(a.num_images, seed=a.seed)[0] if a.prompt_set == "eval"
               else calibration_prompts(a.num_images, seed=a.seed))
    noise_seed = a.seed if a.noise_seed is None else a.noise_seed
    nfes, baselines = [int(v) for v in a.nfe.split(",")], a.baselines.split(",")
    names = [a.target] + baselines
    feats = {(n, s): features(pipe, s, prompts, n, a.guidance, noise_seed, a.batch)
             for n, s in tqdm([(n, s) for n in nfes for s in names], desc="images")}
    ref = FeatureStats.load(REF_STATS["domain"])  # loaded once for every bootstrap draw
    point = {k: fd_domain_of_features(f, ref) for k, f in feats.items()}
    rng = np.random.default_rng(0)
    draws = {k: [] for k in feats}
    for _ in tqdm(range(a.reps), desc="bootstrap"):
        idx = rng.integers(0, a.num_images, a.num_images)
        for k, f in feats.items():
            draws[k].append(fd_domain_of_features(f[idx], ref))
    draws = {k: np.array(v) for k, v in draws.items()}
    print(f"{a.pipeline}, {a.num_images} {a.prompt_set} prompts (seed {a.seed}, noise seed {noise_seed}), guidance "
          f"{a.guidance:g}; fd_domain of {a.target} minus each baseline, with the 95% interval of a paired bootstrap "
          f"({a.reps} draws) and the share of draws where {a.target} is lower\n")
    print(f"| NFE | baseline | fd_domain {a.target} / baseline | difference | 95% interval | {a.target} lower |")
    print("|---:|---|---|---:|---|---:|")
    for n in nfes:
        for b in baselines:
            d = draws[(n, a.target)] - draws[(n, b)]
            lo, hi = np.percentile(d, [2.5, 97.5])
            print(f"| {n} | {b} | {point[(n, a.target)]:.2f} / {point[(n, b)]:.2f} | "
                  f"{point[(n, a.target)] - point[(n, b)]:+.2f} | [{lo:+.2f}, {hi:+.2f}] | {np.mean(d < 0):.0%} |")


if __name__ == "__main__":
    main()
