"""The coarse-scale PatchGAN (`lambda_coarse`): what it sees, how it joins the step, and that a run with
it starts where the same run without it starts."""
import pytest
import torch
from conftest import assert_same_weights, straight_and_resumed

from cutlib.config import ConfigError
from cutlib.discriminators import CoarsePatchDiscriminator, PatchDiscriminator, adversarial_weights
from cutlib.model import CUTModel


def _corner_reach(D, size=64):
    """How much of the input's four 8x8 corners the central logit depends on (sum of |d logit / d x|),
    through the convolutions: the instance norms, whose statistics span the whole map, are taken out."""
    for name, m in list(D.named_modules()):
        if isinstance(m, torch.nn.InstanceNorm2d):
            parent, _, child = name.rpartition(".")
            setattr(D.get_submodule(parent), child, torch.nn.Identity())
    x = torch.rand(1, 3, size, size, requires_grad=True)
    logits = D(x)
    h, w = logits.shape[2:]
    logits[0, 0, h // 2, w // 2].backward()
    g = x.grad.abs().sum(1)[0]
    return sum(g[r:r + 8, c:c + 8].sum().item() for r in (0, size - 8) for c in (0, size - 8))


def test_the_coarse_patchgan_sees_the_whole_picture_where_the_patchgan_sees_a_patch():
    torch.manual_seed(0)
    fine, coarse = PatchDiscriminator(8), CoarsePatchDiscriminator(8, factor=2)
    assert _corner_reach(fine, 128) == 0.0  # a 70 px patch in the middle of 128 px misses the corners
    assert _corner_reach(coarse, 128) > 0.0  # pooled by 2, its patch spans 140 px


def test_the_coarse_patchgan_judges_the_mean_colour_of_blocks():
    """Texture inside a 2x2 block that leaves its mean unchanged is invisible to it; a colour shift is not."""
    torch.manual_seed(0)
    D = CoarsePatchDiscriminator(8, factor=2)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(32, 32) * 0.3
    assert torch.allclose(D(x + checker), D(x), atol=1e-5)
    shifted = x.clone()
    shifted[:, 0] += 0.3
    assert not torch.allclose(D(shifted), D(x), atol=1e-3)


def test_a_coarse_factor_that_leaves_no_logits_is_refused_and_the_smallest_allowed_gives_some(tiny_cfg):
    with pytest.raises(ConfigError, match="coarse_factor=4"):
        tiny_cfg(image_size=64, load_size=72, lambda_coarse=1.0, coarse_factor=4)
    cfg = tiny_cfg(image_size=64, load_size=72, lambda_coarse=1.0, coarse_factor=2)
    assert CoarsePatchDiscriminator(8, cfg.coarse_factor)(torch.zeros(1, 3, 64, 64)).numel() > 0
    tiny_cfg(image_size=64, load_size=72, coarse_factor=4)  # off (lambda_coarse 0): the factor is not used


def test_a_run_with_the_coarse_patchgan_starts_from_the_same_weights_and_weighs_it_by_lambda_coarse(tiny_cfg):
    torch.manual_seed(123)  # CUTModel seeds itself: the global state before it must not matter
    plain = CUTModel(tiny_cfg(image_size=64, load_size=72))
    torch.manual_seed(321)
    with_coarse = CUTModel(tiny_cfg(image_size=64, load_size=72, lambda_coarse=0.5))
    assert with_coarse.D.names == ("patch", "coarse")
    for a, b in ((plain.G, with_coarse.G), (plain.F, with_coarse.F), (plain.D.patch, with_coarse.D.patch)):
        for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(v, w), k
    assert adversarial_weights(with_coarse.cfg, with_coarse.D.names) == (1.0, 0.5)


def test_the_coarse_patchgan_trains_and_resumes_exactly(tiny_cfg, tmp_path):
    kw = dict(image_size=64, load_size=72, lambda_coarse=0.5, steps=4)
    start = CUTModel(tiny_cfg(**kw)).D.coarse.state_dict()
    a, b = straight_and_resumed(tiny_cfg, tmp_path, 2, **kw)
    coarse = {k.removeprefix("coarse."): v for k, v in a["D"].items() if k.startswith("coarse.")}
    assert coarse.keys() == start.keys()
    assert any(not torch.equal(coarse[k], start[k]) for k in start)  # its optimizer moved it
    assert_same_weights(a, b)
