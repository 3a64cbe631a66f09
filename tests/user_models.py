"""Saved pipeline folders of every family, as a user has them: genuine diffusers pipelines with tokenizers
and text encoders (tiny, random weights, built offline) written by ``save_pretrained``."""
from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = ("a photo of the sneaker bag dress coat shirt trouser sandal boot pullover woman man in red blue green "
         "cat dog house tree on with and").split()
DIT_LABELS = ("sneaker", "bag", "dress", "coat", "shirt", "trouser", "sandal", "ankle boot", "pullover", "tabby cat, cat")
FAMILIES = ("flux", "sd3", "sdxl", "sd", "dit", "pixart-sigma")


def clip_tokenizer(folder: Path, max_length: int = 16):
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    json.dump(vocab, open(folder / "vocab.json", "w"))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)


def t5_tokenizer():
    from transformers import T5Tokenizer

    return T5Tokenizer(vocab=[("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("\u2581" + w, -1.0) for w in WORDS],
                       extra_ids=0)


def clip_encoder(hidden: int, projection: int | None = None, vocab: int = 60, max_length: int = 16):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=max_length, projection_dim=projection or hidden,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return (CLIPTextModelWithProjection(cfg) if projection else CLIPTextModel(cfg)).eval()


def t5_encoder(d_model: int):
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(vocab_size=len(WORDS) + 3, d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=1, num_heads=2,
                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return T5EncoderModel(cfg).eval()


def build(family: str, tmp: Path, seed: int = 0):
    """A pipeline of ``family`` with real (tiny) text encoders; ``tmp`` holds the tokenizer files."""
    from diffusers import (DiTPipeline, EulerDiscreteScheduler, FluxPipeline, PixArtSigmaPipeline,
                           StableDiffusion3Pipeline, StableDiffusionPipeline, StableDiffusionXLPipeline)

    from tiny import _vae, flux_scheduler, tiny_dit, tiny_flux, tiny_sd3, tiny_sdxl, tiny_unet

    torch.manual_seed(seed)
    if family == "flux":
        p = tiny_flux(seed, guidance_embeds=True)  # FLUX.1-dev: guidance-distilled
        return FluxPipeline(scheduler=flux_scheduler(), vae=p.vae, text_encoder=clip_encoder(16),
                            tokenizer=clip_tokenizer(tmp / "clip"), text_encoder_2=t5_encoder(32),
                            tokenizer_2=t5_tokenizer(), transformer=p.transformer)
    if family == "sd3":
        p = tiny_sd3(seed)
        return StableDiffusion3Pipeline(
            scheduler=p.scheduler, vae=p.vae, transformer=p.transformer,
            text_encoder=clip_encoder(16, 8), tokenizer=clip_tokenizer(tmp / "clip"),
            text_encoder_2=clip_encoder(16, 8), tokenizer_2=clip_tokenizer(tmp / "clip2"),
            text_encoder_3=t5_encoder(32), tokenizer_3=t5_tokenizer())
    if family == "sdxl":
        p = tiny_sdxl(seed)
        return StableDiffusionXLPipeline(vae=p.vae, unet=p.unet, scheduler=p.scheduler,
                                         text_encoder=clip_encoder(16), tokenizer=clip_tokenizer(tmp / "clip"),
                                         text_encoder_2=clip_encoder(16, 16), tokenizer_2=clip_tokenizer(tmp / "clip2"))
    if family == "sd":
        p = tiny_unet(seed)
        sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
        return StableDiffusionPipeline(vae=p.vae, unet=p.unet, scheduler=sched, text_encoder=clip_encoder(32),
                                       tokenizer=clip_tokenizer(tmp / "clip"), safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
    if family == "dit":
        p = tiny_dit(seed)
        return DiTPipeline(transformer=p.transformer, vae=p.vae, scheduler=p.scheduler,
                           id2label=dict(enumerate(DIT_LABELS)))
    if family == "pixart-sigma":
        from diffusers import DPMSolverMultistepScheduler, PixArtTransformer2DModel

        tr = PixArtTransformer2DModel(
            num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2,
            cross_attention_dim=16, caption_channels=32, sample_size=8, patch_size=2, norm_type="ada_norm_single",
            norm_elementwise_affine=False, norm_eps=1e-6, use_additional_conditions=False).eval()
        return PixArtSigmaPipeline(tokenizer=t5_tokenizer(), text_encoder=t5_encoder(32), vae=_vae(), transformer=tr,
                                   scheduler=DPMSolverMultistepScheduler())
    raise ValueError(family)


def save(family: str, root: Path, seed: int = 0) -> Path:
    """``build`` then ``save_pretrained`` to ``root / family``: the folder a user points accel at."""
    folder = root / family
    if not (folder / "model_index.json").exists():
        pipe = build(family, root / f"{family}-tok", seed)
        pipe.save_pretrained(folder)
        if family == "dit":  # DiT checkpoints carry their class names in model_index.json (save_pretrained drops them)
            index = json.loads((folder / "model_index.json").read_text())
            index["id2label"] = {str(i): name for i, name in enumerate(DIT_LABELS)}
            (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def prompt_file(root: Path, prompts: tuple[str, ...] = ("a photo of a cat", "a red dress", "a blue bag",
                                                         "a dog on a tree", "a green house"), name: str = "prompts.txt") -> Path:
    """A user's prompts file, one prompt per line."""
    path = root / name
    path.write_text("\n".join(prompts) + "\n")
    return path


def save_clip(folder: Path, seed: int = 0) -> Path:
    """A tiny random-weight ``CLIPModel`` with its tokenizer, saved as a user's local CLIP folder."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    tok = clip_tokenizer(folder / "tok")
    cfg = CLIPConfig(text_config=dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
                                      pad_token_id=1),
                     vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                        image_size=32, patch_size=8), projection_dim=8)
    CLIPModel(cfg).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
