"""The command line as a user in a terminal meets it: `cutlib train | generate | evaluate`, real processes."""
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "cutlib.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_every_job_has_help_listing_its_options():
    r = cli("--help")
    assert r.returncode == 0 and all(job in r.stdout for job in ("train", "generate", "evaluate"))
    for job, options in (("generate", ("--run-dir", "--checkpoint", "--zip", "--out", "--min-count")),
                         ("evaluate", ("--paintings", "--fid-weights", "--swd-images")),
                         ("train", ("--steps", "--lambda_style", "--resume"))):
        r = cli(job, "--help")
        assert r.returncode == 0 and all(o in r.stdout for o in options), (job, r.stdout[-500:])
    r = subprocess.run([sys.executable, "-m", "cutlib.generate", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "--run-dir" in r.stdout  # the python -m form is the same command


def test_bad_input_names_the_flag_or_path_and_exits_non_zero(tmp_path):
    r = cli("generate", "--checkpoint", str(tmp_path / "nope.pt"), "--zip", str(tmp_path / "x.zip"))
    assert r.returncode == 2 and "nope.pt" in r.stderr and not (tmp_path / "x.zip").exists()
    r = cli("generate", "--run-dir", str(tmp_path), "--gen-size", "0")
    assert r.returncode == 2 and "--gen-size" in r.stderr
    r = cli("generate", "--checkpoint", "latest")
    assert r.returncode == 2 and "--run-dir" in r.stderr
    r = cli("evaluate", str(tmp_path / "missing.zip"), "--paintings", str(tmp_path))
    assert r.returncode == 2 and "missing.zip" in r.stderr
    (tmp_path / "gen").mkdir()
    r = cli("evaluate", str(tmp_path / "gen"), "--paintings", str(tmp_path / "no_paintings"))
    assert r.returncode == 2 and "no_paintings" in r.stderr
    r = cli("frobnicate")
    assert r.returncode == 2 and "frobnicate" in r.stderr


@pytest.mark.slow
def test_from_training_to_a_scored_submission_in_three_commands(demo_root, tmp_path):
    run = tmp_path / "run"
    r = cli("train", "-f", "params/smoke.yaml", "--data", str(demo_root), "--out_dir", str(run), "--eval_every", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    r = cli("generate", "--run-dir", str(run), "--data", str(demo_root), "--min-count", "20", "--max-count", "30",
            "--gen-size", "32", "--device", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    made = json.loads(r.stdout.strip().splitlines()[-1])
    zip_file = run / "images.zip"
    assert made["valid"] and made["count"] == 20 and Path(made["path"]) == zip_file
    with zipfile.ZipFile(zip_file) as zf:
        assert len(zf.namelist()) == 20
    r = cli("evaluate", str(zip_file), "--paintings", str(Path(demo_root) / "monet_jpg"), "--device", "cpu",
            "--no-cache")
    assert r.returncode == 0, r.stderr[-2000:]
    scores = json.loads(r.stdout.strip().splitlines()[-1])
    assert {"mifid", "fid", "kid", "mem_distance", "swd", "swd_levels"} <= set(scores)
    assert scores["fid"] > 0 and scores["mifid"] >= scores["fid"]


@pytest.mark.slow
def test_generate_out_translates_a_folder_keeping_names(demo_root, tmp_path):
    run = tmp_path / "run"
    r = cli("train", "-f", "params/smoke.yaml", "--data", str(demo_root), "--out_dir", str(run), "--eval_every", "0",
            "--steps", "2", "--ckpt_every", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    photos = tmp_path / "mine"
    photos.mkdir()
    for i, p in enumerate(sorted((Path(demo_root) / "photo_jpg").iterdir())[:3]):
        Image.open(p).save(photos / f"holiday {i}.jpg")
    r = cli("generate", "--run-dir", str(run), "--photos", str(photos), "--out", str(tmp_path / "painted"),
            "--gen-size", "32", "--device", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["count"] == 3
    out = sorted(p.name for p in (tmp_path / "painted").iterdir())
    assert out == ["holiday 0.png", "holiday 1.png", "holiday 2.png"]
    for name in out:
        with Image.open(tmp_path / "painted" / name) as im:
            assert im.format == "PNG" and im.size == (256, 256) and im.mode == "RGB"
