"""The video reference wan-motion: its clips, captions and motion measure, and the shipped pipeline."""
import pytest
import torch

import accel
from accel.pipelines.data import load_fashion_mnist
from accel.pipelines.motion import (MOTIONS, NUM_FRAMES, calibration_clip_prompts, clip_prompts, make_clips,
                                    measured_motion, parse_clip_caption, train_captions, tune_clip_prompts)
from accel.pipelines.reference import is_available, load_reference


def test_every_real_clip_is_measured_with_its_own_motion():
    """The motion measure reads the motion of all 5,000 clips of 1,000 test items exactly, so a generated clip's
    motion_acc is the model's error, not the measure's; a clip with its frames reversed reads the other way."""
    x, _ = load_fashion_mnist("test")
    motion = torch.arange(5000) % len(MOTIONS)
    clips = make_clips(x[torch.arange(1000).repeat_interleave(5)], motion)
    assert clips.shape == (5000, NUM_FRAMES, 1, 32, 32) and clips.min() >= -1 and clips.max() <= 1
    assert measured_motion(clips) == motion.tolist()
    assert measured_motion((clips + 1) / 2) == motion.tolist()  # [0, 1] as the pipeline returns them
    opposite = {"still": "still", "left": "right", "right": "left", "up": "down", "down": "up"}
    assert measured_motion(clips.flip(1)) == [MOTIONS.index(opposite[MOTIONS[m]]) for m in motion.tolist()]
    frozen = clips[:, :1].expand_as(clips)
    assert set(measured_motion(frozen)) == {MOTIONS.index("still")}


def test_clip_captions_name_item_and_motion_and_held_out_templates_are_disjoint():
    prompts, items, motions = clip_prompts(100)
    assert [parse_clip_caption(p) for p in prompts] == list(zip(items, motions))
    assert sorted(set(zip(items, motions))) == [(c, m) for c in range(10) for m in range(5)]  # every pair, twice
    assert all(sorted(motions[i : i + 10]) == sorted(list(range(5)) * 2) for i in range(0, 100, 10))
    trained = {c for c, _, _ in train_captions()}
    assert not set(prompts) & trained and not set(tune_clip_prompts(200)) & (trained | set(prompts))
    assert set(calibration_clip_prompts(200)) <= trained
    assert parse_clip_caption("a video of a sneaker sliding to the left") == (7, MOTIONS.index("left"))
    assert parse_clip_caption("a sneaker") is None and parse_clip_caption("a clip of a bag not moving") == (8, 0)


def _pipe():
    if not is_available("wan-motion"):
        pytest.skip("wan-motion weights not trained yet")
    pipe = load_reference("wan-motion")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_wan_motion_loads_offline_generates_clips_and_accel_applies():
    from diffusers import AutoencoderKLWan, WanPipeline, WanTransformer3DModel

    pipe = _pipe()
    assert type(pipe) is WanPipeline and type(pipe.vae) is AutoencoderKLWan
    assert type(pipe.transformer) is WanTransformer3DModel and pipe.transformer.dtype == torch.float32
    kw = {"num_inference_steps": 4, "guidance_scale": 4.5, "output_type": "pt", **pipe.accel_defaults}
    prompts = ["a video of a sneaker sliding to the left", "a clip of a bag not moving"]
    out = pipe(prompts, generator=torch.Generator().manual_seed(0), **kw).frames
    assert out.shape == (2, NUM_FRAMES, 1, 32, 32) and 0 <= out.min() and out.max() <= 1
    accel.apply(pipe, cache=accel.CacheSchedule.full(pipe, 4))
    again = pipe(prompts, generator=torch.Generator().manual_seed(0), **kw).frames
    accel.remove(pipe)
    assert torch.equal(again, out)


def test_wan_motion_makes_the_prompted_item_and_motion():
    """On held-out prompts (20 steps, guidance 4.5): the trained model shows the prompted item and motion in most
    clips (the full figures are in docs/reference-pipelines.md)."""
    from accel.metrics.motion import item_accuracy, motion_accuracy

    pipe = _pipe()
    prompts, items, motions = clip_prompts(20, seed=3)
    clips = pipe(prompts, num_inference_steps=20, guidance_scale=4.5, output_type="pt",
                 generator=torch.Generator().manual_seed(0), **pipe.accel_defaults).frames
    assert item_accuracy(clips, items) >= 0.6 and motion_accuracy(clips, motions) >= 0.6
