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
def test_quality_bench_runs_configurations_side_by_side(tmp_path):
    out = run_bench("quality.py", tmp_path, "--out", str(tmp_path / "q"), "--run", "plain:",
                    "--run", "resid: --residual_output true --lambda_gan 2")
    assert out["photos"] == 8 and set(out["results"]) == {"plain", "resid"}
    for name, r in out["results"].items():
        # KID is clamped at 0 and its std over subsets of all 8 images is ~0 by construction: what can fail
        # is a KID that does not see 4-step outputs as far from the paintings
        assert r["steps"] == 4 and r["ema"]["fid"] > 0 and r["ema"]["kid_x1000"] > 0
        assert r["ema"]["swd"] > 0 and len(r["ema"]["swd_levels"]) == 5  # texture beside FID
        assert (tmp_path / "q" / f"{name}_grid.png").is_file()
    assert "--residual_output true --lambda_gan 2" in out["runs"]["resid"]
    for name in ("identity", "color_transfer", "identity_at_size", "color_transfer_at_size", "paintings_at_size"):
        assert out["baselines"][name]["fid"] > 0 and out["baselines"][name]["swd"] > 0
    assert out["baselines"]["painting_halves"]["swd"] > 0  # SWD's floor: the paintings against themselves
    # the resolution-matched colour transfer is the reference each run is judged against
    ct = out["baselines"]["color_transfer_at_size"]["fid"]
    assert out["results"]["plain"]["ema"]["vs_color_transfer"]["fid_gain"] == pytest.approx(
        ct - out["results"]["plain"]["ema"]["fid"], abs=0.02)


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


@pytest.mark.slow
def test_ddp_soak_with_the_gil_held_counts_no_aborted_rank(tmp_path):
    """Each rank keeps the GIL until it blocks (--hold-gil), which turned issue 27's teardown race into
    an abort in 7 of 26 runs of the code before the fix (bench/README.md): 3 runs without one."""
    out = run_bench("ddp_soak.py", tmp_path, "--runs", "3", "--hold-gil", "30", "--args", "--eval_every 0")
    assert out["runs"] == 3 and out["finished_training"] == 3 and out["hold_gil"] == 30
    assert out["non_zero_exits"] == 0 and out["aborted_ranks"] == 0
    assert not [w for w in out["warnings"] if "broadcast_buffers" in w[1]]  # DDP's deprecation is gone


def test_spectrum_finds_a_faint_grid_that_a_smooth_image_lacks(demo_root, capsys):
    sys.path.insert(0, str(ROOT / "bench"))
    import spectrum

    photos = torch.stack([spectrum.eval_image(f, 64) for f in spectrum.list_images(demo_root / "photo_jpg")[:4]])
    # horizontal lines of period 2, 2% of the range (invisible in a grid), like the stripes issue 34 found
    checker = 0.02 * torch.tensor([1.0, -1.0]).repeat(32)[:, None].expand(64, 64)
    clean = spectrum.peak_ratios(spectrum.mean_power(photos))
    gridded = spectrum.peak_ratios(spectrum.mean_power(photos + checker))
    assert gridded["p2"] > 10 * clean["p2"] and gridded["max"] >= gridded["p2"] > 50
    spectrum.main(["grad", "--photos", str(demo_root / "photo_jpg"), "--n", "2", "--size", "32"])
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"photos", "grad_patch", "grad_projected"} and out["grad_projected"]["p2"] > 0


def test_lattice_push_says_whether_a_step_grows_or_erases_the_lattice_an_image_has(demo_root):
    sys.path.insert(0, str(ROOT / "bench"))
    import spectrum

    photos = spectrum.photo_batch(demo_root / "photo_jpg", 4, 64)
    stripes = 0.05 * torch.tensor([1.0, 0.0, -1.0, 0.0]).repeat(16)[:, None].expand(64, 64)  # period 4
    smooth = torch.nn.functional.avg_pool2d(torch.randn(4, 3, 64, 64), 9, 1, 4)  # no lattice of its own
    grows = spectrum.lattice_push(photos + stripes, 0.1 * stripes.expand(4, 3, 64, 64) + 0.01 * smooth)
    erases = spectrum.lattice_push(photos + stripes, -0.1 * stripes.expand(4, 3, 64, 64) + 0.01 * smooth)
    assert grows["p4"] > 0.9 and erases["p4"] < -0.9 and grows["p4_step_power"] > 0


def test_spectrum_grad_measures_a_trained_runs_discriminators(tiny_cfg, capsys):
    sys.path.insert(0, str(ROOT / "bench"))
    import spectrum
    from cutlib.train import train

    cfg = tiny_cfg(discriminator="patch+projected", lambda_proj=0.5, steps=2, ckpt_every=2, sample_every=0)
    train(cfg, progress=False)
    spectrum.main(["grad", cfg.out_dir, "--photos", str(Path(cfg.data) / "photo_jpg"), "--n", "2"])
    out = json.loads(capsys.readouterr().out)["run@2"]
    assert set(out) == {"fakes", "grad_patch", "grad_projected", "grad_total"}
    push = {name: out[f"grad_{name}"]["push"] for name in ("patch", "projected", "total")}
    assert all(-1 <= p["p4"] <= 1 and p["p4_step_power"] > 0 for p in push.values())
    # the steps add up as the training step weights them (lambda_proj scales the projected one)
    assert push["total"]["p4_step_power"] != push["projected"]["p4_step_power"]


def test_the_antialiased_backbone_barely_sees_a_period_2_lattice(demo_root, capsys):
    sys.path.insert(0, str(ROOT / "bench"))
    import spectrum

    spectrum.main(["sees", "--photos", str(demo_root / "photo_jpg"), "--n", "2", "--size", "64"])
    out = json.loads(capsys.readouterr().out)
    # its [1,2,1] blurs have no response at period 2: each map moves far less than the plain backbone's
    assert all(aa < 0.5 * plain for aa, plain in zip(out["p2_antialiased"], out["p2_plain"]))
    assert all(x > 0 for x in out["p4_antialiased"])


def test_spectrum_taps_blur_the_backbone_as_backbone_antialias_does(demo_root, capsys):
    sys.path.insert(0, str(ROOT / "bench"))
    import spectrum
    from cutlib.projection import frozen_lite0

    x = spectrum.photo_batch(demo_root / "photo_jpg", 1, 64)
    with torch.no_grad():  # all five blurred is the library's fix, built another way
        for a, b in zip(spectrum.blur_first(5)(x), frozen_lite0("", antialias=True)(x)):
            torch.testing.assert_close(a, b)
    spectrum.main(["taps", "--photos", str(demo_root / "photo_jpg"), "--n", "2", "--size", "64", "--push-size", "128"])
    out = json.loads(capsys.readouterr().out)
    plain, stem_only, fixed = out["blur_first_0"], out["blur_first_1"], out["blur_first_5"]
    # imagenet_cos compares each net's maps with the plain backbone's (blur_first_0 is that reference, 1 by
    # construction): blurring moves the maps away, and blurring more moves them further, at every tap
    assert all(c < 1 for c in stem_only["imagenet_cos"] + fixed["imagenet_cos"])
    assert all(f <= s for f, s in zip(fixed["imagenet_cos"], stem_only["imagenet_cos"]))
    # the stride-4 map's push: a lattice from the plain backbone and with the stem alone blurred, flat when
    # both of its stride-2 convs blur
    assert plain["push_spread"][0] > 0.3 and stem_only["push_spread"][0] > 0.3 and fixed["push_spread"][0] < 1e-3


def test_corner_mark_measures_what_pays_g_for_a_mark(tiny_cfg, capsys):
    sys.path.insert(0, str(ROOT / "bench"))
    import corner_mark
    from cutlib.train import train

    x = torch.zeros(2, 3, 64, 64)
    x[:, 0, :4] = 1.0  # a saturated bar along the top rows and another down the left columns
    x[:, 1, :, :7] = -1.0
    marked, cleaned = corner_mark.corner_chroma(x), corner_mark.corner_chroma(corner_mark.clean_corner(x))
    assert marked["top_left_top"] > 100 and marked["top_left_left"] > 100 and marked["centre"] == 0
    assert cleaned["top_left_top"] == 0 and cleaned["top_left_left"] == 0

    cfg = tiny_cfg(discriminator="patch+projected", lambda_proj=0.5, steps=2, ckpt_every=2, sample_every=0)
    train(cfg, progress=False)
    corner_mark.main([cfg.out_dir, "--photos", str(Path(cfg.data) / "photo_jpg"), "--n", "2"])
    out = json.loads(capsys.readouterr().out)["run@2"]
    assert set(out["d_realness"]["marked"]) == {"patch", "projected"}
    assert set(out["chroma"]) == {"marked", "cleaned", "painted"}
    for tag in ("marked", "cleaned"):
        assert [f"tap{t}" for t in cfg.nce_layers] == list(out["nce"][tag])
        assert all(0 < v["corner"] < 50 and 0 < v["rest"] < 50 for v in out["nce"][tag].values())


def test_spectrum_tells_a_lattice_from_texture_of_the_same_orientation():
    """A period-4 lattice is a line in the spectrum (p4_line >> 1); horizontal streaks of every period near
    4 px raise the ratio to the ring's median (p4) as much but are no line (p4_line ~ 1)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import spectrum

    g = torch.Generator().manual_seed(0)
    noise = torch.randn(16, 3, 64, 64, generator=g) * 0.05
    rows = torch.arange(64.0)[:, None]
    lattice = noise + 0.1 * torch.cos(2 * torch.pi * rows / 4)
    # streaks: per image a random period in 3.3..5 px and phase, so no single frequency stands out
    period = 3.3 + 1.7 * torch.rand(16, 1, 1, 1, generator=g)
    phase = 2 * torch.pi * torch.rand(16, 1, 1, 1, generator=g)
    streaks = noise + 0.1 * torch.cos(2 * torch.pi * rows / period + phase)
    lat, st = (spectrum.peak_ratios(spectrum.mean_power(x)) for x in (lattice, streaks))
    assert lat["p4"] > 10 and st["p4"] > 3  # both stand out of the ring along the vertical axis
    assert lat["p4_line"] > 10 and st["p4_line"] < 3


def test_spectrum_measures_outputs_painted_over_the_generators_phases(tiny_cfg, capsys):
    sys.path.insert(0, str(ROOT / "bench"))
    import spectrum
    from cutlib.train import train

    cfg = tiny_cfg(steps=2, ckpt_every=2, sample_every=0)
    train(cfg, progress=False)
    spectrum.main(["outputs", cfg.out_dir, "--photos", str(Path(cfg.data) / "photo_jpg"), "--n", "2",
                   "--shifts", "1,4"])
    out = json.loads(capsys.readouterr().out)
    single, averaged = out["run@2"], out["run@2/shifts4"]
    assert set(single) == {"p2", "p4", "p8", "p4_anti", "max", "max_at", "p2_line", "p4_line", "p8_line"}
    assert single != averaged  # four paints at other phases, not the single one again
