"""Losses as pure functions of tensors: adversarial (hinge, LSGAN, non-saturating), PatchNCE, identity and
the lattice penalty."""
from __future__ import annotations

import torch
import torch.nn.functional as F



def d_loss(kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss; the mean over real and fake terms is averaged as in CUT (0.5 * (real + fake))."""
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    if kind == "hinge":
        return 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())
    if kind == "lsgan":
        return 0.5 * ((real_logits - 1).pow(2).mean() + fake_logits.pow(2).mean())
    if kind == "nonsaturating":
        return 0.5 * (F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean())
    raise ValueError(f"gan_loss={kind!r}: accepted values are ('hinge', 'lsgan', 'nonsaturating')")


def g_adv_loss(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    fake_logits = fake_logits.float()
    if kind == "hinge":
        return -fake_logits.mean()
    if kind == "lsgan":
        return (fake_logits - 1).pow(2).mean()
    if kind == "nonsaturating":
        return F.softplus(-fake_logits).mean()
    raise ValueError(f"gan_loss={kind!r}: accepted values are ('hinge', 'lsgan', 'nonsaturating')")


def patch_nce(q: torch.Tensor, k: torch.Tensor, tau: float = 0.07, clamp: float = 50.0) -> torch.Tensor:
    """PatchNCE for one tap. q, k: (B, P, D) L2-normalised features of the same P locations in the
    generated and the source image. Each query's positive is the key at its own location; negatives
    are the other P-1 keys of the same image. Returns the mean cross-entropy over all B*P queries.

    Works for any actual batch size B (the official code reshapes by the configured one)."""
    with torch.autocast(q.device.type, enabled=False):  # logits / 0.07 overflow fp16 and lose bf16 precision
        q, k = q.float(), k.detach().float()
        sim = torch.bmm(q, k.transpose(1, 2))  # (B, P, P); diagonal = positives
        eye = torch.eye(sim.shape[1], dtype=torch.bool, device=sim.device)
        pos = sim.diagonal(dim1=1, dim2=2).unsqueeze(-1)  # (B, P, 1)
        neg = sim.masked_fill(eye, -10.0)  # the positive's slot in the negatives is masked, as official CUT
        logits = (torch.cat([pos, neg], dim=2) / tau).clamp(-clamp, clamp)
        target = torch.zeros(logits.shape[0] * logits.shape[1], dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits.flatten(0, 1), target)


def identity_l1(fake_of_target: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (fake_of_target.float() - target.float()).abs().mean()


def identity_weight(step: int, weight: float, warmup: int) -> float:
    """Identity-L1 weight: `weight` at step 0, linearly down to 0 at `warmup`, 0 after."""
    if warmup <= 0:
        return 0.0
    return weight * max(0.0, 1.0 - step / warmup)


def lattice_excess(fake: torch.Tensor, source: torch.Tensor, period: int = 4) -> torch.Tensor:
    """RMS, in pixel units, of the part of `fake` that repeats every `period` pixels beyond what its
    `source` already carries there: per image and channel, the power at the frequencies (k/period,
    l/period) cycles/px above the source's, summed (Parseval: the mean square of that periodic component),
    its mean over the channels, rooted per image, then averaged over the batch (so a batch split over DDP
    ranks averages to the same loss). Texture that follows the picture spreads over all frequencies
    and costs next to nothing; a lattice locked to G's grid (a stride-2 network with two down/upsamplings
    can paint one) sits exactly on these frequencies and costs its own amplitude, so the penalty's push on
    it does not fade as it grows, as a squared one would."""
    h, w = fake.shape[-2:]
    if h % period or w % period:
        raise ValueError(f"image size {h}x{w}: the lattice period {period} must divide both sides")
    with torch.autocast(fake.device.type, enabled=False):  # sums over H*W: fp32
        # The spectrum at multiples of 1/period is the period x period DFT of the image's mean tile (the
        # average over all its period x period blocks): a few small matmuls instead of an FFT of the whole
        # image, and no cuFFT plan to create inside a captured CUDA graph.
        k = torch.arange(period, device=fake.device, dtype=torch.float32)
        angle = (2 * torch.pi / period) * torch.outer(k, k)
        cos, sin = angle.cos(), angle.sin()

        def power(x):  # per image and channel: |fft2(x, norm="ortho")|^2 at the lattice frequencies
            blocks = x.float().unflatten(-2, (h // period, period)).unflatten(-1, (w // period, period))
            tile = blocks.mean((-4, -2))
            tile = tile - tile.mean((-2, -1), keepdim=True)  # the mean colour is no lattice
            re = cos @ tile @ cos - sin @ tile @ sin
            im = sin @ tile @ cos + cos @ tile @ sin
            return (re.square() + im.square()) * (h * w / period ** 4)

        excess = F.relu(power(fake) - power(source.detach()))
        # each image's RMS, then their mean: a batch split over DDP ranks averages to the same loss
        return (excess.sum((-2, -1)).mean(-1) / (h * w) + 1e-12).sqrt().mean()
