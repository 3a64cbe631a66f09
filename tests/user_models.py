"""Saved pipeline folders of every family, as a user has them: genuine diffusers pipelines with tokenizers
and text encoders (tiny, random weights, built offline) written by ``save_pretrained``."""
from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = ("a photo of the sneaker bag dress coat shirt trouser sandal boot pullover woman man in red blue green "
         "cat dog house tree on with and").split()
DIT_LABELS = ("sneaker", "bag", "dress", "coat", "shirt", "trouser", "sandal", "ankle boot", "pullover", "tabby cat, cat")
FAMILIES = ("flux", "sd3", "sdxl", "sd", "dit", "pixart-sigma", "flux2", "qwen-image", "z-image", "chroma")
VIDEO_FAMILIES = ("wan", "wan22", "ltx", "cogvideox")  # text-to-video pipelines: they make clips


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


def umt5_encoder(d_model: int):
    """Wan's text encoder class (UMT5EncoderModel), tiny, over ``t5_tokenizer``'s vocabulary."""
    from transformers import UMT5Config, UMT5EncoderModel

    cfg = UMT5Config(vocab_size=len(WORDS) + 3, d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=1, num_heads=2,
                     decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return UMT5EncoderModel(cfg).eval()


# --- byte-level BPE tokenizers (Qwen, Mistral) trained offline on a few sentences -------------------------------
# Qwen2's pre-tokenizer split; words seen in the corpus become single tokens, anything else falls back to bytes.
BPE_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                 "<|video_pad|>", "<think>", "</think>")
# Qwen2.5/Qwen3 chat format for plain-text messages; ``enable_thinking=False`` appends Qwen3's empty think block.
QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}")
MISTRAL_SPECIALS = ("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "<pad>", "[IMG]", "[IMG_BREAK]", "[IMG_END]",
                    "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]")
# Mistral-Small-3.1's format; message content may be a string or a list of {"type": "text", "text": ...} parts.
MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m.content is string %}{% set text = m.content %}"
    "{% else %}{% set text = m.content | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') %}"
    "{% endif %}"
    "{% if m.role == 'system' %}[SYSTEM_PROMPT]{{ text }}[/SYSTEM_PROMPT]"
    "{% elif m.role == 'user' %}[INST]{{ text }}[/INST]"
    "{% else %}{{ text }}{{ eos_token }}{% endif %}{% endfor %}")


def _bpe_corpus() -> list[str]:
    """The sentences the tiny BPE learns whole words from: WORDS and the fixed text the pipelines wrap prompts in
    (Qwen-Image's system prompt then tokenizes to 34 tokens, the count the pipeline drops, as with the real one)."""
    from diffusers.pipelines.flux2.system_messages import SYSTEM_MESSAGE

    qwen_image = ("<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, "
                  "text, spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n"
                  "<|im_end|>\n<|im_start|>assistant\n")
    return [" ".join(WORDS), qwen_image, SYSTEM_MESSAGE, "a photo of a cat"]


def _bpe(specials: tuple[str, ...]):
    """A byte-level BPE (Qwen2's pre-tokenizer) trained on ``_bpe_corpus``: (vocab, merges)."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(BPE_SPLIT), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=4096, min_frequency=1, special_tokens=list(specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_bpe_corpus(), trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return model["vocab"], merges


def qwen_tokenizer():
    """A ``Qwen2Tokenizer`` (the class Qwen-Image and Z-Image ship) over a tiny trained BPE, with a chat template."""
    from transformers import Qwen2Tokenizer

    vocab, merges = _bpe(QWEN_SPECIALS)
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, model_max_length=2048)
    tok.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIALS[1:])})
    tok.chat_template = QWEN_CHAT_TEMPLATE
    return tok


def mistral_tokenizer():
    """FLUX.2's tokenizer stand-in: a fast tokenizer over a tiny trained BPE with Mistral's special tokens and chat
    format. (FLUX.2 ships a ``PixtralProcessor``; it needs torchvision, which this environment lacks, and the
    pipeline's text-to-image path only calls ``apply_chat_template``, which the tokenizer provides.)"""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab, merges = _bpe(MISTRAL_SPECIALS)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(BPE_SPLIT), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", model_max_length=2048)
    fast.add_special_tokens({"additional_special_tokens": list(MISTRAL_SPECIALS[3:5] + MISTRAL_SPECIALS[6:])})
    fast.chat_template = MISTRAL_CHAT_TEMPLATE
    return fast


def mistral3_encoder(tok, hidden: int = 16, layers: int = 30):
    """FLUX.2's text encoder class (Mistral3ForConditionalGeneration: Mistral text model + Pixtral vision tower), tiny.
    30 layers because the pipeline stacks hidden states 10, 20 and 30 by default."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    ids = tok.convert_tokens_to_ids
    cfg = Mistral3Config(
        text_config=dict(model_type="mistral", vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1, head_dim=hidden // 2,
                         max_position_embeddings=1024, rms_norm_eps=1e-5, sliding_window=None,
                         bos_token_id=ids("<s>"), eos_token_id=ids("</s>"), pad_token_id=ids("<pad>")),
        vision_config=dict(model_type="pixtral", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=8, num_channels=3),
        image_token_index=ids("[IMG]"), spatial_merge_size=1, vision_feature_layer=-1)
    return Mistral3ForConditionalGeneration(cfg).eval()


def qwen25vl_encoder(tok, hidden: int = 16):
    """Qwen-Image's text encoder class (Qwen2_5_VLForConditionalGeneration), tiny, its vocabulary the tokenizer's."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = tok.convert_tokens_to_ids
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                         rope_scaling={"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
                         rope_theta=1000000.0, bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>")),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=hidden),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
    return Qwen2_5_VLForConditionalGeneration(cfg).eval()


def qwen3_encoder(tok, hidden: int = 16):
    """Z-Image's text encoder class (Qwen3Model), tiny; the pipeline reads its second-to-last hidden state."""
    from transformers import Qwen3Config, Qwen3Model

    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, head_dim=hidden // 2, max_position_embeddings=1024,
                      bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
                      eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"))
    return Qwen3Model(cfg).eval()


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
    if family in ("flux2", "qwen-image", "z-image", "chroma"):
        import tiny_families as tfam

        if family == "chroma":  # Chroma: a T5 text encoder only
            return tfam.ChromaPipeline(scheduler=tfam.chroma_scheduler(), vae=tfam.chroma_vae(seed),
                                       text_encoder=t5_encoder(tfam.CHROMA_TEXT_DIM), tokenizer=t5_tokenizer(),
                                       transformer=tfam.chroma_transformer(seed), image_encoder=None,
                                       feature_extractor=None)

        if family == "flux2":  # FLUX.2-dev: Flux2Pipeline, Mistral3 text encoder, guidance-distilled transformer
            tok = mistral_tokenizer()
            enc = mistral3_encoder(tok, hidden=tfam.FLUX2_TEXT_DIM // 3)
            return tfam.Flux2Pipeline(scheduler=tfam.flux2_scheduler(), vae=tfam.flux2_vae(seed), text_encoder=enc,
                                      tokenizer=tok, transformer=tfam.flux2_transformer(seed))
        tok = qwen_tokenizer()
        if family == "qwen-image":
            return tfam.QwenImagePipeline(scheduler=tfam.qwen_image_scheduler(), vae=tfam.qwen_image_vae(seed),
                                          text_encoder=qwen25vl_encoder(tok, tfam.QWEN_TEXT_DIM), tokenizer=tok,
                                          transformer=tfam.qwen_image_transformer(seed))
        return tfam.ZImagePipeline(scheduler=tfam.z_image_scheduler(), vae=tfam.z_image_vae(seed),
                                   text_encoder=qwen3_encoder(tok, tfam.Z_IMAGE_TEXT_DIM), tokenizer=tok,
                                   transformer=tfam.z_image_transformer(seed))
    if family in VIDEO_FAMILIES:
        return build_video(family, seed)
    raise ValueError(family)


def build_video(family: str, seed: int = 0):
    """A text-to-video pipeline of ``family`` (``VIDEO_FAMILIES``): the tiny transformer, VAE and scheduler of
    ``tiny_families`` with a T5-style tokenizer and a tiny T5 (Wan: UMT5) text encoder. Wan and Wan 2.2 (two experts)
    make clips of 4k + 1 frames at multiples of 16 px, LTX 8k + 1 frames at multiples of 32 px, CogVideoX 4k + 1
    frames at multiples of 16 px (its transformer takes the pipeline's 226 text tokens, as the real one)."""
    import tiny_families as tfam

    if family in ("wan", "wan22"):
        experts = dict(transformer=tfam.wan_transformer(seed))
        if family == "wan22":  # Wan 2.2 A14B: a high-noise and a low-noise expert, switched at t = 875
            experts.update(transformer_2=tfam.wan_transformer(seed + 1), boundary_ratio=tfam.WAN22_BOUNDARY_RATIO)
        return tfam.WanPipeline(tokenizer=t5_tokenizer(), text_encoder=umt5_encoder(tfam.WAN_TEXT_DIM),
                                vae=tfam.wan_vae(seed), scheduler=tfam.wan_scheduler(), **experts)
    if family == "ltx":
        return tfam.LTXPipeline(scheduler=tfam.ltx_scheduler(), vae=tfam.ltx_vae(seed),
                                text_encoder=t5_encoder(tfam.LTX_TEXT_DIM), tokenizer=t5_tokenizer(),
                                transformer=tfam.ltx_transformer(seed))
    return tfam.CogVideoXPipeline(tokenizer=t5_tokenizer(), text_encoder=t5_encoder(tfam.COGVIDEOX_TEXT_DIM),
                                  vae=tfam.cogvideox_vae(seed), scheduler=tfam.cogvideox_scheduler(),
                                  transformer=tfam.cogvideox_transformer(seed, text_len=226))


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
