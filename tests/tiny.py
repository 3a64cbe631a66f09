"""Tiny pipelines of every supported family, built from configs with seeded random weights (CPU, < 1 s)."""
from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    DiTPipeline,
    DiTTransformer2DModel,
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    PixArtAlphaPipeline,
    PixArtTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)

FAMILIES = ("pixart", "dit", "flux", "sd3", "unet")


def _vae(latent_channels: int = 4, in_channels: int = 3, **kw) -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=in_channels, out_channels=in_channels, latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 8), norm_num_groups=4, sample_size=16, **kw,
    )


def tiny_pixart(seed: int = 0) -> PixArtAlphaPipeline:
    torch.manual_seed(seed)
    tr = PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, num_layers=2,
        cross_attention_dim=16, caption_channels=32, sample_size=8, patch_size=2,
        norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6, use_additional_conditions=False,
    ).eval()
    return PixArtAlphaPipeline(tokenizer=None, text_encoder=None, vae=_vae(), transformer=tr,
                               scheduler=DPMSolverMultistepScheduler())


def pixart_inputs(batch: int = 1, steps: int = 6, guidance: float = 4.5, seed: int = 0, size: int = 16) -> dict:
    g = torch.Generator().manual_seed(seed + 1000)
    emb = torch.randn(batch, 5, 32, generator=g)
    mask = torch.ones(batch, 5, dtype=torch.long)
    kw = dict(prompt_embeds=emb, prompt_attention_mask=mask, negative_prompt=None, num_inference_steps=steps,
              guidance_scale=guidance, height=size, width=size, use_resolution_binning=False, output_type="pt",
              generator=torch.Generator().manual_seed(seed))
    if guidance > 1:
        kw.update(negative_prompt_embeds=torch.zeros_like(emb), negative_prompt_attention_mask=mask)
    return kw


def tiny_dit(seed: int = 0) -> DiTPipeline:
    torch.manual_seed(seed)
    tr = DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2,
        sample_size=8, patch_size=2, num_embeds_ada_norm=1000, norm_type="ada_norm_zero",
    ).eval()
    return DiTPipeline(transformer=tr, vae=_vae(), scheduler=DPMSolverMultistepScheduler(), id2label={i: str(i) for i in range(10)})


def dit_inputs(batch: int = 1, steps: int = 6, guidance: float = 4.0, seed: int = 0, size: int = 8) -> dict:
    return dict(class_labels=list(range(batch)), num_inference_steps=steps, guidance_scale=guidance,
                output_type="np", generator=torch.Generator().manual_seed(seed))


def flux_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """FLUX.1's shipped scheduler config: shift 3, dynamic shifting by image size (the pipeline passes mu)."""
    return FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                           base_image_seq_len=256, max_image_seq_len=4096)


def tiny_flux(seed: int = 0, guidance_embeds: bool = False) -> FluxPipeline:
    """FLUX.1 shape; ``guidance_embeds=True`` is the guidance-distilled kind (FLUX.1-dev: no CFG, a guidance input)."""
    torch.manual_seed(seed)
    tr = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=16, axes_dims_rope=(4, 2, 2),
        guidance_embeds=guidance_embeds,
    ).eval()
    vae = _vae(latent_channels=4, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0, scaling_factor=1.0)
    return FluxPipeline(scheduler=flux_scheduler(), vae=vae, text_encoder=None, tokenizer=None,
                        text_encoder_2=None, tokenizer_2=None, transformer=tr)


def flux_inputs(batch: int = 1, steps: int = 6, guidance: float = 1.0, seed: int = 0, size: int = 16) -> dict:
    """``guidance`` > 1 is FLUX's true CFG (``true_cfg_scale`` with negative embeddings: two denoiser calls a step)."""
    g = torch.Generator().manual_seed(seed + 1000)
    kw = dict(prompt_embeds=torch.randn(batch, 5, 32, generator=g), pooled_prompt_embeds=torch.randn(batch, 16, generator=g),
              num_inference_steps=steps, height=size, width=size, output_type="pt",
              generator=torch.Generator().manual_seed(seed))
    if guidance > 1:
        kw.update(true_cfg_scale=guidance, negative_prompt_embeds=torch.zeros(batch, 5, 32),
                  negative_pooled_prompt_embeds=torch.zeros(batch, 16))
    return kw


def tiny_sd3(seed: int = 0) -> StableDiffusion3Pipeline:
    torch.manual_seed(seed)
    tr = SD3Transformer2DModel(
        sample_size=8, patch_size=1, in_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=32, caption_projection_dim=16, pooled_projection_dim=16, out_channels=4,
    ).eval()
    vae = _vae(latent_channels=4, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0, scaling_factor=1.0)
    return StableDiffusion3Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae, text_encoder=None, tokenizer=None,
                                    text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None,
                                    transformer=tr)


def sd3_inputs(batch: int = 1, steps: int = 6, guidance: float = 4.0, seed: int = 0, size: int = 16) -> dict:
    g = torch.Generator().manual_seed(seed + 1000)
    kw = dict(prompt_embeds=torch.randn(batch, 5, 32, generator=g), pooled_prompt_embeds=torch.randn(batch, 16, generator=g),
              num_inference_steps=steps, guidance_scale=guidance, height=size, width=size, output_type="pt",
              generator=torch.Generator().manual_seed(seed))
    if guidance > 1:
        kw.update(negative_prompt_embeds=torch.zeros(batch, 5, 32), negative_pooled_prompt_embeds=torch.zeros(batch, 16))
    return kw


def tiny_unet(seed: int = 0) -> StableDiffusionPipeline:
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, norm_num_groups=4, attention_head_dim=4,
    ).eval()
    return StableDiffusionPipeline(vae=_vae(), text_encoder=None, tokenizer=None, unet=unet,
                                   scheduler=DPMSolverMultistepScheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def unet_inputs(batch: int = 1, steps: int = 6, guidance: float = 4.0, seed: int = 0, size: int = 16) -> dict:
    g = torch.Generator().manual_seed(seed + 1000)
    kw = dict(prompt_embeds=torch.randn(batch, 5, 32, generator=g), num_inference_steps=steps, guidance_scale=guidance,
              height=size, width=size, output_type="pt", generator=torch.Generator().manual_seed(seed))
    if guidance > 1:
        kw.update(negative_prompt_embeds=torch.zeros(batch, 5, 32))
    return kw


def tiny_sdxl(seed: int = 0):
    """A StableDiffusionXLPipeline (text-time added conditioning) with a tiny random UNet and no text encoders."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, norm_num_groups=4, attention_head_dim=4, addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=16 + 6 * 8,
    ).eval()
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    return StableDiffusionXLPipeline(vae=_vae(), text_encoder=None, text_encoder_2=None, tokenizer=None,
                                     tokenizer_2=None, unet=unet, scheduler=sched)


def sdxl_inputs(batch: int = 1, steps: int = 4, guidance: float = 0.0, seed: int = 0, size: int = 16) -> dict:
    """SDXL takes the same embeddings as SD3 (sequence and pooled)."""
    return sd3_inputs(batch, steps, guidance, seed, size)


BUILDERS = {"pixart": (tiny_pixart, pixart_inputs), "dit": (tiny_dit, dit_inputs), "flux": (tiny_flux, flux_inputs),
            "sd3": (tiny_sd3, sd3_inputs), "unet": (tiny_unet, unet_inputs)}


def images(pipe, **kw) -> torch.Tensor:
    out = pipe(**kw).images
    return torch.as_tensor(out)


def tiny_text_pixart(seed: int = 0):
    """A reference-shaped PixArtAlphaPipeline (real MiniLM text encoder, 1-channel VAE) with a tiny random transformer."""
    from accel.pipelines.components import eps_scheduler, load_text_encoder

    torch.manual_seed(seed)
    tok, enc = load_text_encoder()
    tr = PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, num_layers=2,
        cross_attention_dim=16, caption_channels=384, sample_size=8, patch_size=2,
        norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6, use_additional_conditions=False,
    ).eval()
    vae = AutoencoderKL(in_channels=1, out_channels=1, latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 8, 8), norm_num_groups=4,
                        sample_size=32)
    return PixArtAlphaPipeline(tokenizer=tok, text_encoder=enc, vae=vae, transformer=tr, scheduler=eps_scheduler())


def tiny_text_pixart_flow(seed: int = 0):
    """The same, as a rectified-flow PixArtSigmaPipeline (the shape of ``pixart-flow``), with its call defaults."""
    from diffusers import PixArtSigmaPipeline

    from accel.pipelines.components import flow_scheduler
    from accel.pipelines.reference import CALL_DEFAULTS

    p = tiny_text_pixart(seed)
    pipe = PixArtSigmaPipeline(tokenizer=p.tokenizer, text_encoder=p.text_encoder, vae=p.vae, transformer=p.transformer,
                               scheduler=flow_scheduler())
    pipe.accel_defaults = dict(CALL_DEFAULTS)
    pipe.set_progress_bar_config(disable=True)
    return pipe
