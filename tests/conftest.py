import os
import warnings

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


def assert_trained_alike(a: dict, b: dict, lr: float, steps: int, mean_tol: float = 2e-6) -> None:
    """Two state dicts trained on the same data by two computations of the same math (DDP vs one process,
    compiled or graph-replayed vs eager) agree up to summation order. Adam divides by sqrt(v): a weight
    whose gradient is at float-noise level moves by about lr per step in a direction set by that noise,
    so two runs can part by up to 2 lr per step there. Bound the max by that and the mean tightly: a wrong
    gradient moves most weights by about lr per step, a mean near 1e-4."""
    diff = torch.cat([(a[k].float() - b[k].float()).abs().flatten() for k in a])
    assert diff.max() <= 2 * steps * lr * 1.01, float(diff.max())
    # The mean over weight matrices and kernels only: a conv bias right before an InstanceNorm has a
    # gradient of exactly zero in theory, so all of it is float noise and every such bias moves by a
    # noise-signed lr per step in both runs.
    weights = torch.cat([(a[k].float() - b[k].float()).abs().flatten() for k in a if a[k].dim() > 1])
    assert weights.mean() < mean_tol, float(weights.mean())


def straight_and_resumed(make_cfg, tmp_path, split_at: int, **kw) -> tuple[dict, dict]:
    """The last checkpoints of one run trained straight through and of the same run stopped after
    `split_at` steps and resumed, for "resume is exact" tests."""
    from cutlib.checkpoint import load_checkpoint
    from cutlib.train import train

    straight = make_cfg(out_dir=str(tmp_path / "a"), **kw)
    train(straight, progress=False)
    split = make_cfg(out_dir=str(tmp_path / "b"), **kw)
    assert train(split, progress=False, until_step=split_at)["step"] == split_at
    assert train(split.replace(resume=True), progress=False)["start_step"] == split_at
    a, b = load_checkpoint(tmp_path / "a/ckpt/latest.pt"), load_checkpoint(tmp_path / "b/ckpt/latest.pt")
    assert a["step"] == b["step"] == straight.steps
    return a, b


def assert_same_weights(a: dict, b: dict, nets=("G", "D", "F")) -> None:
    for net in nets:
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), (net, k)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """A small built-in demo dataset (Kaggle layout), made once per test session."""
    from cutlib.data import make_demo_data

    return make_demo_data(tmp_path_factory.mktemp("demo"), n_photos=12, n_paintings=8, size=64, seed=0)


@pytest.fixture
def tiny_cfg(demo_root, tmp_path):
    """A CUT config small enough for CPU tests: real code paths, shrunk sizes."""
    from cutlib.config import TrainConfig

    def make(**kw):
        base = dict(data=str(demo_root), image_size=32, load_size=36, ngf=8, ndf=8, n_blocks=5, num_patches=16,
                    steps=6, log_every=2, ckpt_every=2, sample_every=3, num_workers=0, identity_warmup=4,
                    out_dir=str(tmp_path / "run"), amp="off")  # fp32: 'auto' is bf16 on CPUs with AMX
        base.update(kw)
        return TrainConfig(**base)

    return make


@pytest.fixture
def one_thread():
    """Bit-for-bit comparisons of runs that pass through the frozen EfficientNet: its deepest blocks
    (1x1 and 2x2 maps at test sizes) give thread-timing-dependent gradients on two CPU threads, so two
    identical runs in one process already part by float noise at step 2 (measured, torch 2.14.1). One
    thread makes every kernel deterministic, which is what "resume is exact" can be held to."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _no_warning_noise():
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item (item.rep_setup, rep_call), for fixtures that act on failure."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


class CornerMarker(torch.nn.Module):
    """Paints what a long-trained G paints whatever the photo: saturated bars in the top-left corner."""

    def forward(self, x):
        y = x.clone()
        y[:, 0, :6, :12], y[:, 1:, :6, :12] = 1.0, -1.0
        return y
