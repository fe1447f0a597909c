"""The texture loss (lambda_style): its statistics, its place in the step, checkpoints and resume."""
import pytest
import torch
from conftest import assert_same_weights, straight_and_resumed

from cutlib import losses
from cutlib.model import STYLE_STAGES, CUTModel


def _batch(size, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, size, size, generator=g) * 2 - 1, torch.rand(1, 3, size, size, generator=g) * 2 - 1


def test_statistics_of_a_known_feature_map():
    f = torch.zeros(1, 2, 2, 2)
    f[0, 0] = 1.0  # channel 0 constant 1
    f[0, 1] = torch.tensor([[0.0, 2.0], [2.0, 0.0]])  # channel 1: half 0, half 2
    # Gram: <c0,c0> = 1, <c0,c1> = mean(c1) = 1, <c1,c1> = mean(c1^2) = 2
    torch.testing.assert_close(losses.gram_matrix(f), torch.tensor([[[1.0, 1.0], [1.0, 2.0]]]))
    mean, std = losses.mean_std(f, eps=0.0).split(2, dim=1)
    torch.testing.assert_close(mean, torch.tensor([[1.0, 1.0]]))
    torch.testing.assert_close(std, torch.tensor([[0.0, 1.0]]))


@pytest.mark.parametrize("stats", ["gram", "meanstd"])
def test_style_loss_is_zero_against_itself_and_positive_against_another(stats):
    g = torch.Generator().manual_seed(0)
    a = [torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 6, 4, 4, generator=g)]
    b = [x * 1.5 + 0.3 for x in a]
    assert losses.style_loss(a, [x.clone() for x in a], stats).item() == 0.0
    assert losses.style_loss(a, b, stats).item() > 0.01
    # relative: scaling both sides alike leaves it unchanged, so one weight fits every stage
    assert losses.style_loss([x * 10 for x in a], [x * 10 for x in b], stats).item() == pytest.approx(
        losses.style_loss(a, b, stats).item(), rel=1e-4)
    with pytest.raises(ValueError, match="style_stats"):
        losses.style_loss(a, b, "vgg")


def test_the_loss_on_real_backbone_features_separates_a_photo_from_its_painted_version(tiny_cfg):
    m = CUTModel(tiny_cfg(lambda_style=1.0, image_size=64, load_size=64))
    x, _ = _batch(64)
    blurred = torch.nn.functional.avg_pool2d(x, 5, 1, 2, count_include_pad=False)
    with torch.no_grad():
        fx, fb = m.backbone(x, STYLE_STAGES), m.backbone(blurred, STYLE_STAGES)
    assert [f.shape[1] for f in fx] == [24, 40]  # the stride-4 and stride-8 stages
    assert losses.style_loss(fx, fx).item() == 0.0 and losses.style_loss(fb, fx).item() > 0.05


def test_gradients_reach_g_and_never_the_backbone(tiny_cfg):
    # Adversarial, NCE and identity weights 0: only the texture loss can move G (Adam leaves a weight
    # with a zero gradient where it is), and a run without it is the control that G does not move.
    quiet = dict(lambda_gan=0.0, lambda_nce=0.0, lambda_identity=0.0, lambda_lattice=0.0, image_size=64, load_size=64)
    moved = {}
    for w in (0.0, 1.0):
        m = CUTModel(tiny_cfg(lambda_style=w, discriminator="patch" if w else "patch+projected", **quiet))
        backbone = m.backbone
        assert not list(backbone.parameters())  # buffers only: nothing an optimizer could hold
        frozen = {k: v.clone() for k, v in backbone.state_dict(keep_vars=True).items()}
        before = {k: v.clone() for k, v in m.G.state_dict().items()}
        out = m.train_step(*_batch(64))
        assert (out["style"].item() > 0) == (w > 0)
        moved[w] = max((m.G.state_dict()[k].float() - before[k].float()).abs().max().item() for k in before)
        after = dict(m.backbone.named_buffers())
        for k, v in frozen.items():
            assert torch.equal(after[k], v), k
            assert after[k].grad is None
    assert moved[0.0] == 0.0 and moved[1.0] > 0.0


def test_one_backbone_serves_the_projected_d_and_the_texture_loss(tiny_cfg):
    m = CUTModel(tiny_cfg(lambda_style=1.0, discriminator="patch+projected"))
    assert m.backbone is m.D.projected.features
    assert CUTModel(tiny_cfg()).backbone is None  # neither uses it: not loaded
    # loading it does not shift the other nets' initial weights (its default init draws are set aside)
    a, b = CUTModel(tiny_cfg()), CUTModel(tiny_cfg(lambda_style=1.0))
    for k, v in a.G.state_dict().items():
        assert torch.equal(v, b.G.state_dict()[k]), k


@pytest.mark.parametrize("stats", ["gram", "meanstd"])
def test_resume_with_the_texture_loss_is_exact(tiny_cfg, tmp_path, stats):
    kw = dict(lambda_style=2.0, style_stats=stats, image_size=48, load_size=52, steps=4)
    a, b = straight_and_resumed(tiny_cfg, tmp_path, 2, **kw)
    assert_same_weights(a, b)
    for k, v in a["opt_G"]["state"].items():
        assert all(torch.equal(v[j], b["opt_G"]["state"][k][j]) for j in v), ("opt_G", k)
    import json
    style = [json.loads(x)["style"] for x in (tmp_path / "a/metrics.jsonl").read_text().splitlines()]
    assert all(s > 0 for s in style)
