"""accel with diffusers' context parallelism: one image's tokens spread over N processes (Ulysses or ring).

accel does not shard anything itself. diffusers' ``enable_parallelism`` splits the denoiser's input sequence
over the ranks at its entry, runs attention through an all-to-all (Ulysses) or a ring, and gathers the output.
accel's hooks then see, per rank, the same steps and the same decisions; what they store is the rank's shard.

What composes (tested on 2 CPU processes, gloo):

- cache schedules (uniform, BAC and ECAD schedule files, held or forecast reuse): the schedule is fixed in
  advance, so every rank skips the same components (and their collectives) at the same step;
- guidance (APG, frequency-aware CFG) and solvers: they act on the denoiser's gathered output;
- ``accel.stats``: MACs and time of this rank (see ``rank_report``).

What is refused: token refresh (each rank would pick its tokens from its own shard, not the image's) and
accel's attention processors (diffusers' context parallelism lives in its attention dispatch, which accel's
processors replace).

Example (on 2 GPUs, ``torchrun --nproc_per_node 2 run.py``):
    >>> import accel, torch  # doctest: +SKIP
    >>> from accel.parallel import ContextParallel, enable_context_parallel  # doctest: +SKIP
    >>> pipe = accel.pipelines.reference.load_pipeline("my-flux-folder", dtype=torch.bfloat16, device="cuda")  # doctest: +SKIP
    >>> enable_context_parallel(pipe, ContextParallel.parse("ulysses:2"))  # doctest: +SKIP
    >>> accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 28, interval=2))  # doctest: +SKIP
    >>> image = pipe("a photo of a sneaker", num_inference_steps=28).images[0]  # same image on every rank  # doctest: +SKIP
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .dist import init_group

KINDS = ("ulysses", "ring")
# diffusers' attention backends that raise on ``return_lse=True``, which ring attention needs
NO_LSE = ("native", "_native_efficient", "_native_math", "_native_npu", "_native_xla", "sage_blackwell_hub",
          "sage_varlen", "xformers")
INPUT_HOOK = "cp_input---"  # the name diffusers gives the split hook on the model itself (plan key "")


@dataclass(frozen=True)
class ContextParallel:
    """Which context parallelism and over how many processes: ``ulysses:2``, ``ring:4``."""

    kind: str
    degree: int

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"context parallelism {self.kind!r}: one of {', '.join(KINDS)}")
        if self.degree < 2:
            raise ValueError(f"context parallelism needs at least 2 processes, got {self.degree}")

    @classmethod
    def parse(cls, text: str) -> "ContextParallel":
        """``"ulysses:2"`` -> ContextParallel("ulysses", 2)."""
        kind, _, degree = text.partition(":")
        if not degree.isdigit():
            raise ValueError(f"context parallelism {text!r}: KIND:N with KIND one of {', '.join(KINDS)}, "
                             "e.g. ulysses:2")
        return cls(kind, int(degree))

    def __str__(self) -> str:
        return f"{self.kind}:{self.degree}"


def enable_context_parallel(pipe, spec: ContextParallel) -> None:
    """Join the process group ``torchrun`` / ``accelerate launch`` prepared and call diffusers'
    ``enable_parallelism`` with ``spec`` on the pipeline's denoiser (on each of Wan 2.2's experts); a clear
    ``ValueError`` when it cannot run.

    The process group's backend is NCCL on CUDA and gloo on CPU. Call it before ``accel.apply`` (or apply again
    after it): accel's hooks must sit outside diffusers' split to see whole inputs.
    """
    from diffusers import ContextParallelConfig
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    from .pipelines.families import find_experts

    # every check before anything changes (the process group, the models)
    if not torch.distributed.is_initialized():
        check_launch(spec)
    experts = [m for _, m in find_experts(pipe)]
    for den in experts:
        if getattr(den, "_parallel_config", None) is not None:
            raise ValueError(f"parallelism is already enabled on this {type(den).__name__}")
        if getattr(den, "_cp_plan", None) is None:
            raise ValueError(f"diffusers ships no context-parallel plan for {type(den).__name__} (it has plans for "
                             "FLUX, Wan, LTX, QwenImage and a few others): call "
                             "denoiser.enable_parallelism(config=..., cp_plan=YOUR_PLAN) yourself")
    if torch.accelerator.device_count() < 1:
        # diffusers places rank r on accelerator r % device_count
        raise ValueError("diffusers' context parallelism places each rank on an accelerator (CUDA, XPU, ...) "
                         "and this machine has none")
    backends = set().union(*(_attention_backends(den) for den in experts))
    unsupported = sorted(b for b in backends
                         if not _AttentionBackendRegistry._is_context_parallel_available(AttentionBackendName(b)))
    if unsupported:
        raise ValueError(f"the attention backend {unsupported[0]!r} does not support context parallelism: set one "
                         "that does first (denoiser.set_attention_backend(...), e.g. 'native' or 'flash')")
    if spec.kind == "ring" and backends & set(NO_LSE):
        raise ValueError(f"ring attention merges partial results by their log-sum-exp, which the "
                         f"{sorted(backends & set(NO_LSE))[0]!r} attention backend does not return: set one that "
                         "does first (e.g. denoiser.set_attention_backend('flash') on a GPU), or use ulysses")
    if not torch.distributed.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        init_group("nccl" if cuda else "gloo")
    world = torch.distributed.get_world_size()
    if world != spec.degree:
        raise ValueError(f"context parallelism {spec} over {world} processes: launch {spec.degree}")
    for den in experts:
        try:
            den.enable_parallelism(config=ContextParallelConfig(**{f"{spec.kind}_degree": spec.degree}))
        except (ValueError, RuntimeError, NotImplementedError, AssertionError) as e:
            den._parallel_config = None  # diffusers records the config before some of its checks
            raise ValueError(f"diffusers' enable_parallelism({spec}) refused this model: {e}") from None


def check_launch(spec: ContextParallel) -> None:
    """``ValueError`` unless this process was launched as one of ``spec.degree`` (``WORLD_SIZE``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != spec.degree:
        raise ValueError(f"context parallelism {spec} runs on {spec.degree} processes and this is {world}: launch "
                         f"with torchrun --nproc_per_node {spec.degree} (or accelerate launch --num_processes "
                         f"{spec.degree})")


def _attention_backends(denoiser: torch.nn.Module) -> set[str]:
    """The attention backends the denoiser's dispatching processors use (diffusers' active one where unset)."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    found = set()
    for module in denoiser.modules():
        proc = getattr(module, "processor", None)
        if proc is not None and hasattr(proc, "_attention_backend"):
            backend = proc._attention_backend or _AttentionBackendRegistry.get_active_backend()[0]
            found.add(str(getattr(backend, "value", backend)))
    return found


def context_parallel_of(denoiser: torch.nn.Module):
    """The denoiser's diffusers ``ContextParallelConfig`` when context parallelism is on, else None."""
    config = getattr(denoiser, "_parallel_config", None)
    return getattr(config, "context_parallel_config", None) if config is not None else None


def split_is_outside(denoiser: torch.nn.Module, hook_name: str) -> bool:
    """True when diffusers' input split was registered after ``hook_name`` on ``denoiser``, so it runs first and
    the hook sees one rank's shard instead of the whole input."""
    registry = getattr(denoiser, "_diffusers_hook", None)
    order = getattr(registry, "_hook_order", [])
    return INPUT_HOOK in order and hook_name in order and order.index(INPUT_HOOK) > order.index(hook_name)


def inner_input_splits(module: torch.nn.Module, hook) -> list:
    """diffusers' context-parallel input splits registered on ``module`` before ``hook``, in the order they run
    inside it (a plan that splits at a block, as Wan's splits at ``blocks.0``): what the block really receives."""
    registry = getattr(module, "_diffusers_hook", None)
    if registry is None:
        return []
    order = registry._hook_order
    mine = next((name for name, h in registry.hooks.items() if h is hook), None)
    if mine is None:
        return []
    return [registry.hooks[n] for n in reversed(order[: order.index(mine)]) if n.startswith(INPUT_HOOK)]


def describe(config) -> str:
    """``ulysses:2`` for a diffusers ``ContextParallelConfig``."""
    ring, ulysses = config.ring_degree or 1, config.ulysses_degree or 1
    return " x ".join(f"{k}:{d}" for k, d in (("ring", ring), ("ulysses", ulysses)) if d > 1) or "none"


def check_composes(denoiser: torch.nn.Module, keeps_inputs: bool, attention: str | None,
                   step_hook: str | None = None) -> None:
    """Raise ``ValueError`` naming what of accel cannot run under the denoiser's context parallelism; with
    ``step_hook`` (at a call), also when diffusers' split runs before that hook."""
    config = context_parallel_of(denoiser)
    if config is None:
        return
    what = describe(config)
    if keeps_inputs:
        raise ValueError(f"token refresh under context parallelism ({what}) would pick each rank's tokens from "
                         "its own shard rather than from the whole image: use a cache schedule instead")
    if attention is not None:
        raise ValueError(f"accel's attention processors replace diffusers' attention dispatch, where context "
                         f"parallelism ({what}) exchanges the sequence between ranks: leave attention=None")
    if step_hook is not None and split_is_outside(denoiser, step_hook):
        raise ValueError(f"context parallelism ({what}) was enabled after accel.apply, so accel would see one "
                         "rank's shard of the inputs: call accel.apply(pipe, ...) again after enable_parallelism")


def rank_report(denoiser: torch.nn.Module) -> dict | None:
    """For ``accel.stats`` under context parallelism: the layout and this rank; None without it.

    The rank's MACs are its equal share of the token-wise and attention work (diffusers' equipartition: equal
    token shards for the linear layers, equal head groups for attention) plus what every rank repeats (the
    timestep and text embeddings, the final layer); the whole call's are the sum over the ranks.
    """
    config = context_parallel_of(denoiser)
    if config is None:
        return None
    return {"layout": describe(config), "rank": torch.distributed.get_rank(),
            "ranks": torch.distributed.get_world_size()}
