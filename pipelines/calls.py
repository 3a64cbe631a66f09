"""How to call a pipeline of any family on prompts: the one place the CLI, the bench and calibration build
their call arguments.

- Text pipelines take ``prompt``; class-conditional ones (DiT) take ``class_labels``, and a prompt is a
  class name of the pipeline (``DiTPipeline.get_label_ids``).
- ``guidance`` is the pipeline's CFG scale (``guidance_scale``). FLUX has two kinds: a guidance-distilled
  model (``guidance_embeds``, FLUX.1-dev) takes ``guidance_scale`` as its guidance input and runs no CFG;
  an undistilled one gets true CFG as well (``true_cfg_scale`` with an empty negative prompt: two
  denoiser calls a step).
- ``height`` / ``width``, when given, are passed as the pipeline's own arguments (DiT has a fixed size).
- Video pipelines (their call takes ``num_frames``: Wan, HunyuanVideo, LTX, CogVideoX, ...) make clips:
  ``num_frames`` is passed as it is, and a frame rate goes to the pipeline where it takes one (LTX's
  ``frame_rate``, SVD's ``fps``); elsewhere it only says how fast the written files play (``frame_rate(pipe, fps)``).

Example:
    >>> from accel.pipelines.calls import call_kwargs  # doctest: +SKIP
    >>> images = pipe(**call_kwargs(pipe, ["a photo of a cat"], steps=20, guidance=4.5)).images  # doctest: +SKIP
"""
from __future__ import annotations

import inspect


def is_class_conditional(pipe) -> bool:
    """A pipeline conditioned on class labels, not text (DiT)."""
    return "class_labels" in inspect.signature(type(pipe).__call__).parameters


def class_names(pipe) -> list[str]:
    """The class names a class-conditional pipeline knows (its ``id2label``)."""
    return sorted(getattr(pipe, "labels", {}) or {})


def condition(pipe, prompts: list[str], guidance: float | None = None) -> dict:
    """The call arguments that condition ``pipe`` on ``prompts`` (a clear ``ValueError`` for an unknown class),
    with the true-CFG arguments an undistilled FLUX needs for ``guidance`` > 1 (the caller passes
    ``guidance_scale`` itself)."""
    prompts = list(prompts)
    if not is_class_conditional(pipe):
        out = {"prompt": prompts}
        if guidance is not None and guidance > 1 and uses_true_cfg(pipe):
            out.update(true_cfg_scale=guidance, negative_prompt=[""] * len(prompts))
        return out
    names = class_names(pipe)
    if not names:
        raise ValueError(f"{type(pipe).__name__} has no class names (id2label in its model_index.json), so prompts "
                         "cannot be mapped to class labels")
    unknown = [p for p in prompts if p not in pipe.labels]
    if unknown:
        shown = ", ".join(repr(n) for n in names[:8]) + (", ..." if len(names) > 8 else "")
        raise ValueError(f"{type(pipe).__name__} is class-conditional: prompts must be its class names; "
                         f"{unknown[0]!r} is not one ({len(names)} names, e.g. {shown})")
    return {"class_labels": pipe.get_label_ids(prompts)}


def uses_true_cfg(pipe) -> bool:
    """FLUX without guidance distillation: CFG is ``true_cfg_scale`` with a negative prompt (two calls a step)."""
    params = inspect.signature(type(pipe).__call__).parameters
    den = getattr(pipe, "transformer", None)
    return "true_cfg_scale" in params and not getattr(getattr(den, "config", None), "guidance_embeds", True)


def repeat_to(prompts: list[str], n: int) -> list[str]:
    """``prompts`` repeated in order until there are ``n`` of them."""
    return (list(prompts) * (n // len(prompts) + 1))[:n]


def default_prompts(pipe, n: int, seed: int = 0, calibration: bool = False) -> list[str]:
    """``n`` prompts for a pipeline that was given none: its class names (class-conditional pipelines), else the
    reference prompts (held-out evaluation prompts, or calibration prompts)."""
    import random

    if is_class_conditional(pipe):
        names = class_names(pipe)
        if not names:
            condition(pipe, ["?"])  # the clear error
        rng = random.Random(seed + (1 if calibration else 0))
        return [rng.choice(names) for _ in range(n)]
    from .prompt_sets import IMAGES, prompt_set

    prompts = prompt_set(pipe) or IMAGES
    return prompts.calibration(n, seed) if calibration else prompts.evaluation(n, seed)[0]


def call_kwargs(pipe, prompts: list[str], steps: int | None = None, guidance: float | None = None,
                height: int | None = None, width: int | None = None, num_frames: int | None = None,
                fps: int | None = None, **extra) -> dict:
    """Everything a call of ``pipe`` on ``prompts`` needs: the pipeline's ``accel_defaults``, conditioning,
    steps, guidance, size and (video pipelines) frames and frame rate (``None`` leaves the pipeline's own default);
    ``extra`` wins over all."""
    kw = dict(getattr(pipe, "accel_defaults", {}))
    if steps is not None:
        kw["num_inference_steps"] = steps
    if guidance is not None:
        kw["guidance_scale"] = guidance
    kw.update(condition(pipe, prompts, kw.get("guidance_scale")))
    kw.update(size_kwargs(pipe, height, width, num_frames, fps))
    kw.update(extra)
    return kw


FPS_PARAMS = ("frame_rate", "fps")  # what video pipelines that are conditioned on it call the frame rate (LTX, SVD)
DEFAULT_FPS = 16  # the rate clips are written at when neither the user nor the pipeline says (Wan's)


def _params(pipe) -> dict:
    return inspect.signature(type(pipe).__call__).parameters


def makes_clips(pipe) -> bool:
    """A video pipeline: its call takes ``num_frames`` and returns ``frames`` (Wan, HunyuanVideo, LTX, CogVideoX)."""
    return "num_frames" in _params(pipe)


def size_kwargs(pipe, height: int | None, width: int | None, num_frames: int | None = None,
                fps: int | None = None) -> dict:
    """``height`` / ``width`` (and on video pipelines ``num_frames`` and the frame rate, where the call takes one)
    for the pipeline's call, or a clear error where it has a fixed size (DiT) or makes images (``--num-frames``,
    ``--fps``)."""
    params = _params(pipe)
    out = {}
    for key, value in (("height", height), ("width", width)):
        if value is not None:
            if key not in params:
                raise ValueError(f"{type(pipe).__name__} has a fixed image size: it takes no {key}")
            if value < 1:
                raise ValueError(f"--{key} must be positive, got {value}")
            out[key] = value
    for flag, value in (("--num-frames", num_frames), ("--fps", fps)):
        if value is None:
            continue
        if not makes_clips(pipe):
            raise ValueError(f"{type(pipe).__name__} makes images, not clips: {flag} is for video pipelines")
        if value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    if num_frames is not None:
        out["num_frames"] = num_frames
    rate = next((k for k in FPS_PARAMS if k in params), None)
    if fps is not None and rate is not None:
        out[rate] = fps
    return out


def frame_rate(pipe, fps: int | None = None) -> int:
    """The frame rate clips of ``pipe`` play at: ``fps`` as given, else the pipeline's own default where its call
    takes one (LTX: 25), else ``DEFAULT_FPS``."""
    if fps is not None:
        return fps
    params = _params(pipe)
    default = next((params[k].default for k in FPS_PARAMS if k in params), None)
    return default if isinstance(default, (int, float)) and default > 0 else DEFAULT_FPS


def output_tensor(result) -> "torch.Tensor":
    """A pipeline call's output (``output_type="pt"``) as one float tensor: images (N, C, H, W), or the clips of a
    video pipeline (N, F, C, H, W)."""
    import torch

    out = result.frames if hasattr(result, "frames") else result.images
    return (torch.stack(list(out)) if isinstance(out, (list, tuple)) else torch.as_tensor(out)).float()


def output_frames(result) -> "torch.Tensor":
    """A pipeline call's output as images (N, C, H, W): a video pipeline's clips become their frames, one after the
    other (what per-image measures such as PSNR, SSIM and Frechet distances read)."""
    x = output_tensor(result)
    return x.flatten(0, 1) if x.dim() == 5 else x
