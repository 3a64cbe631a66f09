"""The block fast path (``accel.cache.block_skip``) equals the hooked block forward exactly."""
import dataclasses

import pytest
import torch

import accel
from accel.api import handle_of
from tiny import BUILDERS, images


def _run(pipe, fam="pixart", **kw):
    pipe.set_progress_bar_config(disable=True)
    return images(pipe, **BUILDERS[fam][1](**kw))


@pytest.mark.parametrize("fam,reuse", [("pixart", "hold"), ("pixart", "taylor"), ("dit", "taylor")])
def test_fast_path_is_bit_identical_to_the_hooked_block(fam, reuse):
    pipe = BUILDERS[fam][0]()
    accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 6, interval=3, reuse=reuse))
    state = handle_of(pipe).state
    state.fast_blocks = False
    ref = _run(pipe, fam)
    assert state.record.fast_blocks == 0
    ref_stats = accel.stats(pipe)
    state.fast_blocks = True
    out = _run(pipe, fam)
    st = accel.stats(pipe)
    n_blocks = st.extra["block_fast_path"]["blocks"]
    # 4 of 6 steps reuse every component; the tiny pipeline makes cond and uncond passes in one batch
    assert n_blocks > 0 and st.extra["block_fast_path"]["served"] == 4 * n_blocks * st.denoiser_calls // 6
    assert torch.equal(out, ref)
    assert st.reused == ref_stats.reused and st.macs_computed == ref_stats.macs_computed


def test_partly_reused_blocks_run_their_forward_and_remove_detaches():
    pipe = BUILDERS["pixart"][0]()
    ref = _run(pipe)
    sched = accel.CacheSchedule.uniform(pipe, 6, interval=2)
    sched.table[1::2, :, 2] = True  # the FFN computes at every step: no block is fully reused
    accel.apply(pipe, cache=sched)
    out = _run(pipe)
    assert handle_of(pipe).state.record.fast_blocks == 0 and not torch.equal(out, ref)
    accel.remove(pipe)
    den = pipe.transformer
    assert all(not hasattr(b, "_diffusers_hook") for b in den.transformer_blocks)
    assert torch.equal(_run(pipe), ref)


def test_a_block_whose_weights_are_elsewhere_runs_its_forward(monkeypatch):
    """Offloading hooks that load a block's weights only in its forward: the fast path steps aside."""
    from accel.cache import block_skip

    pipe = BUILDERS["pixart"][0]()
    accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 6, interval=3))
    ref = _run(pipe)
    elsewhere = dataclasses.replace(block_skip.FAST_PATHS["pixart"], probe=lambda b: torch.empty(0, device="meta"))
    for blk in pipe.transformer.transformer_blocks:
        monkeypatch.setattr(blk._diffusers_hook.get_hook(block_skip.BLOCK_HOOK), "path", elsewhere)
    out = _run(pipe)
    assert handle_of(pipe).state.record.fast_blocks == 0 and torch.equal(out, ref)
