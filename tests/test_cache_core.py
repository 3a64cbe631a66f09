"""The component cache on every supported family (tiny pipelines, random weights)."""
import pytest
import torch

import accel
from tiny import BUILDERS, FAMILIES, images


def _run(pipe, fam, **kw):
    pipe.set_progress_bar_config(disable=True)
    return images(pipe, **BUILDERS[fam][1](**kw))


@pytest.fixture(params=FAMILIES)
def fam(request):
    return request.param


def test_full_schedule_is_bit_identical_and_remove_restores(fam):
    pipe = BUILDERS[fam][0]()
    ref = _run(pipe, fam)
    _, den = accel.pipelines.families.find_denoiser(pipe)
    # diffusers' own cache_context (FLUX) may create an empty registry: compare with the state before apply
    before = {n for n, m in den.named_modules() if hasattr(m, "_diffusers_hook") or "forward" in m.__dict__}
    accel.apply(pipe, cache=accel.CacheSchedule.full(pipe, 6))
    assert torch.equal(_run(pipe, fam), ref)
    st = accel.stats(pipe)
    assert st.reused == 0 and st.computed > 0 and st.steps == 6
    accel.remove(pipe)
    assert torch.equal(_run(pipe, fam), ref)
    after = {n for n, m in den.named_modules() if hasattr(m, "_diffusers_hook") or "forward" in m.__dict__}
    assert after == before
    assert all(not m._diffusers_hook.hooks for m in den.modules() if hasattr(m, "_diffusers_hook"))


def test_reuse_skips_computation_and_changes_output_a_little(fam):
    pipe = BUILDERS[fam][0]()
    ref = _run(pipe, fam)
    layout = accel.pipelines.families.layout_of(accel.pipelines.families.find_denoiser(pipe)[1])
    _, den = accel.pipelines.families.find_denoiser(pipe)
    first = layout.blocks(den)[-1][0].module  # a component of the last block (reused by uniform schedules)
    # a leaf inside the component runs only when the component's own forward really runs
    leaf = next(m for m in first.modules() if m is not first and not list(m.children()))
    calls = []
    h = leaf.register_forward_hook(lambda *a: calls.append(1))
    _run(pipe, fam)
    n_plain = len(calls)
    accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 6, interval=3))
    calls.clear()
    out = _run(pipe, fam)
    h.remove()
    st = accel.stats(pipe)  # counts MACs with one extra measuring forward
    # the module's own forward really ran fewer times; steps 0 and 3 compute out of 6
    assert len(calls) == n_plain // 3
    assert st.reused > 0 and st.macs_computed < st.macs_full
    per = st.per_block()[len(layout.blocks(den)) - 1]
    assert all(c == 2 * (n_plain // 6) and r == 4 * (n_plain // 6) for c, r in per.values())
    err = (out - ref).abs().max().item()
    assert 0 < err < 0.5


def test_taylor_reuse_runs_on_every_family_and_forecasts(fam):
    pipe = BUILDERS[fam][0]()
    ref = _run(pipe, fam)
    outs = {}
    for reuse in ("hold", "taylor"):
        accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 6, interval=2, reuse=reuse))
        outs[reuse] = _run(pipe, fam)
        assert torch.equal(_run(pipe, fam), outs[reuse])  # no state leaks between calls
        assert accel.stats(pipe, count_macs_now=False).reused > 0
        accel.remove(pipe)
    assert not torch.equal(outs["taylor"], outs["hold"])  # steps 3 and 5 are forecast from two updates
    assert (outs["taylor"] - ref).abs().max() < 0.5
    assert torch.equal(_run(pipe, fam), ref)


def test_no_state_leaks_between_calls_batches_resolutions_and_cfg(fam):
    pipe = BUILDERS[fam][0]()
    accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 6, interval=2))
    a = _run(pipe, fam)
    assert torch.equal(_run(pipe, fam), a)  # same call twice
    b2 = _run(pipe, fam, batch=2)
    assert b2.shape[0] == 2
    assert torch.equal(_run(pipe, fam), a)  # after another batch size
    if fam != "dit":  # DiT pipelines have a fixed resolution
        big = _run(pipe, fam, size=32)
        assert big.shape[-1] == 32 or big.shape[-2] == 32
        assert torch.equal(_run(pipe, fam), a)
    if fam != "flux":  # FluxPipeline has no classic CFG batch
        _run(pipe, fam, guidance=1.0)
        assert torch.equal(_run(pipe, fam), a)
    # and the uncached reference of another step count is unaffected by the cached calls
    accel.remove(pipe)
    fresh = BUILDERS[fam][0]()
    assert torch.equal(_run(pipe, fam, steps=4), _run(fresh, fam, steps=4))


def test_two_pipelines_of_one_class_are_independent():
    build, _ = BUILDERS["pixart"]
    p1, p2 = build(), build()
    ref = _run(p2, "pixart")
    accel.apply(p1, cache=accel.CacheSchedule.uniform(p1, 6, interval=3))
    cached = _run(p1, "pixart")
    assert not torch.equal(cached, ref)
    assert torch.equal(_run(p2, "pixart"), ref)
    assert not accel.is_applied(p2)
    with pytest.raises(ValueError, match="not applied"):
        accel.stats(p2)


def test_schedule_step_count_is_resampled_with_warning():
    pipe = BUILDERS["pixart"][0]()
    accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 6, interval=2))
    with pytest.warns(UserWarning, match="resampled to 9 steps"):
        _run(pipe, "pixart", steps=9)
    st = accel.stats(pipe)
    assert st.steps == 9 and st.reused > 0


def test_apply_twice_replaces_and_bad_inputs_fail_clearly():
    pipe = BUILDERS["pixart"][0]()
    ref = _run(pipe, "pixart")
    accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 6, interval=2))
    cached = _run(pipe, "pixart")
    with pytest.raises(TypeError, match="cache"):
        accel.apply(pipe, cache=3)
    other = BUILDERS["dit"][0]()
    with pytest.raises(accel.ScheduleMismatchError, match="family 'dit' vs model 'pixart'"):
        accel.apply(pipe, cache=accel.CacheSchedule.uniform(other, 6, interval=2))
    with pytest.raises(ValueError, match="not a valid Backend"):
        accel.apply(pipe, attention="cuda")
    assert torch.equal(_run(pipe, "pixart"), cached)  # failed applies lose nothing applied before
    accel.apply(pipe)  # replaces: counting only
    assert torch.equal(_run(pipe, "pixart"), ref)

    class Unknown(torch.nn.Module):
        def forward(self, x):
            return x

    unknown = Unknown()
    with pytest.raises(NotImplementedError, match="no block layout.*families: pixart.*register_family"):
        accel.apply(unknown, cache=accel.CacheSchedule.uniform(pipe, 6, 2))
    with pytest.raises(NotImplementedError, match="register_family"):
        accel.CacheSchedule.uniform(unknown, 6, 2)
    accel.apply(unknown)  # what needs no block layout (timing) is not refused
    assert unknown(torch.ones(2)).tolist() == [1.0, 1.0] and accel.stats(unknown).family == "Unknown"
    accel.remove(unknown)


def test_solver_swap_is_undone_by_remove():
    from diffusers import UniPCMultistepScheduler

    pipe = BUILDERS["pixart"][0]()
    old = pipe.scheduler
    accel.apply(pipe, solver=UniPCMultistepScheduler)
    assert isinstance(pipe.scheduler, UniPCMultistepScheduler)
    _run(pipe, "pixart")
    accel.remove(pipe)
    assert pipe.scheduler is old


def test_outputs_are_stored_only_for_steps_that_read_them():
    """The schedule is known before the call: an output is held only when a later step reuses it (held reuse:
    the next step; forecast reuse: any later step), so an all-compute schedule stores nothing."""
    import numpy as np

    from accel.cache.policy import SchedulePolicy

    pipe, inputs = BUILDERS["pixart"][0](), BUILDERS["pixart"][1]
    pipe.set_progress_bar_config(disable=True)
    hold = SchedulePolicy(accel.CacheSchedule.at_steps(pipe, 6, [0, 1, 2, 4]))
    hold.begin_call(6)
    assert [bool(np.all(hold.keeps(s))) for s in range(6)] == [False, False, True, False, True, False]
    taylor = SchedulePolicy(accel.CacheSchedule.at_steps(pipe, 6, [0, 1, 2, 4], reuse="taylor"))
    taylor.begin_call(6)
    assert [bool(np.all(taylor.keeps(s))) for s in range(6)] == [True, True, True, True, True, False]
    accel.apply(pipe, cache=accel.CacheSchedule.full(pipe, 6))
    pipe(**inputs(steps=6))
    assert not any(accel.api.handle_of(pipe).state._store)
    accel.remove(pipe)
