"""The CUDA-graph step (cutlib.graphs): what CPU can check here, and graph-vs-eager equality where a
CUDA device exists (a GPU machine runs these; CPU CI skips them, saying why)."""
import copy

import pytest
import torch

from cutlib.checkpoint import load_checkpoint, save_checkpoint
from cutlib.config import ConfigError
from cutlib.hardware import resolve_cuda_graph
from cutlib.model import LOSS_KEYS, CUTModel

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
    assert a.keys() == set(LOSS_KEYS) and all(torch.equal(a[k], b[k]) for k in LOSS_KEYS)
    m.load_state_dict(copy.deepcopy(state))
    m.w_identity.fill_(0.5)
    torch.manual_seed(1)
    c = m._step(photo, monet, plan)
    assert c["identity"] > 0
    torch.testing.assert_close(c["g_loss"], a["g_loss"] + 0.5 * c["identity"], rtol=1e-5, atol=1e-6)


def test_switch_validation(tiny_cfg):
    with pytest.raises(ConfigError, match="cuda_graph='on' needs a CUDA device"):
        tiny_cfg(cuda_graph="on", device="cpu")
    with pytest.raises(ConfigError, match="cuda_graph"):
        tiny_cfg(cuda_graph="sometimes")
    assert not resolve_cuda_graph("auto", torch.device("cpu"), 1)  # auto: eager on CPU
    assert not resolve_cuda_graph("off", torch.device("cuda"), 1)
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


def _spread(x: list, y: list) -> float:
    return max(float((a - b).abs().max()) for a, b in zip(x, y))


def _weights_spread(m1, m2) -> float:
    return float(torch.cat([(a - b).abs().flatten() for n in ("G", "D", "F") for a, b in
                            zip(getattr(m1, n).state_dict().values(), getattr(m2, n).state_dict().values())]).mean())


@cuda
@pytest.mark.parametrize("amp,discriminator", [("off", "patch"), ("bf16", "patch"), ("fp16", "patch"),
                                               ("bf16", "patch+projected"), ("fp16", "patch+projected")])
def test_graph_replay_trains_like_eager(tiny_cfg, amp, discriminator):
    """Eager CUDA training is not bitwise repeatable (atomic adds in reflection-pad backward, cuDNN), and
    Adam turns that noise into lr-sized steps of either sign (seen on an H200: fp32 losses ~1e-4 apart
    after ten steps, more in bf16); so a graph run must stay as close to an eager run as a second eager
    run does, which a wrong replay (a stale buffer, a frozen random draw, a skipped update) exceeds by far."""
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("no bf16 on this GPU")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    # one plan (CUT: the paintings always go through G), captured at its third step and replayed after;
    # the identity weight still changes during replays (warm-up 7); step 8 (a replay) gets a NaN pixel
    cfg = tiny_cfg(device="cuda", amp=amp, identity_warmup=7, discriminator=discriminator)
    batches = _batches(cfg, 10)
    eager, a = _run(cfg.replace(cuda_graph="off"), batches, poison_step=8)
    again, a2 = _run(cfg.replace(cuda_graph="off"), batches, poison_step=8)
    graph, b = _run(cfg.replace(cuda_graph="on"), batches, poison_step=8)
    assert graph.graphs.captured == 1 and not graph.graphs.failed
    keep = [i for i in range(10) if i != 8]
    noise = _spread([a[i] for i in keep], [a2[i] for i in keep])
    assert _spread([a[i] for i in keep], [b[i] for i in keep]) <= 4 * noise + 1e-5
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-5)  # step 0: before any noise adds up
    assert torch.isnan(b[8]).any() and eager.skipped == graph.skipped and graph.skipped["g"] >= 1
    assert _weights_spread(eager, graph) <= 4 * _weights_spread(eager, again) + 1e-7


@cuda
@pytest.mark.parametrize("discriminator", ["patch", "patch+projected"])
def test_graph_run_resumes_exactly_from_a_checkpoint(tiny_cfg, tmp_path, discriminator):
    """A graph run stopped at step 5 and resumed from its checkpoint (weights, Adam, scalers, and the RNG
    states that the replays advanced) continues like the uninterrupted run, within eager's own noise."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    cfg = tiny_cfg(device="cuda", amp="off", cuda_graph="on", discriminator=discriminator)
    batches = _batches(cfg, 8)
    straight, a = _run(cfg, batches)
    again, a2 = _run(cfg, batches)
    first, _ = _run(cfg, batches[:5])  # captured at step 2, replayed at steps 3 and 4
    path = save_checkpoint(first.state_dict(), tmp_path / "c.pt")
    resumed = CUTModel(cfg, "cuda")
    resumed.load_state_dict(load_checkpoint(path, map_location="cuda"), path)
    b = [torch.stack(list(resumed.train_step(p, m).values())).cpu() for p, m in batches[5:]]
    assert resumed.graphs.captured == 1  # steps 5, 6 eager again, 7 captured and replayed
    assert _spread(a[5:], b) <= 4 * _spread(a[5:], a2[5:]) + 1e-5
    assert _weights_spread(straight, resumed) <= 4 * _weights_spread(straight, again) + 1e-7
