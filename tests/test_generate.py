import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from conftest import CornerMarker

from cutlib.checkpoint import CheckpointError, save_checkpoint
from cutlib.generate import (ZipValidationError, generate_zip, load_generator, plan_jobs, resolve_checkpoint,
                             translate_files, validate_zip, write_zip)
from cutlib.model import CUTModel


@pytest.fixture
def ckpt(tiny_cfg, tmp_path):
    m = CUTModel(tiny_cfg())
    g = torch.Generator().manual_seed(0)
    m.train_step(torch.rand(1, 3, 32, 32, generator=g) * 2 - 1, torch.rand(1, 3, 32, 32, generator=g) * 2 - 1)
    with torch.no_grad():  # make EMA and raw weights clearly different
        for p in m.ema.model.parameters():
            p.mul_(0.5)
    return save_checkpoint(m.state_dict(), tmp_path / "run" / "ckpt" / "latest.pt")


def test_load_generator_uses_ema_by_default_and_says_so(ckpt):
    G, info = load_generator(ckpt)
    R, info_raw = load_generator(ckpt, weights="raw")
    assert info["weights"] == "ema" and info_raw["weights"] == "raw" and info["step"] == 1
    x = torch.rand(1, 3, 32, 32)
    assert not torch.allclose(G(x), R(x))
    assert not G.training
    with pytest.raises(ValueError, match="weights"):
        load_generator(ckpt, weights="best")


def test_resolve_checkpoint(ckpt):
    run = ckpt.parent.parent
    assert resolve_checkpoint("latest", run) == ckpt
    with pytest.raises(CheckpointError, match="best.pt does not exist"):
        resolve_checkpoint("best", run)


def test_plan_jobs_counts():
    files = [Path(f"{i}.jpg") for i in range(10)]
    c, t = plan_jobs(files, 5, 8, top_up=True, strict=False)
    assert t == 8 and c[:8] == [(f, "") for f in files[:8]]
    c, t = plan_jobs(files, 25, 30, top_up=True, strict=False)
    assert t == 25 and {v for _, v in c[:25]} == {"", "_flip", "_crop"}
    assert plan_jobs(files, 25, 30, top_up=False, strict=False)[1] == 10
    with pytest.raises(ValueError, match="strict"):
        plan_jobs(files, 25, 30, top_up=True, strict=True)


def test_generate_zip_end_to_end(ckpt, demo_root, tmp_path):
    out = tmp_path / "images.zip"
    r = generate_zip(ckpt, demo_root / "photo_jpg", out, min_count=20, max_count=30, gen_size=32,
                     batch_size=4, num_workers=0, progress=False)
    assert r["count"] == 20 and r["valid"] and r["generator"]["weights"] == "ema"
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        assert len(set(names)) == 20 and "00000_flip.png" in names  # 12 photos topped up with flips
        im = Image.open(zf.open(names[0]))
        assert im.format == "PNG" and im.size == (256, 256) and im.mode == "RGB"
    assert not list(tmp_path.glob(".images.zip.*"))  # no temp left behind


def _zip(path, entries):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)


def _png(size=256, mode="RGB"):
    import io

    buf = io.BytesIO()
    Image.new(mode, (size, size)).save(buf, format="PNG")
    return buf.getvalue()


def test_validate_zip_catches_each_rule(tmp_path):
    good = [(f"{i}.png", _png()) for i in range(3)]
    _zip(tmp_path / "ok.zip", good)
    assert validate_zip(tmp_path / "ok.zip", 3, 3)["count"] == 3
    with pytest.raises(ZipValidationError, match="3 images, needs 4..5"):
        validate_zip(tmp_path / "ok.zip", 4, 5)
    _zip(tmp_path / "small.zip", good + [("x.png", _png(128))])
    with pytest.raises(ZipValidationError, match="x.png is PNG RGB \\(128, 128\\)"):
        validate_zip(tmp_path / "small.zip", 1, 9)
    _zip(tmp_path / "gray.zip", [("g.png", _png(mode="L"))])
    with pytest.raises(ZipValidationError, match="g.png"):
        validate_zip(tmp_path / "gray.zip", 1, 9)
    _zip(tmp_path / "junk.zip", [("j.png", b"nope")])
    with pytest.raises(ZipValidationError, match="j.png does not decode"):
        validate_zip(tmp_path / "junk.zip", 1, 9)


def test_failed_write_leaves_no_final_file(tmp_path):
    def images():
        yield "a.png", np.zeros((256, 256, 3), np.uint8)
        raise RuntimeError("generator crashed")

    with pytest.raises(RuntimeError, match="crashed"):
        write_zip(images(), tmp_path / "images.zip")
    assert list(tmp_path.iterdir()) == []


def test_killed_generation_leaves_only_a_temp_that_the_next_run_cleans(tmp_path):
    script = (
        "import sys, os, signal, numpy as np\n"
        "from cutlib.generate import write_zip\n"
        "def imgs():\n"
        "    for i in range(1000):\n"
        "        if i == 50: os.kill(os.getpid(), signal.SIGKILL)\n"
        "        yield f'{i}.png', np.zeros((256, 256, 3), np.uint8)\n"
        f"write_zip(imgs(), {str(tmp_path / 'images.zip')!r}, workers=2)\n")
    r = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parent.parent, env=os.environ)
    assert r.returncode == -9
    assert not (tmp_path / "images.zip").exists()
    assert len(list(tmp_path.glob(".images.zip.*.tmp"))) == 1
    write_zip(((f"{i}.png", np.zeros((256, 256, 3), np.uint8)) for i in range(2)), tmp_path / "images.zip")
    assert [p.name for p in tmp_path.iterdir()] == ["images.zip"]


def test_translated_photos_keep_a_corner_mark_off_the_picture(demo_root):
    jobs = [(p, "") for p in sorted((demo_root / "photo_jpg").iterdir())[:3]]
    photos = [img for _, img in translate_files(torch.nn.Identity(), jobs, 64, 64, keep_colour=0)]
    painted = [img for _, img in translate_files(CornerMarker(), jobs, 64, 64, keep_colour=0)]
    marked = [img for _, img in translate_files(CornerMarker(), jobs, 64, 64, border=0, keep_colour=0)]
    assert all(np.array_equal(a, b) for a, b in zip(photos, painted))
    assert all(m[0, 0].tolist() == [255, 0, 0] for m in marked)


def test_a_mobile_generator_trains_resumes_exactly_and_generates_from_its_checkpoint_alone(tiny_cfg, tmp_path,
                                                                                           one_thread):
    """g_block: mobile end to end: the architecture travels in the checkpoint's config, so generation
    rebuilds it with no flag; a resumed run equals the unbroken one."""
    from conftest import assert_same_weights, straight_and_resumed

    from cutlib.nets import MobileResBlock

    a, b = straight_and_resumed(tiny_cfg, tmp_path, 3, g_block="mobile", ngf=8, ndf=4)
    assert_same_weights(a, b)
    assert a["config"]["g_block"] == "mobile"
    G, info = load_generator(tmp_path / "b/ckpt/latest.pt")
    assert {type(m) for m in G.blocks} == {MobileResBlock} and info["step"] == 6
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(np.full((40, 40, 3), 60 * i, np.uint8)).save(photos / f"p{i}.jpg")
    generate_zip(tmp_path / "b/ckpt/latest.pt", photos, tmp_path / "m.zip", min_count=3, max_count=3,
                 gen_size=32, num_workers=0, progress=False)
    assert validate_zip(tmp_path / "m.zip", 3, 3)["count"] == 3
