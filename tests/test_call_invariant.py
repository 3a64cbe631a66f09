"""Exact reuse of prompt projections within a call (``accel.cache.call_invariant``)."""
import pytest
import torch

import accel
from accel.api import handle_of
from accel.cache.call_invariant import INVARIANT_HOOK, CallInvariantHook
from diffusers.hooks import HookRegistry
from tiny import BUILDERS, images


@pytest.mark.parametrize("fam,module", [("pixart", "caption_projection"), ("sd3", "context_embedder"),
                                        ("flux", "context_embedder")])
def test_projection_is_computed_once_per_call_and_changes_nothing(fam, module):
    pipe = BUILDERS[fam][0]()
    pipe.set_progress_bar_config(disable=True)
    accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 6, interval=2))
    out = images(pipe, **BUILDERS[fam][1]())
    st = accel.stats(pipe)
    assert st.extra["call_invariant_reuses"] == st.denoiser_calls - 1  # one projection per call
    mod = getattr(handle_of(pipe).denoiser, module)
    mod._diffusers_hook.remove_hook(INVARIANT_HOOK, recurse=False)  # the same cache, projection at every step
    assert torch.equal(images(pipe, **BUILDERS[fam][1]()), out)
    accel.remove(pipe)
    assert not hasattr(mod, "_diffusers_hook")


def test_changed_inputs_and_autograd_are_computed():
    lin = torch.nn.Linear(4, 3)
    hook = CallInvariantHook()
    HookRegistry.check_if_exists_or_initialize(lin).register_hook(hook, INVARIANT_HOOK)
    x = torch.randn(2, 4)
    with torch.no_grad():
        a = lin(x)
        assert lin(x) is a and hook.hits == 1  # same tensor: stored output
        x.mul_(2)  # modified in place: its version changes
        b = lin(x)
        assert b is not a and torch.allclose(b, x @ lin.weight.T + lin.bias)
        assert lin(x.clone()) is not b  # equal values, another tensor: computed
    y = torch.randn(2, 4)
    with torch.no_grad():
        c, d = lin(y), lin(x)  # two inputs alternating (one per CFG branch): both kept
        assert lin(y) is c and lin(x) is d
    g1 = lin(x)
    assert lin(x) is not g1 and g1.requires_grad  # under autograd nothing is shared between calls
    hook.reset()
    assert hook._entries == {}
