"""DistributedDataParallel on CPU (gloo) through torchrun: equivalence, cross-resume, NaN stop."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import assert_trained_alike

from cutlib.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _args(data, out, steps=4, **extra):
    # DiffAugment and flips off: their draws are per-process random, everything else is a function of
    # the step and sample index, so one process with batch 2 sees exactly what two ranks with batch 1 see.
    kw = dict(data=data, out_dir=out, ngf=8, ndf=8, n_blocks=5, num_patches=16,
              num_workers=0, sample_every=0, log_every=2, ckpt_every=2, steps=steps, diffaug="''", flip="false",
              identity_warmup=2, **{"image_size": 32, "load_size": 36, "amp": "off", **extra})
    return [a for k, v in kw.items() for a in (f"--{k}", str(v))]


def _torchrun(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _single(*args, threads=None):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    return subprocess.run([sys.executable, "-m", "cutlib.train", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=240, env=env)


def _two_ranks_match_one_process(data, tmp_path, **args) -> None:
    """Two ranks at batch 1 against one process at batch 2. Summation order differs (all-reduce vs one
    batch; so does one process at 1 vs 2 threads), and Adam turns that float noise in a near-zero gradient
    into a full lr-sized step of either sign, after which the runs part chaotically: measured here (G, D
    and the MLP, mean over weights) up to 5e-7 after 2 steps and 1.4e-5 after 4 with the projected D, while
    a wrong gradient (one process at batch 1 against batch 2) parts them by 2e-4 after 2 steps and 3e-4
    after 4. So the weights are held tightly after 2 steps, loosely after 4, and so are the losses: the
    first logged ones (step 2) tightly; later ones part by up to 5e-3 relative in noise alone."""
    r = _torchrun("-m", "cutlib.train", *_args(data, tmp_path / "ddp", **args))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('"world_size": 2') == 1  # rank 0 alone reports
    r1 = _single(*_args(data, tmp_path / "one", batch_size=2, **args))
    assert r1.returncode == 0, r1.stderr[-3000:]
    first = [json.loads((tmp_path / n / "metrics.jsonl").read_text().splitlines()[0]) for n in ("ddp", "one")]
    assert first[0]["step"] == first[1]["step"] == 2
    for k in ("d_loss", "g_loss", "g_adv", "nce", "identity"):
        assert first[0][k] == pytest.approx(first[1][k], rel=2e-3, abs=2e-4), k
    for step, mean_tol in ((2, 2e-6), (4, 0.25 * 2e-4)):
        ddp, one = (load_checkpoint(tmp_path / n / f"ckpt/step_{step:07d}.pt") for n in ("ddp", "one"))
        for net in ("G", "D", "F"):
            assert_trained_alike(ddp[net], one[net], lr=2e-4, steps=step, mean_tol=mean_tol)


def test_two_ranks_match_one_process_with_the_same_global_batch(demo_root, tmp_path):
    _two_ranks_match_one_process(demo_root, tmp_path)


def test_two_ranks_with_the_projected_discriminator_match_one_process(demo_root, tmp_path):
    _two_ranks_match_one_process(demo_root, tmp_path, discriminator="patch+projected")


def test_a_two_rank_checkpoint_resumes_in_one_process(demo_root, tmp_path):
    r = _torchrun("-m", "cutlib.train", *_args(demo_root, tmp_path / "run"))
    assert r.returncode == 0, r.stderr[-3000:]
    r = _single(*_args(demo_root, tmp_path / "run", steps=6, resume="true"))
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["start_step"] == 4 and summary["step"] == 6 and summary["world_size"] == 1
    assert load_checkpoint(tmp_path / "run/ckpt/latest.pt")["step"] == 6


def test_nan_on_one_rank_stops_every_rank_with_a_message(demo_root, tmp_path):
    script = tmp_path / "nan_on_rank1.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(ROOT)!r})
        from cutlib.model import CUTModel
        from cutlib.train import main
        real = CUTModel.train_step
        def poisoned(self, photo, monet):
            if self.rank == 1 and self.step == 3:
                photo = photo.clone(); photo[..., 0, 0] = float("nan")
            return real(self, photo, monet)
        CUTModel.train_step = poisoned
        sys.exit(main(sys.argv[1:]))
    """))
    r = _torchrun(str(script), *_args(demo_root, tmp_path / "run", steps=8), timeout=180)
    assert r.returncode != 0
    assert r.stderr.count("became non-finite") == 2  # both ranks stop, each saying why
    assert "at step 3 (rank 1)" in r.stderr
    assert load_checkpoint(tmp_path / "run/ckpt/latest.pt")["step"] == 2  # the last good one


def test_notebook_launcher_runs_torchrun_and_streams_progress(tiny_cfg):
    from cutlib.launch import rank_starts, train_ddp

    seen = []
    summary = train_ddp(tiny_cfg(steps=2, sample_every=0), 2, echo=seen.append)
    assert summary["world_size"] == 2 and summary["step"] == 2
    # rank 0's progress came through, as whole lines (a bar's '\r' redraws would each be a line here)
    progress = [line for line in seen if line.startswith("train:")]
    assert progress[-1].startswith("train: ended at step 2/2 (100%)") and len(progress) <= 3, progress
    # every rank reports the launch time it got (the time budget counts from it)
    assert sorted(rank_starts("".join(seen))) == [0, 1]


def test_rank_starts_finds_a_banner_glued_after_another_ranks_unfinished_line():
    from cutlib.launch import rank_starts

    output = ("rank 0/2: cutlib from /x/cutlib/__init__.py, 1.5 s after the launch\n"
              "[W socket.cpp] a warning in piecesrank 1/2: cutlib from /x/cutlib/__init__.py, 2.25 s after the launch\n"
              "rank 1 is not a banner, 9 s after the launch\n")
    assert rank_starts(output) == {0: 1.5, 1: 2.25}
