"""The bench on a user's own model: generic metrics only, the user's reference images, every row written
(a failing row with its reason), calibration prompts split from the scored ones."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from accel.bench.driver import split_prompts
from accel.bench.metrics import REFERENCE_ONLY, check_metrics, default_metrics
from accel.cli import main
from user_models import prompt_file, save


@pytest.fixture(scope="module")
def user_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-user")
    prompts = prompt_file(root)
    refs = root / "refs"
    refs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):  # the user's "real" images of their domain
        Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(refs / f"{i}.png")
    return root, prompts, refs


@pytest.mark.slow
@pytest.mark.parametrize("family", ["flux", "sd3", "sdxl", "pixart-sigma"])
def test_bench_on_a_user_model_reports_generic_metrics_and_keeps_every_row(family, user_setup, capsys):
    root, prompts, refs = user_setup
    folder = save(family, root)
    out = root / f"bench-{family}"
    methods = "plain,uniform:2,uniform:4,fbcache:0.3,solver:4:dpm++,toca:3:0.25"
    assert main(["bench", "--pipeline", str(folder), "--prompts", str(prompts), "--ref-images", str(refs),
                 "--height", "16", "--width", "16", "--steps", "8", "--num-images", "4", "--batch", "2",
                 "--methods", methods, "--timing-rounds", "0", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    rows = {r["method"]: r for r in res["rows"]}
    skipped = {s["method"]: s["reason"] for s in res["config"]["skipped"]}
    assert set(rows) | set(skipped) == set(methods.split(","))  # every row: measured, or recorded with its reason
    assert res["config"]["metrics"] == ["fd_plain", "fd_ref", "psnr", "ssim"]
    for r in rows.values():
        assert not any(k in r for k in REFERENCE_ONLY)  # no Fashion-MNIST metric on another model
        assert r["fd_ref"] > 0 and r["ssim"] <= 1
    assert rows["plain"]["fd_plain"] == 0 and rows["plain"]["psnr"] == float("inf")
    assert 0 < rows["uniform:2"]["fd_plain"] and rows["uniform:2"]["psnr"] > rows["uniform:4"]["psnr"]
    if family in ("flux", "sd3"):  # joint attention: token refresh is refused, and the run goes on
        assert "joint text-image attention" in skipped["toca:3:0.25"]
    md = (out / "results.md").read_text()
    assert "fd_domain" not in md and "alignment" not in md
    # the calibrated rows' prompts are never scored
    assert not set(res["config"]["calibration_prompts"]) & set(split_prompts(prompts.read_text().split("\n")[:-1])[0])


def test_fid_and_lpips_without_weights_give_their_reason_and_domain_metrics_are_refused(user_setup, capsys):
    root, prompts, refs = user_setup
    folder = save("sd3", root)
    out = root / "bench-fid"
    assert main(["bench", "--pipeline", str(folder), "--prompts", str(prompts), "--ref-images", str(refs),
                 "--height", "16", "--width", "16", "--steps", "4", "--num-images", "2", "--batch", "2",
                 "--methods", "plain,uniform:2", "--metrics", "psnr,fid,lpips", "--timing-rounds", "0",
                 "--out", str(out)]) == 0
    md = (out / "results.md").read_text()
    assert "`fid` not computed:" in md and "Traceback" not in md
    rows = json.loads((out / "results.json").read_text())["rows"]
    lpips_ok = rows[1]["lpips"] is not None  # a machine with torchmetrics and the AlexNet weights computes it
    assert lpips_ok or "`lpips` not computed:" in md
    assert rows[0]["lpips"] == 0.0
    capsys.readouterr()
    assert main(["bench", "--pipeline", str(folder), "--metrics", "fd_domain", "--out", str(out)]) == 2
    assert "Fashion-MNIST" in capsys.readouterr().err
    with pytest.raises(ValueError, match="needs --ref-images"):
        check_metrics(("fd_ref",), reference=False, has_ref=False)
    assert default_metrics(reference=True, has_ref=False)[:3] == ("fd_domain", "fd_effnet", "alignment")


def test_prompt_split_keeps_calibration_and_scoring_apart():
    scored, calib = split_prompts([f"p{i}" for i in range(8)])
    assert calib == ["p3", "p7"] and not set(scored) & set(calib) and len(scored) == 6
    assert split_prompts(["one"]) == (["one"], ["one"])


def test_fd_plain_against_a_direct_computation():
    from accel.metrics import fd_plain
    from accel.metrics.features import effnet_features
    from accel.metrics.frechet import frechet_distance

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(6, 3, 16, 16, generator=g), torch.rand(6, 3, 16, 16, generator=g)
    fa, fb = effnet_features(a).double().numpy(), effnet_features(b).double().numpy()
    direct = frechet_distance(fa.mean(0), np.cov(fa, rowvar=False), fb.mean(0), np.cov(fb, rowvar=False))
    assert fd_plain(a, b) == pytest.approx(direct, rel=1e-4)
    assert fd_plain(a, a) == pytest.approx(0.0, abs=1e-3)


def test_clip_score_against_a_direct_computation_and_in_the_bench(user_setup, tmp_path):
    import torch.nn.functional as F
    from transformers import CLIPModel, CLIPTokenizer

    from accel.metrics.clip import _MEAN, _STD, clip_score
    from user_models import save_clip

    folder = save_clip(tmp_path / "clip")
    g = torch.Generator().manual_seed(0)
    images, prompts = torch.rand(3, 3, 20, 20, generator=g), ["a red dress", "a cat", "a blue bag"]
    model, tok = CLIPModel.from_pretrained(folder).eval(), CLIPTokenizer.from_pretrained(folder)
    x = F.interpolate(images, size=(32, 32), mode="bicubic", align_corners=False).clamp(0, 1)
    x = (x - torch.tensor(_MEAN).view(1, 3, 1, 1)) / torch.tensor(_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        out = model(pixel_values=x, **tok(prompts, padding=True, return_tensors="pt"))
    cos = F.cosine_similarity(out.image_embeds, out.text_embeds, dim=-1)
    assert clip_score(images, prompts, folder) == pytest.approx(float((100 * cos.clamp_min(0)).mean()), rel=1e-4)
    root, prompts_file, _ = user_setup
    out_dir = root / "bench-clip"
    assert main(["bench", "--pipeline", str(save("sd3", root)), "--prompts", str(prompts_file), "--clip", str(folder),
                 "--height", "16", "--width", "16", "--steps", "4", "--num-images", "2", "--batch", "2",
                 "--methods", "plain,uniform:2", "--timing-rounds", "0", "--no-effnet", "--out", str(out_dir)]) == 0
    rows = json.loads((out_dir / "results.json").read_text())["rows"]
    assert all(0 <= r["clip"] <= 100 for r in rows) and "CLIP score" in (out_dir / "results.md").read_text()
