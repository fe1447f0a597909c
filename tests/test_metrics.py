import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from cutlib import metrics
from cutlib.data import list_images


def test_fid_zero_symmetric_and_closed_form():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 6)), rng.normal(1.0, 2.0, size=(300, 6))
    assert metrics.fid(a, a) == pytest.approx(0, abs=1e-6)
    assert metrics.fid(a, b) == pytest.approx(metrics.fid(b, a), rel=1e-9)
    # Gaussians with known stats: mu 0 vs 1 (d=3), Sigma I vs 4I -> 3 + 3 + 12 - 2*sqrt(4)*3 = 6
    assert metrics.fid_from_stats(np.zeros(3), np.eye(3), np.ones(3), 4 * np.eye(3)) == pytest.approx(6.0)
    s1 = np.diag([1.0, 2.0, 3.0])
    s2 = np.array([[2.0, 0.5, 0], [0.5, 1.0, 0], [0, 0, 1.0]])
    from scipy.linalg import sqrtm

    expect = np.trace(s1 + s2 - 2 * sqrtm(s1 @ s2).real)
    assert metrics.fid_from_stats(np.zeros(3), s1, np.zeros(3), s2) == pytest.approx(expect, rel=1e-6)


def test_fid_finite_for_few_samples_in_high_dimension():
    rng = np.random.default_rng(1)
    v = metrics.fid(rng.normal(size=(5, 2048)), rng.normal(size=(7, 2048)))
    assert np.isfinite(v) and v > 0


def test_memorization_distance_is_averaged_over_generated_images():
    real = np.array([[1.0, 0.0], [0.0, 1.0]])
    gen = np.array([[1.0, 0.0], [1.0, 0.01], [1.0, -0.01]])  # all three near real[0]
    d_kaggle = metrics.memorization_distance(gen, real)
    # the other direction (mean over real of min over gen) would count real[1]'s distance of ~1
    d_other = np.mean([min(1 - abs(np.dot(r, g) / np.linalg.norm(r) / np.linalg.norm(g)) for g in gen) for r in real])
    assert d_kaggle < 1e-4 and d_other > 0.49
    assert metrics.memorization_distance(np.vstack([gen, np.zeros((2, 2))]), real) == pytest.approx(d_kaggle)


def test_mifid_threshold():
    assert metrics.mifid_from(50.0, 0.2) == pytest.approx(50.0)  # no penalty above 0.1
    assert metrics.mifid_from(50.0, 0.05) == pytest.approx(1000.0)  # memorised: divided by d


def test_scores_match_an_independent_numpy_computation():
    rng = np.random.default_rng(2)
    g, r = rng.normal(size=(60, 8)), rng.normal(0.3, 1.2, size=(50, 8))
    mu1, mu2 = g.mean(0), r.mean(0)
    c1, c2 = np.cov(g.T), np.cov(r.T)
    from scipy.linalg import sqrtm

    fid = ((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * sqrtm(c1 @ c2).real)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    rn = r / np.linalg.norm(r, axis=1, keepdims=True)
    d = np.mean([np.min(1 - np.abs(rn @ x)) for x in gn])
    s = metrics.scores(g, r)
    assert s["fid"] == pytest.approx(fid, rel=1e-6) and s["mem_distance"] == pytest.approx(d)
    assert s["mifid"] == pytest.approx(fid / (d if d < 0.1 else 1.0), rel=1e-6)


def test_kid_near_zero_for_same_distribution():
    rng = np.random.default_rng(3)
    same = metrics.kid(rng.normal(size=(300, 16)), rng.normal(size=(300, 16)), subsets=20, subset_size=100)[0]
    diff = metrics.kid(rng.normal(size=(300, 16)), rng.normal(0.5, 1, size=(300, 16)), subsets=20, subset_size=100)[0]
    assert abs(same) < 0.02 < diff


def test_tf1_resize_uses_no_half_pixel_centres():
    x = torch.arange(4.0).view(1, 1, 1, 4).repeat(1, 1, 4, 1)
    y = metrics.tf1_resize_bilinear(x, 8)
    # source = dest * 4/8: 0, .5, 1, 1.5, 2, 2.5, 3, 3 (clamped at the edge)
    torch.testing.assert_close(y[0, 0, 0], torch.tensor([0, 0.5, 1, 1.5, 2, 2.5, 3, 3.0]))


@pytest.fixture(scope="module")
def extractor():
    return metrics.InceptionFeatures(batch_size=4)


def _imgs(folder, n):
    return [np.asarray(Image.open(p).convert("RGB")) for p in list_images(folder)[:n]]


def test_extractor_real_weights_deterministic_batch_invariant(extractor, demo_root):
    imgs = _imgs(demo_root / "photo_jpg", 6)
    f = extractor(imgs)
    assert f.shape == (6, 2048) and np.isfinite(f).all() and f.std() > 0
    np.testing.assert_allclose(extractor(imgs), f, rtol=0, atol=0)
    one_by_one = np.concatenate([extractor.batch(i[None]) for i in imgs])
    np.testing.assert_allclose(one_by_one, f, rtol=1e-4, atol=1e-4)


def test_fid_halves_of_one_set_far_below_two_different_sets(extractor, demo_root):
    photos = extractor(_imgs(demo_root / "photo_jpg", 12))
    paintings = extractor(_imgs(demo_root / "monet_jpg", 8))
    within = metrics.fid(photos[:6], photos[6:])
    across = metrics.fid(photos[:6], paintings[:6])
    assert within < 0.8 * across


def test_evaluate_folder_or_zip_with_content_cache(extractor, demo_root, tmp_path):
    z = tmp_path / "gen.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for i, im in enumerate(_imgs(demo_root / "photo_jpg", 5)):
            buf = io.BytesIO()
            Image.fromarray(im).save(buf, format="PNG")
            zf.writestr(f"{i}.png", buf.getvalue())
    r = metrics.evaluate(z, demo_root / "monet_jpg", cache_dir=tmp_path / "cache", extractor=extractor, progress=False)
    assert set(r) >= {"fid", "mifid", "mem_distance", "kid", "n_generated", "n_real", "swd", "swd_levels"}
    assert (r["n_generated"], r["n_real"]) == (5, 8) and r["fid"] > 0
    assert list(r["swd_levels"]) == [256, 128, 64, 32, 16] and r["swd"] > 0
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    r2 = metrics.evaluate(z, demo_root / "monet_jpg", cache_dir=tmp_path / "cache", extractor=extractor,
                          progress=False)
    assert r2["fid"] == pytest.approx(r["fid"])


def test_in_training_evaluation_keeps_best(tiny_cfg, tmp_path, monkeypatch):
    import json

    from cutlib.train import train

    monkeypatch.setenv("CUTLIB_CACHE_DIR", str(tmp_path / "cache"))
    cfg = tiny_cfg(steps=4, eval_every=2, eval_photos=4, sample_every=0)
    train(cfg, progress=False)
    from pathlib import Path

    recs = [json.loads(x) for x in Path(cfg.out_dir, "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in recs if r.get("eval")]
    assert [r["step"] for r in evals] == [2, 4] and all(r["n_generated"] == 4 for r in evals)
    assert all(r["swd"] > 0 and len(r["swd_levels"]) == 5 for r in evals)  # texture beside MiFID
    from cutlib.checkpoint import load_checkpoint

    best = load_checkpoint(f"{cfg.out_dir}/ckpt/best.pt")
    assert best["best"]["mifid"] == min(r["mifid"] for r in evals)
