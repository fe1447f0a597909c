"""The command line as a user in a terminal meets it: `cutlib train | generate | evaluate`, real processes."""
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from cutlib.checkpoint import save_checkpoint
from cutlib.data import DEMO_PHOTOS
from cutlib.generate import DEMO_GEN_SIZE, DEMO_WINDOW
from cutlib.model import CUTModel

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "cutlib.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_every_job_has_help_listing_its_options():
    r = cli("--help")
    assert r.returncode == 0 and all(job in r.stdout for job in ("train", "generate", "evaluate"))
    for job, options in (("generate", ("--run-dir", "--checkpoint", "--zip", "--out", "--min-count")),
                         ("evaluate", ("--paintings", "--fid-weights", "--swd-images")),
                         ("train", ("--steps", "--g_block", "--resume"))):
        r = cli(job, "--help")
        assert r.returncode == 0 and all(o in r.stdout for o in options), (job, r.stdout[-500:])
    r = subprocess.run([sys.executable, "-m", "cutlib.generate", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "--run-dir" in r.stdout  # the python -m form is the same command


def test_bad_input_names_the_flag_or_path_and_exits_non_zero(tmp_path):
    r = cli("generate", "--checkpoint", str(tmp_path / "nope.pt"), "--zip", str(tmp_path / "x.zip"))
    assert r.returncode == 2 and "nope.pt" in r.stderr and not (tmp_path / "x.zip").exists()
    r = cli("generate", "--run-dir", str(tmp_path), "--gen-size", "0")
    assert r.returncode == 2 and "--gen-size" in r.stderr
    r = cli("generate", "--run-dir", str(tmp_path), "--keep-colour", "-1")
    assert r.returncode == 2 and "--keep-colour" in r.stderr
    r = cli("generate", "--checkpoint", "latest")
    assert r.returncode == 2 and "--run-dir" in r.stderr
    r = cli("evaluate", str(tmp_path / "missing.zip"), "--paintings", str(tmp_path))
    assert r.returncode == 2 and "missing.zip" in r.stderr
    (tmp_path / "gen").mkdir()
    r = cli("evaluate", str(tmp_path / "gen"), "--paintings", str(tmp_path / "no_paintings"))
    assert r.returncode == 2 and "no_paintings" in r.stderr
    r = cli("frobnicate")
    assert r.returncode == 2 and "frobnicate" in r.stderr


def readme_terminal_commands() -> list[str]:
    """The `cutlib ...` lines of README.md's terminal section, comments cut, as a user would paste them."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## From the terminal", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.startswith("cutlib ")]


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """The README's three terminal commands, verbatim, in a fresh folder beside a copy of params/, on the
    demo data (its own copy: CUTLIB_DEMO_DIR), with the venv's `cutlib` first on the PATH. One trained
    demo run serves every test here that needs one."""
    home = tmp_path_factory.mktemp("terminal")
    shutil.copytree(ROOT / "params", home / "params")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "CUTLIB_DEMO_DIR": str(tmp_path_factory.mktemp("demo-data")), "CUTLIB_PROGRESS": "off"}
    results = [subprocess.run(shlex.split(cmd), cwd=home, env=env, capture_output=True, text=True, timeout=900)
               for cmd in readme_terminal_commands()]
    return home, results


@pytest.mark.slow
@pytest.mark.long  # the demo's full run (200 steps at 64 px, 200 images scored): ~4 minutes on 2 cores
def test_the_readme_terminal_commands_run_verbatim_on_the_demo_data(readme_run):
    home, (train, generate, evaluate) = readme_run
    for r in (train, generate, evaluate):
        assert r.returncode == 0, (r.args, r.stderr[-2000:])
    assert "generate: --data demo: 200..300 images" in generate.stderr  # says which window it took, once
    made = json.loads(generate.stdout.strip().splitlines()[-1])
    zip_file = home / "runs" / "x" / "images.zip"
    assert made["valid"] and made["count"] == 200 and (home / made["path"]).resolve() == zip_file.resolve()
    with zipfile.ZipFile(zip_file) as zf:
        assert len(zf.namelist()) == 200
    scores = json.loads(evaluate.stdout.strip().splitlines()[-1])
    assert {"mifid", "fid", "kid", "mem_distance", "swd", "swd_levels"} <= set(scores)
    assert scores["fid"] > 0 and scores["mifid"] >= scores["fid"]


def test_the_demo_window_is_the_one_params_demo_uses():
    demo = yaml.safe_load((ROOT / "params" / "demo.yaml").read_text())
    assert (demo["min_count"], demo["max_count"], demo["gen_size"]) == (*DEMO_WINDOW, DEMO_GEN_SIZE)
    assert DEMO_WINDOW[0] <= DEMO_PHOTOS <= DEMO_WINDOW[1]


@pytest.mark.slow
@pytest.mark.long  # shares the README run
def test_too_few_real_photos_name_the_flags_that_fix_it(readme_run, tmp_path):
    home, _ = readme_run
    photos = tmp_path / "data" / "photo_jpg"
    photos.mkdir(parents=True)
    for p in sorted((home / "runs" / "x" / "samples").glob("*.png"))[:1]:
        Image.open(p).convert("RGB").save(photos / "one.jpg")
    r = cli("generate", "--run-dir", str(home / "runs" / "x"), "--data", str(tmp_path / "data"), "--device", "cpu")
    assert r.returncode == 2 and "--min-count" in r.stderr and "--no-top-up" in r.stderr, r.stderr[-1000:]


@pytest.mark.slow
@pytest.mark.long  # shares the README run
def test_generate_out_translates_a_folder_keeping_names(readme_run, demo_root, tmp_path):
    run = readme_run[0] / "runs" / "x"
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


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_generation_exits_by_its_signal_leaving_no_zip_and_no_temp(signum, tiny_cfg, demo_root, tmp_path):
    """A spot VM's SIGTERM or a Ctrl-C as the zip starts, while the DataLoader forks its workers: SIGTERM's
    default action left the temp zip behind, and an exception raised there could hang the PNG threads."""
    ckpt = save_checkpoint(CUTModel(tiny_cfg()).state_dict(), tmp_path / "ckpt.pt")
    photos = tmp_path / "photos"
    photos.mkdir()
    demo = sorted((demo_root / "photo_jpg").iterdir())
    for i in range(3000):  # many names, few files: enough PNGs that the stop lands mid-zip
        (photos / f"{i:05d}.jpg").symlink_to(demo[i % len(demo)])
    zip_path = tmp_path / "out" / "images.zip"
    p = subprocess.Popen([sys.executable, "-m", "cutlib.cli", "generate", "--checkpoint", str(ckpt),
                          "--photos", str(photos), "--zip", str(zip_path), "--gen-size", "32", "--min-count", "1",
                          "--device", "cpu"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not list(zip_path.parent.glob(".images.zip.*.tmp")) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert p.poll() is None, p.communicate()
    p.send_signal(signum)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signum, err[-2000:]
    assert f"stopped ({signal.Signals(signum).name})" in err and out == ""
    assert list(zip_path.parent.iterdir()) == []
    assert torch.load(ckpt, weights_only=True)  # the input is untouched
