"""Bad numbers are refused before any work, in the pure API (issue 21): eps outside (0, T) for
every sampler, an absurd nfe budget, a non-finite guidance scale, a non-positive or NaN learning
rate."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from scoresde_jax import guidance, samplers
from scoresde_jax.sde import VESDE, VPSDE
from scoresde_jax.training.optimizer import make_optimizer


def _score(x, t):
    return -x


@pytest.mark.parametrize("method", sorted(samplers.SAMPLERS))
@pytest.mark.parametrize("eps", [2.0, -1.0, 0.0, 1.0])
def test_every_sampler_refuses_eps_outside_0_T(method, eps):
    for sde in (VPSDE(N=50), VESDE(N=10)):
        with pytest.raises(ValueError, match="0 < eps < T"):
            samplers.sample(_score, sde, (2, 3), jax.random.key(0), method=method, eps=eps)


def test_an_absurd_budget_says_why():
    with pytest.raises(ValueError, match="typo"):
        samplers.sample(_score, VPSDE(N=50), (2, 3), jax.random.key(0), method="ddim",
                        nfe=10**9)


@pytest.mark.parametrize("w", [float("nan"), float("inf")])
def test_non_finite_guidance_scales_are_refused(w):
    def label_score(x, t, y):
        return -x

    with pytest.raises(ValueError, match="finite"):
        guidance.classifier_free_guidance(label_score, 3, w, null=10)
    with pytest.raises(ValueError, match="finite"):
        guidance.classifier_guidance(_score, lambda x, t: jnp.zeros((x.shape[0], 10)), 3, w)


@pytest.mark.parametrize("lr", [0.0, -1e-4, float("nan"), float("inf")])
def test_learning_rates_are_checked(lr):
    with pytest.raises(ValueError, match="optim.lr"):
        make_optimizer(lr=lr)
