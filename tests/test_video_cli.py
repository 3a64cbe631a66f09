"""Clips: the CLI on saved Wan 2.1, Wan 2.2 (two experts), LTX-Video and CogVideoX folders with ``--num-frames``
(generate writes each clip as a video file and a contact sheet; bench puts clip metrics beside latency, every row
present or skipped with its reason; calibrate runs), the refusals on image pipelines, and each clip metric and the
clip files against a direct computation on small tensors."""
import contextlib
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from accel.bench.metrics import METRICS, MetricInputs, check_metrics, default_metrics
from accel.cli import main
from accel.clips import GAP, MIN_TILE, contact_sheet, video_format, write_clips
from accel.metrics import FeatureStats, frechet_distance, psnr, ssim, temporal_err
from accel.metrics.fvd import FVDUnavailableError, fvd, i3d, i3d_features
from user_models import VIDEO_FAMILIES, prompt_file, save

FRAMES = {"wan": 5, "wan22": 5, "ltx": 9, "cogvideox": 9}  # Wan, CogVideoX: 4k + 1 frames; LTX: 8k + 1
SIZE = ["--height", "32", "--width", "32"]
METHODS = ("plain", "uniform:2", "solver:3:dpm++", "fbcache:0.2", "taylorseer:2", "magcache:0.1", "dbcache:0.2",
           "fastercache", "pab")
ACCEL_ROWS = ("plain", "uniform:2", "solver:3:dpm++")  # accel's own rows run on every family


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a busy machine two threads (torch's, and OpenBLAS's in
    the Frechet distances' eigendecompositions) spin for many times the work: one thread each."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = contextlib.nullcontext
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("video-models")
    return {f: save(f, root) for f in VIDEO_FAMILIES}, prompt_file(root)


def _frames_in(path) -> int:
    if path.suffix == ".gif":
        return Image.open(path).n_frames
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    next(reader)  # the metadata
    return sum(1 for _ in reader)


@pytest.mark.parametrize("family", VIDEO_FAMILIES)
def test_generate_writes_each_clip_and_a_contact_sheet(family, folders, tmp_path, capsys):
    paths, _ = folders
    n, out = FRAMES[family], tmp_path / "gen"
    assert main(["generate", "--pipeline", str(paths[family]), "--num-frames", str(n), *SIZE, "--steps", "3",
                 "--prompt", "a photo of a cat", "--prompt", "a red dress", "--cache", "uniform:2", "--fps", "8",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    files = sorted(out.glob(f"*.{video_format()}"))
    assert [f.name for f in files] == [f"000.{video_format()}", f"001.{video_format()}"]
    assert all(_frames_in(f) == n for f in files)
    assert f"2 clips of {n} frames, 32x32, 8 fps" in printed and str(files[1]) in printed and "reused" in printed
    sheet = Image.open(out / "contact_sheet.png")  # the frames of each clip in a row, one row per clip
    tile = 32 * math.ceil(MIN_TILE / 32)
    assert sheet.size == (n * tile + (n - 1) * GAP, 2 * tile + GAP) and sheet.mode == "RGB"


@pytest.mark.parametrize("family", VIDEO_FAMILIES)
def test_bench_on_clips_keeps_every_row_and_measures_clips(family, folders, tmp_path):
    paths, prompts = folders
    n, out = FRAMES[family], tmp_path / "bench"
    assert main(["bench", "--pipeline", str(paths[family]), "--prompts", str(prompts), "--num-frames", str(n), *SIZE,
                 "--steps", "4", "--num-images", "2", "--batch", "2", "--methods", ",".join(METHODS),
                 "--timing-rounds", "0", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    rows, skipped = {r["method"]: r for r in res["rows"]}, {s["method"]: s["reason"] for s in res["config"]["skipped"]}
    assert sorted([*rows, *skipped]) == sorted(METHODS) and all(skipped.values())  # every row, or its reason
    assert not set(skipped) & set(ACCEL_ROWS)
    fps = 25 if family == "ltx" else 16  # LTX's own frame_rate; elsewhere the rate files are written at
    assert res["config"]["clips"] == {"frames": n, "height": 32, "width": 32, "fps": fps}
    assert res["config"]["metrics"] == ["fd_plain", "psnr", "ssim", "temporal_err"]
    for r in rows.values():
        assert all(math.isfinite(r[k]) for k in ("fd_plain", "ssim", "temporal_err")), r
        assert math.isfinite(r["psnr"]) or (r["psnr"] == math.inf and r["ssim"] == 1.0)
    plain = rows["plain"]
    assert plain["temporal_err"] == 0 and plain["fd_plain"] == 0 and plain["psnr"] == math.inf
    assert rows["uniform:2"]["psnr"] < math.inf and rows["uniform:2"]["macs_per_image"] < plain["macs_per_image"]
    md = (out / "results.md").read_text()
    assert f"2 clips of {n} frames, 32x32 at {fps} fps" in md and "GMACs/clip" in md and "temporal_err" in md
    assert (out / "grid.png").exists()
    if family == "wan22":  # MagCache's per-model step count cannot follow two experts: said, not run
        assert "two experts" in skipped["magcache:0.1"]


def test_calibrate_on_clips_and_the_schedule_serves_generate(folders, tmp_path, capsys):
    paths, prompts = folders
    pipe = str(paths["wan22"])  # two experts: the schedule covers both
    cal = ["calibrate", "--pipeline", pipe, "--prompts", str(prompts), "--num-frames", "5", *SIZE, "--steps", "4",
           "--batch", "2"]
    assert main([*cal, "--method", "uniform", "--interval", "2", "--out", str(tmp_path / "u.json")]) == 0
    assert main([*cal, "--method", "bac", "--out", str(tmp_path / "bac.json")]) == 0
    bac = json.loads((tmp_path / "bac.json").read_text())
    assert bac["method"] == "bac" and math.isfinite(bac["metadata"]["calibration_fidelity"]["ssim"])
    assert "PSNR" in capsys.readouterr().out
    assert main(["generate", "--pipeline", pipe, "--num-frames", "5", *SIZE, "--steps", "4",
                 "--cache", str(tmp_path / "bac.json"), "--out", str(tmp_path / "g")]) == 0
    assert "1 clip of 5 frames" in capsys.readouterr().out


def test_solver_calibration_follows_both_wan22_experts(folders, tmp_path, capsys):
    """EMS statistics, DC ratios and learned steps calibrated on a call that switches experts mid-way (each
    timestep solved with the expert the pipeline would call), and each file drives generate."""
    paths, prompts = folders
    pipe = str(paths["wan22"])
    common = ["--pipeline", pipe, "--prompts", str(prompts), "--num-frames", "5", *SIZE]
    cal = ["calibrate", *common, "--steps", "4", "--batch", "2", "--guidance", "4.0"]
    assert main([*cal, "--method", "ems", "--num-samples", "16", "--batch", "16", "--grid-points", "4",
                 "--out", str(tmp_path / "ems.safetensors")]) == 0
    assert main([*cal, "--method", "dc", "--nfe", "3", "--guidances", "4.0", "--num-datapoints", "2",
                 "--gt-steps", "12", "--out", str(tmp_path / "dc.json")]) == 0
    assert main([*cal, "--method", "steps", "--nfe", "3", "--iters", "2", "--train-batch", "2", "--teacher-steps", "8",
                 "--out", str(tmp_path / "steps.json")]) == 0
    for solver in (f"v3:{tmp_path / 'ems.safetensors'}", f"dc:{tmp_path / 'dc.json'}",
                   f"unipc:steps={tmp_path / 'steps.json'}"):
        assert main(["generate", "--pipeline", pipe, "--num-frames", "5", *SIZE, "--steps", "3", "--guidance", "4.0", "--solver", solver,
                     "--out", str(tmp_path / "g")]) == 0, solver


def test_frames_are_refused_on_image_pipelines_and_image_metrics_on_clips(folders, tmp_path, capsys):
    paths, _ = folders
    wan = str(paths["wan"])
    cases = [
        (["generate", "--num-frames", "5", "--out", str(tmp_path / "g")], "makes images, not clips: --num-frames"),
        (["generate", "--fps", "8", "--out", str(tmp_path / "g")], "makes images, not clips: --fps"),
        (["calibrate", "--method", "uniform", "--num-frames", "5", "--out", str(tmp_path / "u.json")],
         "makes images, not clips"),
        (["bench", "--num-frames", "5", "--num-images", "2", "--out", str(tmp_path / "b")], "makes images, not clips"),
        (["bench", "--metrics", "temporal_err", "--num-images", "2", "--out", str(tmp_path / "b")],
         "measures whole clips"),
        (["bench", "--num-frames", "0"], "--num-frames must be at least 1"),
        (["generate", "--fps", "0"], "--fps must be at least 1"),
    ]
    cases += [(["bench", "--pipeline", wan, "--num-frames", "5", "--metrics", m, "--out", str(tmp_path / "b")],
               f"{m} {METRICS[m].why} and is not measured on clips") for m in ("clipping", "alignment", "fd_domain")]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if "error:" in line]
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, (argv, err)


def test_frame_arguments_go_where_the_pipeline_takes_them():
    from diffusers import LTXPipeline, PixArtAlphaPipeline, WanPipeline

    from accel.pipelines.calls import frame_rate, makes_clips, size_kwargs

    ltx, wan, pixart = (object.__new__(c) for c in (LTXPipeline, WanPipeline, PixArtAlphaPipeline))  # their calls
    assert size_kwargs(ltx, 32, 32, 9, 8) == {"height": 32, "width": 32, "num_frames": 9, "frame_rate": 8}
    assert size_kwargs(wan, None, None, 5, 8) == {"num_frames": 5}  # Wan is not conditioned on a frame rate
    assert frame_rate(ltx) == 25 and frame_rate(wan) == 16 and frame_rate(wan, 8) == 8
    assert makes_clips(wan) and not makes_clips(pixart)
    with pytest.raises(ValueError, match="PixArtAlphaPipeline makes images, not clips: --num-frames"):
        size_kwargs(pixart, None, None, 5)


# --- the clip metrics against direct computations --------------------------------------------------------------
def _clips(seed: int, n: int = 3, f: int = 4, c: int = 3, size: int = 16) -> torch.Tensor:
    return torch.rand(n, f, c, size, size, generator=torch.Generator().manual_seed(seed))


def test_temporal_err_is_the_relative_error_of_the_frame_differences():
    plain, row = _clips(0), _clips(1)
    a, b = row.double().numpy(), plain.double().numpy()
    num = sum(((a[i, t + 1] - a[i, t]) - (b[i, t + 1] - b[i, t])) ** 2 for i in range(3) for t in range(3)).sum()
    den = sum((b[i, t + 1] - b[i, t]) ** 2 for i in range(3) for t in range(3)).sum()
    assert temporal_err(row, plain) == pytest.approx(num / den, rel=1e-12)
    assert temporal_err(plain, plain) == 0.0
    assert temporal_err(plain[:, :1].expand_as(plain), plain) == 1.0  # frozen: all the motion missing
    # slow motion, and the same clips flickering by +-0.1 about it: 20 dB per frame, 100 times the motion's energy
    slow = _clips(2)[:, :1] * 0.5 + 0.02 * torch.arange(4).view(1, 4, 1, 1, 1)
    flicker = slow + 0.1 * (-1) ** torch.arange(4).view(1, 4, 1, 1, 1)
    assert psnr(flicker.flatten(0, 1), slow.flatten(0, 1)) == pytest.approx(20.0, abs=1e-5)
    assert temporal_err(flicker, slow) == pytest.approx(100.0, rel=1e-4)
    with pytest.raises(ValueError, match="one frame"):
        temporal_err(plain[:, :1], plain[:, :1])
    with pytest.raises(ValueError, match="no motion"):
        temporal_err(row, plain[:, :1].expand_as(plain))


def test_bench_metrics_on_clips_are_per_frame_means_and_frame_set_distances():
    plain, row = _clips(2), (_clips(2) + 0.05 * _clips(3)).clamp(0, 1)
    m = MetricInputs.of(row, plain, False, [None] * 3, ["a", "b", "c"])
    assert m.prompts == ["a"] * 4 + ["b"] * 4 + ["c"] * 4 and m.images.shape == (12, 3, 16, 16)
    per_frame = [(row[i, t : t + 1], plain[i, t : t + 1]) for i in range(3) for t in range(4)]
    mse = [float(((x.double() - y.double()) ** 2).mean()) for x, y in per_frame]
    assert METRICS["psnr"].fn(m) == pytest.approx(np.mean([10 * np.log10(1 / e) for e in mse]), rel=1e-12)
    assert METRICS["ssim"].fn(m) == pytest.approx(np.mean([ssim(x, y) for x, y in per_frame]), rel=1e-12)
    assert METRICS["temporal_err"].fn(m) == temporal_err(row, plain)
    from accel.metrics.features import effnet_features

    feats = [effnet_features(torch.cat([x for x, _ in per_frame])), effnet_features(torch.cat([y for _, y in per_frame]))]
    mu, cov = [f.double().numpy().mean(0) for f in feats], [np.cov(f.double().numpy(), rowvar=False) for f in feats]
    assert METRICS["fd_plain"].fn(m) == pytest.approx(max(0.0, frechet_distance(mu[0], cov[0], mu[1], cov[1])),
                                                      rel=1e-6, abs=1e-6)
    same = MetricInputs.of(plain, plain, True, [None] * 3)
    assert METRICS["temporal_err"].fn(same) == 0 and METRICS["fvd_plain"].fn(same) == 0


def test_fvd_is_a_frechet_distance_on_clip_features_and_says_why_it_cannot_run():
    a, b = _clips(4, n=6), _clips(5, n=6) * 0.5
    feat = lambda clips: clips.mean((3, 4)).flatten(1)  # noqa: E731 - (N, F * C) stand-in for I3D's logits
    fa, fb = feat(a).double().numpy(), feat(b).double().numpy()
    expect = frechet_distance(fa.mean(0), np.cov(fa, rowvar=False), fb.mean(0), np.cov(fb, rowvar=False))
    assert fvd(a, b, features=feat) == pytest.approx(expect, rel=1e-9) and expect > 0
    with pytest.raises(ValueError, match="at least 9 frames"):
        i3d_features(a)
    i3d.cache_clear()
    try:
        i3d()
    except FVDUnavailableError as e:  # no cd-fvd or no I3D weights on this machine: the reason, for the table
        assert "cd-fvd" in str(e) or "I3D weights" in str(e)
    else:
        pytest.skip("the I3D weights are installed here")


@pytest.mark.parametrize("spec", ["fbcache:0.2", "taylorseer:2", "pab", "fastercache"])
def test_peer_rows_hook_both_wan22_experts_and_detach_from_both(spec):
    """diffusers' caches are per model: on Wan 2.2 the bench gives each expert its own hooks, so the low-noise
    steps are cached too, and removes them from both."""
    from types import SimpleNamespace

    from accel.bench.rows import make_row
    from tiny_families import output, tiny_wan22, wan22_inputs

    pipe = tiny_wan22()
    plain = output(pipe, **wan22_inputs(steps=6, frames=5))
    row = make_row(spec)
    row.attach(pipe, SimpleNamespace(guidance=wan22_inputs()["guidance_scale"], steps=6))
    hooked = [sum(len(m._diffusers_hook.hooks) for m in den.modules() if hasattr(m, "_diffusers_hook"))
              for den in (pipe.transformer, pipe.transformer_2)]
    assert all(n > 0 for n in hooked), hooked
    row.before_call(pipe)
    output(pipe, **wan22_inputs(steps=6, frames=5))
    row.detach(pipe)
    assert torch.equal(output(pipe, **wan22_inputs(steps=6, frames=5)), plain)


def test_metric_choice_on_clips():
    assert default_metrics(False, False, clips=True) == ("fd_plain", "psnr", "ssim", "temporal_err")
    assert "temporal_err" not in default_metrics(False, False)
    check_metrics(("psnr", "fd_plain", "lpips", "temporal_err", "fvd_plain"), False, False, clips=True)
    with pytest.raises(ValueError, match="not measured on clips"):
        check_metrics(("clipping",), True, False, clips=True)
    with pytest.raises(ValueError, match="measures whole clips"):
        check_metrics(("fvd_plain",), False, False)
    # the video reference: item, motion and frames against real clips; never on a user's clips nor on images
    assert default_metrics(True, False, clips=True) == ("fd_frames", "item_acc", "motion_acc", "fd_plain", "psnr",
                                                        "ssim", "temporal_err")
    with pytest.raises(ValueError, match="wan-motion"):
        check_metrics(("motion_acc",), False, False, clips=True)
    with pytest.raises(ValueError, match="measures whole clips"):
        check_metrics(("item_acc",), True, False)


# --- the clip files ---------------------------------------------------------------------------------------------
def test_contact_sheet_puts_each_clips_frames_in_a_row(tmp_path):
    clips = _clips(6, n=2, f=3, size=8)
    sheet = np.asarray(Image.open(contact_sheet(clips, tmp_path / "sheet.png")))
    tile = 8 * math.ceil(MIN_TILE / 8)
    assert sheet.shape == (2 * tile + GAP, 3 * tile + 2 * GAP, 3)
    for r in range(2):
        for c in range(3):
            top, left = r * (tile + GAP), c * (tile + GAP)
            expect = (clips[r, c].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
            assert np.array_equal(sheet[top : top + tile : tile // 8, left : left + tile : tile // 8], expect)
    assert (sheet[tile : tile + GAP] == 255).all()  # the white gap between the rows


def test_gif_fallback_and_mp4_hold_every_frame(tmp_path):
    clips = _clips(7, n=2, f=5, c=1, size=16)  # one channel: written as grey RGB
    gif = write_clips(clips, tmp_path / "gif", fps=10, fmt="gif")
    assert gif.format == "gif" and [_frames_in(f) for f in gif.files] == [5, 5]
    first = np.asarray(Image.open(gif.files[0]).convert("RGB"), dtype=float) / 255
    assert np.abs(first[..., 0] - clips[0, 0, 0].numpy()).max() < 0.05  # the palette keeps a grey frame
    assert Image.open(gif.files[0]).info["duration"] == 100
    pytest.importorskip("imageio_ffmpeg")
    mp4 = write_clips(clips, tmp_path / "mp4", fps=10, fmt="mp4")
    assert [_frames_in(f) for f in mp4.files] == [5, 5] and mp4.sheet.exists()
