import pytest
import torch

from cutlib.ema import EMA, ema_beta


def test_beta_from_halflife_and_rampup():
    assert ema_beta(10**6, 1, 1.0, 0.0) == pytest.approx(0.5 ** (1 / 1000))
    assert ema_beta(10**6, 4, 1.0, 0.0) ** 250 == pytest.approx(0.5)  # half-life in images
    assert ema_beta(100, 1, 1.0) == pytest.approx(0.5 ** (1 / 5))  # the default ramp-up (0.05) caps it early


def test_update_arithmetic():
    net = torch.nn.Linear(2, 1)
    ema = EMA(net)
    with torch.no_grad():
        net.weight.fill_(1.0)
        ema.model.weight.fill_(0.0)
    ema.update(net, 0.25)  # weight = 1 - beta
    torch.testing.assert_close(ema.model.weight, torch.full_like(net.weight, 0.25))
    assert set(ema.state_dict()["shadow"]) == {"weight", "bias"}
    assert not any(p.requires_grad for p in ema.model.parameters())
