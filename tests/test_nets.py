import pytest
import torch
from conftest import CornerMarker, LatticeMaker

from cutlib.config import TrainConfig
from cutlib.discriminators import PatchDiscriminator
from cutlib.model import build_networks
from cutlib.nets import (TAP_LAYERS, BlurDownsample, BlurUpsample, Generator, PatchSampleMLP, build_generator,
                         count_params, crop_window, nce_window)
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


def _down_up(x, taps):
    down = BlurDownsample(x.shape[1], taps=taps)
    return BlurUpsample()(BlurUpsample()(down(down(x))))


@pytest.mark.parametrize("taps,shift", [((1, 2, 1), 1.5), ((1, 3, 3, 1), 0.0)])
def test_the_generators_down_up_path_is_centred_and_mirror_symmetric_only_with_centred_taps(taps, shift):
    """Official CUT's [1,2,1] samples on even pixels and its bilinear upsampling assumes samples between
    pixels, so its down-up path moves the picture 1.5 px down and right and tells left from right (G must
    learn the way back, and has no pixels for it at the top and left borders); centred taps do neither."""
    rows = torch.arange(32.0)
    for at in (14, 15, 16, 17):
        impulse = torch.zeros(1, 1, 32, 32)
        impulse[0, 0, at, 16] = 1
        out = _down_up(impulse, taps)[0, 0]
        assert float((out.sum(1) * rows).sum() / out.sum()) == pytest.approx(at + shift, abs=1e-4)
    x = torch.rand(1, 2, 32, 32, generator=torch.Generator().manual_seed(0))
    flip_error = (_down_up(x.flip(3), taps) - _down_up(x, taps).flip(3)).abs().max()
    assert (flip_error < 1e-5) == (shift == 0)
    G = Generator(ngf=4, n_blocks=1, centred=shift == 0)
    assert [m.kernel.shape[-1] for m in G.modules() if isinstance(m, BlurDownsample)] == [len(taps)] * 2
    assert G(torch.rand(1, 3, 36, 36)).shape == (1, 3, 36, 36)


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


def test_nce_window_keys_and_queries_are_the_same_window_of_source_and_fake():
    G = Generator(ngf=8, n_blocks=5).eval()
    x = torch.randn(3, 3, 64, 64)
    gen = torch.Generator().manual_seed(1)
    rows, cols = nce_window(64, 64, 0.5, gen)
    assert len(rows) == len(cols) == 32 and 0 <= rows[0] and rows[-1] < 64 and cols[-1] < 64
    assert torch.equal(rows, rows[0] + torch.arange(32))
    out, keys, queries = G(x, taps=TAP_LAYERS, reencode=2, window=(rows, cols))
    assert out.shape == x.shape and not any(k.requires_grad for k in keys)
    for k, want in zip(keys, G.encode(crop_window(x[:2], (rows, cols)))):
        torch.testing.assert_close(k, want)
    for q, want in zip(queries, G.encode(crop_window(out[:2], (rows, cols)))):
        torch.testing.assert_close(q, want)
    assert queries[-1].shape == (2, 32, 8, 8)
    assert [len(w) for w in nce_window(64, 64, 0.3)] == [20, 20]  # rounded to a multiple of 4
    assert [len(w) for w in nce_window(64, 64, 1.0)] == [64, 64]


def test_a_mark_outside_the_nce_window_no_longer_moves_the_features_inside_it():
    # Why the window: whole-image instance norm lets a mark in one corner move every patch's features
    # (PatchNCE paid G for a top-left mark that way, bench/corner_mark.py); a window that excludes it can't see it.
    G = Generator(ngf=8, n_blocks=5).eval()
    fake = torch.rand(1, 3, 64, 64) * 2 - 1
    marked = fake.clone()
    marked[:, :, :8, :8] = 1.0
    window = (torch.arange(16, 48), torch.arange(24, 56))
    far = (slice(None), slice(None), slice(-4, None), slice(-4, None))  # the bottom-right cells of each tap
    with torch.no_grad():
        whole = [(a - b)[far].abs().max() for a, b in zip(G.encode(fake, (4, 16)), G.encode(marked, (4, 16)))]
        inside = [(a - b).abs().max() for a, b in zip(G.encode(crop_window(fake, window), (4, 16)),
                                                      G.encode(crop_window(marked, window), (4, 16)))]
    assert all(d > 1e-3 for d in whole) and all(d == 0 for d in inside)


def test_paint_over_phases_cancels_a_lattice_locked_to_the_generators_grid():
    x = torch.rand(2, 3, 64, 48) * 2 - 1
    assert (paint(LatticeMaker(), x, keep_colour=0) - x).abs().mean() > 0.05  # one paint: the lattice is there
    torch.testing.assert_close(paint(LatticeMaker(), x, shifts=4, keep_colour=0), x, rtol=0, atol=1e-5)
    diagonal = LatticeMaker(diagonal=True)
    assert (paint(diagonal, x, shifts=4, keep_colour=0) - x).abs().mean() > 0.03  # the diagonal phases keep diagonal lines
    torch.testing.assert_close(paint(diagonal, x, shifts=8, keep_colour=0), x, rtol=0, atol=1e-5)
    for h, w in ((8, 8), (13, 21), (64, 64)):  # every phase's crop lands on the picture, whatever its size
        z = torch.rand(1, 3, h, w)
        for shifts in (4, 8, 16):
            torch.testing.assert_close(paint(torch.nn.Identity(), z, border=16, shifts=shifts, keep_colour=0), z, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="shifts=3"):
        paint(torch.nn.Identity(), x, shifts=3)


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
