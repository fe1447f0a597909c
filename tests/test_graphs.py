"""The CUDA-graph step (cutlib.graphs): what CPU can check here, and graph-vs-eager equality where a
CUDA device exists (a GPU machine runs these; CPU CI skips them, saying why)."""
import copy

import pytest
import torch
from conftest import assert_trained_alike

from cutlib.checkpoint import load_checkpoint, save_checkpoint
from cutlib.config import ConfigError
from cutlib.model import LOSS_KEYS, CUTModel, resolve_cuda_graph

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


def _batches(cfg, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    s, b = cfg.image_size, cfg.batch_size
    return [(torch.rand(b, 3, s, s, generator=g) * 2 - 1, torch.rand(b, 3, s, s, generator=g) * 2 - 1)
            for _ in range(n)]


def test_the_step_reads_its_per_step_values_from_tensors_not_the_step_counter(tiny_cfg):
    """What replaying a graph needs, checked on CPU: with the same plan, weights, generator states and
    device scalars, `_step` computes the same thing whatever the Python-side step says, and the identity
    weight it applies is the tensor's value at run time."""
    m = CUTModel(tiny_cfg())
    photo, monet = _batches(m.cfg, 1)[0]
    state = copy.deepcopy(m.state_dict())
    plan = m.plan()
    m.w_identity.fill_(0.0)
    torch.manual_seed(1)
    a = m._step(photo, monet, plan)
    m.load_state_dict(copy.deepcopy(state))
    m.step = 1000
    torch.manual_seed(1)
    b = m._step(photo, monet, plan)
    assert torch.equal(a, b)
    m.load_state_dict(copy.deepcopy(state))
    m.w_identity.fill_(0.5)
    torch.manual_seed(1)
    c = m._step(photo, monet, plan)
    k = {key: i for i, key in enumerate(LOSS_KEYS)}
    assert c[k["identity"]] > 0
    torch.testing.assert_close(c[k["g_loss"]], a[k["g_loss"]] + 0.5 * c[k["identity"]], rtol=1e-5, atol=1e-6)


def test_switch_validation(tiny_cfg):
    with pytest.raises(ConfigError, match="cuda_graph='on' needs a CUDA device"):
        tiny_cfg(cuda_graph="on", device="cpu")
    with pytest.raises(ConfigError, match="cuda_graph"):
        tiny_cfg(cuda_graph="sometimes")
    assert not resolve_cuda_graph("auto", torch.device("cpu"), 1)  # auto: eager on CPU
    with pytest.raises(ConfigError, match="one CUDA process"):
        resolve_cuda_graph("on", torch.device("cpu"), 2)
    if torch.cuda.is_available():
        assert not resolve_cuda_graph("auto", torch.device("cuda"), 2)  # eager under torchrun


def _run(cfg, batches, poison_step=None):
    m = CUTModel(cfg, "cuda")  # seeds torch (and CUDA): both runs start from the same RNG state
    out = []
    for step, (photo, monet) in enumerate(batches):
        if step == poison_step:  # a corrupt batch: non-finite gradients, the step must be skipped
            photo = photo.clone()
            photo[..., 0, 0] = float("nan")
        out.append(torch.stack(list(m.train_step(photo, monet).values())).cpu())
    torch.cuda.synchronize()
    return m, out


def _close(amp):
    # fp32 (TF32 off) kernels differ only in summation order (atomics in reflection-pad backward);
    # bf16/fp16 round those differences to their own precision
    return dict(rtol=1e-4, atol=1e-4) if amp == "off" else dict(rtol=2e-2, atol=2e-2)


@cuda
@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
def test_graph_replay_trains_like_eager(tiny_cfg, amp):
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("no bf16 on this GPU")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    # lazy R1 every 2 steps: two plans, each captured at its third step (steps 4 and 5) and replayed after;
    # the identity weight still changes during replays (warm-up 7); step 8 (a replay) gets a NaN pixel
    cfg = tiny_cfg(device="cuda", amp=amp, identity_warmup=7, r1_weight=1.0, r1_every=2)
    batches = _batches(cfg, 10)
    eager, a = _run(cfg.replace(cuda_graph="off"), batches, poison_step=8)
    graph, b = _run(cfg.replace(cuda_graph="on"), batches, poison_step=8)
    assert graph.graphs.captured == 2 and not graph.graphs.failed
    for step, (x, y) in enumerate(zip(a, b)):
        if step != 8:
            torch.testing.assert_close(x, y, **_close(amp), msg=f"losses at step {step}")
    assert eager.skipped == graph.skipped and graph.skipped["g"] >= 1
    for net in ("G", "D", "F"):
        assert_trained_alike(getattr(eager, net).state_dict(), getattr(graph, net).state_dict(), cfg.lr, 10)
    assert_trained_alike(eager.ema.model.state_dict(), graph.ema.model.state_dict(), cfg.lr, 10)


@cuda
def test_graph_run_resumes_exactly_from_a_checkpoint(tiny_cfg, tmp_path):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    cfg = tiny_cfg(device="cuda", amp="off", cuda_graph="on")
    batches = _batches(cfg, 8)
    straight, a = _run(cfg, batches)
    first, _ = _run(cfg, batches[:5])  # captured at step 3, replayed at step 4
    path = save_checkpoint(first.state_dict(), tmp_path / "c.pt")
    resumed = CUTModel(cfg, "cuda")
    resumed.load_state_dict(load_checkpoint(path, map_location="cuda"), path)
    b = [torch.stack(list(resumed.train_step(p, m).values())).cpu() for p, m in batches[5:]]
    for x, y in zip(a[5:], b):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-4)
    for net in ("G", "D", "F"):
        assert_trained_alike(getattr(straight, net).state_dict(), getattr(resumed, net).state_dict(), cfg.lr, 8)
