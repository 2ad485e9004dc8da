"""PCRL's contrastive losses against a queue of negatives: InfoNCE (MoCo) and the CMC-style NCE of PCRL's code.

Both take L2-normalised queries and positive keys ``(N, D)`` (row ``i`` of one matching row ``i`` of the other) and
negatives ``(K, D)`` shared by every query; similarities are dot products divided by the temperature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["info_nce_loss", "nce_loss"]

_EPS = 1e-7  # CMC's guard against a zero denominator


def _logits(query: Tensor, key: Tensor, negatives: Tensor, temperature: float) -> Tensor:
    """``(N, 1 + K)`` similarities / temperature, the positive first."""
    if query.ndim != 2 or query.shape != key.shape or negatives.ndim != 2 or negatives.shape[1] != query.shape[1]:
        raise ValueError(
            f"need query and key (N, D) and negatives (K, D); got {tuple(query.shape)}, {tuple(key.shape)}, "
            f"{tuple(negatives.shape)}"
        )
    positive = (query * key).sum(1, keepdim=True)
    return torch.cat((positive, query @ negatives.to(query).T), 1) / temperature


def info_nce_loss(query: Tensor, key: Tensor, negatives: Tensor, temperature: float = 0.2) -> Tensor:
    """InfoNCE: mean over queries of ``-log softmax`` of the positive among the positive and the ``K`` negatives."""
    logits = _logits(query, key, negatives, temperature)
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


def nce_loss(query: Tensor, key: Tensor, negatives: Tensor, temperature: float, n_data: int, norm: float) -> Tensor:
    """CMC's NCE (https://arxiv.org/abs/1906.05849), as PCRL's code uses it.

    Scores ``s = exp(logit) / norm`` (CMC fixes ``norm = mean(exp(logits)) * n_data`` at its first step); with the
    noise probability ``Pn = 1 / n_data`` and ``m = K`` noise samples, the positive is classified as data with
    ``P = s / (s + m Pn)`` and every negative as noise with ``m Pn / (s + m Pn)``; the loss is minus the sum of both
    logs over a query, averaged over queries. ``n_data`` is the number of samples (PCRL's code passes the number
    of batches there).
    """
    scores = torch.exp(_logits(query, key, negatives, temperature)) / norm
    noise = negatives.shape[0] / n_data
    log_data = torch.log(scores[:, 0] / (scores[:, 0] + noise + _EPS))
    log_noise = torch.log(noise / (scores[:, 1:] + noise + _EPS))
    return -(log_data.sum() + log_noise.sum()) / query.shape[0]
