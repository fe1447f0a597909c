"""CUT networks: ResNet-9 generator with named encoder taps, patch-sampling MLP head (the discriminators
stand beside them in cutlib.discriminators; cutlib.model builds both; how G paints a photo for output is
cutlib.painting)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import TAP_LAYERS

def _norm(ch: int) -> nn.Module:
    # Activations after a norm are never in-place: InstanceNorm returns a view of batch_norm's output,
    # and an in-place op on a view makes autograd add a full copy and zero-fill (CopySlices) per layer,
    # ~7% of a CPU training step.
    return nn.InstanceNorm2d(ch, affine=False, track_running_stats=False)


def _binomial_kernel(taps: list[float]) -> torch.Tensor:
    k = torch.tensor(taps, dtype=torch.float32)
    k2 = k[:, None] * k[None, :]
    return k2 / k2.sum()


class BlurDownsample(nn.Module):
    """Anti-aliased 2x downsampling: reflect pad, [1,2,1]x[1,2,1] blur, stride 2 (Zhang 2019)."""

    def __init__(self, channels: int):
        super().__init__()
        # non-persistent: a fixed filter is not a weight, so checkpoints and EMA ignore it
        self.register_buffer("kernel", _binomial_kernel([1, 2, 1])[None, None].repeat(channels, 1, 1, 1),
                             persistent=False)

    def forward(self, x):
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.kernel.to(x.dtype), stride=2,
                        groups=x.shape[1])


class BlurUpsample(nn.Module):
    """Anti-aliased 2x upsampling of official CUT: replicate pad, transposed conv with the [1,3,3,1]
    binomial filter. That filter at stride 2 is exactly bilinear interpolation (half-pixel centres,
    edges clamped), which runs 1.5-3x faster than the depthwise transposed conv on CPU (fp32 and bf16)."""

    def forward(self, x):
        # autocast lists bilinear upsampling as fp32 on CUDA, which would copy a bf16/fp16 activation to
        # fp32 and back around it; the kernel accumulates in fp32 whatever its input dtype
        with torch.autocast(x.device.type, enabled=False):
            return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), _norm(ch), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), _norm(ch),
        )

    def forward(self, x):
        return x + self.body(x)


class MobileResBlock(nn.Module):
    """GAN Compression's mobile residual block: each 3x3 conv becomes a depthwise 3x3 and a pointwise
    1x1, ~8x fewer MACs at 256 channels (the pointwise conv carries them)."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, groups=ch), nn.Conv2d(ch, ch, 1), _norm(ch), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, groups=ch), nn.Conv2d(ch, ch, 1), _norm(ch),
        )

    def forward(self, x):
        return x + self.body(x)


BLOCKS = {"resnet": ResBlock, "mobile": MobileResBlock}


class Generator(nn.Module):
    """ResNet generator. `forward(x, taps=...)` also returns the encoder activations PatchNCE needs,
    so the training step never runs the encoder twice on the same image."""

    def __init__(self, ngf: int = 64, n_blocks: int = 9, antialias: bool = True, residual: bool = False,
                 block: str = "resnet"):
        super().__init__()
        self.residual = residual
        self.pad = nn.ReflectionPad2d(3)
        self.stem = nn.Sequential(nn.Conv2d(3, ngf, 7), _norm(ngf), nn.ReLU())
        stride = 1 if antialias else 2
        self.down1_conv = nn.Conv2d(ngf, ngf * 2, 3, stride=stride, padding=1)
        self.down1_rest = nn.Sequential(_norm(ngf * 2), nn.ReLU(),
                                        *([BlurDownsample(ngf * 2)] if antialias else []))
        self.down2_conv = nn.Conv2d(ngf * 2, ngf * 4, 3, stride=stride, padding=1)
        self.down2_rest = nn.Sequential(_norm(ngf * 4), nn.ReLU(),
                                        *([BlurDownsample(ngf * 4)] if antialias else []))
        self.blocks = nn.ModuleList(BLOCKS[block](ngf * 4) for _ in range(n_blocks))
        self.decoder = nn.Sequential(
            *_up(ngf * 4, ngf * 2, antialias), *_up(ngf * 2, ngf, antialias),
            nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7),
        )

    def _encode(self, x, taps: tuple[int, ...], stop_early: bool):
        feats = {}
        h = self.pad(x)
        feats[0] = h
        h = self.down1_conv(self.stem(h))
        feats[4] = h
        h = self.down2_conv(self.down1_rest(h))
        feats[8] = h
        h = self.down2_rest(h)
        last = max(taps) if stop_early else None
        for i, block in enumerate(self.blocks):
            if last is not None and 12 + i > last:
                break
            h = block(h)
            feats[12 + i] = h
        return h, [feats[t] for t in taps]

    def encode(self, x, taps: tuple[int, ...] = TAP_LAYERS) -> list[torch.Tensor]:
        """Encoder activations at the given CUT tap indices; stops after the deepest one."""
        return self._encode(x, taps, stop_early=True)[1]

    def forward(self, x, taps: tuple[int, ...] | None = None, reencode: int = 0):
        """x -> output; with taps also the encoder activations of x; with reencode=n also those of the
        first n outputs (PatchNCE queries), inside the same call so DistributedDataParallel sees one
        forward per backward."""
        h, feats = self._encode(x, taps or (), stop_early=False)
        z = self.decoder(h)
        if self.residual:  # a change to the image in tanh's input space: z = 0 returns x itself
            out = torch.tanh(torch.atanh(x.float().clamp(-0.999, 0.999)) + z.float()).to(z.dtype)
        else:
            out = torch.tanh(z)
        if taps is None:
            return out
        if reencode:
            return out, feats, self.encode(out[:reencode], taps)
        return out, feats


def _up(cin: int, cout: int, antialias: bool) -> list[nn.Module]:
    if antialias:
        return [BlurUpsample(), nn.Conv2d(cin, cout, 3, padding=1), _norm(cout), nn.ReLU()]
    return [nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1), _norm(cout), nn.ReLU()]


class PatchSampleMLP(nn.Module):
    """Per tap: pick patch locations, project with Linear-ReLU-Linear, L2-normalise.

    Built eagerly from known channel counts (the official code builds it on the first batch, which
    forces a data-dependent init and leaves the optimizer missing at step 0)."""

    def __init__(self, channels: list[int], dim: int = 256, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(c, dim), nn.ReLU(True), nn.Linear(dim, dim))
                                  for c in channels)

    @staticmethod
    def sample_ids(feats: list[torch.Tensor], num_patches: int, generator=None) -> list[torch.Tensor]:
        ids = []
        for f in feats:
            hw = f.shape[2] * f.shape[3]
            device = generator.device if generator is not None else f.device
            ids.append(torch.randperm(hw, generator=generator, device=device)[:min(num_patches, hw)].to(f.device))
        return ids

    def forward(self, feats: list[torch.Tensor], ids: list[torch.Tensor]) -> list[torch.Tensor]:
        """Returns per tap a (B, P, dim) tensor of unit vectors."""
        if torch.is_grad_enabled():
            return self._project(feats, ids)
        # The PatchNCE keys go through this MLP under no_grad, inside the same autocast region as the
        # queries that follow with grad. Up to torch 2.10 at least (Kaggle's), autocast caches the
        # low-precision copy of each weight made under no_grad, without its autograd link, and hands it to
        # the later call: the MLP then gets no gradient (fp16: GradScaler fails, "No inf checks were
        # recorded"). So a no_grad call leaves autocast's weight cache alone.
        cache = torch.is_autocast_cache_enabled()
        torch.set_autocast_cache_enabled(False)
        try:
            return self._project(feats, ids)
        finally:
            torch.set_autocast_cache_enabled(cache)

    def _project(self, feats: list[torch.Tensor], ids: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for f, idx, mlp in zip(feats, ids, self.mlps):
            # gather along the contiguous (B, C, H*W) layout: its backward writes into a plain
            # (B, C, H*W) zero tensor instead of a transposed copy of the whole activation
            x = f.flatten(2).index_select(2, idx).transpose(1, 2)  # (B, P, C): same locations for every image
            x = mlp(x)
            out.append(x / (x.norm(dim=-1, keepdim=True) + self.eps))
        return out


def tap_channels(ngf: int, taps: tuple[int, ...]) -> list[int]:
    by_tap = {0: 3, 4: ngf * 2, 8: ngf * 4}
    return [by_tap.get(t, ngf * 4) for t in taps]


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """N(0, 0.02) for conv and linear weights, zero biases (the pix2pix/CUT 'normal' init)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net


def build_generator(cfg) -> Generator:
    G = init_weights(Generator(cfg.ngf, cfg.n_blocks, cfg.antialias, cfg.residual_output, cfg.g_block))
    if cfg.residual_output:
        # zero last conv: the untrained generator is the identity, so training starts from the photos
        # (FID ~120) instead of from noise (FID > 300) and the GAN only has to learn the change
        nn.init.zeros_(G.decoder[-1].weight)
    return G


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
