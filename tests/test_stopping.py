"""Stop requests: real signals to real processes (the CLI, a 2-rank torchrun) and a KeyboardInterrupt from a
callback (the notebook path) save the step in flight, and the resumed run ends bit-identical."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cutlib.checkpoint import atomic_write, load_checkpoint
from cutlib.stopping import REPEAT_GRACE_S, StopNow, StopRequest, TrainingInterrupted
from cutlib.train import train

ROOT = Path(__file__).resolve().parent.parent
STEPS = 16


def _args(data, out, **extra):
    kw = dict(data=data, out_dir=out, image_size=32, load_size=36, ngf=8, ndf=8, n_blocks=2, nce_layers="0,4,8,12",
              num_patches=16, num_workers=0, sample_every=0, log_every=1, ckpt_every=1000, steps=STEPS,
              identity_warmup=4, **extra)
    return [a for k, v in kw.items() for a in (f"--{k}", str(v))]


def _tensors(d, prefix=""):
    """Every tensor of a checkpoint by its path, and the plain values beside them."""
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_tensors(v, f"{prefix}/{k}"))
        return out
    if isinstance(d, (list, tuple)):
        out = {}
        for i, v in enumerate(d):
            out.update(_tensors(v, f"{prefix}/{i}"))
        return out
    return {prefix: d}


# wall-clock readings (the time budget's state), not training state: test_train holds them exact on a fake clock
CLOCK = ("/train_seconds", "/step_seconds_max")


def assert_same_checkpoint(a: Path, b: Path, skip=("/config",)):
    skip = (*skip, *CLOCK)
    ta, tb = _tensors(load_checkpoint(a)), _tensors(load_checkpoint(b))
    keys = [k for k in ta if not k.startswith(skip)]
    assert set(keys) == {k for k in tb if not k.startswith(skip)}
    for k in keys:
        if isinstance(ta[k], torch.Tensor):
            assert torch.equal(ta[k], tb[k]), k
        else:
            assert ta[k] == tb[k], k


def _steps_logged(run: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


def _wait_for_steps(run: Path, n: int, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"exited early: {proc.communicate()}")
        f = run / "metrics.jsonl"
        if f.is_file() and len(f.read_text().splitlines()) >= n:
            return
        time.sleep(0.05)
    raise AssertionError("no progress")


def _cli(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "cutlib.train", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, **kw)


@pytest.mark.slow
@pytest.mark.parametrize("sig,extra", [(signal.SIGTERM, {}), (signal.SIGINT, {"discriminator": "patch+projected"})])
def test_a_signal_to_the_cli_saves_the_step_in_flight_and_resume_is_bit_identical(demo_root, tmp_path, sig, extra):
    straight = _cli(_args(demo_root, tmp_path / "a", **extra))  # one thread each: the two run side by side
    run = tmp_path / "b"
    proc = _cli(_args(demo_root, run, **extra))
    _wait_for_steps(run, 3, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    done = straight.communicate(timeout=300)
    assert straight.returncode == 0, done[1][-2000:]
    assert proc.returncode == 128 + sig, err[-2000:]
    k = load_checkpoint(run / "ckpt" / "latest.pt")["step"]
    assert 3 <= k < STEPS and (run / "ckpt" / f"step_{k:07d}.pt").is_file()
    said = [line for line in err.splitlines() if "stopped after step" in line]
    assert len(said) == 1 and f"stopped after step {k}" in said[0] and signal.Signals(sig).name in said[0]
    assert f"-f {run / 'config.yaml'} --resume true" in said[0]
    assert json.loads(out.strip().splitlines()[-1])["stop_reason"] == "signal"
    assert _steps_logged(run) == list(range(1, k + 1))  # the step in flight was logged, none after it

    resumed = _cli(["-f", str(run / "config.yaml"), "--resume", "true"])
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    assert _steps_logged(run) == list(range(1, STEPS + 1))  # each step once: none lost, none repeated
    assert_same_checkpoint(tmp_path / "a" / "ckpt" / "latest.pt", run / "ckpt" / "latest.pt")


def test_a_keyboard_interrupt_from_a_callback_stops_before_the_next_step_and_resumes_exactly(tiny_cfg, tmp_path):
    """The notebook path: JupyterLab's Interrupt kernel is a KeyboardInterrupt; here raised by on_log after
    step 3. The loop's one stop decision comes before each step, so no step runs after it."""
    kw = dict(steps=8, log_every=1, ckpt_every=100, sample_every=3)
    train(tiny_cfg(out_dir=str(tmp_path / "a"), **kw), progress=False)

    def interrupt_at_3(rec):
        if rec["step"] == 3:
            raise KeyboardInterrupt

    cfg = tiny_cfg(out_dir=str(tmp_path / "b"), **kw)
    with pytest.raises(TrainingInterrupted) as e:
        train(cfg, progress=False, on_log=interrupt_at_3)
    assert e.value.step == 3 and e.value.summary["stop_reason"] == "signal" and "resume" in str(e.value)
    assert e.value._render_traceback_()[0].endswith(str(e.value))  # IPython shows one line, no frames
    assert load_checkpoint(tmp_path / "b/ckpt/latest.pt")["step"] == 3
    assert (tmp_path / "b/samples/step_0000003.png").is_file()  # the samples, as at the end of any run
    assert train(cfg.replace(resume=True), progress=False)["start_step"] == 3
    assert _steps_logged(tmp_path / "b") == list(range(1, 9))
    assert_same_checkpoint(tmp_path / "a/ckpt/latest.pt", tmp_path / "b/ckpt/latest.pt")


def test_a_repeat_within_the_grace_is_the_same_stop_and_a_later_one_stops_at_once():
    now = [100.0]
    with StopRequest(clock=lambda: now[0]) as stop:
        assert not stop.requested
        stop._on_signal(signal.SIGTERM, None)
        assert stop.requested and stop.signum == signal.SIGTERM
        now[0] += REPEAT_GRACE_S / 2
        stop._on_signal(signal.SIGINT, None)  # torchrun forwarding the Ctrl-C every rank already got
        assert stop.signum == signal.SIGTERM
        now[0] += REPEAT_GRACE_S
        with pytest.raises(StopNow):
            stop._on_signal(signal.SIGTERM, None)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the previous handlers are back


def test_a_second_signal_while_saving_leaves_no_file_under_the_final_name(tmp_path):
    target = tmp_path / "ckpt" / "latest.pt"

    def half_written(tmp):
        Path(tmp).write_bytes(b"half a checkpoint")
        raise StopNow(signal.SIGTERM)

    with pytest.raises(StopNow):
        atomic_write(target, half_written)
    assert not target.exists() and not list(target.parent.iterdir())


@pytest.mark.slow
def test_sigterm_to_torchrun_stops_both_ranks_at_one_step_and_a_two_rank_resume_is_exact(demo_root, tmp_path):
    # DiffAugment and flips off: a resumed DDP run reseeds each rank's augmentation stream by step
    args = lambda out: _args(demo_root, out, diffaug="''", flip="false")  # noqa: E731

    def torchrun(out):
        return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                 "2", "-m", "cutlib.train", *args(out)], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})

    straight = torchrun(tmp_path / "a")
    out, err = straight.communicate(timeout=300)
    assert straight.returncode == 0, err[-3000:]
    run = tmp_path / "b"
    proc = torchrun(run)
    _wait_for_steps(run, 3, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0  # torchrun reports the signal it got; the ranks exited 143 after saving
    k = load_checkpoint(run / "ckpt" / "latest.pt")["step"]
    assert 3 <= k < STEPS and _steps_logged(run) == list(range(1, k + 1))
    assert err.count(f"stopped after step {k}") == 1, err[-3000:]  # rank 0 alone says it
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "cutlib.train", *args(run), "--resume", "true"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert _steps_logged(run) == list(range(1, STEPS + 1))
    assert_same_checkpoint(tmp_path / "a/ckpt/latest.pt", run / "ckpt/latest.pt", skip=("/config", "/rng"))
