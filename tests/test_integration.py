"""What caching users ask for: torch.compile without per-step recompiles, CPU offload, LoRA."""
import pytest
import torch

import accel
from tiny import BUILDERS, images, pixart_inputs, tiny_pixart


def _run(pipe, **kw):
    pipe.set_progress_bar_config(disable=True)
    return images(pipe, **pixart_inputs(**kw))


def test_compiled_blocks_do_not_recompile_from_step_to_step():
    import torch._dynamo as dynamo
    from torch._dynamo.utils import counters

    dynamo.reset()
    pipe = tiny_pixart()
    cached_eager = None
    accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 6, interval=2))
    cached_eager = _run(pipe)
    for blk in pipe.transformer.transformer_blocks:
        blk.compile(backend="eager", dynamic=False)
    counters.clear()
    out = _run(pipe)
    graphs_first_call = counters["stats"]["unique_graphs"]
    assert graphs_first_call > 0  # the blocks really were compiled
    assert torch.allclose(out, cached_eager, atol=1e-5)
    out2 = _run(pipe)
    assert torch.equal(out, out2)
    # a second call (6 more steps of compute/reuse decisions) compiles nothing new
    assert counters["stats"]["unique_graphs"] == graphs_first_call
    # nor does a call with twice the steps: the decisions are graph breaks, not guards on the step
    with pytest.warns(UserWarning, match="resampled"):
        _run(pipe, steps=12)
    assert counters["stats"]["unique_graphs"] == graphs_first_call
    accel.remove(pipe)
    dynamo.reset()


def test_group_offloading_composes():
    from diffusers.hooks import apply_group_offloading

    pipe = tiny_pixart()
    ref = _run(pipe)
    cached_ref = tiny_pixart()
    accel.apply(cached_ref, cache=accel.CacheSchedule.uniform(cached_ref, 6, interval=3))
    cached = _run(cached_ref)
    apply_group_offloading(pipe.transformer, onload_device=torch.device("cpu"), offload_device=torch.device("cpu"),
                           offload_type="block_level", num_blocks_per_group=1)
    accel.apply(pipe, cache=accel.CacheSchedule.full(pipe, 6))
    assert torch.equal(_run(pipe), ref)
    accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 6, interval=3))
    assert torch.equal(_run(pipe), cached)
    accel.remove(pipe)
    assert torch.equal(_run(pipe), ref)


def test_model_cpu_offload_composes():
    pipe = tiny_pixart()
    ref = _run(pipe)
    pipe.enable_model_cpu_offload(device="cpu")  # accelerate hooks; the 'GPU' is the CPU here
    assert hasattr(pipe.transformer, "_hf_hook")
    accel.apply(pipe, cache=accel.CacheSchedule.full(pipe, 6))
    assert torch.equal(_run(pipe), ref)
    accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 6, interval=3))
    assert not torch.equal(_run(pipe), ref)
    assert accel.stats(pipe).reused > 0
    accel.remove(pipe)
    assert torch.equal(_run(pipe), ref)


@pytest.mark.parametrize("order", ["lora_first", "accel_first"])
def test_lora_composes(order):
    peft = pytest.importorskip("peft")
    pipe = tiny_pixart()
    base = _run(pipe)

    def add_lora():
        torch.manual_seed(1)
        # PixArt has no add_adapter (PeftAdapterMixin); inject the LoRA layers with peft as diffusers does
        peft.inject_adapter_in_model(peft.LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_v"],
                                                     init_lora_weights=False), pipe.transformer)

    if order == "lora_first":
        add_lora()
        lora_ref = _run(pipe)
        accel.apply(pipe, cache=accel.CacheSchedule.full(pipe, 6))
    else:
        accel.apply(pipe, cache=accel.CacheSchedule.full(pipe, 6))
        add_lora()
        accel.remove(pipe)
        lora_ref = _run(pipe)
        accel.apply(pipe, cache=accel.CacheSchedule.full(pipe, 6))
    assert not torch.equal(lora_ref, base)  # the LoRA is really active
    assert torch.equal(_run(pipe), lora_ref)
    accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 6, interval=2))
    _run(pipe)
    assert accel.stats(pipe).reused > 0
