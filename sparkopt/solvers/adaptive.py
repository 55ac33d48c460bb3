"""Per-coordinate update rules of the SGD family: momentum SGD, AdaGrad and Adam.

Driver side only; numpy only. Each rule keeps its accumulators in the solver state's ``memory``
(plain arrays, so checkpoints store them and a resumed run continues bit for bit) and returns
``(direction, scale)`` for the step ``x <- prox(x - t * direction)``, where ``scale`` (an array,
or 1.0) is the per-coordinate factor the rule applies to the gradient, which the L1 prox must
share: ``soft_threshold(x - t * direction, t * scale * l1)`` (proximal AdaGrad / Adam).

    sgd      direction g, scale 1 (momentum is applied by the solver, see MiniBatchSGD)
    adagrad  G = G + g^2;           direction g / (sqrt(G) + eps), scale 1 / (sqrt(G) + eps)
             (Duchi, Hazan & Singer 2011)
    adam     m = b1 m + (1 - b1) g, s = b2 s + (1 - b2) g^2, bias-corrected by 1 - b^k;
             direction m^ / (sqrt(s^) + eps), scale 1 / (sqrt(s^) + eps)   (Kingma & Ba 2015)
"""
from __future__ import annotations

from typing import Any, Union

import numpy as np

from ..rules import OPTIMIZERS

__all__ = ["OPTIMIZERS", "init_memory", "direction"]

ADAM_BETAS = (0.9, 0.999)
EPSILON = 1e-8


def init_memory(optimizer: str, n: int) -> dict[str, Any]:
    """The accumulators ``optimizer`` starts from, for n coordinates."""
    if optimizer == "sgd":
        return {}
    if optimizer == "adagrad":
        return {"sum_sq": np.zeros(n)}
    return {"first": np.zeros(n), "second": np.zeros(n)}


def direction(optimizer: str, memory: dict[str, Any], g: np.ndarray,
              k: int) -> tuple[np.ndarray, Union[np.ndarray, float]]:
    """Update ``memory`` with gradient g of step k >= 1; return (direction, prox scale)."""
    if optimizer == "sgd":
        return g, 1.0
    if optimizer == "adagrad":
        memory["sum_sq"] = memory["sum_sq"] + g * g
        scale = 1.0 / (np.sqrt(memory["sum_sq"]) + EPSILON)
        return g * scale, scale
    b1, b2 = ADAM_BETAS
    memory["first"] = b1 * memory["first"] + (1.0 - b1) * g
    memory["second"] = b2 * memory["second"] + (1.0 - b2) * g * g
    first = memory["first"] / (1.0 - b1 ** k)
    scale = 1.0 / (np.sqrt(memory["second"] / (1.0 - b2 ** k)) + EPSILON)
    return first * scale, scale
