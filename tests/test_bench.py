"""CI runs every benchmark once at its --quick size so none can rot (`make test-long`, after `make test`);
they print one JSON line each."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.long


def run_bench(script, tmp_path, *args):
    env = {**os.environ, "CUTLIB_CACHE_DIR": str(tmp_path / "cache"), "CUTLIB_DEMO_DIR": str(tmp_path / "demo")}
    r = subprocess.run([sys.executable, f"bench/{script}", "--quick", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_train_step_bench(tmp_path):
    out = run_bench("train_step.py", tmp_path)
    assert out["seconds_per_step"] > 0 and out["gflop_per_step"] > 0
    assert 0 < out["fraction_of_reference"] < 5 and out["peak_memory_mb"] > 0


def test_train_step_bench_times_a_params_file_against_its_variants_alternating(tmp_path):
    env = {**os.environ, "CUTLIB_CACHE_DIR": str(tmp_path / "cache"), "CUTLIB_DEMO_DIR": str(tmp_path / "demo")}
    r = subprocess.run([sys.executable, "bench/train_step.py", "-f", "params/smoke.yaml", "--variant",
                        "mobile=g_block:mobile,ndf:4", "--rounds", "2", "--reps", "1", "--warmup", "1"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    file, mobile = (json.loads(x) for x in r.stdout.strip().splitlines())
    assert (file["variant"], mobile["variant"], mobile["changes"]) == ("file", "mobile", {"g_block": "mobile", "ndf": 4})
    assert len(file["rounds"]) == len(mobile["rounds"]) == 2 and file["speedup"] == 1.0
    assert mobile["g_params"] < file["g_params"] and mobile["g_gmac_256"] < file["g_gmac_256"]
    assert mobile["speedup"] == pytest.approx(file["seconds_per_step"] / mobile["seconds_per_step"], rel=0.01)


def test_generate_bench(tmp_path):
    out = run_bench("generate.py", tmp_path)
    assert out["images"] == 16 and 0 < out["pipeline_efficiency"] < 5
    # G's painting runs at 64 + border px; its rate is read against the best of its own convs alone
    assert out["border"] > 0 and out["gflop_per_image"] > 0 and out["peak_gflop_per_s"] > 0
    assert 0 < out["forward_fraction_of_peak"] <= 1.5 and out["conv_ceiling_gflop_per_s"] <= out["peak_gflop_per_s"]


def test_step_profile_bench(tmp_path):
    """Every op of the profiled step lands in one part: the shares add up, each trained network has its
    backward part (a backward op follows the forward op that made it), and the convs' FLOPs, counted
    shape by shape, agree with the whole step's count."""
    out = run_bench("step_profile.py", tmp_path)
    parts = out["parts"]
    assert abs(sum(p["share"] for p in parts.values()) - 1) < 0.01
    for net in ("G", "D.patch", "D.projected", "D.projected.backbone", "MLP"):
        assert net in parts and f"{net} (backward)" in parts, sorted(parts)
    assert {"optimizer", "EMA", "DiffAugment", "losses"} <= set(parts)
    assert parts["G"]["conv_gflop"] > 0 and parts["D.patch"]["conv_gflop"] > 0
    assert 0.5 * out["gflop_per_step"] < out["conv_gflop_per_step"] <= out["gflop_per_step"] * 1.01
    assert 0 < out["fraction_of_peak"] <= 1 and out["peak"]["shapes"] > 10
    assert out["traced_share_of_profiled"] > 0.5 and abs(sum(out["kinds"].values()) - 1) < 0.02


def test_generation_profile_bench(tmp_path):
    """Generation's batch profiled the same way: G's forward (no backward part: no autograd), the kept
    colour, and the border's pad and crop left over; G's convs counted are all of the batch's."""
    out = run_bench("step_profile.py", tmp_path, "--generate")
    parts = out["parts"]
    assert {"G", "keep_colour"} <= set(parts) and not any(p.endswith("(backward)") for p in parts)
    assert abs(sum(p["share"] for p in parts.values()) - 1) < 0.01
    assert 0.9 * out["gflop_per_step"] < parts["G"]["conv_gflop"] <= out["gflop_per_step"] * 1.01
    assert 0 < out["fraction_of_peak"] <= 1 and out["images_per_s"] > 0


def test_data_io_bench(tmp_path):
    out = run_bench("data_io.py", tmp_path)
    # A sample is a photo and a painting; each figure is rounded on its own, hence the 0.1 slack.
    loader = out["loader_workers_0"]
    assert loader["samples_per_s"] > 0 and abs(loader["images_per_s"] - 2 * loader["samples_per_s"]) <= 0.1 + 1e-9
    assert out["loader_workers_1"]["images_per_s"] > 0 and out["decode_images_per_s"]["pil"] > 0
    assert out["zip"]["images"] == 40 and out["zip"]["mb"] > 0 and out["png_encode_images_per_s"]["pil"] > 0


def test_kaggle_budget_bench(tmp_path):
    out = run_bench("kaggle_budget.py", tmp_path)
    assert out["world_size"] == 2 and out["steps"] == 6 and len(out["launch_to_ranks_s"]) == 2
    assert out["seconds_per_step"] > 0 and out["checkpoint_mb"] > 0 and out["loader_pairs_per_s"] > 0
    assert 0 < out["expected_steps"] < out["budget_hours"] * 3600 / out["seconds_per_step"]


@pytest.mark.slow
def test_gpu_curves_trains_two_recipes_and_the_curve_bench_scores_each_checkpoint(tmp_path):
    """bench/gpu_curves.py --quick (what runs before a device call) drives bench/curve.py: both are checked."""
    out = run_bench("gpu_curves.py", tmp_path, "--out", str(tmp_path / "o"))
    assert out["failed"] == [] and out["points"] == {"baseline": ["3", "6"], "residual": ["3", "6"]}
    curve = json.loads((tmp_path / "o" / "curve.json").read_text())
    for run, points in curve["runs"].items():
        for step, p in points.items():
            # quality.py clamps KID at 0: > 0, not >= 0, is what can fail (4-step generators are far off)
            assert p["step"] == int(step) and p["fid"] > 0 and p["kid_x1000"] > 0
            assert set(p["swd_levels"]) == {"256", "128", "64", "32", "16"} and Path(p["grid"]).is_file()
        assert points["3"]["fid"] != points["6"]["fid"]  # two checkpoints, two generators
    assert curve["runs"]["residual"]["6"]["fid"] != curve["runs"]["baseline"]["6"]["fid"]
    assert {"identity", "color_transfer", "painting_halves"} <= set(curve["baselines"])
    for name in ("curve.png", "grids.png"):
        assert (tmp_path / "o" / name).stat().st_size > 1000
    assert "| baseline | 6 |" in (tmp_path / "o" / "curve.md").read_text()
    # bench/paired.py on the curve just scored: residual against baseline at the two shared steps
    r = subprocess.run([sys.executable, "bench/paired.py", str(tmp_path / "o" / "curve.json"),
                        "--pair", "residual=baseline", "--colour"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    runs = curve["runs"]
    fid_change = sum(runs["residual"][k]["fid"] - runs["baseline"][k]["fid"] for k in ("3", "6")) / 2
    assert out["pairs"] == 2 and out["mean_change"]["FID"] == pytest.approx(fid_change, abs=0.01)


@pytest.mark.slow
def test_gpu_curves_calibration_trains_the_default_alone_on_a_steps_schedule(tmp_path):
    out = run_bench("gpu_curves.py", tmp_path, "--calibrate", "--out", str(tmp_path / "o"))
    assert out["mode"] == "calibrate" and out["failed"] == [] and out["points"] == {"default": ["3", "6"]}
    config = (tmp_path / "o" / "work" / "runs" / "default" / "config.yaml").read_text()
    assert "lr_schedule: steps" in config and "discriminator: patch+projected" in config  # params/baseline.yaml's


@pytest.mark.slow
def test_gpu_all_bench_runs_its_matrix_and_generation(tmp_path):
    env = {**os.environ, "CUTLIB_CACHE_DIR": str(tmp_path / "cache"), "CUTLIB_DEMO_DIR": str(tmp_path / "demo")}
    r = subprocess.run([sys.executable, "bench/gpu_all.py", "--quick"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    recs = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    steps = [x for x in recs if x["bench"] == "train_step"]
    assert len(steps) >= 3 and all(x["seconds_per_step"] > 0 for x in steps)
    assert any(x["discriminator"] == "patch+projected" for x in steps)  # the projected D's cost is timed
    assert any(x["bench"] == "generate" and x["images"] == 16 for x in recs)
    assert "| config | s/step |" in r.stderr  # the markdown table for bench/README.md

