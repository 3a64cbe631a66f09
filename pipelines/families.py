"""Family adapters: where each denoiser's cacheable blocks and components live, described as data.

A *block* is one entry of the schedule's block axis; a *component* is a submodule of the block whose
output (a residual branch) the cache stores and reuses. No model forward is copied: the cache hooks
wrap the component modules' own ``forward``.

Adding a family is one ``register_family(...)`` call with its layout and a tiny-config test.
"""
from __future__ import annotations

import hashlib
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
    components: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ComponentRef:
    """One cacheable module: its place on the schedule axes and in the model."""

    block: int
    component: int
    name: str  # fully qualified module name inside the denoiser
    module: nn.Module = field(compare=False, repr=False)


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
    model_timestep_scale: float = 1.0  # the denoiser gets the scheduler's timestep times this (FLUX: 1/1000)
    packed_latents: bool = False  # latents as 2x2-patch tokens [B, rows * cols, 4C] with img_ids (FLUX)

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
    model_timestep_scale=1e-3, packed_latents=True,
))
SD3 = register_family(FamilyLayout(
    "sd3", ("SD3Transformer2DModel",),
    (BlockGroup("transformer_blocks", (("attn", "attn"), ("attn2", "attn2"), ("ff", "ff"), ("ff_context", "ff_context"))),),
    ffn_components=("ff", "ff_context"),
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


def layout_of(denoiser: nn.Module) -> FamilyLayout:
    """The family layout of a denoiser, or a clear error naming what is supported."""
    cls = type(getattr(denoiser, "_orig_mod", denoiser))
    for klass in cls.__mro__:
        if klass.__name__ in _FAMILIES:
            return _FAMILIES[klass.__name__]
    supported = ", ".join(f"{k} ({', '.join(v)})" for k, v in supported_families().items())
    raise NotImplementedError(f"accel does not support the denoiser {cls.__name__} yet. Supported families: {supported}.")


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
