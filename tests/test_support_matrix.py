"""The family x capability support matrix: every cell is run on a tiny pipeline of the family and its outcome
asserted (works, or the documented refusal), and README.md's support table must be the rendering of it.

Rewrite the README table after changing a cell: ``python tests/test_support_matrix.py``.
"""
from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import accel  # noqa: E402
from tiny import (flux_inputs, pixart_inputs, sd3_inputs, sdxl_inputs, tiny_dit, tiny_flux,  # noqa: E402
                  tiny_pixart, tiny_sd3, tiny_sdxl, tiny_unet, dit_inputs, unet_inputs)
from tiny_families import BUILDERS as NEW, output  # noqa: E402

README = Path(__file__).parent.parent / "README.md"
FAMILIES = {  # column: (builder, inputs, the pipeline class users know)
    "PixArt": (tiny_pixart, pixart_inputs),
    "DiT": (tiny_dit, dit_inputs),
    "FLUX": (tiny_flux, flux_inputs),
    "SD3": (tiny_sd3, sd3_inputs),
    "SDXL": (tiny_sdxl, lambda **kw: sdxl_inputs(**{"steps": 6, "guidance": 4.0, **kw})),
    "SD": (tiny_unet, unet_inputs),
    "FLUX.2": NEW["flux2"],
    "Qwen-Image": NEW["qwen-image"],
    "Z-Image": NEW["z-image"],
    "Chroma": NEW["chroma"],
    # a class with no layout of its own and no accel registration: the generic layout from _repeated_blocks
    "other `_repeated_blocks` (HunyuanImage)": NEW["hunyuan-image"],
}
IMAGE = tuple(FAMILIES)
VIDEO = {  # the video families: generic layouts of their blocks (CogVideoX's from _no_split_modules)
    "Wan 2.1": NEW["wan"],
    "Wan 2.2 (two experts)": NEW["wan22"],
    "HunyuanVideo": NEW["hunyuan-video"],
    "HunyuanVideo-1.5": NEW["hunyuan-video-15"],
    "LTX-Video": NEW["ltx"],
    "CogVideoX": NEW["cogvideox"],
}
FAMILIES.update(VIDEO)
GENERIC = ("Chroma", "other `_repeated_blocks` (HunyuanImage)", *VIDEO)
JOINT = ("FLUX", "SD3", "FLUX.2", "Qwen-Image", "Z-Image", "Chroma", "other `_repeated_blocks` (HunyuanImage)")
OK, NO = "yes", "refused"
# capability -> family -> expected outcome; a refusal's note says why
SUPPORT: dict[str, dict[str, str]] = {
    "cache schedules (uniform, BAC, ECAD files)": {**dict.fromkeys(FAMILIES, OK),
                                                   **dict.fromkeys(GENERIC, OK + " (whole blocks)")},
    "TokenRefresh": {"PixArt": OK, "DiT": OK, **dict.fromkeys(JOINT, NO + " (joint attention)"),
                     "SDXL": NO + " (UNet levels)", "SD": NO + " (UNet levels)",
                     **dict.fromkeys(GENERIC, NO + " (whole blocks)")},
    "accel attention (torch / Triton)": {"PixArt": OK, "DiT": OK, **dict.fromkeys(JOINT, NO + " (joint attention)"),
                                         "SDXL": OK, "SD": OK,
                                         **dict.fromkeys(VIDEO, NO + " (own attention)"),
                                         GENERIC[1]: OK + " (its text refiner; the blocks' joint attention not)",
                                         **dict.fromkeys(("HunyuanVideo", "HunyuanVideo-1.5"),
                                                         OK + " (its text refiner; the blocks' attention not)")},
    "APG, FA-CFG": {**dict.fromkeys(FAMILIES, OK), "FLUX": OK + " (true CFG; distilled: warns)",
                    "FLUX.2": "warns (guidance-distilled)", "Qwen-Image": OK + " (true CFG)",
                    "HunyuanVideo": OK + " (true CFG)", "Wan 2.2 (two experts)": OK + " (both experts)",
                    "CogVideoX": OK + " (FA-CFG: per frame)"},
    "solvers dpm++, unipc, v3, dc": dict.fromkeys(FAMILIES, OK),
}
LEGEND = ("Each cell is run by `tests/test_support_matrix.py` on a small pipeline of the family. FLUX.2, Qwen-Image "
          "and Z-Image have component layouts of their own; any other transformer whose class declares "
          "`_repeated_blocks` (Chroma, HunyuanImage, Wan, HunyuanVideo, LTX, ...) gets the generic one, each block "
          "caching its residual. `accel generate`, `calibrate` (all six methods) and `bench` run on saved FLUX, "
          "FLUX.2, Qwen-Image, Z-Image, Chroma, SD3, SDXL and DiT folders (`tests/test_family_cli.py`), and with "
          "`--num-frames` on saved Wan 2.1, Wan 2.2, LTX-Video and CogVideoX folders (`tests/test_video_cli.py`). On "
          "Wan 2.2 a schedule, BAC / ECAD, `accel.stats`, solver calibration (EMS, DC, learned steps) and the bench's "
          "diffusers peers follow both experts (MagCache, whose step count is per model, is refused with that "
          "reason). Wan composes with diffusers' context parallelism, as FLUX does "
          "([docs/parallel.md](docs/parallel.md)).")


def render() -> str:
    out = ""
    for fams in (list(IMAGE), list(VIDEO)):
        out += "| capability | " + " | ".join(fams) + " |\n|---|" + "---|" * len(fams) + "\n"
        for cap, cells in SUPPORT.items():
            out += f"| {cap} | " + " | ".join(cells[f] for f in fams) + " |\n"
        out += "\n"
    return out + LEGEND + "\n"


def _pipe(fam):
    build, inputs = FAMILIES[fam]
    pipe = build()
    pipe.set_progress_bar_config(disable=True)
    return pipe, inputs


def _run_cell(cap: str, fam: str) -> None:
    pipe, inputs = _pipe(fam)
    cfg = 4.0  # FLUX, Qwen-Image: true CFG; FLUX.2: the embedded guidance input (no CFG)
    plain = output(pipe, **inputs(guidance=cfg))
    if cap.startswith("cache"):
        accel.apply(pipe, cache=accel.CacheSchedule.full(pipe, 6))
        assert torch.equal(output(pipe, **inputs(guidance=cfg)), plain)  # nothing reused: the plain output
        accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 6, 2))
        out = output(pipe, **inputs(guidance=cfg))
        st = accel.stats(pipe)
        # every other step reuses every component (the UNet's shallow level excepted): half the component calls
        assert st.reused > 0 and (st.reused == st.computed or fam in ("SDXL", "SD")) and not torch.equal(out, plain)
        if fam.startswith("Wan 2.2"):  # both experts ran, each with its own blocks cached
            assert {c.module.split(".")[0] for c in st.components if c.reused} == {"transformer", "transformer_2"}
        assert 0 < st.macs_computed < st.macs_full
        assert (" (whole blocks)" in SUPPORT[cap][fam]) == st.family.startswith("generic:")
        accel.remove(pipe)
        assert torch.equal(output(pipe, **inputs(guidance=cfg)), plain)
    elif cap == "TokenRefresh":
        accel.apply(pipe, cache=accel.TokenRefresh(interval=3, ratio=0.5))
        output(pipe, **inputs(guidance=cfg))
        assert sum(c.partial for c in accel.stats(pipe, count_macs_now=False).components) > 0
    elif cap.startswith("accel attention"):
        accel.apply(pipe, attention="torch")
        assert torch.equal(output(pipe, **inputs(guidance=cfg)), plain)
        assert accel.stats(pipe, count_macs_now=False).extra["attention"]["processors"] > 0
    elif cap.startswith("APG"):
        for method in (accel.APG(cfg), accel.FrequencyAwareCFG(1.0, cfg)):
            accel.apply(pipe, guidance=method)
            if SUPPORT[cap][fam].startswith("warns"):
                with pytest.warns(UserWarning, match="nothing to guide"):
                    assert torch.equal(output(pipe, **inputs(guidance=cfg)), plain)
                continue
            assert not torch.allclose(output(pipe, **inputs(guidance=cfg)), plain, atol=1e-4)
            assert accel.stats(pipe, count_macs_now=False).extra["guidance"]["guided_calls"] == 6
        if fam == "FLUX":  # guidance-distilled FLUX: no CFG at all
            distilled = tiny_flux(guidance_embeds=True)
            distilled.set_progress_bar_config(disable=True)
            accel.apply(distilled, guidance=accel.APG(cfg))
            with pytest.warns(UserWarning, match="nothing to guide"):
                output(distilled, **inputs(), guidance_scale=3.5)
    elif cap.startswith("solvers"):
        from accel.solvers import DCSolverScheduler, DPMSolverV3Scheduler
        from accel.solvers.named import build_solver

        truth = output(pipe, **{**inputs(guidance=cfg), "num_inference_steps": 200})
        for solver in ("dpm++", "unipc", build_solver(DPMSolverV3Scheduler, pipe, degenerated=True),
                       build_solver(DCSolverScheduler, pipe, dc_ratios=[1, 1, 1.1, 0.9, 1.0, 1.0])):
            accel.apply(pipe, solver=solver)
            out = output(pipe, **inputs(guidance=cfg))
            assert torch.isfinite(out).all() and pipe.scheduler is not handle_scheduler(pipe)
            # the pipeline's own solve at 200 steps is the truth; 6 steps of any of these come near it
            assert float((out - truth).abs().mean()) < 0.05
    else:
        raise KeyError(cap)
    accel.remove(pipe)


def handle_scheduler(pipe):
    return accel.api.handle_of(pipe).old_scheduler


CELLS = [(cap, fam) for cap in SUPPORT for fam in FAMILIES]


@pytest.mark.parametrize("cap,fam", CELLS, ids=[f"{c.split()[0]}-{f}" for c, f in CELLS])
def test_cell(cap, fam):
    expected = SUPPORT[cap][fam]
    if expected.startswith(NO):
        reason = expected[len(NO):].strip(" ()")
        key = {"joint attention": "joint text-image attention", "UNet levels": "depth levels",
               "whole blocks": "caches whole blocks", "own attention": "attention of its own"}[reason]
        with pytest.raises(ValueError, match=key):
            _run_cell(cap, fam)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            _run_cell(cap, fam)


def _section(text: str) -> str | None:
    m = re.search(r"<!-- support:begin -->\n(.*?)<!-- support:end -->", text, re.S)
    return m.group(1) if m else None


def test_readme_table_is_the_matrix():
    assert _section(README.read_text()) == render(), "run `python tests/test_support_matrix.py` to rewrite it"


if __name__ == "__main__":
    text = README.read_text()
    new = "<!-- support:begin -->\n" + render() + "<!-- support:end -->"
    text = re.sub(r"<!-- support:begin -->\n.*?<!-- support:end -->", lambda _: new, text, flags=re.S)
    README.write_text(text)
    print("README.md support table written")
