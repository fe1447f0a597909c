import time

import numpy as np
import pytest
import torch
from PIL import Image

from cutlib.data import (DataError, UnpairedDataset, eval_image, list_images, load_rgb, make_demo_data,
                         random_crop_flip, scan_images, to_uint8)
from cutlib.viz import pairs_grid


def test_demo_data_quick_deterministic_and_kaggle_layout(tmp_path):
    t0 = time.time()
    a = make_demo_data(tmp_path / "a", n_photos=40, n_paintings=20, size=256, seed=3)
    assert time.time() - t0 < 30
    b = make_demo_data(tmp_path / "b", n_photos=40, n_paintings=20, size=256, seed=3)
    assert len(list_images(a / "photo_jpg")) == 40 and len(list_images(a / "monet_jpg")) == 20
    for sub in ("photo_jpg", "monet_jpg"):
        assert (a / sub / "00007.jpg").read_bytes() == (b / sub / "00007.jpg").read_bytes()
    photo = np.asarray(Image.open(a / "photo_jpg" / "00000.jpg"))
    assert photo.shape == (256, 256, 3) and photo.std() > 10  # a picture, not a flat colour


def test_missing_and_empty_folders_are_named(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "nope")):
        list_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty.*no .jpg"):
        list_images(tmp_path / "empty")


def test_unreadable_files_skipped_with_a_warning_naming_them(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(d / "good.jpg")
    (d / "empty.jpg").write_bytes(b"")
    (d / "text.png").write_text("not an image")
    with pytest.warns(UserWarning, match="empty.jpg"):
        usable, skipped = scan_images(d)
    assert [p.name for p in usable] == ["good.jpg"] and len(skipped) == 2
    (d / "good.jpg").unlink()
    with pytest.raises(DataError, match="no usable image"), pytest.warns(UserWarning):
        scan_images(d)


def test_odd_modes_decode_to_rgb(tmp_path):
    Image.new("L", (5, 4), 100).save(tmp_path / "gray.png")
    Image.new("RGBA", (5, 4), (10, 20, 30, 255)).save(tmp_path / "rgba.png")
    Image.new("P", (5, 4), 3).save(tmp_path / "pal.png")
    Image.fromarray(np.full((4, 5), 65535, np.uint16)).save(tmp_path / "deep.png")
    for name in ("gray.png", "rgba.png", "pal.png", "deep.png"):
        im = load_rgb(tmp_path / name)
        assert im.mode == "RGB" and im.size == (5, 4), name
    assert load_rgb(tmp_path / "deep.png").getpixel((0, 0)) == (255, 255, 255)


def test_truncated_file_mid_training_is_replaced_by_the_next(tmp_path, recwarn):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 40), (i * 80, 0, 0)).save(d / f"{i}.jpg")
    data = (d / "1.jpg").read_bytes()
    (d / "1.jpg").write_bytes(data[: len(data) // 2])  # truncated after the scan
    ds = UnpairedDataset(list_images(d), list_images(d), 32, 36, True, 0, 30)
    for k in range(12):
        p, m = ds[k]
        assert p.shape == (3, 32, 32) and torch.isfinite(p).all()
    assert any("1.jpg" in str(w.message) for w in recwarn)


def test_dataset_is_a_pure_function_of_seed_and_index(demo_root):
    photos, monets = list_images(demo_root / "photo_jpg"), list_images(demo_root / "monet_jpg")
    a = UnpairedDataset(photos, monets, 32, 36, True, seed=1, length=50)
    b = UnpairedDataset(photos, monets, 32, 36, True, seed=1, length=50)
    assert torch.equal(a[17][0], b[17][0]) and torch.equal(a[17][1], b[17][1])
    assert not torch.equal(a[17][0], UnpairedDataset(photos, monets, 32, 36, True, 2, 50)[17][0])
    epoch = {a._file(0, k) for k in range(len(photos))}
    assert epoch == set(range(len(photos)))  # each epoch visits every photo once


def _photo_like(h=40, w=50):
    """Smooth colour ramps plus noise: a resize filter's differences show on edges and gradients alike."""
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) % 32 * 8], -1)
    arr = arr + np.random.default_rng(0).normal(0, 20, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def test_training_crops_are_pils_bicubic_crop_on_tensors_and_flips_mirror():
    im = _photo_like()
    x = random_crop_flip(im, 48, 32, False, np.random.default_rng(1))
    left, top = (int(v) for v in np.random.default_rng(1).integers(0, 48 - 32 + 1, size=2))
    ref = np.asarray(im.resize((48, 48), Image.BICUBIC).crop((left, top, left + 32, top + 32)), dtype=int)
    assert x.dtype == torch.uint8 and x.shape == (3, 32, 32)
    assert np.abs(x.permute(1, 2, 0).numpy().astype(int) - ref).max() <= 2  # torchvision's uint8 filter
    flipped = 0
    for seed in range(16):  # same draws with and without flip: each crop is its unflipped twin or its mirror
        plain = random_crop_flip(im, 48, 32, False, np.random.default_rng(seed))
        maybe = random_crop_flip(im, 48, 32, True, np.random.default_rng(seed))
        assert torch.equal(maybe, plain) or torch.equal(maybe, plain.flip(-1))
        flipped += not torch.equal(maybe, plain)
    assert 3 <= flipped <= 13


def test_eval_view_resizes_like_pil_and_keeps_a_right_sized_image_untouched(tmp_path):
    im = _photo_like()
    im.save(tmp_path / "a.png")
    x = eval_image(tmp_path / "a.png", 24)
    ref = np.asarray(im.resize((24, 24), Image.BICUBIC), dtype=int)
    assert x.shape == (3, 24, 24) and np.abs(to_uint8(x).astype(int) - ref).max() <= 2
    Image.fromarray(np.asarray(im)[:32, :32]).save(tmp_path / "b.png")
    assert np.array_equal(to_uint8(eval_image(tmp_path / "b.png", 32)), np.asarray(im)[:32, :32])


def test_pairs_grid_puts_each_source_beside_its_output():
    src, out = torch.rand(3, 3, 8, 10) * 2 - 1, torch.rand(3, 3, 8, 10) * 2 - 1
    grid = np.asarray(pairs_grid(src, out * 1.5))  # out of range: clamped, as a saved image must be
    assert grid.shape == (24, 20, 3)
    assert np.array_equal(grid[8:16, :10], to_uint8(src[1]))
    assert np.array_equal(grid[16:24, 10:], to_uint8((out[2] * 1.5).clamp(-1, 1)))
