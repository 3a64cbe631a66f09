"""Family adapters: where each denoiser's cacheable blocks and components live, described as data.

A *block* is one entry of the schedule's block axis; a *component* is a submodule of the block whose
output (a residual branch) the cache stores and reuses. No model forward is copied: the cache hooks
wrap the component modules' own ``forward``.

Adding a family is one ``register_family(...)`` call with its layout and a tiny-config test. A denoiser with no
layout of its own whose class declares ``_repeated_blocks`` (as about 45 diffusers transformers do, for
``compile_repeated_blocks``) gets a generic one (``generic_layout``): each repeated block is one component, the
block's residual on the hidden states (and on the encoder hidden states where the block returns them), read
through diffusers' ``TransformerBlockRegistry`` or ``register_block_io``.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class BlockGroup:
    """A list of blocks inside the denoiser and the components each of them has.

    ``path`` is the attribute path of an ``nn.ModuleList`` (e.g. ``"transformer_blocks"``);
    ``components`` maps a component name to the submodule attribute of each block. A component
    whose submodule is ``None`` on a given block (SD3's last ``ff_context``) is simply not cached.
    """

    path: str
    components: tuple[tuple[str, str], ...]  # (name, attribute); attribute "": the block itself, its residual cached


@dataclass(frozen=True)
class BlockIO:
    """Where a transformer block takes and returns its hidden states (and encoder hidden states): what caching the
    block's residual needs. ``*_out`` is an index into the returned tuple; ``hidden_out=None``: the block returns
    the hidden states tensor itself. ``*_pos``: the argument's position in ``forward`` (for positional calls)."""

    hidden_arg: str
    hidden_pos: int
    hidden_out: int | None = None
    encoder_arg: str | None = None
    encoder_pos: int | None = None
    encoder_out: int | None = None

    def inputs(self, args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The hidden states and encoder hidden states (None when the block returns none) of one call."""
        def arg(name, pos):
            return kwargs[name] if name in kwargs else (args[pos] if pos is not None and pos < len(args) else None)
        enc = arg(self.encoder_arg, self.encoder_pos) if self.encoder_out is not None else None
        return arg(self.hidden_arg, self.hidden_pos), enc

    def outputs(self, out) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The hidden states and encoder hidden states a block returned (a bare tensor: the hidden states)."""
        if isinstance(out, torch.Tensor):
            return out, None
        if self.hidden_out is None:
            raise TypeError(f"the block was expected to return its hidden states tensor, got a {type(out).__name__}")
        return out[self.hidden_out], (out[self.encoder_out] if self.encoder_out is not None else None)

    def rebuild(self, template, hidden: torch.Tensor, encoder: torch.Tensor | None):
        """The block's return value with these hidden states, laid out as ``template`` (an earlier return value)."""
        if isinstance(template, torch.Tensor):
            return hidden
        out = list(template)
        out[self.hidden_out] = hidden
        if self.encoder_out is not None:
            out[self.encoder_out] = encoder
        return type(template)(out)


@dataclass(frozen=True)
class ComponentRef:
    """One cacheable module: its place on the schedule axes and in the model. ``io`` is set when the component
    is a whole block whose residual is cached (generic layouts), None when the module's output is."""

    block: int
    component: int
    name: str  # fully qualified module name inside the denoiser
    module: nn.Module = field(compare=False, repr=False)
    io: BlockIO | None = field(default=None, compare=False)
    expert: int = 0  # which of the pipeline's denoisers holds it (Wan 2.2: 0 high noise, 1 low noise)


@dataclass(frozen=True)
class FamilyLayout:
    """The layout of one denoiser family.

    ``always_compute_blocks``: blocks a uniform schedule never reuses (the shallow UNet level of
    DeepCache, which carries the fresh skip connection).
    """

    name: str
    denoiser_classes: tuple[str, ...]
    groups: tuple[BlockGroup, ...] = ()
    always_compute_blocks: tuple[int, ...] = ()
    ffn_components: tuple[str, ...] = ("ff",)  # BAC's Bubbling Union refreshes errors before these
    cfg_cond_first: bool = False  # order of the CFG batch the pipeline builds (DiT: cond first)
    # the denoiser gets the scheduler's timestep times this (FLUX: 1/1000); read only where the scheduler keeps no
    # step index to read its own timestep from
    model_timestep_scale: float = 1.0
    output_sign: float = 1.0  # -1: the denoiser returns minus the scheduler's prediction (Z-Image)
    cfg_scale_offset: float = 0.0  # the pipeline's guidance w is the CFG scale w + this (Z-Image: c + w (c - u))

    @property
    def component_names(self) -> tuple[str, ...]:
        names: list[str] = []
        for g in self.groups:
            names += [c for c, _ in g.components if c not in names]
        return tuple(names)

    def blocks(self, denoiser: nn.Module) -> list[list[ComponentRef]]:
        """Per block, the component modules present in this denoiser."""
        cnames = self.component_names
        out: list[list[ComponentRef]] = []
        for g in self.groups:
            for i, block in enumerate(_get(denoiser, g.path)):
                refs = []
                for cname, attr in g.components:
                    if not attr:  # the whole block: its residual is what is cached
                        refs.append(ComponentRef(len(out), cnames.index(cname), f"{g.path}.{i}", block,
                                                 block_io(type(block))))
                        continue
                    mod = getattr(block, attr, None)
                    if isinstance(mod, nn.Module):
                        refs.append(ComponentRef(len(out), cnames.index(cname), f"{g.path}.{i}.{attr}", mod))
                out.append(refs)
        return out


def _get(root: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        root = getattr(root, part)
    return root


class UNetLevels(FamilyLayout):
    """UNet2DCondition as DeepCache-style depth levels: level d = (down_blocks[d], up_blocks[L-1-d]),
    the mid block belonging to the deepest level. Reusing levels >= d while computing the shallower
    ones is DeepCache's skip branch."""

    def blocks(self, denoiser: nn.Module) -> list[list[ComponentRef]]:
        n = len(denoiser.down_blocks)
        cn = self.component_names
        out = []
        for d in range(n):
            refs = [ComponentRef(d, cn.index("down"), f"down_blocks.{d}", denoiser.down_blocks[d])]
            if d == n - 1 and denoiser.mid_block is not None:
                refs.append(ComponentRef(d, cn.index("mid"), "mid_block", denoiser.mid_block))
            refs.append(ComponentRef(d, cn.index("up"), f"up_blocks.{n - 1 - d}", denoiser.up_blocks[n - 1 - d]))
            out.append(refs)
        return out

    @property
    def component_names(self) -> tuple[str, ...]:
        return ("down", "mid", "up")


_FAMILIES: dict[str, FamilyLayout] = {}


def register_family(layout: FamilyLayout) -> FamilyLayout:
    for cls in layout.denoiser_classes:
        _FAMILIES[cls] = layout
    return layout


PIXART = register_family(FamilyLayout(
    "pixart", ("PixArtTransformer2DModel",),
    (BlockGroup("transformer_blocks", (("attn1", "attn1"), ("attn2", "attn2"), ("ff", "ff"))),),
))
DIT = register_family(FamilyLayout(
    "dit", ("DiTTransformer2DModel",),
    (BlockGroup("transformer_blocks", (("attn1", "attn1"), ("ff", "ff"))),),
    cfg_cond_first=True,
))
FLUX = register_family(FamilyLayout(
    "flux", ("FluxTransformer2DModel",),
    (
        BlockGroup("transformer_blocks", (("attn", "attn"), ("ff", "ff"), ("ff_context", "ff_context"))),
        BlockGroup("single_transformer_blocks", (("attn", "attn"), ("proj_mlp", "proj_mlp"), ("proj_out", "proj_out"))),
    ),
    ffn_components=("ff", "ff_context", "proj_mlp"),
    model_timestep_scale=1e-3,
))
SD3 = register_family(FamilyLayout(
    "sd3", ("SD3Transformer2DModel",),
    (BlockGroup("transformer_blocks", (("attn", "attn"), ("attn2", "attn2"), ("ff", "ff"), ("ff_context", "ff_context"))),),
    ffn_components=("ff", "ff_context"),
))
# The families of 2026: component layouts, so BAC and ECAD search attention and feed-forwards apart; the generic
# layout (whole blocks) covers them too. Their pipelines pass the denoiser t / 1000 (Z-Image: 1 - t / 1000).
FLUX2 = register_family(FamilyLayout(
    "flux2", ("Flux2Transformer2DModel",),
    (
        BlockGroup("transformer_blocks", (("attn", "attn"), ("ff", "ff"), ("ff_context", "ff_context"))),
        BlockGroup("single_transformer_blocks", (("attn", "attn"),)),  # attention and MLP fused in one module
    ),
    ffn_components=("ff", "ff_context"),
    model_timestep_scale=1e-3,
))
QWEN_IMAGE = register_family(FamilyLayout(
    "qwen-image", ("QwenImageTransformer2DModel",),
    (BlockGroup("transformer_blocks", (("attn", "attn"), ("img_mlp", "img_mlp"), ("txt_mlp", "txt_mlp"))),),
    ffn_components=("img_mlp", "txt_mlp"),
    model_timestep_scale=1e-3,
))
Z_IMAGE = register_family(FamilyLayout(
    "z-image", ("ZImageTransformer2DModel",),
    tuple(BlockGroup(path, (("attention", "attention"), ("feed_forward", "feed_forward")))
          for path in ("noise_refiner", "context_refiner", "layers")),  # image tokens, caption tokens, both
    ffn_components=("feed_forward",),
    cfg_cond_first=True, output_sign=-1.0, cfg_scale_offset=1.0,
))
UNET = register_family(UNetLevels("unet", ("UNet2DConditionModel",), always_compute_blocks=(0,), ffn_components=()))


def supported_families() -> dict[str, tuple[str, ...]]:
    return {lay.name: lay.denoiser_classes for lay in dict.fromkeys(_FAMILIES.values())}


def find_denoiser(pipe) -> tuple[str, nn.Module]:
    """The pipeline's denoiser attribute name and module (``transformer`` or ``unet``)."""
    if isinstance(pipe, nn.Module):
        return "", pipe
    for attr in ("transformer", "unet"):
        mod = getattr(pipe, attr, None)
        if isinstance(mod, nn.Module):
            return attr, mod
    raise ValueError(f"{type(pipe).__name__} has no `transformer` or `unet` denoiser for accel to attach to.")


EXPERT_ATTRS = ("transformer_2",)  # denoisers a pipeline switches to mid-call (Wan 2.2's low-noise expert)


def find_experts(pipe) -> list[tuple[str, nn.Module]]:
    """Every denoiser the pipeline calls, the one ``find_denoiser`` names first: ``transformer`` and, where the
    pipeline has one, the expert it switches to below a boundary timestep (Wan 2.2's ``transformer_2``)."""
    first = find_denoiser(pipe)
    if isinstance(pipe, nn.Module):
        return [first]
    more = [(a, m) for a in EXPERT_ATTRS if isinstance(m := getattr(pipe, a, None), nn.Module) and m is not first[1]]
    return [first, *more]


def experts_layout(pipe, name: str | None = None) -> FamilyLayout:
    """The layout the experts of ``pipe`` share (``layout_named``: their own, or the generic one by name), or a
    ``NotImplementedError`` when they differ."""
    experts = find_experts(pipe)
    layouts = [layout_named(m, name) for _, m in experts]
    if any(lay.name != layouts[0].name for lay in layouts):
        raise NotImplementedError("the pipeline's denoisers have different layouts ("
                                  + ", ".join(f"{a}: {lay.name}" for (a, _), lay in zip(experts, layouts))
                                  + "): accel caches experts of one family")
    return layouts[0]


def experts_blocks(pipe, layout: FamilyLayout) -> list[list[ComponentRef]]:
    """The blocks of every expert of ``pipe`` in ``layout``, one after another on the schedule's block axis (a call
    runs one expert at a step, so the other's blocks sit idle then)."""
    out: list[list[ComponentRef]] = []
    for e, (_, den) in enumerate(find_experts(pipe)):
        for blk in layout.blocks(den):
            out.append([dataclasses.replace(r, block=len(out), expert=e) for r in blk])
    return out


def experts_fingerprint(pipe) -> str:
    """``fingerprint`` of the denoiser, or of the set of experts (their classes and configs, in order)."""
    experts = find_experts(pipe)
    if len(experts) == 1:
        return fingerprint(experts[0][1])
    blob = json.dumps([[a, fingerprint(m)] for a, m in experts])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def find_layout(denoiser: nn.Module) -> tuple[FamilyLayout | None, str]:
    """The layout of a denoiser (its family's, else the generic one from ``_repeated_blocks``) and, when there is
    none, the sentence saying why and how to add one."""
    cls = type(getattr(denoiser, "_orig_mod", denoiser))
    for klass in cls.__mro__:
        if klass.__name__ in _FAMILIES:
            return _FAMILIES[klass.__name__], ""
    try:
        generic = generic_layout(denoiser)
    except ValueError as e:
        return None, str(e)
    if generic is not None:
        return generic, ""
    supported = ", ".join(f"{k} ({', '.join(v)})" for k, v in supported_families().items())
    return None, (f"{cls.__name__} has no block layout accel knows: it declares no `_repeated_blocks` (nor "
                  "`_no_split_modules`) and no family "
                  f"is registered for it (families: {supported}); add one with "
                  "accel.pipelines.families.register_family(FamilyLayout(...)) (docs/architecture.md)")


def layout_named(denoiser: nn.Module, name: str | None) -> FamilyLayout:
    """The layout called ``name`` of a denoiser: its family's, or the generic one (``"generic:<class>"``) of a
    family that has its own too, to compare the two; None: its default (``layout_of``)."""
    layout = layout_of(denoiser)
    if name is None or name == layout.name:
        return layout
    generic = generic_layout(denoiser) if name.startswith(GENERIC + ":") else None
    if generic is None or generic.name != name:
        raise NotImplementedError(f"{type(denoiser).__name__} has no layout {name!r} (its own: {layout.name!r}"
                                  f"{f', generic: {generic.name!r}' if generic else ''})")
    return generic


def layout_of(denoiser: nn.Module) -> FamilyLayout:
    """The block layout of a denoiser, or a ``NotImplementedError`` saying why there is none and how to add it."""
    layout, why = find_layout(denoiser)
    if layout is None:
        raise NotImplementedError(why)
    return layout


# -- the generic layout ----------------------------------------------------------------------------------------
GENERIC = "generic"
_BLOCK_IO: dict[str, tuple[int | None, int | None]] = {}
_GENERIC: dict[tuple, FamilyLayout] = {}


def register_block_io(block_class: str, hidden_out: int | None, encoder_out: int | None = None) -> None:
    """Say where a block class not in diffusers' ``TransformerBlockRegistry`` returns its hidden states (index
    into its returned tuple; None: it returns the tensor itself) and encoder hidden states (None: it returns
    none), so the generic layout can cache its residual."""
    _BLOCK_IO[block_class] = (hidden_out, encoder_out)


# blocks diffusers does not register, read from their forward: (encoder_hidden_states, hidden_states)
register_block_io("ChromaTransformerBlock", 1, 0)
register_block_io("ChromaSingleTransformerBlock", None)
# (hidden_states, encoder_hidden_states), as HunyuanVideo's blocks that diffusers registers
register_block_io("HunyuanVideo15TransformerBlock", 0, 1)


@functools.lru_cache(maxsize=None)
def block_io(cls: type) -> BlockIO:
    """Where blocks of ``cls`` take and return their hidden states: accel's ``register_block_io``, else diffusers'
    ``TransformerBlockRegistry``, else (a block taking no encoder hidden states) the tensor it returns."""
    params = [p for p in inspect.signature(cls.forward).parameters if p != "self"]
    hidden_name, encoder_name = "hidden_states", "encoder_hidden_states"
    if cls.__name__ in _BLOCK_IO:
        hidden_out, encoder_out = _BLOCK_IO[cls.__name__]
    else:
        meta = _diffusers_block_metadata(cls)
        if meta is not None:
            hidden_out, encoder_out = meta.return_hidden_states_index, meta.return_encoder_hidden_states_index
            hidden_name, encoder_name = meta.hidden_states_argument_name, meta.encoder_hidden_states_argument_name
        elif encoder_name not in params:
            hidden_out, encoder_out = None, None
        else:
            raise ValueError(f"{cls.__name__} is in neither diffusers' TransformerBlockRegistry nor accel's and takes "
                             "encoder hidden states, so accel cannot tell which of its outputs is which: say so with "
                             f"accel.pipelines.families.register_block_io({cls.__name__!r}, hidden_out=..., "
                             "encoder_out=...)")
    hidden_arg = hidden_name if hidden_name in params else params[0]  # Z-Image's blocks call it `x`
    if encoder_out is not None and encoder_name not in params:
        raise ValueError(f"{cls.__name__} returns encoder hidden states but takes no {encoder_name!r} argument")
    return BlockIO(hidden_arg, params.index(hidden_arg), hidden_out,
                   encoder_name if encoder_out is not None else None,
                   params.index(encoder_name) if encoder_out is not None else None, encoder_out)


def _diffusers_block_metadata(cls: type):
    try:
        from diffusers.hooks._helpers import TransformerBlockRegistry
    except ImportError:  # an older diffusers
        return None
    for klass in cls.__mro__:
        try:
            return TransformerBlockRegistry.get(klass)
        except ValueError:
            continue
    return None


def generic_layout(denoiser: nn.Module) -> FamilyLayout | None:
    """The generic layout of a denoiser whose class declares ``_repeated_blocks`` (else ``_no_split_modules``; None
    when it declares neither): each
    ``nn.ModuleList`` of repeated blocks, in the order the denoiser registers them, one component per block (its
    residual). A ``ValueError`` when a block's outputs cannot be told apart (``block_io``)."""
    root = getattr(denoiser, "_orig_mod", denoiser)
    # _no_split_modules (the block classes accelerate keeps on one device) where a class declares no repeated
    # blocks: CogVideoX's transformer
    names = tuple(getattr(type(root), "_repeated_blocks", None) or getattr(type(root), "_no_split_modules", None) or ())
    if not names:
        return None
    paths: list[str] = []
    for path, mod in root.named_modules():
        if (isinstance(mod, nn.ModuleList) and len(mod) and all(type(b).__name__ in names for b in mod)
                and not any(path.startswith(p + ".") for p in paths)):
            paths.append(path)
    if not paths:
        return None
    key = (type(root).__name__, tuple(paths))
    if key not in _GENERIC:
        for path in paths:
            for b in dict.fromkeys(type(b) for b in _get(root, path)):
                block_io(b)  # refuse now, with the reason, a block whose outputs cannot be told apart
        _GENERIC[key] = FamilyLayout(f"{GENERIC}:{type(root).__name__}", (type(root).__name__,),
                                     tuple(BlockGroup(p, (("block", ""),)) for p in paths), ffn_components=())
    return _GENERIC[key]


def timestep_arg(denoiser: nn.Module) -> str:
    """The name of the denoiser's timestep argument (``timestep``; Z-Image: ``t``)."""
    params = inspect.signature(type(getattr(denoiser, "_orig_mod", denoiser)).forward).parameters
    return next((p for p in ("timestep", "t", "timesteps") if p in params), "timestep")


def fingerprint(denoiser: nn.Module) -> str:
    """A short hash of the denoiser class and config: what a schedule or statistics file was made for."""
    cfg = dict(getattr(denoiser, "config", {}))
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    blob = json.dumps([type(denoiser).__name__, cfg], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def latent_hw(pipe) -> tuple[int, int]:
    """Latent height and width of the pipeline's default call (``accel_defaults`` height/width, else the
    denoiser's sample size)."""
    _, den = find_denoiser(pipe)
    f = getattr(pipe, "vae_scale_factor", 8)
    size = den.config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    d = getattr(pipe, "accel_defaults", {})
    h, w = d.get("height"), d.get("width")
    return (h // f, w // f) if h and w else size
