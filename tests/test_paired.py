"""bench/paired.py: the paired comparison behind every lever's "mean change" in bench/README.md. The points
here are hand-written curve.json entries (the arithmetic is what is checked); tests/test_bench.py runs it
on a curve.json that bench/curve.py scored."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import paired  # noqa: E402


def point(fid, kid, swd128, swd64):
    return {"fid": fid, "kid_x1000": kid, "swd_levels": {"256": 0.0, "128": swd128, "64": swd64},
            "colour": {"chroma": 12.0, "palette_spread": 1.5, "hue_kept_a": 0.1, "hue_kept_b": -0.2}}


REF = {"500": point(300, 300, 150, 100), "1000": point(280, 250, 140, 90), "2000": point(250, 200, 130, 80)}
LEVER = {"1000": point(290, 240, 130, 95), "500": point(310, 320, 140, 100), "1500": point(1, 1, 1, 1)}


def test_pairs_only_the_steps_both_scored_in_numeric_order_as_lever_minus_reference():
    rows = paired.paired_rows(REF, LEVER)
    assert [r["step"] for r in rows] == [500, 1000]  # "1000" < "500" as strings; 1,500 and 2,000 unpaired
    assert rows[0]["change"] == (10, 20, -10, 0) and rows[1]["change"] == (10, -10, -10, 5)
    s = paired.summary(rows)
    assert s["pairs"] == 2
    assert s["mean_change"] == {"FID": 10.0, "KID x1000": 5.0, "SWD 128": -10.0, "SWD 64": 2.5}
    assert s["lever_lower"] == {"FID": 0, "KID x1000": 1, "SWD 128": 2, "SWD 64": 0}  # equal is not lower


def write_curve(path, runs):
    path.write_text(json.dumps({"runs": runs, "baselines": {}}))
    return path


def run_paired(*args):
    return subprocess.run([sys.executable, "bench/paired.py", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_runs_merge_across_files_and_each_seed_pairs_with_its_own_reference(tmp_path):
    a = write_curve(tmp_path / "a.json", {"ref_s0": REF, "ref_s1": {"500": point(200, 200, 100, 50)}})
    b = write_curve(tmp_path / "b.json", {"lever_s0": LEVER, "lever_s1": {"500": point(190, 210, 90, 50)}})
    r = run_paired(a, b, "--pair", "lever_s0=ref_s0", "--pair", "lever_s1=ref_s1", "--colour")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["pairs"] == 3 and out["mean_change"]["FID"] == pytest.approx((10 + 10 - 10) / 3, abs=0.01)
    assert out["lever_lower"]["FID"] == 1
    assert "| lever_s1 | ref_s1 | 500 | 200.0 / 200.0 / 100.0 / 50.0 | 190.0 / 210.0 / 90.0 / 50.0 | " \
           "-10.0 / +10.0 / -10.0 / +0.0 | 12.0 · 1.5 · 0.10 / -0.20 |" in r.stderr


def test_a_run_name_not_in_the_files_is_named_with_the_runs_that_are(tmp_path):
    a = write_curve(tmp_path / "a.json", {"ref_s0": REF, "lever_s0": LEVER})
    r = run_paired(a, "--pair", "lever_s0=ref_s9")
    assert r.returncode != 0 and "no run 'ref_s9'" in r.stderr and "lever_s0, ref_s0" in r.stderr
    r = run_paired(a, "--pair", "lever_s0")
    assert r.returncode != 0 and "LEVER_RUN=REFERENCE_RUN" in r.stderr


def test_pairs_without_a_common_step_fail(tmp_path):
    a = write_curve(tmp_path / "a.json", {"ref": {"500": REF["500"]}, "lever": {"1000": LEVER["1000"]}})
    r = run_paired(a, "--pair", "lever=ref")
    assert r.returncode == 1 and "share no scored step" in r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["pairs"] == 0


def test_at_equal_time_a_faster_runs_later_step_pairs_with_the_references_earlier_one(tmp_path):
    """--seconds-per-step: a recipe 4x faster a step is compared at the same training minutes (its steps
    2,000 and 4,000 at 1 s against the reference's 500 and 1,000 at 4 s: minutes 33 and 67), not at the
    same steps (its step 500, minute 8, has no twin)."""
    fast = {"2000": point(200, 150, 100, 60), "4000": point(180, 120, 90, 50), "500": point(1, 1, 1, 1)}
    a = write_curve(tmp_path / "a.json", {"ref": REF, "fast": fast})
    r = run_paired(a, "--pair", "fast=ref", "--seconds-per-step", "ref=4", "--seconds-per-step", "fast=1")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["at_equal"] == "minutes" and out["pairs"] == 2
    assert out["mean_change"]["FID"] == -100.0 and "| fast | ref | 33 | 300.0 / 300.0" in r.stderr
    r = run_paired(a, "--pair", "fast=ref", "--seconds-per-step", "ref=4")
    assert r.returncode != 0 and "none given for fast" in r.stderr
