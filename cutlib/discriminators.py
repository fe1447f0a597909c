"""The discriminators: the 70x70 PatchGAN of CUT, the projected discriminator (heads on frozen pretrained
features, cutlib.projection), and the one module the training step sees, which holds the configured ones
and returns each one's logits."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .nets import BlurDownsample, _norm, init_weights
from .projection import MIX_CHANNELS, RandomProjection


class PatchDiscriminator(nn.Module):
    """PatchGAN (n_layers 3): a map of real/fake scores, each seeing a ~70x70 patch."""

    def __init__(self, ndf: int = 64, n_layers: int = 3, antialias: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for i in range(n_layers):
            cout = ndf * min(2 ** i, 8)
            stride = 1 if antialias else 2
            layers.append(nn.Conv2d(cin, cout, 4, stride=stride, padding=1))
            if i > 0:
                layers.append(_norm(cout))  # no norm on the first conv
            layers.append(nn.LeakyReLU(0.2, inplace=i == 0))
            if antialias:
                layers.append(BlurDownsample(cout))
            cin = cout
        cout = ndf * min(2 ** n_layers, 8)
        layers += [nn.Conv2d(cin, cout, 4, padding=1), _norm(cout), nn.LeakyReLU(0.2),
                   nn.Conv2d(cout, 1, 4, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def _head(channels: int, downs: int) -> nn.Sequential:
    """One stage's discriminator: `downs` spectral-norm stride-2 convs, then a 3x3 conv to a logit map.
    GroupNorm, not Projected GAN's BatchNorm: at batch 1 the G step shows D one fake alone, and
    batch statistics would make D judge it differently from the real+fake batch of the D step."""
    layers: list[nn.Module] = []
    c = channels
    for _ in range(downs):
        cout = min(2 * c, 512)
        layers += [spectral_norm(nn.Conv2d(c, cout, 4, stride=2, padding=1)), nn.GroupNorm(32, cout),
                   nn.LeakyReLU(0.2)]
        c = cout
    layers.append(spectral_norm(nn.Conv2d(c, 1, 3, padding=1)))
    return nn.Sequential(*layers)


class ProjectedDiscriminator(nn.Module):
    """Projected GAN's discriminator: frozen EfficientNet-Lite0 stages, fixed random mixing, and one
    trained head per stage. The heads take the stride 4 / 8 / 16 / 32 maps down to a common stride 32
    (3 / 2 / 1 / 0 downsamplings), so every head gives the same number of logits at any image size; the
    logits of all heads are returned side by side, (B, 4 * (H/32) * (W/32)), for one hinge loss."""

    def __init__(self, backbone: nn.Module, seed: int = 0):
        super().__init__()
        # the frozen backbone is passed in: cutlib.model loads it with the RNG set aside
        self.features = backbone
        self.projection = RandomProjection(seed)
        self.heads = nn.ModuleList(_head(c, len(MIX_CHANNELS) - 1 - i) for i, c in enumerate(MIX_CHANNELS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.projection(self.features(x))
        return torch.cat([head(f).flatten(1) for head, f in zip(self.heads, feats)], dim=1)


class Discriminators(nn.Module):
    """What the training step calls `D`: the configured discriminators under fixed names, called on the
    same (augmented) images; forward returns their logits as a tuple in `names` order."""

    def __init__(self, nets: dict[str, nn.Module]):
        super().__init__()
        self.names = tuple(nets)
        for name, net in nets.items():
            self.add_module(name, net)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, name)(x) for name in self.names)


def build_discriminators(cfg, backbone: nn.Module | None = None) -> Discriminators:
    """The configured discriminators; `backbone` (frozen EfficientNet-Lite0) is needed by 'projected'."""
    nets: dict[str, nn.Module] = {}
    if cfg.discriminator in ("patch", "patch+projected"):
        nets["patch"] = init_weights(PatchDiscriminator(cfg.ndf, 3, cfg.antialias))
    if cfg.discriminator in ("projected", "patch+projected"):
        # the fixed random mixing follows the run's seed and is saved with its checkpoints
        if backbone is None:
            raise ValueError(f"discriminator={cfg.discriminator!r} needs the frozen backbone (cutlib.model builds it)")
        nets["projected"] = ProjectedDiscriminator(backbone, cfg.seed)
    return Discriminators(nets)


def adversarial_weights(cfg, names: tuple[str, ...]) -> tuple[float, ...]:
    """Each discriminator's weight in G's adversarial term (times lambda_gan): 1 for the PatchGAN,
    lambda_proj for the projected one."""
    weights = {"patch": 1.0, "projected": cfg.lambda_proj}
    return tuple(weights[name] for name in names)
