"""Full-size model shapes with random weights, for latency figures that small reference models understate."""
from __future__ import annotations

import torch


def pixart_alpha_shaped(dtype: torch.dtype = torch.bfloat16, seed: int = 0, **overrides):
    """A ``PixArtAlphaPipeline`` with a PixArt-alpha-XL-shaped transformer: 28 blocks, width 1152
    (16 heads x 72), patch 2 on 32x32 latents = 256 tokens, caption_channels 4096 (T5-XXL width).
    Random weights; no text encoder (pass ``prompt_embeds``); a tiny VAE so the denoiser dominates.
    ``overrides`` change transformer config entries (tests shrink it)."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel

    torch.manual_seed(seed)
    config = dict(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
                  cross_attention_dim=1152, caption_channels=4096, sample_size=32, patch_size=2,
                  norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
                  use_additional_conditions=False)
    tr = PixArtTransformer2DModel(**{**config, **overrides}).to(dtype).eval()
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(16, 16), norm_num_groups=8,
                        sample_size=64).to(dtype).eval()
    pipe = PixArtAlphaPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=tr,
                               scheduler=DPMSolverMultistepScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pixart_alpha_shaped_inputs(batch: int = 1, steps: int = 8, guidance: float = 4.5, seed: int = 0,
                               dtype: torch.dtype = torch.bfloat16, text_tokens: int = 120,
                               device: str | torch.device = "cpu") -> dict:
    g = torch.Generator().manual_seed(seed + 1)
    emb = torch.randn(batch, text_tokens, 4096, generator=g).to(device, dtype)  # drawn on the CPU: any device alike
    mask = torch.ones(batch, text_tokens, dtype=torch.long, device=device)
    mask[:, 20:] = 0  # a short caption, padded as T5 pads it
    return dict(prompt_embeds=emb, prompt_attention_mask=mask, negative_prompt=None,
                negative_prompt_embeds=torch.zeros_like(emb), negative_prompt_attention_mask=mask,
                num_inference_steps=steps, guidance_scale=guidance, height=64, width=64,
                use_resolution_binning=False, output_type="pt", generator=torch.Generator().manual_seed(seed))
