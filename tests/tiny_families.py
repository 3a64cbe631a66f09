"""Tiny pipelines of the newer diffusers families (FLUX.2, Qwen-Image, Z-Image, Chroma, Wan 2.1, HunyuanImage-2.1),
built from configs with seeded random weights: the genuine diffusers pipeline classes, a transformer with one or two
blocks of each kind, a small VAE of the class the pipeline expects, and the scheduler the family ships. No text
encoder: ``<family>_inputs`` passes precomputed prompt embeddings. Each runs in well under a second on CPU.

``tiny_<family>(seed)`` builds the pipeline; ``<family>_inputs(batch, steps, guidance, seed, size)`` returns its call
keyword arguments; ``BUILDERS`` maps a family name to both, as in ``tiny.py``."""
from __future__ import annotations

import torch
from diffusers import (
    AdaptiveProjectedMixGuidance,
    AutoencoderKL,
    AutoencoderKLFlux2,
    AutoencoderKLHunyuanImage,
    AutoencoderKLQwenImage,
    AutoencoderKLWan,
    ChromaPipeline,
    ChromaTransformer2DModel,
    FlowMatchEulerDiscreteScheduler,
    Flux2Pipeline,
    Flux2Transformer2DModel,
    HunyuanImagePipeline,
    HunyuanImageTransformer2DModel,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
    UniPCMultistepScheduler,
    WanPipeline,
    WanTransformer3DModel,
    ZImagePipeline,
    ZImageTransformer2DModel,
)

FAMILIES = ("flux2", "qwen-image", "z-image", "chroma", "wan", "hunyuan-image")

# Widths of the precomputed text embeddings each tiny transformer takes (``joint_attention_dim`` and the like).
FLUX2_TEXT_DIM = 48  # FLUX.2 stacks three hidden layers of its text encoder: 3 x 16 (see user_models.py)
QWEN_TEXT_DIM = 16
Z_IMAGE_TEXT_DIM = 16
CHROMA_TEXT_DIM = 32
WAN_TEXT_DIM = 32
HUNYUAN_TEXT_DIM = 32


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


BUILDERS = {"flux2": (tiny_flux2, flux2_inputs), "qwen-image": (tiny_qwen_image, qwen_image_inputs),
            "z-image": (tiny_z_image, z_image_inputs), "chroma": (tiny_chroma, chroma_inputs),
            "wan": (tiny_wan, wan_inputs), "hunyuan-image": (tiny_hunyuan_image, hunyuan_image_inputs)}


def output(pipe, **kw) -> torch.Tensor:
    """The pipeline's output as a tensor (``images``, or ``frames`` for Wan)."""
    out = pipe(**kw)
    return torch.as_tensor(out.frames if hasattr(out, "frames") else out.images)
