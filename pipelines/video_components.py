"""Configurations and builders of the video reference pipeline ``wan-motion`` (genuine diffusers classes).

9-frame 32x32 grayscale clips; a 1-channel ``AutoencoderKLWan`` compressing 2x in time and 4x in space (clips to
5x8x8x4 latents: the first frame alone, then pairs, as Wan's causal VAE does with 4); an 8-block
``WanTransformer3DModel`` with patch (1, 2, 2), so 80 tokens of width 128; the MiniLM text encoder of the image
references in place of UMT5 (Wan's pipeline calls its encoder as ``encoder(ids, mask).last_hidden_state`` and zeroes
the padding after the caption, which works with any BERT-like encoder).
"""
from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel

from .components import MAX_SEQUENCE_LENGTH
from .motion import NUM_FRAMES, SIZE

LATENT_CHANNELS = 4

VIDEO_VAE_CONFIG: dict = dict(
    base_dim=16,
    z_dim=LATENT_CHANNELS,
    dim_mult=[1, 2, 2],
    num_res_blocks=1,
    attn_scales=[],
    temperal_downsample=[False, True],
    in_channels=1,
    out_channels=1,
    scale_factor_temporal=2,
    scale_factor_spatial=4,
    latents_mean=[0.0] * LATENT_CHANNELS,  # replaced by the training set's per-channel statistics
    latents_std=[1.0] * LATENT_CHANNELS,
)

VIDEO_TRANSFORMER_CONFIG: dict = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=4,
    attention_head_dim=32,
    in_channels=LATENT_CHANNELS,
    out_channels=LATENT_CHANNELS,
    text_dim=384,  # all-MiniLM-L6-v2 hidden size
    freq_dim=256,
    ffn_dim=512,
    num_layers=8,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=64,
)

# Wan 2.1's call arguments at this model's size; MiniLM's short captions.
VIDEO_CALL_DEFAULTS: dict = dict(height=SIZE, width=SIZE, num_frames=NUM_FRAMES, max_sequence_length=MAX_SEQUENCE_LENGTH)


def latent_frames(frames: int = NUM_FRAMES) -> int:
    return (frames - 1) // VIDEO_VAE_CONFIG["scale_factor_temporal"] + 1


def video_scheduler() -> UniPCMultistepScheduler:
    """Wan 2.1's sampler (UniPC bh2 on flow sigmas); flow_shift 1: the model is trained on logit-normal times and its
    latents are small, so the 480p shift of 3 would waste steps at high noise."""
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=1.0,
                                   num_train_timesteps=1000, solver_order=2, solver_type="bh2",
                                   final_sigmas_type="zero")


def new_video_vae() -> AutoencoderKLWan:
    return AutoencoderKLWan(**VIDEO_VAE_CONFIG)


def new_video_transformer() -> WanTransformer3DModel:
    return WanTransformer3DModel(**VIDEO_TRANSFORMER_CONFIG)


@torch.no_grad()
def encode_text_wan(tokenizer, encoder, texts: list[str], max_length: int = MAX_SEQUENCE_LENGTH) -> torch.Tensor:
    """Prompt embeddings exactly as ``WanPipeline._get_t5_prompt_embeds`` makes them (zeros after each caption)."""
    tok = tokenizer(texts, padding="max_length", max_length=max_length, truncation=True, add_special_tokens=True,
                    return_attention_mask=True, return_tensors="pt")
    emb = encoder(tok.input_ids, tok.attention_mask).last_hidden_state
    keep = tok.attention_mask.bool().unsqueeze(-1)
    return torch.where(keep, emb, torch.zeros_like(emb))
