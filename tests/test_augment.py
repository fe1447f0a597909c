import torch

from cutlib.augment import cutout, diff_augment, translation


def test_shape_gradient_and_per_sample_randomness():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    y = diff_augment(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    same = torch.rand(1, 3, 16, 16).repeat(4, 1, 1, 1)
    out = diff_augment(same)
    assert not torch.allclose(out[0], out[1])  # every image draws its own parameters


def test_empty_policy_is_identity_and_ops_behave():
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(diff_augment(x, ""), x)
    c = cutout(torch.ones(8, 3, 16, 16))
    zero_frac = (c == 0).float().mean(dim=(1, 2, 3))
    assert ((zero_frac > 0) & (zero_frac <= 0.25 + 1e-6)).all()  # one square of at most half the side
    t = translation(torch.ones(8, 1, 16, 16))
    assert set(t.unique().tolist()) <= {0.0, 1.0}  # pure shifts with zero fill


def test_the_draws_do_not_depend_on_the_images_dtype():
    """Under autocast G's output is bf16; its augmentation must be the fp32 image's, up to bf16 rounding
    (torch 2.4.1's CPU bf16 `torch.rand` is another stream: the first training step's g_adv then parted
    from fp32's by 24 %)."""
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    torch.manual_seed(3)
    ref = diff_augment(x)
    torch.manual_seed(3)
    low = diff_augment(x.bfloat16())
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, atol=0.05, rtol=0.02)
