"""Tiny pipelines of the newer diffusers families (FLUX.2, Qwen-Image, Z-Image, Chroma, Wan 2.1, HunyuanImage-2.1)
and of the video families (Wan 2.2 A14B with its two experts, HunyuanVideo, HunyuanVideo-1.5, LTX-Video, CogVideoX),
built from configs with seeded random weights: the genuine diffusers pipeline classes, a transformer with one or two
blocks of each kind, a small VAE of the class the pipeline expects, and the scheduler the family ships. No text
encoder: ``<family>_inputs`` passes precomputed prompt embeddings. Each runs in well under a second on CPU (the video
ones, a few frames at 4-6 steps, in 0.2 s or less on one thread).

``tiny_<family>(seed)`` builds the pipeline; ``<family>_inputs(batch, steps, guidance, seed, size)`` (video: and
``frames``) returns its call keyword arguments; ``BUILDERS`` maps a family name to both, as in ``tiny.py``; ``output``
returns images or frames as a tensor."""
from __future__ import annotations

import torch
from diffusers import (
    AdaptiveProjectedMixGuidance,
    AutoencoderKL,
    AutoencoderKLCogVideoX,
    AutoencoderKLFlux2,
    AutoencoderKLHunyuanImage,
    AutoencoderKLHunyuanVideo,
    AutoencoderKLHunyuanVideo15,
    AutoencoderKLLTXVideo,
    AutoencoderKLQwenImage,
    AutoencoderKLWan,
    ChromaPipeline,
    ChromaTransformer2DModel,
    ClassifierFreeGuidance,
    CogVideoXDDIMScheduler,
    CogVideoXPipeline,
    CogVideoXTransformer3DModel,
    FlowMatchEulerDiscreteScheduler,
    Flux2Pipeline,
    Flux2Transformer2DModel,
    HunyuanImagePipeline,
    HunyuanImageTransformer2DModel,
    HunyuanVideo15Pipeline,
    HunyuanVideo15Transformer3DModel,
    HunyuanVideoPipeline,
    HunyuanVideoTransformer3DModel,
    LTXPipeline,
    LTXVideoTransformer3DModel,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
    UniPCMultistepScheduler,
    WanPipeline,
    WanTransformer3DModel,
    ZImagePipeline,
    ZImageTransformer2DModel,
)

FAMILIES = ("flux2", "qwen-image", "z-image", "chroma", "wan", "hunyuan-image")
VIDEO_FAMILIES = ("wan22", "hunyuan-video", "hunyuan-video-15", "ltx", "cogvideox")

# Widths of the precomputed text embeddings each tiny transformer takes (``joint_attention_dim`` and the like).
FLUX2_TEXT_DIM = 48  # FLUX.2 stacks three hidden layers of its text encoder: 3 x 16 (see user_models.py)
QWEN_TEXT_DIM = 16
Z_IMAGE_TEXT_DIM = 16
CHROMA_TEXT_DIM = 32
WAN_TEXT_DIM = 32
HUNYUAN_TEXT_DIM = 32
HUNYUAN_VIDEO_TEXT_DIM = 16  # LLaVA-Llama hidden states (4096 in the real model)
HUNYUAN_VIDEO_POOLED_DIM = 8  # CLIP-L pooled output (768)
HUNYUAN_VIDEO_15_TEXT_DIM = 16  # Qwen2.5-VL hidden states (3584)
HUNYUAN_VIDEO_15_GLYPH_DIM = 32  # ByT5 glyph embeddings (1472)
LTX_TEXT_DIM = 32  # T5-XXL (4096)
COGVIDEOX_TEXT_DIM = 32  # T5-XXL (4096)
COGVIDEOX_TEXT_LEN = 16  # CogVideoX takes exactly ``max_text_seq_length`` text tokens (226 in the real model)


def _ready(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _embeds(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=_generator(seed))


# --------------------------------------------------------------------------------------------------- schedulers
def flux2_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """FLUX.2-dev's shipped config (FLUX.1's): shift 3, dynamic shifting; the pipeline passes its empirical ``mu``."""
    return FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                           base_image_seq_len=256, max_image_seq_len=4096)


def qwen_image_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """Qwen-Image's shipped config: dynamic shifting up to 8192 tokens, max shift 0.9, terminal sigma 0.02."""
    return FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
                                           base_image_seq_len=256, max_image_seq_len=8192, shift_terminal=0.02,
                                           time_shift_type="exponential")


def z_image_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """Z-Image-Turbo's shipped config: a fixed shift of 3 (the pipeline passes ``mu``; the scheduler ignores it)."""
    return FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=False)


def chroma_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """Chroma keeps FLUX.1's config: shift 3, dynamic shifting (the pipeline passes ``mu``)."""
    return flux2_scheduler()


def wan_scheduler() -> UniPCMultistepScheduler:
    """Wan 2.1's shipped scheduler: UniPC (bh2, order 2) on flow sigmas with flow_shift 3 (480p)."""
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
                                   solver_order=2, solver_type="bh2", final_sigmas_type="zero")


def hunyuan_image_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """HunyuanImage-2.1: a fixed shift, no ``mu`` (5 here: the shipped config was not available to check)."""
    return FlowMatchEulerDiscreteScheduler(shift=5.0, use_dynamic_shifting=False)


# -------------------------------------------------------------------------------------------------------- FLUX.2
def flux2_transformer(seed: int = 0, text_dim: int = FLUX2_TEXT_DIM) -> Flux2Transformer2DModel:
    torch.manual_seed(seed)
    return Flux2Transformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=text_dim, timestep_guidance_channels=256, axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=True,
    ).eval()


def flux2_vae(seed: int = 0) -> AutoencoderKLFlux2:
    """4 latent channels (the transformer sees 2x2 patches of them: 16), spatial factor 2."""
    torch.manual_seed(seed)
    return AutoencoderKLFlux2(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), layers_per_block=1, latent_channels=4,
        norm_num_groups=4, sample_size=32, use_quant_conv=False, use_post_quant_conv=False,
    ).eval()


def tiny_flux2(seed: int = 0) -> Flux2Pipeline:
    """FLUX.2-dev shape (Flux2Pipeline): guidance-distilled, 1 double + 2 single blocks."""
    return _ready(Flux2Pipeline(scheduler=flux2_scheduler(), vae=flux2_vae(seed), text_encoder=None, tokenizer=None,
                                transformer=flux2_transformer(seed)))


def flux2_inputs(batch: int = 1, steps: int = 6, guidance: float = 4.0, seed: int = 0, size: int = 16) -> dict:
    """FLUX.2 is guidance-distilled: ``guidance`` is the embedded guidance input (one denoiser call a step)."""
    return dict(prompt_embeds=_embeds(seed + 1000, batch, 6, FLUX2_TEXT_DIM), guidance_scale=guidance,
                num_inference_steps=steps, height=size, width=size, output_type="pt", generator=_generator(seed))


# ---------------------------------------------------------------------------------------------------- Qwen-Image
def qwen_image_transformer(seed: int = 0, text_dim: int = QWEN_TEXT_DIM) -> QwenImageTransformer2DModel:
    torch.manual_seed(seed)
    return QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=text_dim, guidance_embeds=False, axes_dims_rope=(8, 4, 4),
    ).eval()


def qwen_image_vae(seed: int = 0) -> AutoencoderKLQwenImage:
    """4 latent channels, spatial factor 2 (one downsampling stage), no temporal downsampling."""
    torch.manual_seed(seed)
    return AutoencoderKLQwenImage(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, temperal_downsample=[False],
                                  latents_mean=[0.0] * 4, latents_std=[1.0] * 4).eval()


def tiny_qwen_image(seed: int = 0) -> QwenImagePipeline:
    """Qwen-Image shape: 2 dual-stream blocks, true CFG (two calls a step)."""
    return _ready(QwenImagePipeline(scheduler=qwen_image_scheduler(), vae=qwen_image_vae(seed), text_encoder=None,
                                    tokenizer=None, transformer=qwen_image_transformer(seed)))


def qwen_image_inputs(batch: int = 1, steps: int = 6, guidance: float = 4.0, seed: int = 0, size: int = 16) -> dict:
    """``guidance`` > 1 is ``true_cfg_scale`` with negative embeddings (two denoiser calls a step)."""
    mask = torch.ones(batch, 5, dtype=torch.long)
    kw = dict(prompt_embeds=_embeds(seed + 1000, batch, 5, QWEN_TEXT_DIM), prompt_embeds_mask=mask,
              true_cfg_scale=guidance if guidance > 1 else 1.0, num_inference_steps=steps, height=size, width=size,
              output_type="pt", generator=_generator(seed))
    if guidance > 1:
        kw.update(negative_prompt_embeds=_embeds(seed + 2000, batch, 5, QWEN_TEXT_DIM),
                  negative_prompt_embeds_mask=mask.clone())
    return kw


# ------------------------------------------------------------------------------------------------------- Z-Image
def z_image_transformer(seed: int = 0, text_dim: int = Z_IMAGE_TEXT_DIM) -> ZImageTransformer2DModel:
    torch.manual_seed(seed)
    tr = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=4, dim=32, n_layers=2, n_refiner_layers=1, n_heads=2,
        n_kv_heads=2, norm_eps=1e-5, qk_norm=True, cap_feat_dim=text_dim, rope_theta=256.0, t_scale=1000.0,
        axes_dims=[8, 4, 4], axes_lens=[256, 32, 32],
    ).eval()
    with torch.no_grad():  # the pad tokens are allocated with torch.empty: give them seeded values
        tr.x_pad_token.copy_(torch.randn(tr.x_pad_token.shape, generator=_generator(seed)))
        tr.cap_pad_token.copy_(torch.randn(tr.cap_pad_token.shape, generator=_generator(seed + 1)))
    return tr


def z_image_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), layers_per_block=1, latent_channels=4,
        norm_num_groups=4, sample_size=32, scaling_factor=0.3611, shift_factor=0.1159,
    ).eval()


def tiny_z_image(seed: int = 0) -> ZImagePipeline:
    """Z-Image shape: 1 noise-refiner + 1 context-refiner + 2 main layers; CFG batched in one call."""
    return _ready(ZImagePipeline(scheduler=z_image_scheduler(), vae=z_image_vae(seed), text_encoder=None,
                                 tokenizer=None, transformer=z_image_transformer(seed)))


def z_image_inputs(batch: int = 1, steps: int = 6, guidance: float = 4.0, seed: int = 0, size: int = 16) -> dict:
    """Prompt embeddings are a list of [L, D] tensors (one per prompt, unpadded: lengths differ on purpose).
    ``guidance`` > 1 is passed as ``guidance_scale`` with negative embeddings; otherwise ``guidance_scale=0``
    (off: Z-Image switches CFG on for any guidance_scale > 0 and mixes ``cond + g * (cond - uncond)``)."""
    pos = [_embeds(seed + 1000 + i, 5 + i % 2, Z_IMAGE_TEXT_DIM) for i in range(batch)]
    kw = dict(prompt_embeds=pos, guidance_scale=guidance if guidance > 1 else 0.0, num_inference_steps=steps,
              height=size, width=size, output_type="pt", generator=_generator(seed))
    if guidance > 1:
        kw.update(negative_prompt_embeds=[_embeds(seed + 2000 + i, 4, Z_IMAGE_TEXT_DIM) for i in range(batch)])
    return kw


# -------------------------------------------------------------------------------------------------------- Chroma
def chroma_transformer(seed: int = 0, text_dim: int = CHROMA_TEXT_DIM) -> ChromaTransformer2DModel:
    torch.manual_seed(seed)
    return ChromaTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=text_dim, axes_dims_rope=(4, 4, 8), approximator_num_channels=16,
        approximator_hidden_dim=32, approximator_layers=1,
    ).eval()


def chroma_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), layers_per_block=1, latent_channels=4,
        norm_num_groups=4, sample_size=32, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609,
        scaling_factor=1.5035,
    ).eval()


def tiny_chroma(seed: int = 0) -> ChromaPipeline:
    """Chroma shape (FLUX.1-schnell derived, no pooled text, modulation from an approximator): 1 double + 2 single."""
    return _ready(ChromaPipeline(scheduler=chroma_scheduler(), vae=chroma_vae(seed), text_encoder=None, tokenizer=None,
                                 transformer=chroma_transformer(seed), image_encoder=None, feature_extractor=None))


def chroma_inputs(batch: int = 1, steps: int = 6, guidance: float = 4.0, seed: int = 0, size: int = 16) -> dict:
    """``guidance`` is ``guidance_scale``; > 1 adds negative embeddings and their mask (two calls a step)."""
    mask = torch.ones(batch, 5)  # the pipeline's own form: float, 1 up to and including the first pad token
    mask[:, -1] = 0
    kw = dict(prompt_embeds=_embeds(seed + 1000, batch, 5, CHROMA_TEXT_DIM), prompt_attention_mask=mask,
              guidance_scale=guidance, num_inference_steps=steps, height=size, width=size, output_type="pt",
              generator=_generator(seed))
    if guidance > 1:
        kw.update(negative_prompt_embeds=_embeds(seed + 2000, batch, 5, CHROMA_TEXT_DIM),
                  negative_prompt_attention_mask=mask.clone())
    return kw


# ----------------------------------------------------------------------------------------------------------- Wan
def wan_transformer(seed: int = 0, text_dim: int = WAN_TEXT_DIM) -> WanTransformer3DModel:
    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=text_dim, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    ).eval()


def wan_vae(seed: int = 0) -> AutoencoderKLWan:
    """Wan 2.1's VAE shape (16 latent channels, 8x spatial, 4x temporal) at a tiny width."""
    torch.manual_seed(seed)
    return AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True]).eval()


def tiny_wan(seed: int = 0) -> WanPipeline:
    """Wan 2.1 text-to-video shape: one transformer (no ``transformer_2``, no boundary), 2 blocks, two calls a step."""
    return _ready(WanPipeline(tokenizer=None, text_encoder=None, vae=wan_vae(seed), scheduler=wan_scheduler(),
                              transformer=wan_transformer(seed)))


def wan_inputs(batch: int = 1, steps: int = 6, guidance: float = 5.0, seed: int = 0, size: int = 32,
               frames: int = 5) -> dict:
    """``frames`` = 4k + 1 (the VAE's temporal factor is 4); ``guidance`` > 1 adds negative embeddings."""
    kw = dict(prompt_embeds=_embeds(seed + 1000, batch, 6, WAN_TEXT_DIM), guidance_scale=guidance,
              num_inference_steps=steps, height=size, width=size, num_frames=frames, output_type="pt",
              generator=_generator(seed))
    if guidance > 1:
        kw.update(negative_prompt_embeds=_embeds(seed + 2000, batch, 6, WAN_TEXT_DIM))
    return kw


# ------------------------------------------------------------------------------------------------- HunyuanImage
def hunyuan_image_transformer(seed: int = 0, text_dim: int = HUNYUAN_TEXT_DIM) -> HunyuanImageTransformer2DModel:
    torch.manual_seed(seed)
    return HunyuanImageTransformer2DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=1, num_single_layers=2,
        num_refiner_layers=1, patch_size=(1, 1), guidance_embeds=False, text_embed_dim=text_dim,
        text_embed_2_dim=text_dim, rope_axes_dim=(4, 4),
    ).eval()


def hunyuan_image_vae(seed: int = 0) -> AutoencoderKLHunyuanImage:
    torch.manual_seed(seed)
    return AutoencoderKLHunyuanImage(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32),
                                     layers_per_block=1, spatial_compression_ratio=2, sample_size=32,
                                     scaling_factor=0.476986).eval()


def tiny_hunyuan_image(seed: int = 0, guidance: float = 3.5):
    """HunyuanImage-2.1 shape (not distilled). Its CFG lives in the pipeline's ``guider`` component, not in the call:
    ``guidance`` > 1 builds an AdaptiveProjectedMixGuidance at that scale (APG from step 2), otherwise no guider."""
    guider = AdaptiveProjectedMixGuidance(guidance_scale=guidance, adaptive_projected_guidance_start_step=2) \
        if guidance > 1 else None
    return _ready(HunyuanImagePipeline(
        scheduler=hunyuan_image_scheduler(), vae=hunyuan_image_vae(seed), text_encoder=None, tokenizer=None,
        text_encoder_2=None, tokenizer_2=None, transformer=hunyuan_image_transformer(seed), guider=guider,
        ocr_guider=None))


def hunyuan_image_inputs(batch: int = 1, steps: int = 6, guidance: float = 3.5, seed: int = 0, size: int = 16) -> dict:
    """Qwen2.5-VL embeddings and all-zero ByT5 (glyph) embeddings (a prompt with no quoted text), with masks, and
    always the negative ones: whether they are used, and at which scale, is the pipeline's ``guider`` (see
    ``tiny_hunyuan_image``); ``guidance`` is accepted for the common signature and otherwise unused."""
    mask = torch.ones(batch, 5, dtype=torch.long)
    glyph, glyph_mask = torch.zeros(batch, 4, HUNYUAN_TEXT_DIM), torch.zeros(batch, 4, dtype=torch.long)
    return dict(prompt_embeds=_embeds(seed + 1000, batch, 5, HUNYUAN_TEXT_DIM), prompt_embeds_mask=mask,
                prompt_embeds_2=glyph, prompt_embeds_mask_2=glyph_mask,
                negative_prompt_embeds=_embeds(seed + 2000, batch, 5, HUNYUAN_TEXT_DIM),
                negative_prompt_embeds_mask=mask.clone(), negative_prompt_embeds_2=glyph.clone(),
                negative_prompt_embeds_mask_2=glyph_mask.clone(), num_inference_steps=steps, height=size, width=size,
                output_type="pt", generator=_generator(seed))


# ------------------------------------------------------------------------------------------------ video schedulers
def wan22_scheduler() -> UniPCMultistepScheduler:
    """Wan 2.2 A14B in Diffusers form keeps Wan 2.1's UniPC on flow sigmas (flow_shift 3 here; the original Wan 2.2
    code samples T2V-A14B at shift 12, which users set with ``UniPCMultistepScheduler.from_config(..., flow_shift=)``;
    the Diffusers checkpoint's own value was not checked)."""
    return wan_scheduler()


def hunyuan_video_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """HunyuanVideo's shipped config: a fixed shift of 7, no dynamic shifting (the pipeline passes sigmas, no mu)."""
    return FlowMatchEulerDiscreteScheduler(shift=7.0, use_dynamic_shifting=False)


def hunyuan_video_15_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """HunyuanVideo-1.5: a fixed shift (7, as diffusers' own tests; the shipped value was not checked)."""
    return FlowMatchEulerDiscreteScheduler(shift=7.0, use_dynamic_shifting=False)


def ltx_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """LTX-Video's shipped config: dynamic shifting from 0.95 (1024 tokens) to 2.05 (4096 tokens), terminal sigma 0.1;
    the pipeline passes ``sigmas=linspace(1, 1/n, n)`` and ``mu=calculate_shift(latent F*H*W, ...)``."""
    return FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                                           base_image_seq_len=1024, max_image_seq_len=4096, shift_terminal=0.1)


def cogvideox_scheduler() -> CogVideoXDDIMScheduler:
    """CogVideoX-2b's shipped config: DDIM, v-prediction on a zero-terminal-SNR scaled-linear schedule shifted by
    ``snr_shift_scale`` 3, trailing spacing. (CogVideoX-5b ships CogVideoXDPMScheduler with the same betas.)"""
    return CogVideoXDDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                                  set_alpha_to_one=True, steps_offset=0, prediction_type="v_prediction",
                                  rescale_betas_zero_snr=True, snr_shift_scale=3.0, timestep_spacing="trailing")


# ----------------------------------------------------------------------------------------------- Wan 2.2 (A14B)
WAN22_BOUNDARY_RATIO = 0.875  # Wan2.2-T2V-A14B: transformer (high noise) while t >= 875, then transformer_2


def tiny_wan22(seed: int = 0, boundary_ratio: float = WAN22_BOUNDARY_RATIO) -> WanPipeline:
    """Wan 2.2 T2V-A14B shape: two experts of the same config, ``transformer`` (high noise, seed ``seed``) and
    ``transformer_2`` (low noise, seed ``seed + 1``), switched at ``boundary_ratio * 1000``: the high-noise expert
    runs while t >= 875. At 4 steps (t = 999, 900, 750, 500) that is steps 0-1, then the low-noise one steps 2-3;
    at 6 steps (999, 937, 857, 750, 600, 376) steps 0-1, then 2-5."""
    return _ready(WanPipeline(tokenizer=None, text_encoder=None, vae=wan_vae(seed), scheduler=wan22_scheduler(),
                              transformer=wan_transformer(seed), transformer_2=wan_transformer(seed + 1),
                              boundary_ratio=boundary_ratio))


def wan22_inputs(batch: int = 1, steps: int = 6, guidance: float = 4.0, seed: int = 0, size: int = 32,
                 frames: int = 5, guidance_2: float | None = None) -> dict:
    """``guidance`` is ``guidance_scale`` (the high-noise expert's), ``guidance_2`` is ``guidance_scale_2`` (the
    low-noise expert's; default 3/4 of ``guidance``, as the A14B defaults 4.0 / 3.0). CFG (negative embeddings, two
    calls a step) is on for the whole call when ``guidance`` > 1: the pipeline decides it from ``guidance_scale``
    alone, so ``guidance`` <= 1 is one call a step for both experts whatever ``guidance_2`` is."""
    kw = wan_inputs(batch, steps, guidance, seed, size, frames)
    if guidance > 1:
        kw["guidance_scale_2"] = guidance_2 if guidance_2 is not None else 0.75 * guidance
    return kw


# -------------------------------------------------------------------------------------------------- HunyuanVideo
def hunyuan_video_transformer(seed: int = 0) -> HunyuanVideoTransformer3DModel:
    torch.manual_seed(seed)
    return HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1,
        num_single_layers=2, num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True,
        text_embed_dim=HUNYUAN_VIDEO_TEXT_DIM, pooled_projection_dim=HUNYUAN_VIDEO_POOLED_DIM, rope_axes_dim=(2, 4, 4),
    ).eval()


def hunyuan_video_vae(seed: int = 0) -> AutoencoderKLHunyuanVideo:
    """HunyuanVideo's VAE shape (8x spatial, 4x temporal) at a tiny width, 4 latent channels."""
    torch.manual_seed(seed)
    return AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=4, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        act_fn="silu", norm_num_groups=4, scaling_factor=0.476986, spatial_compression_ratio=8,
        temporal_compression_ratio=4, mid_block_add_attention=True,
    ).eval()


def tiny_hunyuan_video(seed: int = 0) -> HunyuanVideoPipeline:
    """HunyuanVideo (1.0) shape: guidance-distilled (``guidance_embeds``), 1 double + 2 single blocks, token refiner."""
    return _ready(HunyuanVideoPipeline(text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                                       transformer=hunyuan_video_transformer(seed), vae=hunyuan_video_vae(seed),
                                       scheduler=hunyuan_video_scheduler()))


def hunyuan_video_inputs(batch: int = 1, steps: int = 6, guidance: float = 4.0, seed: int = 0, size: int = 32,
                         frames: int = 5, embedded_guidance: float = 6.0) -> dict:
    """The released model is guidance-distilled: ``embedded_guidance`` is ``guidance_scale``, the embedded guidance
    input (x 1000 into the model, every call). ``guidance`` > 1 is TRUE CFG on top of it: ``true_cfg_scale`` with
    negative embeddings (Llama hidden states + mask, CLIP pooled), two calls a step; otherwise one call a step."""
    mask = torch.ones(batch, 6, dtype=torch.long)
    mask[:, -1] = 0  # a padded prompt, as the pipeline's own Llama encoding gives
    kw = dict(prompt_embeds=_embeds(seed + 1000, batch, 6, HUNYUAN_VIDEO_TEXT_DIM), prompt_attention_mask=mask,
              pooled_prompt_embeds=_embeds(seed + 1500, batch, HUNYUAN_VIDEO_POOLED_DIM),
              guidance_scale=embedded_guidance, true_cfg_scale=guidance if guidance > 1 else 1.0,
              num_inference_steps=steps, height=size, width=size, num_frames=frames, output_type="pt",
              generator=_generator(seed))
    if guidance > 1:
        kw.update(negative_prompt_embeds=_embeds(seed + 2000, batch, 6, HUNYUAN_VIDEO_TEXT_DIM),
                  negative_prompt_attention_mask=mask.clone(),
                  negative_pooled_prompt_embeds=_embeds(seed + 2500, batch, HUNYUAN_VIDEO_POOLED_DIM))
    return kw


# ---------------------------------------------------------------------------------------------- HunyuanVideo-1.5
def hunyuan_video_15_transformer(seed: int = 0) -> HunyuanVideo15Transformer3DModel:
    """Text to video: ``in_channels`` = 2 x latent + 1 (the latents, zero condition latents and a zero mask)."""
    torch.manual_seed(seed)
    return HunyuanVideo15Transformer3DModel(
        in_channels=9, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2, num_refiner_layers=1,
        mlp_ratio=2.0, patch_size=1, patch_size_t=1, text_embed_dim=HUNYUAN_VIDEO_15_TEXT_DIM,
        text_embed_2_dim=HUNYUAN_VIDEO_15_GLYPH_DIM, image_embed_dim=12, rope_axes_dim=(2, 2, 4), target_size=16,
        task_type="t2v",
    ).eval()


def hunyuan_video_15_vae(seed: int = 0) -> AutoencoderKLHunyuanVideo15:
    """4 latent channels, 4x spatial, 2x temporal (the real one: 32 channels, 16x, 4x)."""
    torch.manual_seed(seed)
    return AutoencoderKLHunyuanVideo15(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 16), layers_per_block=1,
        spatial_compression_ratio=4, temporal_compression_ratio=2, downsample_match_channel=False,
        upsample_match_channel=False,
    ).eval()


def tiny_hunyuan_video_15(seed: int = 0, guidance: float = 6.0) -> HunyuanVideo15Pipeline:
    """HunyuanVideo-1.5 (text to video) shape: 2 blocks of one kind. Like HunyuanImage, its CFG is the pipeline's
    ``guider`` component (a ClassifierFreeGuidance at ``guidance``; 1 = disabled, one call a step). Text to video
    still feeds the pipeline's 729 all-zero (masked) image tokens into the context stream, so at this size the
    context (~740 tokens) outweighs the video tokens (48)."""
    return _ready(HunyuanVideo15Pipeline(
        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
        transformer=hunyuan_video_15_transformer(seed), vae=hunyuan_video_15_vae(seed),
        scheduler=hunyuan_video_15_scheduler(), guider=ClassifierFreeGuidance(guidance_scale=guidance)))


def hunyuan_video_15_inputs(batch: int = 1, steps: int = 6, guidance: float = 6.0, seed: int = 0, size: int = 16,
                            frames: int = 5) -> dict:
    """Qwen2.5-VL and all-zero ByT5 (glyph) embeddings with masks, and always the negative ones (used when the
    pipeline's guider is enabled, see ``tiny_hunyuan_video_15``); ``guidance`` is accepted for the common signature
    and otherwise unused. ``frames`` = 2k + 1 (the tiny VAE's temporal factor is 2). ``batch`` > 1 denoises but
    fails at decode in diffusers 0.42.1 (AutoencoderKLHunyuanVideo15's mid-block attention mask lacks a head axis,
    diffusers PR #13133): pass ``output_type="latent"`` for batched calls."""
    mask = torch.ones(batch, 5, dtype=torch.long)
    glyph, glyph_mask = torch.zeros(batch, 4, HUNYUAN_VIDEO_15_GLYPH_DIM), torch.zeros(batch, 4, dtype=torch.long)
    return dict(prompt_embeds=_embeds(seed + 1000, batch, 5, HUNYUAN_VIDEO_15_TEXT_DIM), prompt_embeds_mask=mask,
                prompt_embeds_2=glyph, prompt_embeds_mask_2=glyph_mask,
                negative_prompt_embeds=_embeds(seed + 2000, batch, 5, HUNYUAN_VIDEO_15_TEXT_DIM),
                negative_prompt_embeds_mask=mask.clone(), negative_prompt_embeds_2=glyph.clone(),
                negative_prompt_embeds_mask_2=glyph_mask.clone(), num_inference_steps=steps, height=size, width=size,
                num_frames=frames, output_type="pt", generator=_generator(seed))


# --------------------------------------------------------------------------------------------------- LTX-Video
def ltx_transformer(seed: int = 0) -> LTXVideoTransformer3DModel:
    torch.manual_seed(seed)
    return LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4, attention_head_dim=8,
        cross_attention_dim=32, num_layers=2, caption_channels=LTX_TEXT_DIM,
    ).eval()


def ltx_vae(seed: int = 0) -> AutoencoderKLLTXVideo:
    """LTX's VAE shape at a tiny width: three spatio-temporal downsamplings (8x space, 8x time), patch 1, 8 latent
    channels (the real one: 32x space via a 4x4 patch, 8x time, 128 channels)."""
    torch.manual_seed(seed)
    vae = AutoencoderKLLTXVideo(
        latent_channels=8, block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False), decoder_spatio_temporal_scaling=(True, True, True, False),
        patch_size=1, patch_size_t=1, encoder_causal=True, decoder_causal=False,
    ).eval()
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    return vae


def tiny_ltx(seed: int = 0) -> LTXPipeline:
    """LTX-Video (0.9.x) shape: 2 blocks; latents are packed tokens [B, F*H*W, C]; CFG batched in one call."""
    return _ready(LTXPipeline(scheduler=ltx_scheduler(), vae=ltx_vae(seed), text_encoder=None, tokenizer=None,
                              transformer=ltx_transformer(seed)))


def ltx_inputs(batch: int = 1, steps: int = 6, guidance: float = 3.0, seed: int = 0, size: int = 32,
               frames: int = 9) -> dict:
    """``frames`` = 8k + 1 and ``size`` a multiple of 32 (the pipeline checks it); ``guidance`` > 1 adds negative
    embeddings and their mask (one batched call of 2B a step)."""
    mask = torch.ones(batch, 6, dtype=torch.long)
    mask[:, -2:] = 0
    kw = dict(prompt_embeds=_embeds(seed + 1000, batch, 6, LTX_TEXT_DIM), prompt_attention_mask=mask,
              guidance_scale=guidance, num_inference_steps=steps, height=size, width=size, num_frames=frames,
              output_type="pt", generator=_generator(seed))
    if guidance > 1:
        kw.update(negative_prompt_embeds=_embeds(seed + 2000, batch, 6, LTX_TEXT_DIM),
                  negative_prompt_attention_mask=mask.clone())
    return kw


# ---------------------------------------------------------------------------------------------------- CogVideoX
def cogvideox_transformer(seed: int = 0, size: int = 32, frames: int = 9,
                          text_len: int = COGVIDEOX_TEXT_LEN) -> CogVideoXTransformer3DModel:
    """CogVideoX-2b shape (sincos positions, no rotary embedding, 2x2 patches); ``sample_*`` sized for the inputs,
    ``text_len`` the text tokens it takes (the pipeline's ``max_sequence_length``: 226 when it encodes prompts)."""
    torch.manual_seed(seed)
    return CogVideoXTransformer3DModel(
        num_attention_heads=4, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=16,
        text_embed_dim=COGVIDEOX_TEXT_DIM, num_layers=2, sample_width=size // 8, sample_height=size // 8,
        sample_frames=frames, patch_size=2, temporal_compression_ratio=4, max_text_seq_length=text_len,
    ).eval()


def cogvideox_vae(seed: int = 0) -> AutoencoderKLCogVideoX:
    """CogVideoX's VAE shape (8x spatial, 4x temporal) at a tiny width, 4 latent channels."""
    torch.manual_seed(seed)
    return AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=4,
        layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4,
    ).eval()


def tiny_cogvideox(seed: int = 0) -> CogVideoXPipeline:
    """CogVideoX-2b shape: 2 blocks, latents [B, F, C, H, W], v-prediction DDIM, CFG batched in one call."""
    return _ready(CogVideoXPipeline(tokenizer=None, text_encoder=None, vae=cogvideox_vae(seed),
                                    transformer=cogvideox_transformer(seed), scheduler=cogvideox_scheduler()))


def cogvideox_inputs(batch: int = 1, steps: int = 6, guidance: float = 6.0, seed: int = 0, size: int = 32,
                     frames: int = 9) -> dict:
    """Prompt embeddings of exactly ``COGVIDEOX_TEXT_LEN`` tokens (the model's ``max_text_seq_length``: another
    length fails in the positional embedding); other sizes work (the sincos positions are recomputed), ``frames`` =
    4k + 1; ``guidance`` > 1 adds negative embeddings (one batched call of 2B a step, uncond first)."""
    kw = dict(prompt_embeds=_embeds(seed + 1000, batch, COGVIDEOX_TEXT_LEN, COGVIDEOX_TEXT_DIM),
              guidance_scale=guidance, num_inference_steps=steps, height=size, width=size, num_frames=frames,
              output_type="pt", generator=_generator(seed))
    if guidance > 1:
        kw.update(negative_prompt_embeds=_embeds(seed + 2000, batch, COGVIDEOX_TEXT_LEN, COGVIDEOX_TEXT_DIM))
    return kw


BUILDERS = {"flux2": (tiny_flux2, flux2_inputs), "qwen-image": (tiny_qwen_image, qwen_image_inputs),
            "z-image": (tiny_z_image, z_image_inputs), "chroma": (tiny_chroma, chroma_inputs),
            "wan": (tiny_wan, wan_inputs), "hunyuan-image": (tiny_hunyuan_image, hunyuan_image_inputs),
            "wan22": (tiny_wan22, wan22_inputs), "hunyuan-video": (tiny_hunyuan_video, hunyuan_video_inputs),
            "hunyuan-video-15": (tiny_hunyuan_video_15, hunyuan_video_15_inputs), "ltx": (tiny_ltx, ltx_inputs),
            "cogvideox": (tiny_cogvideox, cogvideox_inputs)}


def output(pipe, **kw) -> torch.Tensor:
    """The pipeline's output as a tensor (``images``, or ``frames`` [B, F, C, H, W] for the video pipelines)."""
    out = pipe(**kw)
    return torch.as_tensor(out.frames if hasattr(out, "frames") else out.images)
