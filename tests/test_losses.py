import math

import pytest
import torch
import torch.nn.functional as F

from cutlib import losses


def test_adversarial_losses_hand_checked():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # hinge: relu(1-real) = [0, .5] -> .25 ; relu(1+fake) = [0, 1] -> .5 ; 0.5*(.25+.5)
    assert losses.d_loss("hinge", real, fake).item() == pytest.approx(0.375)
    assert losses.g_adv_loss("hinge", fake).item() == pytest.approx(1.0)
    # lsgan: (real-1)^2 = [1, .25] -> .625 ; fake^2 = [4, 0] -> 2
    assert losses.d_loss("lsgan", real, fake).item() == pytest.approx(0.5 * (0.625 + 2))
    assert losses.g_adv_loss("lsgan", fake).item() == pytest.approx((9 + 1) / 2)
    sp = lambda v: math.log1p(math.exp(v))  # noqa: E731
    assert losses.d_loss("nonsaturating", real, fake).item() == pytest.approx(
        0.5 * ((sp(-2) + sp(-0.5)) / 2 + (sp(-2) + sp(0)) / 2), rel=1e-5)
    assert losses.g_adv_loss("nonsaturating", fake).item() == pytest.approx((sp(2) + sp(0)) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="gan_loss"):
        losses.d_loss("wgan", real, fake)


def nce_reference(q, k, tau):
    """Plain loops: for each query, logits = [q.k+, q.k- for every other key, -10 in its own slot]."""
    total, n = 0.0, 0
    for b in range(q.shape[0]):
        for i in range(q.shape[1]):
            logits = [float(q[b, i] @ k[b, i])]
            logits += [-10.0 if j == i else float(q[b, i] @ k[b, j]) for j in range(q.shape[1])]
            logits = torch.tensor(logits) / tau
            total += float(-torch.log_softmax(logits, 0)[0])
            n += 1
    return total / n


@pytest.mark.parametrize("batch", [1, 3])
def test_patch_nce_matches_loop_reference(batch):
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(batch, 7, 5, generator=g), dim=-1)
    k = F.normalize(torch.randn(batch, 7, 5, generator=g), dim=-1)
    assert losses.patch_nce(q, k, 0.07).item() == pytest.approx(nce_reference(q, k, 0.07), rel=1e-5)


def test_patch_nce_low_when_query_equals_key_and_keys_detached():
    k = F.normalize(torch.randn(2, 16, 8), dim=-1)
    q = k.clone().requires_grad_(True)
    kk = k.clone().requires_grad_(True)
    loss = losses.patch_nce(q, kk, 0.07)
    loss.backward()
    assert loss.item() < losses.patch_nce(F.normalize(torch.randn(2, 16, 8), dim=-1), k).item()
    assert q.grad is not None and kk.grad is None


def test_patch_nce_fp32_under_autocast():
    q = F.normalize(torch.randn(1, 8, 4), dim=-1).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = losses.patch_nce(q, q)
    assert out.dtype == torch.float32 and torch.isfinite(out)


def test_identity_and_warmup():
    a, b = torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.5)
    assert losses.identity_l1(a, b).item() == pytest.approx(0.5)
    assert [losses.identity_weight(s, 0.1, 10) for s in (0, 5, 10, 20)] == pytest.approx([0.1, 0.05, 0, 0])


def _lines(size: int, period: int, phase: int, axis: int) -> torch.Tensor:
    wave = torch.cos(2 * math.pi * (torch.arange(size) + phase) / period)
    return wave[:, None].expand(size, size) if axis == 0 else wave[None, :].expand(size, size)


@pytest.mark.parametrize("period,phase,axis", [(4, 0, 0), (4, 1, 1), (2, 0, 0), (4, 3, 0)])
def test_lattice_excess_reads_a_planted_lattice_in_pixel_units_and_nothing_else(period, phase, axis):
    g = torch.Generator().manual_seed(0)
    photo = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    lattice = 0.05 * _lines(64, period, phase, axis)
    rms = float(lattice.square().mean().sqrt())
    assert float(losses.lattice_excess(photo + lattice, photo)) == pytest.approx(rms, rel=0.1)
    assert losses.lattice_excess(photo, photo) < 1e-4
    # a lattice the photo carries already is not the fake's doing
    assert losses.lattice_excess(photo + lattice, photo + lattice) < 1e-4
    # a period off G's grid (5 px) and a brighter picture are not lattices
    assert losses.lattice_excess(photo + 0.05 * _lines(64, 5, 0, axis), photo) < 0.2 * rms
    assert losses.lattice_excess(photo + 0.3, photo) < 1e-4


def test_lattice_excess_equals_the_power_at_the_lattice_frequencies_of_the_whole_images_fft():
    # The mean-tile DFT must read what a full FFT reads there, for any memory layout.
    def by_fft(fake, source, period=4):
        def power(x):
            x = x - x.mean((-2, -1), keepdim=True)
            return torch.fft.fft2(x, norm="ortho").abs().square()[..., ::x.shape[-2] // period, ::x.shape[-1] // period]
        excess = (power(fake) - power(source)).clamp_min(0)
        return (excess.sum((-2, -1)).mean(-1) / (fake.shape[-2] * fake.shape[-1])).sqrt().mean()  # per image

    g = torch.Generator().manual_seed(2)
    source = torch.rand(3, 3, 32, 48, generator=g) * 2 - 1
    fake = source + 0.2 * torch.randn(3, 3, 32, 48, generator=g)
    fake = fake.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    for period in (2, 4, 8):
        got = losses.lattice_excess(fake, source, period)
        assert float(got.detach()) == pytest.approx(float(by_fft(fake.detach(), source, period)), rel=1e-4)
    (grad,) = torch.autograd.grad(got, fake)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_descending_lattice_excess_removes_the_lattice_and_only_the_lattice():
    g = torch.Generator().manual_seed(1)
    photo = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    stroke = 0.1 * torch.randn(1, 3, 64, 64, generator=g)  # what G adds that follows the picture
    lattice = 0.05 * (_lines(64, 4, 1, 0) + _lines(64, 2, 0, 1))
    fake = (photo + stroke + lattice).requires_grad_(True)
    opt = torch.optim.SGD([fake], lr=2.0)
    for _ in range(300):
        opt.zero_grad()
        losses.lattice_excess(fake, photo).backward()
        opt.step()
    assert losses.lattice_excess(fake.detach(), photo) < 0.05 * losses.lattice_excess(photo + stroke + lattice, photo)
    # the push lies on the lattice frequencies alone: the stroke's off-lattice part is untouched
    off = torch.ones(64, 64, dtype=torch.bool)
    off[::16, ::16] = False  # the period-4 frequencies of a 64 px side
    spec = lambda x: torch.fft.fft2(x.detach())[..., off]  # noqa: E731
    assert torch.allclose(spec(fake), spec(photo + stroke + lattice), atol=1e-3)


def test_lattice_excess_names_a_size_its_period_does_not_divide():
    with pytest.raises(ValueError, match="66x66"):
        losses.lattice_excess(torch.zeros(1, 3, 66, 66), torch.zeros(1, 3, 66, 66))
