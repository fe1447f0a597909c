import json
import pickle
import time
from pathlib import Path

import pytest
import torch
from conftest import assert_same_weights, assert_trained_alike, straight_and_resumed

from cutlib.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from cutlib.config import TrainConfig
from cutlib.model import LOSS_KEYS, CUTModel
from cutlib.schedule import lr_factor
from cutlib.train import NonFiniteLossError, train


def _batch(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = cfg.image_size
    return torch.rand(1, 3, s, s, generator=g) * 2 - 1, torch.rand(1, 3, s, s, generator=g) * 2 - 1


def test_lr_schedule_constant_then_linear_to_zero():
    assert [lr_factor(s, 100, 0.5) for s in (0, 49, 50, 75, 100)] == [1, 1, 1, 0.5, 0]


@pytest.mark.parametrize("overrides", [{}, {"mode": "fastcut"}, {"gan_loss": "lsgan"},
                                       {"gan_loss": "nonsaturating", "antialias": False, "batch_size": 2},
                                       {"residual_output": True, "amp": "bf16"}, {"g_block": "mobile"},
                                       {"lambda_lattice": 0.0}, {"lambda_lattice": 5.0, "mode": "fastcut"}])
def test_train_step_updates_all_nets_with_finite_losses(tiny_cfg, overrides):
    cfg = tiny_cfg(**overrides)
    m = CUTModel(cfg)
    before = {n: [p.detach().clone() for p in net.parameters()] for n, net in (("G", m.G), ("D", m.D), ("F", m.F))}
    photo, monet = _batch(cfg)
    out = m.train_step(photo.repeat(cfg.batch_size, 1, 1, 1), monet.repeat(cfg.batch_size, 1, 1, 1))
    assert tuple(out) == LOSS_KEYS and all(torch.isfinite(v) for v in out.values())
    v = {k: float(x) for k, x in out.items()}
    # each term enters G's loss with its weight (identity: its warm-up weight at step 0)
    assert v["g_loss"] == pytest.approx(v["g_adv"] + cfg.lambda_nce * v["nce"] + cfg.lambda_identity * v["identity"]
                                        + cfg.lambda_lattice * v["lattice"], rel=1e-4)
    assert (v["lattice"] > 0) == (cfg.lambda_lattice > 0)
    for name, net in (("G", m.G), ("D", m.D), ("F", m.F)):
        assert any(not torch.equal(a, b) for a, b in zip(before[name], net.parameters())), name
    assert m.step == 1 and m.skipped == {"d": 0, "g": 0}


def test_bf16_on_cpu_trains_like_fp32_within_bf16_precision(tiny_cfg):
    """The first step's losses in bf16 autocast lie within bf16's rounding of fp32's, and a short run
    stays finite with no skipped step (GradScaler and the NaN guards run as on CUDA)."""
    out = {}
    for amp in ("off", "bf16"):
        m = CUTModel(tiny_cfg(amp=amp, image_size=64, load_size=64))
        assert m.amp_dtype == (torch.bfloat16 if amp == "bf16" else None)
        out[amp] = {k: v.item() for k, v in m.train_step(*_batch(m.cfg)).items()}
    for k in ("d_loss", "g_adv", "nce", "identity"):
        assert out["bf16"][k] == pytest.approx(out["off"][k], rel=3e-2, abs=1e-2), k
    summary = train(tiny_cfg(amp="bf16", steps=6), progress=False)
    assert summary["amp"] == "bfloat16" and summary["skipped_steps"] == {"d": 0, "g": 0}


def test_amp_auto_picks_bf16_only_on_cpus_with_bf16_units(tmp_path, monkeypatch):
    from cutlib import hardware

    flags = tmp_path / "cpuinfo"
    flags.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f amx_tile amx_bf16\n")
    assert hardware.native_cpu_bf16(str(flags))
    flags = tmp_path / "cpuinfo-avx512"  # another file: the answer is cached per path
    flags.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert not hardware.native_cpu_bf16(str(flags))  # AVX-512 alone converts bf16 to fp32: slower than fp32
    cpu = torch.device("cpu")
    for native, want in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(hardware, "native_cpu_bf16", lambda native=native: native)
        assert hardware.resolve_amp("auto", cpu) == want
        assert hardware.resolve_amp("off", cpu) is None and hardware.resolve_amp("bf16", cpu) == torch.bfloat16


@pytest.mark.slow
@pytest.mark.long  # Inductor compiling C++ on the CPU: ~95 s on 2 cores
def test_compiled_generator_trains_like_eager(tiny_cfg):
    photo, monet = _batch(tiny_cfg())
    eager, compiled = CUTModel(tiny_cfg()), CUTModel(tiny_cfg(compile=True))
    for step in range(2):  # the second step runs on weights the first (compiled) backward updated
        torch.manual_seed(step)  # same DiffAugment draws for both
        a = eager.train_step(photo, monet)
        torch.manual_seed(step)
        b = compiled.train_step(photo, monet)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-4)
    # Inductor's fused kernels round differently from eager's, on many more near-zero gradients than a
    # DDP all-reduce reorders: a few in a thousand weights take the other sign of their first Adam step
    assert_trained_alike(eager.G.state_dict(), compiled.G.state_dict(), eager.cfg.lr, steps=2, mean_tol=1e-5)


def _step_with_a_nan_gradient_in(m, net) -> None:
    hook = next(net.parameters()).register_hook(lambda g: torch.full_like(g, float("nan")))
    m.train_step(*_batch(m.cfg))
    hook.remove()


def test_nonfinite_gradient_skips_that_step_and_is_counted(tiny_cfg):
    m = CUTModel(tiny_cfg())
    d_before = [p.detach().clone() for p in m.D.parameters()]
    g_before = [p.detach().clone() for p in m.G.parameters()]
    _step_with_a_nan_gradient_in(m, m.D)
    assert m.skipped == {"d": 1, "g": 0}
    assert all(torch.equal(a, b) for a, b in zip(d_before, m.D.parameters()))  # D untouched
    assert any(not torch.equal(a, b) for a, b in zip(g_before, m.G.parameters()))  # G stepped


def test_a_nonfinite_generator_gradient_skips_g_without_poisoning_the_mlp(tiny_cfg):
    """G and the MLP step in the same G step; G's NaN must not reach the MLP's gradients through a shared
    clipping norm (it did: the MLP's weights became NaN, and every later PatchNCE loss with them)."""
    m = CUTModel(tiny_cfg())
    g_before = [p.detach().clone() for p in m.G.parameters()]
    _step_with_a_nan_gradient_in(m, m.G)
    assert m.skipped == {"d": 0, "g": 1}
    assert all(torch.equal(a, b) for a, b in zip(g_before, m.G.parameters()))  # G skipped
    assert all(torch.isfinite(p).all() for p in m.F.parameters())
    out = m.train_step(*_batch(m.cfg, seed=1))
    assert all(torch.isfinite(v) for v in out.values())


def test_end_to_end_run_writes_checkpoints_samples_metrics(tiny_cfg):
    cfg = tiny_cfg(image_size=64, load_size=72, steps=4, sample_every=3, ckpt_every=1, log_every=2)
    summary = train(cfg, progress=False)
    run = cfg.out_dir
    assert summary["step"] == 4 and summary["stop_reason"] == "steps"
    ckpt = load_checkpoint(f"{run}/ckpt/latest.pt")
    assert ckpt["step"] == 4 and "shadow" in ckpt["ema_G"] and ckpt["config"]["image_size"] == 64
    for key in ("G", "D", "F", "opt_G", "opt_D", "opt_F", "scaler_G", "scaler_D", "rng"):
        assert key in ckpt
    from pathlib import Path

    # retention: the last KEEP_CKPTS (3) numbered checkpoints
    assert sorted(p.name for p in Path(run, "ckpt").glob("step_*.pt")) == [f"step_000000{s}.pt" for s in (2, 3, 4)]
    # samples when due (3) and at the end (4), once each
    assert sorted(p.name for p in Path(run, "samples").glob("*.png")) == ["step_0000003.png", "step_0000004.png"]
    recs = [json.loads(x) for x in Path(run, "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2, 3, 4] and all(r["d_loss"] > 0 for r in recs)  # and every checkpoint


def test_resume_is_exact(tiny_cfg, tmp_path):
    a, b = straight_and_resumed(tiny_cfg, tmp_path, 3)
    assert a["step"] == 6
    assert_same_weights(a, b)
    for k in a["ema_G"]["shadow"]:
        assert torch.equal(a["ema_G"]["shadow"][k], b["ema_G"]["shadow"][k])


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_cfg, monkeypatch):
    cfg = tiny_cfg(steps=8, log_every=2, ckpt_every=2)
    real_step = CUTModel.train_step

    def poisoned(self, photo, monet):  # a corrupt batch: NaN pixels in the photo at step 4
        if self.step == 4:
            photo = photo.clone()
            photo[..., 0, 0] = float("nan")
        return real_step(self, photo, monet)

    monkeypatch.setattr(CUTModel, "train_step", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"loss '\w+' became non-finite at step 4"):
        train(cfg, progress=False)
    ckpt = load_checkpoint(f"{cfg.out_dir}/ckpt/latest.pt")
    assert ckpt["step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["G"].values())


def test_time_budget_stops_cleanly_with_a_checkpoint(tiny_cfg):
    cfg = tiny_cfg(steps=10_000, time_budget_hours=4 / 3600, ckpt_every=10_000, sample_every=0)
    summary = train(cfg, progress=False)
    assert summary["stop_reason"] == "time_budget" and 0 < summary["step"] < 10_000
    assert summary["seconds"] < 4.0 + 2.0
    assert load_checkpoint(f"{cfg.out_dir}/ckpt/latest.pt")["step"] == summary["step"]
    # a budget stop ends as every stop does: the last steps' losses logged too
    last = json.loads(Path(cfg.out_dir, "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == summary["step"]


def test_checkpoint_round_trip_and_bad_files(tiny_cfg, tmp_path):
    m = CUTModel(tiny_cfg())
    m.train_step(*_batch(m.cfg))
    path = save_checkpoint(m.state_dict(), tmp_path / "c.pt")
    m2 = CUTModel(tiny_cfg(seed=5))
    m2.load_state_dict(load_checkpoint(path), path)
    assert m2.step == 1
    for a, b in zip(m.G.state_dict().values(), m2.G.state_dict().values()):
        assert torch.equal(a, b)
    assert m2.opt_G.state_dict()["state"][0]["step"] == 1  # Adam moments resumed, not reset

    (tmp_path / "trunc.pt").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="trunc.pt"):
        load_checkpoint(tmp_path / "trunc.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a cutlib checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"format": "cutlib-ckpt-1", "x": Evil()}))
    with pytest.raises(CheckpointError, match="refused, nothing was executed"):
        load_checkpoint(tmp_path / "evil.pt")
    other = CUTModel(tiny_cfg(ngf=16))
    with pytest.raises(CheckpointError, match="do not fit this architecture"):
        other.load_state_dict(load_checkpoint(path), path)


def test_cli_reports_bad_parameter(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "cutlib.train", "--stepz", "3"], capture_output=True, text=True)
    assert r.returncode == 2 and "stepz" in r.stderr and "Traceback" not in r.stderr


def test_time_lr_schedule_reaches_zero_at_the_budget():
    from cutlib.schedule import linear_tail, lr_factor_at

    assert [linear_tail(p, 0.5) for p in (0.0, 0.5, 0.75, 1.0, 1.2)] == [1, 1, 0.5, 0, 0]
    cfg = type("Cfg", (), dict(steps=10**6, lr_schedule="time", time_budget_hours=1.0))
    assert lr_factor_at(10, 3600.0, cfg) == 0.0 and lr_factor_at(10, 2700.0, cfg) == 0.5
    cfg.lr_schedule = "steps"
    assert lr_factor_at(10, 3600.0, cfg) == 1.0  # the step schedule ignores the clock


def test_time_schedule_decays_the_lr_to_zero_by_a_budget_stop_on_a_fake_clock(tiny_cfg):
    """A run that stops on its time budget (a Kaggle session) ends with its lr decayed, not at full lr."""
    ticks = iter(range(10**6))
    clock = lambda: next(ticks) * 0.25  # noqa: E731 - each reading a quarter second later: 1 s = 4 readings
    budget_s = 60.0
    cfg = tiny_cfg(steps=10**4, time_budget_hours=budget_s / 3600, lr_schedule="time", log_every=1,
                   ckpt_every=10**4, sample_every=0)
    summary = train(cfg, progress=False, clock=clock)
    assert summary["stop_reason"] == "time_budget" and summary["step"] > 5
    lrs = [json.loads(x)["lr"] for x in Path(cfg.out_dir, "metrics.jsonl").read_text().splitlines()]
    assert lrs[0] == cfg.lr and lrs == sorted(lrs, reverse=True)
    assert lrs[-1] < 0.15 * cfg.lr  # the loop stops a reserve (two worst steps + a checkpoint) before 0
    plain = tiny_cfg(steps=10**4, time_budget_hours=budget_s / 3600, log_every=1, ckpt_every=10**4, sample_every=0,
                     out_dir=cfg.out_dir + "-steps")
    ticks = iter(range(10**6))
    train(plain, progress=False, clock=clock)
    assert all(json.loads(x)["lr"] == cfg.lr  # never decayed
               for x in Path(plain.out_dir, "metrics.jsonl").read_text().splitlines())


def test_a_time_budgeted_run_stopped_half_way_resumes_its_lr_and_its_budget_exactly(tiny_cfg, tmp_path, monkeypatch):
    """params/cpu.yaml and kaggle.yaml anneal the lr over time_budget_hours. Stopped half-way (until_step
    saves as a stop signal does) and resumed by a new process, whose clock reads anything, the run takes
    the same lr at every step, stops on its budget at the same step, and ends with the same weights."""
    now = [0.0]
    step = CUTModel.train_step

    def one_second_step(self, *a):  # each step takes one second of the fake clock; nothing else takes any
        now[0] += 1.0
        return step(self, *a)

    monkeypatch.setattr(CUTModel, "train_step", one_second_step)
    clock = lambda: now[0]  # noqa: E731
    kw = dict(steps=10**4, time_budget_hours=24 / 3600, lr_schedule="time", log_every=1, ckpt_every=10**4,
              sample_every=0)
    whole = tiny_cfg(**kw, out_dir=str(tmp_path / "whole"))
    unbroken = train(whole, progress=False, clock=clock)
    assert unbroken["stop_reason"] == "time_budget" and unbroken["step"] > 10

    now[0] = 0.0
    part = tiny_cfg(**kw, out_dir=str(tmp_path / "part"))
    assert train(part, progress=False, clock=clock, until_step=unbroken["step"] // 2)["stop_reason"] == "until_step"
    now[0] = 5000.0  # a new process, hours later
    resumed = train(tiny_cfg(**kw, out_dir=part.out_dir, resume=True), progress=False, clock=clock)
    assert (resumed["step"], resumed["stop_reason"]) == (unbroken["step"], "time_budget")

    def lrs(cfg):
        return [(r["step"], r["lr"]) for r in map(json.loads, Path(cfg.out_dir, "metrics.jsonl").read_text().splitlines())]

    assert lrs(part) == lrs(whole)
    assert lrs(whole)[-1][1] <= 0.25 * whole.lr  # annealed (the reserve is 3 s of 24), not restarted at full lr
    a, b = load_checkpoint(f"{whole.out_dir}/ckpt/latest.pt"), load_checkpoint(f"{part.out_dir}/ckpt/latest.pt")
    assert all(torch.equal(a["G"][k], b["G"][k]) for k in a["G"]) and a["train_seconds"] == b["train_seconds"]

    # spent: resuming once more trains nothing; a larger budget on resume extends the run deliberately
    again = train(tiny_cfg(**kw, out_dir=part.out_dir, resume=True), progress=False, clock=clock)
    assert (again["start_step"], again["step"]) == (unbroken["step"], unbroken["step"])
    longer = train(tiny_cfg(**{**kw, "time_budget_hours": 36 / 3600}, out_dir=part.out_dir, resume=True),
                   progress=False, clock=clock)
    assert unbroken["step"] + 5 < longer["step"] and longer["stop_reason"] == "time_budget"


def test_cli_help_lists_every_field_with_type_default_and_help_in_its_group_on_one_screen():
    import subprocess
    import sys

    from cutlib.config import field_groups, field_help

    r = subprocess.run([sys.executable, "-m", "cutlib.train", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("usage: python -m cutlib.train") and not r.stderr
    lines = r.stdout.splitlines()
    helps = field_help()
    fields = [line for line in lines if line[10:12] == "--"]  # the group's name (or nothing), then --field
    at = 0
    for group, names in field_groups():  # the groups of TrainConfig, in its order, named beside their first field
        for i, name in enumerate(names):
            line = fields[at + i]
            assert line.startswith(f"{group if i == 0 else '':<9} --{name} "), line
            assert helps[name] in line and "(default: " in line, line
        at += len(names)
    assert at == len(fields) == len(TrainConfig.__dataclass_fields__)
    # a thin config (issue 56): no more fields than a screen shows
    assert len(TrainConfig.__dataclass_fields__) <= 45 and len(lines) <= 50
    assert "--image_size INT" in r.stdout and "--nce_layers LIST" in r.stdout and "(default: 0,4,8,12,16)" in r.stdout
    short = subprocess.run([sys.executable, "-m", "cutlib.train", "-f", "x.yaml", "-h"], capture_output=True, text=True)
    assert short.returncode == 0 and short.stdout == r.stdout


def test_cli_progress_into_a_pipe_is_plain_lines_at_the_cadence(demo_root, tmp_path):
    """`python -m cutlib.train ... > log`: a line every CUTLIB_PROGRESS_EVERY_S seconds, not a '\\r' state per step."""
    import os
    import subprocess
    import sys

    every, steps = 0.5, 60
    args = dict(data=str(demo_root), image_size=32, load_size=36, ngf=8, ndf=8, n_blocks=5, num_patches=16,
                steps=steps, log_every=10, ckpt_every=steps, sample_every=0, num_workers=0,
                out_dir=str(tmp_path / "run"))
    env = {**{k: v for k, v in os.environ.items() if k != "CUTLIB_PROGRESS"}, "CUTLIB_PROGRESS_EVERY_S": str(every)}
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "cutlib.train", *[f"--{k}={v}" for k, v in args.items()]],
                       capture_output=True, text=True, env=env)
    wall = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["step"] == steps
    lines = [line for line in r.stderr.splitlines() if line.startswith("train:")]
    assert "\r" not in r.stderr and "it/s" not in r.stderr  # no bar
    assert 2 <= len(lines) <= 2 + wall / every, (wall, lines)  # the opening and closing lines, one per interval
    assert lines[-1].startswith(f"train: ended at step {steps}/{steps} (100%) | ") and "nce " in lines[-1]
