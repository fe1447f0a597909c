import pytest
import torch
from conftest import CornerMarker

from cutlib.config import TrainConfig
from cutlib.discriminators import PatchDiscriminator
from cutlib.model import build_networks
from cutlib.nets import (TAP_LAYERS, BlurDownsample, BlurUpsample, Generator, MobileResBlock, PatchSampleMLP,
                         ResBlock, build_generator, count_params)
from cutlib.painting import paint


def test_parameter_counts_match_official_cut():
    G, D, F, _ = build_networks(TrainConfig())
    # official CUT, resnet_9blocks + basic D + mlp_sample(256), anti-aliased: 11.378M / 2.765M / 0.560M
    assert (count_params(G), count_params(D), count_params(F)) == (11_378_179, 2_764_737, 560_384)
    G2, D2, _, _ = build_networks(TrainConfig(antialias=False))
    assert (count_params(G2), count_params(D2)) == (11_378_179, 2_764_737)  # same weights, strided layout


@pytest.mark.parametrize("antialias", [True, False])
def test_shapes_and_named_taps(antialias):
    G = Generator(ngf=8, n_blocks=9, antialias=antialias)
    x = torch.randn(2, 3, 64, 64)
    y, feats = G(x, taps=TAP_LAYERS)
    assert y.shape == x.shape and y.abs().max() <= 1
    full = 64 if antialias else 32
    assert [tuple(f.shape) for f in feats] == [(2, 3, 70, 70), (2, 16, full, full), (2, 32, 32 if antialias else 16,
                                               32 if antialias else 16), (2, 32, 16, 16), (2, 32, 16, 16)]
    torch.testing.assert_close(feats[0][:, :, 3:-3, 3:-3], x)  # tap 0 is the padded input itself
    for a, b in zip(G.encode(x), feats):  # encode() stops early but gives the same activations
        torch.testing.assert_close(a, b)
    assert PatchDiscriminator(8, antialias=antialias)(torch.randn(1, 3, 256, 256)).shape == (1, 1, 30, 30)


def test_blur_resampling_keeps_constants():
    x = torch.full((1, 4, 8, 8), 0.7)
    torch.testing.assert_close(BlurDownsample(4)(x), torch.full((1, 4, 4, 4), 0.7))
    torch.testing.assert_close(BlurUpsample()(x), torch.full((1, 4, 16, 16), 0.7))


def test_the_mobile_generator_keeps_the_taps_and_shapes_with_a_fraction_of_the_weights():
    """g_block mobile swaps each 3x3 conv of the residual blocks for depthwise 3x3 + pointwise 1x1
    (GAN Compression): the same stages, tap shapes and output; 256-channel blocks shrink ~8x."""
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    full, mobile = (build_generator(TrainConfig(ngf=16, n_blocks=5, g_block=b)) for b in ("resnet", "mobile"))
    assert {type(m) for m in mobile.blocks} == {MobileResBlock} and {type(m) for m in full.blocks} == {ResBlock}
    per_block = [count_params(G.blocks[0]) for G in (full, mobile)]
    assert per_block == [2 * (64 * 64 * 9 + 64), 2 * (64 * 9 + 64 + 64 * 64 + 64)]
    for G in (full, mobile):
        out, feats = G(x, taps=TAP_LAYERS)
        assert out.shape == x.shape and [f.shape[1:] for f in feats] == \
            [(3, 70, 70), (32, 64, 64), (64, 32, 32), (64, 16, 16), (64, 16, 16)]
    assert any(m.groups == 64 for m in mobile.modules() if isinstance(m, torch.nn.Conv2d))  # depthwise


def test_blur_upsample_is_the_official_binomial_transposed_conv():
    # official CUT: replicate pad 1, conv_transpose stride 2 padding 2 with 4 * ([1,3,3,1] outer)/64, crop 1
    x = torch.randn(2, 3, 5, 7)
    k = torch.tensor([1.0, 3, 3, 1])
    kernel = (4 * torch.outer(k, k) / 64)[None, None].repeat(3, 1, 1, 1)
    ref = torch.nn.functional.conv_transpose2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"),
                                               kernel, stride=2, padding=2, groups=3)[:, :, 1:-1, 1:-1]
    torch.testing.assert_close(BlurUpsample()(x), ref)


def test_init_is_normal_002_and_mlp_exists_eagerly():
    G, D, F, _ = build_networks(TrainConfig(ngf=16))
    w = torch.cat([p.flatten() for n, p in G.named_parameters() if n.endswith("weight")])
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002
    assert len(list(F.parameters())) == 4 * 5  # all five heads built before any data


def test_patch_sampler_same_locations_and_unit_norm():
    F = PatchSampleMLP([3, 5])
    feats = [torch.randn(2, 3, 6, 6), torch.randn(2, 5, 4, 4)]
    ids = F.sample_ids(feats, 10)
    assert [len(i) for i in ids] == [10, 10] and len(set(ids[1].tolist())) == 10
    out = F(feats, ids)
    assert out[0].shape == (2, 10, 256)
    torch.testing.assert_close(out[1].norm(dim=-1), torch.ones(2, 10), atol=1e-4, rtol=0)
    assert len(F.sample_ids([torch.randn(1, 5, 2, 2)], 256)[0]) == 4  # fewer locations than patches


def test_residual_output_generator_starts_as_the_identity():
    G = build_generator(TrainConfig(ngf=8, n_blocks=5, residual_output=True))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(G(x), x.clamp(-0.999, 0.999), atol=1e-5, rtol=0)
    G(x).sub(x.flip(3)).abs().mean().backward()  # a loss the identity does not minimise
    assert G.decoder[-1].weight.grad.abs().sum() > 0  # so the change can grow from zero


def test_mlp_keys_under_no_grad_leave_the_queries_a_gradient_under_autocast():
    # The PatchNCE pattern: keys through F under no_grad, then queries through F with grad, in one
    # autocast region. torch <= 2.10 (Kaggle's) reused the key call's cached weight casts, which carry no
    # autograd link: F got no gradient. Only the CI step on the torch floor can see this fail.
    F = PatchSampleMLP([8, 4], dim=16)
    feats = [torch.randn(2, 8, 4, 4), torch.randn(2, 4, 4, 4)]
    ids = F.sample_ids(feats, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.no_grad():
            keys = F(feats, ids)
        queries = F(feats, ids)
        loss = sum((q * k).sum() for q, k in zip(queries, keys)).float()
    assert torch.is_autocast_cache_enabled()  # the no_grad call put the setting back
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in F.parameters())


def test_paint_moves_a_fixed_corner_mark_off_the_picture():
    x = torch.rand(2, 3, 64, 48) * 2 - 1
    assert not torch.equal(paint(CornerMarker(), x, border=0, keep_colour=0), x)  # as G paints it: the mark is there
    torch.testing.assert_close(paint(CornerMarker(), x, keep_colour=0), x, rtol=0, atol=0)  # painted in the border, cropped off
    G = Generator(ngf=8, n_blocks=2)
    for side in (64, 20, 8):  # the border shrinks to fit small images (reflect pads need less than the side)
        z = torch.rand(1, 3, side, side) * 2 - 1
        assert paint(G, z).shape == z.shape


class GreyPainter(torch.nn.Module):
    """Paints every photo in one lilac-grey cast with a fine stroke texture: the colour every run lost."""

    def forward(self, x):
        strokes = 0.1 * torch.sin(torch.arange(x.shape[-1], dtype=x.dtype) * 2.0)
        grey = x.mean(1, keepdim=True) + strokes + torch.tensor([0.05, 0.0, 0.08]).view(1, 3, 1, 1)
        return grey.clamp(-1, 1)


def test_paint_gives_each_painting_its_photos_colour_and_keeps_gs_strokes():
    from cutlib.colour import srgb_to_lab

    x = torch.zeros(2, 3, 32, 32)
    x[0, 0], x[0, 1], x[0, 2] = 0.8, -0.1, -0.8  # an orange sunset
    x[1, 0], x[1, 1], x[1, 2] = -0.6, 0.5, -0.5  # green foliage
    x[0, :, 16:] = x[0, :, 16:] * 0.3 - 0.6  # with a dark shore below the sky
    lab = lambda t: srgb_to_lab((t + 1) / 2)  # noqa: E731
    grey = paint(GreyPainter(), x, border=0, keep_colour=0)
    kept = paint(GreyPainter(), x, border=0)
    mean_ab = lambda t: lab(t)[:, 1:].mean((-2, -1))  # noqa: E731
    assert (mean_ab(grey)[0] - mean_ab(grey)[1]).norm() < 1  # G's own colours: one lilac cast for both
    assert (mean_ab(grey) - mean_ab(x)).norm(dim=1).min() > 20
    # each keeps its photo's cast, as far as G's lightness lets sRGB show it (a green this saturated is
    # out of gamut at the grey's lightness)
    assert ((mean_ab(kept) - mean_ab(x)).norm(dim=1) < 0.25 * (mean_ab(grey) - mean_ab(x)).norm(dim=1)).all()
    assert lab(kept)[0, 2, :8].mean() > lab(kept)[0, 2, 24:].mean() + 10  # the sky more orange than the shore
    assert (lab(kept)[:, 0] - lab(grey)[:, 0]).abs().mean() < 1.0  # G's lightness and strokes (gamut aside)
