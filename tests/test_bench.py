"""CI runs every benchmark once at its --quick size so none can rot; they print one JSON line each."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


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


def test_generate_bench(tmp_path):
    out = run_bench("generate.py", tmp_path)
    assert out["images"] == 16 and 0 < out["pipeline_efficiency"] < 5


def test_kaggle_budget_bench(tmp_path):
    out = run_bench("kaggle_budget.py", tmp_path)
    assert out["world_size"] == 2 and out["steps"] == 6 and len(out["launch_to_ranks_s"]) == 2
    assert out["seconds_per_step"] > 0 and out["checkpoint_mb"] > 0 and out["loader_pairs_per_s"] > 0
    assert 0 < out["expected_steps"] < out["budget_hours"] * 3600 / out["seconds_per_step"]


@pytest.mark.slow
def test_quality_bench(tmp_path):
    out = run_bench("quality.py", tmp_path)
    assert out["steps"] == 4 and out["photos"] == 8
    for name in ("model", "identity", "color_transfer", "identity_at_size"):
        assert out[name]["fid"] > 0 and out[name]["n"] == 8
