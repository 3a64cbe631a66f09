"""The shipped reference pipelines: genuine diffusers classes, offline, and accel applies to them."""
import pytest
import torch

import accel
from accel.pipelines.reference import REFERENCES, is_available, is_video_reference, load_reference


@pytest.mark.parametrize("name", [n for n in REFERENCES if not is_video_reference(n)])
def test_reference_loads_offline_and_generates(name):
    if not is_available(name):
        pytest.skip(f"{name} weights not trained yet")
    from diffusers import PixArtAlphaPipeline, PixArtSigmaPipeline

    pipe = load_reference(name)
    assert type(pipe) is (PixArtAlphaPipeline if name == "pixart-eps" else PixArtSigmaPipeline)
    assert pipe.transformer.dtype == torch.float32 and pipe.transformer.config.num_layers >= 12
    pipe.set_progress_bar_config(disable=True)
    kw = {"num_inference_steps": 4, "guidance_scale": 4.5, "output_type": "pt", **pipe.accel_defaults}
    out = pipe(["a photo of a sneaker", "a trouser"], generator=torch.Generator().manual_seed(0), **kw).images
    assert out.shape == (2, 1, 32, 32) and 0 <= out.min() and out.max() <= 1
    if name == "pixart-onestep":  # one denoiser call: a cache is pointless and left out
        assert kw["num_inference_steps"] == 1 and kw["guidance_scale"] == 1.0
        with pytest.warns(UserWarning, match="one-step pipeline"):
            accel.apply(pipe, cache=accel.CacheSchedule.full(pipe, 1))
    else:
        accel.apply(pipe, cache=accel.CacheSchedule.full(pipe, 4))
    again = pipe(["a photo of a sneaker", "a trouser"], generator=torch.Generator().manual_seed(0), **kw).images
    assert torch.equal(again, out)


def test_unknown_reference_is_a_clear_error():
    with pytest.raises(ValueError, match="available: pixart-eps, pixart-flow, pixart-onestep"):
        load_reference("pixart-xl")


def test_captions_and_prompts():
    from accel.pipelines.data import calibration_prompts, eval_prompts, label_of_caption, tune_prompts

    prompts, labels = eval_prompts(20)
    assert [label_of_caption(p) for p in prompts] == labels
    assert label_of_caption("a grayscale picture of a t-shirt") == 0 and label_of_caption("a shirt") == 6
    assert not set(calibration_prompts(50)) & set(eval_prompts(500)[0])  # disjoint templates
    tune = tune_prompts(120)
    assert not set(tune) & (set(calibration_prompts(500)) | set(eval_prompts(500)[0]))  # nor trained nor evaluated
    assert [label_of_caption(p) for p in tune] == [i % 10 for i in range(120)]


@pytest.mark.parametrize("name", ["pixart-eps", "pixart-flow"])
def test_shipped_solver_files_belong_to_their_reference_model(name):
    """The shipped v3 statistics and DC ratios are the defaults of solver="v3" / "dc:4.5"; their fingerprints
    must match the shipped weights (``accel.apply`` raises otherwise), and a few-step call stays finite."""
    if not is_available(name):
        pytest.skip(f"{name} weights not trained yet")
    pipe = load_reference(name)
    pipe.set_progress_bar_config(disable=True)
    for solver in ("v3", "dc:4.5"):
        accel.apply(pipe, solver=solver)
        out = pipe(["a photo of a sneaker"], num_inference_steps=5, guidance_scale=4.5, output_type="latent",
                   generator=torch.Generator().manual_seed(0), **pipe.accel_defaults).images
        accel.remove(pipe)
        assert torch.isfinite(out).all()
    from accel.pipelines.components import WEIGHTS_DIR

    other = "pixart-flow" if name == "pixart-eps" else "pixart-eps"  # same architecture, other weights
    files = WEIGHTS_DIR / "solvers"
    for solver in (f"v3:{files}/ems-{other}.safetensors", f"dc:{files}/dc-{other}.json:4.5"):
        with pytest.raises(ValueError, match="other weights"):
            accel.apply(pipe, solver=solver)


@pytest.mark.slow
def test_calibrate_ems_stamps_the_file_with_the_model_it_measured(tmp_path):
    """`accel calibrate --method ems` writes the weights signature: its file is refused by the other checkpoint."""
    if not (is_available("pixart-eps") and is_available("pixart-flow")):
        pytest.skip("reference weights not trained yet")
    from accel.cli import main

    out = tmp_path / "ems.safetensors"
    assert main(["calibrate", "--method", "ems", "--pipeline", "pixart-eps", "--data", "paths", "--num-samples", "16",
                 "--grid-points", "4", "--batch", "16", "--out", str(out)]) == 0
    eps, flow = load_reference("pixart-eps"), load_reference("pixart-flow")
    accel.apply(eps, solver=f"v3:{out}")
    accel.remove(eps)
    with pytest.raises(ValueError, match="other weights"):
        accel.apply(flow, solver=f"v3:{out}")


@pytest.mark.slow
def test_calibrate_ems_reduce_channel_averages_the_per_dimension_statistics(tmp_path):
    """`--reduce channel` writes the per-dimension statistics of the same run averaged over each channel's
    positions, records it, and the file drives DPM-Solver-v3; a reduced file cannot be reduced again."""
    if not is_available("pixart-eps"):
        pytest.skip("reference weights not trained yet")
    from safetensors import safe_open

    from accel.calibrate.ems import reduce_ems_file
    from accel.cli import main

    args = ["calibrate", "--method", "ems", "--pipeline", "pixart-eps", "--data", "paths", "--num-samples", "16",
            "--grid-points", "4", "--batch", "16"]
    full, chan = tmp_path / "full.safetensors", tmp_path / "chan.safetensors"
    assert main(args + ["--out", str(full)]) == 0
    assert main(args + ["--reduce", "channel", "--out", str(chan)]) == 0
    with safe_open(str(full), "pt") as a, safe_open(str(chan), "pt") as b:
        assert a.metadata()["reduce"] == "none" and b.metadata()["reduce"] == "channel"
        for k in ("l", "s", "b"):
            per_dim, shared = a.get_tensor(k), b.get_tensor(k)
            assert shared.shape == per_dim.shape and not torch.equal(per_dim, shared)
            assert torch.allclose(shared, per_dim.mean((2, 3), keepdim=True).expand_as(per_dim), atol=1e-6)
    again = tmp_path / "again.safetensors"
    reduce_ems_file(str(full), str(again))
    with safe_open(str(again), "pt") as a, safe_open(str(chan), "pt") as b, safe_open(str(full), "pt") as f:
        assert all(torch.allclose(a.get_tensor(k), b.get_tensor(k), atol=1e-6) for k in ("l", "s", "b"))
        assert a.metadata() == {**f.metadata(), "reduce": "channel"}  # the model stamp is kept
    with pytest.raises(ValueError, match="already reduced"):
        reduce_ems_file(str(chan), str(tmp_path / "twice.safetensors"))
    pipe = load_reference("pixart-eps")
    pipe.set_progress_bar_config(disable=True)
    accel.apply(pipe, solver=f"v3:{chan}")
    out = pipe(["a photo of a sneaker"], num_inference_steps=5, guidance_scale=4.5, output_type="latent",
               generator=torch.Generator().manual_seed(0), **pipe.accel_defaults).images
    accel.remove(pipe)
    assert torch.isfinite(out).all()


def test_a_local_pixart_folder_bins_only_at_sizes_its_pipeline_has_bins_for():
    """PixArt-Alpha has aspect-ratio bins for sample sizes 32, 64 and 128; PixArt-Sigma also for 256 (2048 px)."""
    from types import SimpleNamespace

    from diffusers import PixArtAlphaPipeline, PixArtSigmaPipeline

    from accel.pipelines.reference import _folder_defaults

    def pipe(cls, size):
        p = cls.__new__(cls)  # only the class and the transformer's config are read
        p.__dict__["transformer"] = SimpleNamespace(config=SimpleNamespace(sample_size=size))
        return p

    assert _folder_defaults(pipe(PixArtAlphaPipeline, 128))["use_resolution_binning"]
    assert not _folder_defaults(pipe(PixArtAlphaPipeline, 256))["use_resolution_binning"]
    assert _folder_defaults(pipe(PixArtSigmaPipeline, 256))["use_resolution_binning"]
    assert not _folder_defaults(pipe(PixArtSigmaPipeline, 8))["use_resolution_binning"]
