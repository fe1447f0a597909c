import numpy as np

from cutlib.baselines import color_transfer, lab_stats, lab_to_rgb, rgb_to_lab


def test_lab_round_trip_and_known_values():
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    assert np.abs(lab_to_rgb(rgb_to_lab(rgb)).astype(int) - rgb).max() <= 1
    np.testing.assert_allclose(rgb_to_lab(np.array([255, 255, 255], np.uint8)), [100, 0, 0], atol=0.05)
    np.testing.assert_allclose(rgb_to_lab(np.array([255, 0, 0], np.uint8)), [53.24, 80.09, 67.20], atol=0.05)


def test_color_transfer_matches_target_statistics():
    rng = np.random.default_rng(1)
    src = rng.integers(60, 200, (32, 32, 3)).astype(np.uint8)
    target = [rng.integers(0, 120, (32, 32, 3)).astype(np.uint8) for _ in range(3)]
    mean, std = lab_stats(target)
    out_mean, out_std = lab_stats([color_transfer(src, mean, std)])
    np.testing.assert_allclose(out_mean, mean, atol=1.5)
    np.testing.assert_allclose(out_std, std, rtol=0.1)
