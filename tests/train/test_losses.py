"""Every training loss against numbers computed by hand (math, not the functions under test)."""

import math

import pytest
import torch

from train.losses import (
    dpo_sigmoid_loss,
    ipo_loss,
    spac_loss,
    spac_pessimism,
    token_log_probs,
    weighted_nll,
)

# Two pairs of sequence log-probs (policy and reference, chosen and rejected).
PC = torch.tensor([-10.0, -20.0])
PR = torch.tensor([-12.0, -18.0])
RC = torch.tensor([-11.0, -20.0])
RR = torch.tensor([-11.0, -19.0])
# log-ratios: chosen (1, 0), rejected (-1, 1) -> delta (2, -1)
BETA = 0.5


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_dpo_sigmoid():
    expected = (-log_sigmoid(0.5 * 2) - log_sigmoid(0.5 * -1)) / 2
    assert dpo_sigmoid_loss(PC, PR, RC, RR, BETA).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx((0.313261687518 + 0.974076984180) / 2, rel=1e-9)


def test_ipo():
    target = 1 / (2 * BETA)  # 1.0
    expected = ((2 - target) ** 2 + (-1 - target) ** 2) / 2  # (1 + 4) / 2
    assert expected == 2.5
    assert ipo_loss(PC, PR, RC, RR, BETA).item() == pytest.approx(expected, rel=1e-6)


def test_spac_pessimism_and_total():
    # pessimism on the rejected samples: rejected log-ratios (-1, 1), beta 0.5 -> implicit rewards (-0.5, 0.5)
    kappa = 1.0
    pess = (kappa * softplus(-0.5 / kappa) + kappa * softplus(0.5 / kappa)) / 2
    assert pess == pytest.approx((0.474076984180 + 0.974076984180) / 2, rel=1e-9)
    assert spac_pessimism(PR, RR, BETA, kappa).item() == pytest.approx(pess, rel=1e-6)
    dpo = (-log_sigmoid(1.0) - log_sigmoid(-0.5)) / 2
    lam = 0.3
    assert spac_loss(PC, PR, RC, RR, BETA, lam, kappa).item() == pytest.approx(dpo + lam * pess, rel=1e-6)
    # lambda = 0 is plain DPO
    assert spac_loss(PC, PR, RC, RR, BETA, 0.0).item() == pytest.approx(dpo, rel=1e-6)


def test_spac_smoothing_limits():
    # kappa = 2: 2 * softplus(r / 2) with r = (-0.5, 0.5)
    expected = (2 * softplus(-0.25) + 2 * softplus(0.25)) / 2
    assert spac_pessimism(PR, RR, BETA, 2.0).item() == pytest.approx(expected, rel=1e-6)
    # small kappa -> hinge max(0, r): mean(0, 0.5) = 0.25
    assert spac_pessimism(PR, RR, BETA, 1e-3).item() == pytest.approx(0.25, abs=1e-3)
    with pytest.raises(ValueError, match="must be > 0"):
        spac_pessimism(PR, RR, BETA, 0.0)


def test_spac_gradient_pushes_the_sample_down():
    policy_rejected = PR.clone().requires_grad_(True)
    spac_pessimism(policy_rejected, RR, BETA).backward()
    # d/dx mean(softplus(beta x')) = beta * sigmoid(r) / 2 > 0: descending lowers log pi(y')
    expected = [BETA * (1 / (1 + math.exp(0.5))) / 2, BETA * (1 / (1 + math.exp(-0.5))) / 2]
    assert policy_rejected.grad.tolist() == pytest.approx(expected, rel=1e-6)


def test_token_log_probs():
    logits = torch.tensor([[[0.0, math.log(3.0)], [math.log(2.0), 0.0]]])  # p = (1/4, 3/4), (2/3, 1/3)
    labels = torch.tensor([[1, 0]])
    got = token_log_probs(logits, labels)
    assert got[0].tolist() == pytest.approx([math.log(0.75), math.log(2 / 3)], rel=1e-6)


def test_attacker_weighted_nll():
    # sequence 0: completion tokens log p = (-1, -3) -> mean NLL 2; sequence 1: one token -0.5 -> NLL 0.5
    token_logps = torch.tensor([[-7.0, -1.0, -3.0], [-9.0, -0.5, -4.0]])
    mask = torch.tensor([[0, 1, 1], [0, 1, 0]])  # instruction and padding positions are 0
    weights = torch.tensor([1.5, 0.5])
    expected = (1.5 * 2.0 + 0.5 * 0.5) / 2  # 1.625
    assert weighted_nll(token_logps, mask, weights).item() == pytest.approx(expected, rel=1e-6)
    # unit weights: the mean of per-sequence token-mean NLLs
    assert weighted_nll(token_logps, mask, torch.ones(2)).item() == pytest.approx(1.25, rel=1e-6)
    # an all-masked row contributes 0, not NaN
    empty = torch.tensor([[0, 0, 0], [0, 1, 0]])
    assert weighted_nll(token_logps, empty, weights).item() == pytest.approx(0.5 * 0.5 / 2, rel=1e-6)
