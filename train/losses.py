"""Training losses on per-sequence log-probabilities: pure torch, tested against hand-computed numbers.

Naming: for a prompt x, `policy_*` is log π_θ(y|x) summed over the completion tokens and `ref_*` the same under the
reference π_ref (in Sparring the model the round started from, i.e. the policy that sampled the round's responses,
with the LoRA adapter disabled). The defender's DPO and IPO losses are computed inside TRL's `DPOTrainer` (these
functions restate them for tests and reports); SPAC's pessimism term (`spac_pessimism`) is what `train.defender`
adds to TRL's loss, and the attacker's loss (`weighted_nll`) is what `train.attacker` minimises.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dpo_sigmoid_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """DPO (Rafailov et al., arXiv 2305.18290, Eq. 7): mean of −log σ(β·Δ).

    Δ = [log π(y_w|x) − log π_ref(y_w|x)] − [log π(y_l|x) − log π_ref(y_l|x)], one value per pair.
    """
    delta = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * delta).mean()


def ipo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """IPO (Azar et al., arXiv 2310.12036, Eq. 17): mean of (Δ − 1/(2β))², β playing the role of τ.

    TRL applies it to log-probabilities averaged over each completion's tokens (length-normalised), so pass
    per-token means to match what `DPOTrainer(loss_type="ipo")` optimises.
    """
    delta = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return ((delta - 1.0 / (2.0 * beta)) ** 2).mean()


def spac_pessimism(
    policy_sample: torch.Tensor, ref_sample: torch.Tensor, beta: float, smoothing: float = 1.0
) -> torch.Tensor:
    """SPAC's pessimism term (Ji et al., arXiv 2406.04274), smoothed: mean of κ·softplus(β·(log π(y'|x) − log π_t(y'|x))/κ).

    y' is a response the previous policy π_t sampled for x; β·(log π − log π_t) is the policy's implicit reward
    for it (the DPO reparametrisation of SPAC's critic). Minimising the term makes the critic on-average
    pessimistic about the policy's own samples: it pushes their likelihood below π_t's. The raw term is linear
    in that reward and unbounded below; κ·softplus(·/κ) = −κ·log σ(−·/κ) smooths it so the push fades once y' is
    already less likely than under π_t. κ = `smoothing` > 0: κ → 0 gives a hinge max(0, ·), κ → ∞ the linear term
    (up to the constant κ·log 2).
    """
    if smoothing <= 0:
        raise ValueError(f"spac smoothing={smoothing!r} must be > 0")
    reward = beta * (policy_sample - ref_sample)
    return (smoothing * F.softplus(reward / smoothing)).mean()


def spac_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    lam: float,
    smoothing: float = 1.0,
) -> torch.Tensor:
    """SPAC as Sparring implements it (Ji et al., arXiv 2406.04274; formula as summarised, not verified in code):

        L(π) = mean[ −log σ(β·Δ) ] + λ · mean[ κ·softplus(β·(log π(y_l|x) − log π_t(y_l|x)) / κ) ]

    i.e. DPO against the previous policy π_t (the reference) plus λ × the smoothed pessimism term of
    `spac_pessimism`, whose self-play sample y' is the pair's *rejected* response: in Sparring every response of a
    round is a sample of π_t, and the rejected one is where pessimism matters most. Using it avoids a third forward
    pass per pair. λ = `train_defender.spac_lambda`, κ = `train_defender.spac_smoothing`; λ = 0 is plain DPO.
    """
    dpo = dpo_sigmoid_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)
    return dpo + lam * spac_pessimism(policy_rejected, ref_rejected, beta, smoothing)


def token_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(labels[t] | ...) for logits already aligned with labels ([B, T, V] and [B, T]), in float32.

    Uses gather − logsumexp rather than a full log_softmax so the [B, T, V] log-probabilities are never stored.
    """
    logits = logits.float()
    picked = logits.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def weighted_nll(
    token_logps: torch.Tensor, completion_mask: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """The attacker's reward-weighted NLL: (1/B) Σ_i w_i · ( −Σ_t m_it·log p_it / Σ_t m_it ).

    Reward-weighted regression on the attacker's own prompts (offline stand-in for GPO's PPO attacker, arXiv
    2406.10977): each prompt's NLL is averaged over its own tokens (m = 1 on the prompt text the attacker wrote,
    0 on the instruction and padding) so long prompts do not outweigh short ones, then weighted by w_i ≥ 0.
    Weights have mean 1 over the round (see `train.attacker.sample_weights`), so dividing by B keeps the scale of
    an ordinary NLL.
    """
    mask = completion_mask.to(token_logps.dtype)
    per_sequence = -(token_logps * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    return (weights.to(per_sequence.dtype) * per_sequence).mean()
