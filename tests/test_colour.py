"""The colour report and the colour term: right colour space, and figures that see a collapsed palette."""
import pytest
import torch

from cutlib import colour, losses
from cutlib.metrics import colour_report


def solid(r, g, b, size=8):
    return torch.tensor([r, g, b], dtype=torch.float32)[:, None, None].expand(3, size, size)[None]


@pytest.mark.parametrize("rgb, lab", [
    # reference values of the CIE formulas (D65, 2 degrees) for sRGB colours, to 0.05 units
    ((1.0, 1.0, 1.0), (100.0, 0.0, 0.0)),
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    ((1.0, 0.0, 0.0), (53.24, 80.09, 67.20)),
    ((0.0, 1.0, 0.0), (87.73, -86.18, 83.18)),
    ((0.0, 0.0, 1.0), (32.30, 79.19, -107.86)),
    ((0.5, 0.5, 0.5), (53.39, 0.0, 0.0)),
    ((1.0, 128 / 255, 0.0), (67.05, 42.83, 74.03)),  # orange, #FF8000
])
def test_srgb_to_lab_matches_the_cie_reference_values(rgb, lab):
    got = colour.srgb_to_lab(solid(*rgb))[0, :, 0, 0]
    assert got.tolist() == pytest.approx(lab, abs=0.05)


def test_the_conversion_is_not_fooled_by_swapped_channels_or_a_missing_gamma():
    # BGR order would read a red as blue (b* negative); linear values taken as sRGB would brighten grey
    assert colour.srgb_to_lab(solid(0.8, 0.1, 0.1))[0, 2, 0, 0] > 20
    assert colour.srgb_to_lab(solid(0.2, 0.2, 0.2))[0, 0, 0, 0] == pytest.approx(21.25, abs=0.1)


def test_colourfulness_is_hasler_and_suesstrunks_m():
    grey = solid(0.5, 0.5, 0.5)
    assert colour.colourfulness(grey).item() == pytest.approx(0.0, abs=1e-4)
    # half red, half blue: rg = (255, 0), yb = (127.5, -255); M = sqrt(var rg + var yb) + 0.3 sqrt(mean^2s)
    img = torch.zeros(1, 3, 2, 2)
    img[0, 0, 0], img[0, 2, 1] = 1.0, 1.0
    spread = (127.5 ** 2 + 191.25 ** 2) ** 0.5
    cast = (127.5 ** 2 + 63.75 ** 2) ** 0.5
    assert colour.colourfulness(img).item() == pytest.approx(spread + 0.3 * cast, rel=1e-5)


def varied_set(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 1, 1, generator=g)
    return (base + 0.1 * torch.rand(n, 3, 16, 16, generator=g)).clamp(0, 1)


def test_the_palette_report_sees_a_collapsed_palette_and_a_lost_hue():
    photos = varied_set()
    src = colour.image_stats(photos)
    kept = colour.palette_report(colour.image_stats(photos * 0.9 + 0.05), src)
    # every output the same olive cast, with the photo's brightness: what a global colour transfer does
    olive = torch.tensor([0.45, 0.45, 0.3])[None, :, None, None]
    cast = olive * photos.mean(1, keepdim=True) / 0.4
    lost = colour.palette_report(colour.image_stats(cast.clamp(0, 1)), src)
    assert kept["hue_kept_a"] > 0.95 and kept["hue_kept_b"] > 0.95
    assert abs(lost["hue_kept_a"]) < 0.5 and lost["palette_spread"] < 0.2 * kept["palette_spread"]
    assert lost["chroma"] < 0.6 * kept["chroma"] and lost["colourfulness"] < 0.6 * kept["colourfulness"]
    assert "hue_kept_a" not in colour.palette_report(src)


def test_the_palette_report_names_mismatched_sets():
    with pytest.raises(ValueError, match="pairs each output"):
        colour.palette_report(colour.image_stats(varied_set(5)), colour.image_stats(varied_set(4)))


def test_lab_to_srgb_inverts_srgb_to_lab_and_clips_what_srgb_cannot_show():
    rgb = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(colour.lab_to_srgb(colour.srgb_to_lab(rgb)), rgb, rtol=0, atol=1e-9)
    torch.testing.assert_close(colour.lab_to_srgb(torch.tensor([67.05, 42.83, 74.03])[:, None, None]),
                               torch.tensor([1.0, 128 / 255, 0.0])[:, None, None], rtol=0, atol=2e-3)  # #FF8000
    beyond = colour.lab_to_srgb(torch.tensor([50.0, 0.0, -150.0])[:, None, None])  # bluer than sRGB's blue
    assert beyond.min() >= 0 and beyond.max() <= 1 and beyond[2] > beyond[0]


def test_keep_photo_colour_moves_the_coarse_colour_and_nothing_else():
    photo = varied_set(3) * 1.6 - 0.8
    board = torch.ones(16, 16)
    board[::2, ::2] = board[1::2, 1::2] = -1
    painting = (photo.mean(1, keepdim=True).expand_as(photo) + 0.05 * board).clone()  # grey, with strokes
    painting[:, 2] += 0.1  # a blue-violet cast
    kept = colour.keep_photo_colour(painting, photo, grid=4)
    lab = lambda t: colour.srgb_to_lab((t + 1) / 2)  # noqa: E731
    cells = lambda t: torch.nn.functional.adaptive_avg_pool2d(lab(t)[:, 1:], 4)  # noqa: E731
    assert (cells(painting) - cells(photo)).abs().mean() > 5
    assert (cells(kept) - cells(photo)).abs().mean() < 1.5  # the photo's colour layout (spread smoothly)
    # the painting's lightness and its strokes (a +-0.05 checkerboard: ~5 L* units), up to what sRGB cannot
    # show at that lightness (clipped to the gamut)
    strokes = (lab(painting)[:, 0] - colour._smooth(lab(painting)[:, :1], 4)[:, 0]).abs().mean()
    assert (lab(kept)[:, 0] - lab(painting)[:, 0]).abs().mean() < 0.25 * strokes
    torch.testing.assert_close(colour.keep_photo_colour(photo, photo), photo, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="grid=0"):
        colour.keep_photo_colour(painting, photo, grid=0)
    with pytest.raises(ValueError, match="differ"):
        colour.keep_photo_colour(painting, photo[..., :8])


def write_images(folder, arrays, ext=".png"):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(folder / f"img{i:02d}{ext}")
    return folder


def test_colour_report_pairs_outputs_with_their_photos_by_name(tmp_path):
    import numpy as np

    from cutlib.data import DataError

    rng = np.random.default_rng(0)
    photos = [np.clip(rng.integers(0, 256, 3) + rng.integers(-20, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
              for _ in range(12)]
    photo_dir = write_images(tmp_path / "photos", photos, ".jpg")
    kept = write_images(tmp_path / "kept", photos)
    grey = write_images(tmp_path / "grey", [np.repeat(p.mean(2, keepdims=True), 3, 2).astype(np.uint8) for p in photos])
    report = colour_report(kept, photo_dir, photo_dir)
    assert report["outputs"]["hue_kept_a"] > 0.95 and report["outputs"]["hue_kept_b"] > 0.95
    assert report["outputs"]["palette_spread"] == pytest.approx(report["photos"]["palette_spread"], rel=0.1)
    lost = colour_report(grey, photo_dir, photo_dir)["outputs"]
    assert lost["chroma"] < 1 and lost["palette_spread"] < 1 and "paintings" in report
    write_images(tmp_path / "other", photos[:2])
    (tmp_path / "other" / "img00.png").rename(tmp_path / "other" / "elsewhere.png")
    with pytest.raises(DataError, match="named after a photo"):
        colour_report(tmp_path / "other", photo_dir, photo_dir)
    assert "hue_kept_a" not in colour_report(tmp_path / "other", photo_dir)["outputs"]


def test_the_colour_panel_picks_a_red_sky_foliage_and_water_first(tmp_path):
    import numpy as np

    solid = {"grey": (128, 128, 128), "sky": (200, 70, 50), "leaves": (40, 150, 40), "sea": (30, 60, 170),
             "wall": (220, 140, 40), "dim": (120, 110, 100)}
    folder = tmp_path / "photos"
    folder.mkdir()
    from PIL import Image

    for name, rgb in solid.items():
        Image.new("RGB", (32, 32), rgb).save(folder / f"{name}.jpg")
    panel = colour.colour_panel(sorted(folder.iterdir()), 4)
    assert [p.stem for p in panel] == ["sky", "leaves", "sea", "wall"]
    assert set(colour.colour_panel(panel[:2], 4)) == set(panel[:2])  # fewer photos than asked for: all of them
