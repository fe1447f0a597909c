"""SWD on Laplacian-pyramid patches (cutlib.swd): properties that a wrong pyramid, patch sampler,
normalisation or distance would break."""
import numpy as np
import pytest

from cutlib.data import list_images, load_rgb, make_demo_data
from cutlib.swd import descriptors, laplacian_pyramid, level_sizes, swd


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = make_demo_data(tmp_path_factory.mktemp("swd"), n_photos=16, n_paintings=16, size=128, seed=3)
    load = lambda sub: [np.asarray(load_rgb(p)) for p in list_images(root / sub)]  # noqa: E731
    return load("photo_jpg"), load("monet_jpg")


def test_pyramid_levels_reassemble_the_image():
    import torch

    x = torch.rand(2, 3, 64, 64)
    levels = laplacian_pyramid(x, 64)
    assert [lv.shape[-1] for lv in levels] == [64, 32, 16] == level_sizes(64)
    # upsampling the low-pass back through every band gives the image again (a true Laplacian pyramid)
    import torch.nn.functional as F

    from cutlib.swd import _blur

    y = levels[-1]
    for band in reversed(levels[:-1]):
        up = torch.zeros_like(band)
        up[:, :, ::2, ::2] = y * 4
        y = band + _blur(up)
    torch.testing.assert_close(y, x)
    assert F.mse_loss(levels[0], torch.zeros_like(levels[0])) > 0


def _textured(kind: str, n: int, seed: int) -> list[np.ndarray]:
    """Synthetic sets with a known texture: 'strokes' (noise smeared horizontally or vertically, like
    brushwork) or 'smooth' (softly blurred noise over a gradient, like a photo's sky and fields)."""
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        noise = rng.random((256, 256, 3))
        if kind == "strokes":
            arr = np.mean([np.roll(noise, k, axis=1) for k in range(9)], axis=0)  # horizontal smears
            arr = ((arr - arr.mean()) * 4 + 0.5).clip(0, 1) * 255
            arr = arr.transpose(1, 0, 2) if rng.random() < 0.5 else arr  # some vertical
            arr = arr.astype(np.uint8)
        else:
            ramp = np.linspace(0, 1, 256)[None, :, None] * rng.random(3)
            arr = np.asarray(Image.fromarray(((0.2 * noise + 0.8 * ramp) * 255).astype(np.uint8))
                             .filter(ImageFilter.GaussianBlur(1.5)))
        out.append(np.ascontiguousarray(arr))
    return out


def test_two_halves_of_one_texture_are_far_closer_than_two_textures():
    # 40 images a set: SWD's sampling floor falls as 1/sqrt(patches), and at 8 images it drowns the signal
    strokes, smooth = _textured("strokes", 80, 0), _textured("smooth", 40, 1)
    halves = swd(descriptors(strokes[:40]), descriptors(strokes[40:], seed=1))
    across = swd(descriptors(smooth), descriptors(strokes[40:], seed=1))
    assert halves["swd"] < 0.4 * across["swd"]
    assert halves["swd_levels"][256] < 0.5 * across["swd_levels"][256]  # the strokes live in the fine levels


def test_a_positive_per_channel_scale_and_offset_of_one_set_changes_nothing(sets):
    photos, paintings = sets
    x = [p.astype(np.float64) for p in photos[:8]]
    recoloured = [p * np.array([0.5, 1.3, 2.0]) + np.array([10.0, -5.0, 3.0]) for p in x]
    real = descriptors(paintings[:8], seed=1)
    a, b = swd(descriptors(x), real), swd(descriptors(recoloured), real)
    for size in a["swd_levels"]:
        assert b["swd_levels"][size] == pytest.approx(a["swd_levels"][size], rel=1e-3, abs=0.02)
    # while a change of texture does move it: blurred, the same photos are far from themselves (beyond
    # the sampling floor of other patches of the same images)
    blurred = [np.asarray(_blurred(p)) for p in photos[:8]]
    assert swd(descriptors(blurred), descriptors(photos[:8]))["swd_levels"][256] > \
        2 * swd(descriptors(photos[:8], seed=7), descriptors(photos[:8]))["swd_levels"][256]


def _blurred(arr):
    from PIL import Image, ImageFilter

    return Image.fromarray(arr).filter(ImageFilter.GaussianBlur(2))


def test_finite_seeded_and_zero_on_itself(sets):
    photos, paintings = sets
    d = descriptors(photos[:6])
    assert swd(d, d)["swd"] == 0.0
    a = swd(descriptors(photos[:6]), descriptors(paintings[:6], seed=1))
    b = swd(descriptors(photos[:6]), descriptors(paintings[:6], seed=1))
    c = swd(descriptors(photos[:6], seed=5), descriptors(paintings[:6], seed=6), seed=2)
    assert a == b and a != c and all(np.isfinite(v) for v in a["swd_levels"].values())
    # sets of different sizes compare through quantiles, not by truncation
    assert np.isfinite(swd(descriptors(photos[:4]), descriptors(paintings[:9], seed=1))["swd"])
