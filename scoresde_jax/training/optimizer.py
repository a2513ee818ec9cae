"""The optimizer, entirely from optax.

score_sde's ``optimization_manager`` clipped gradients by global norm, warmed the learning rate up
linearly and applied Adam (beta2 = 0.999). The same chain here::

    lr(step) = optim.lr * min(step / optim.warmup, 1)
    g <- g * grad_clip / max(||g||_2, grad_clip)            (only when grad_clip >= 0)
    params <- params - adam(g; lr(step), beta1, 0.999, eps)   (+ decoupled weight decay if > 0)

Paper defaults: lr 2e-4, warmup 5000, grad_clip 1, beta1 0.9, eps 1e-8, weight_decay 0. Gradient
accumulation over ``k`` micro-batches (``training.grad_accum_steps``) wraps the chain in
``optax.MultiSteps``, so clipping and Adam see the mean gradient of the ``k`` micro-batches.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import optax


OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "adam": lambda lr, *, b1, eps, weight_decay: (
        optax.adam(lr, b1=b1, b2=0.999, eps=eps)
        if weight_decay == 0
        else optax.adamw(lr, b1=b1, b2=0.999, eps=eps, weight_decay=weight_decay)
    ),
    "adamw": lambda lr, *, b1, eps, weight_decay: optax.adamw(
        lr, b1=b1, b2=0.999, eps=eps, weight_decay=weight_decay
    ),
}


def learning_rate_schedule(*, lr: float, warmup: int) -> optax.Schedule:
    """``lr * min(step / warmup, 1)`` (constant ``lr`` when ``warmup <= 0``)."""
    if warmup > 0:
        return optax.linear_schedule(0.0, lr, transition_steps=int(warmup))
    return optax.constant_schedule(lr)


def make_optimizer(
    *,
    optimizer: str = "Adam",
    lr: float = 2e-4,
    warmup: int = 5000,
    grad_clip: float = 1.0,
    beta1: float = 0.9,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    grad_accum_steps: int = 1,
) -> optax.GradientTransformation:
    """Gradient clipping by global norm -> Adam with linear warmup (-> ``optax.MultiSteps`` if accumulating)."""
    name = optimizer.lower()
    if name not in OPTIMIZERS:
        raise ValueError(
            f"Unknown optimizer {optimizer!r}; set config.optim.optimizer to one of {sorted(OPTIMIZERS)}."
        )
    if grad_accum_steps < 1:
        raise ValueError(f"grad_accum_steps must be >= 1, got {grad_accum_steps}.")
    if not (math.isfinite(float(lr)) and float(lr) > 0):
        raise ValueError(f"config.optim.lr={lr!r} must be a finite number > 0 (e.g. 2e-4).")
    schedule = learning_rate_schedule(lr=lr, warmup=warmup)
    parts = []
    if grad_clip is not None and grad_clip >= 0:
        parts.append(optax.clip_by_global_norm(grad_clip))
    parts.append(OPTIMIZERS[name](schedule, b1=beta1, eps=eps, weight_decay=weight_decay))
    tx = optax.chain(*parts)
    if grad_accum_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=grad_accum_steps)
    return tx
