"""Forward SDEs of score-based generative modeling (Song et al., ICLR 2021, section 3 and appendix B).

Each SDE is a frozen, hashable dataclass: pass it to ``jax.jit`` as a static argument.  Methods are pure
functions of their array arguments and follow their dtype (float32 by default, float64 end to end under
``jax_enable_x64``).  ``t`` is always a batch vector of shape ``(B,)`` and ``x`` has shape ``(B, *D)``.

The API keeps the names of the official code (``yang-song/score_sde``) so its users can port code:

* ``sde(x, t) -> (drift, diffusion)``: ``dx = f(x, t) dt + g(t) dw``.
* ``marginal_prob(x, t) -> (mean, std)``: the perturbation kernel ``p_0t(x_t | x_0) = N(a(t) x_0, s(t)^2 I)``.
* ``prior_sampling(rng, shape)`` / ``prior_logp(z)``: the prior ``p_T``.
* ``discretize(x, t) -> (f, G)``: one step of the discrete chain ``x_{i+1} = x_i + f_i(x_i) + G_i z_i``.
* ``reverse(score_fn, probability_flow=False)``: the reverse-time SDE (Anderson, 1982) or the
  probability-flow ODE as another object with the same ``sde`` / ``discretize`` methods.

Besides the official names, every SDE exposes the scalar functions of ``t`` used throughout the library:
``mean_coeff(t) = a(t)``, ``marginal_std(t) = s(t)``, ``diffusion_coeff(t) = g(t)`` and ``timestep(t)``,
the index of the discretization level used by the discrete samplers and losses, and the facts of its schedule
that the samplers ask for instead of testing its class: ``ancestral_std(t, dtype)`` (the noise of an ancestral
sampling step) and ``default_time_grid`` (the time grid of the few-step ODE solvers).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Callable, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax.utils import batch_mul, batch_sum, flat_dim

__all__ = ["SDE", "VESDE", "VPSDE", "subVPSDE", "LinearBetaSDE", "EDMSDE", "ReverseSDE", "SDES"]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def _as_t(t, x=None):
    """Return ``t`` as an array in the floating dtype of ``x`` (or its own floating dtype)."""
    t = jnp.asarray(t)
    if x is not None and jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
        return t.astype(jnp.asarray(x).dtype)
    if not jnp.issubdtype(t.dtype, jnp.floating):
        t = t.astype(jnp.result_type(float))
    return t


def _gaussian_logp(z: jax.Array, std: float) -> jax.Array:
    """Per-example log density of ``N(0, std^2 I)``: ``-D/2 log(2 pi std^2) - ||z||^2 / (2 std^2)``."""
    d = flat_dim(z.shape)
    return -0.5 * d * math.log(2 * math.pi * std**2) - batch_sum(z**2) / (2.0 * std**2)


class SDE(abc.ABC):
    """Abstract forward SDE ``dx = f(x, t) dt + g(t) dw`` on ``t in [0, T]``."""

    N: int
    T: float = 1.0
    kind: ClassVar[str]
    """Name of the SDE family (``"ve"``, ``"vp"``, ``"subvp"``, ``"edm"``): the key of the network parameterization
    (:func:`scoresde_jax.parameterization.get_parameterization`) and of the discrete losses."""
    default_time_grid: ClassVar[str] = "quadratic"
    """The default time grid of the few-step ODE solvers (:data:`scoresde_jax.samplers.grid.TIME_GRIDS`):
    uniform in ``sqrt(t)``, which for VP and sub-VP spends fewer points than a log-SNR grid at very large and
    very small ``sigma_bar = s / a``, where the data prediction barely moves; VE overrides it."""

    # --- scalar functions of t ----------------------------------------------------------------
    @abc.abstractmethod
    def mean_coeff(self, t: jax.Array) -> jax.Array:
        """``a(t)`` of the perturbation kernel ``N(a(t) x_0, s(t)^2 I)``."""

    @abc.abstractmethod
    def marginal_std(self, t: jax.Array) -> jax.Array:
        """``s(t)`` of the perturbation kernel ``N(a(t) x_0, s(t)^2 I)``."""

    @abc.abstractmethod
    def diffusion_coeff(self, t: jax.Array) -> jax.Array:
        """``g(t)``."""

    @abc.abstractmethod
    def drift_coeff(self, t: jax.Array) -> jax.Array:
        """``c(t)`` with the linear drift ``f(x, t) = c(t) x``."""

    @property
    @abc.abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the Gaussian prior ``p_T = N(0, prior_std^2 I)``."""

    # --- official API -----------------------------------------------------------------------
    def sde(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Drift ``f(x, t) = c(t) x`` (shape of ``x``) and diffusion ``g(t)`` (shape ``(B,)``)."""
        t = _as_t(t, x)
        return batch_mul(self.drift_coeff(t), x), self.diffusion_coeff(t)

    def marginal_prob(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Mean ``a(t) x_0`` and std ``s(t)`` (shape ``(B,)``) of ``p_0t(x_t | x_0)``."""
        t = _as_t(t, x)
        return batch_mul(self.mean_coeff(t), x), self.marginal_std(t)

    def prior_sampling(self, rng: jax.Array, shape, dtype=None) -> jax.Array:
        """Draw from the prior ``N(0, prior_std^2 I)``."""
        dtype = jnp.result_type(float) if dtype is None else dtype
        return self.prior_std * jax.random.normal(rng, shape, dtype=dtype)

    def prior_logp(self, z: jax.Array) -> jax.Array:
        """Per-example log density of the prior, shape ``(B,)``."""
        return _gaussian_logp(z, self.prior_std)

    def timestep(self, t: jax.Array) -> jax.Array:
        """Index ``i = floor(t (N - 1) / T)`` of the discretization level (as the official code)."""
        return (jnp.asarray(t) * (self.N - 1) / self.T).astype(jnp.int32)

    def discretize(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Euler-Maruyama discretization with ``dt = T / N``: ``f = f(x, t) dt``, ``G = g(t) sqrt(dt)``.

        VE and VP override this with the SMLD and DDPM chains.
        """
        dt = self.T / self.N
        drift, diffusion = self.sde(x, t)
        return drift * dt, diffusion * math.sqrt(dt)

    def ancestral_std(self, t: jax.Array, dtype) -> jax.Array:
        """Standard deviation, shape ``(B,)``, of the noise of one ancestral-sampling step at the level of
        ``t``: the ``G_i`` of :meth:`discretize`, as DDPM's ``sigma_t^2 = beta_t`` (VP; sub-VP on its
        Euler-Maruyama chain).  VE overrides it with the SMLD posterior."""
        _, G = self.discretize(jnp.ones(jnp.shape(t), dtype), jnp.asarray(t, dtype))
        return G

    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> "ReverseSDE":
        """Reverse-time SDE ``dx = [f - g^2 score] dt + g dw_bar`` or, with ``probability_flow``,
        the probability-flow ODE ``dx = [f - g^2 score / 2] dt``."""
        return ReverseSDE(forward=self, score_fn=score_fn, probability_flow=probability_flow)

    def _check_scales(self):
        if not isinstance(self.N, (int, np.integer)) or self.N < 2:
            raise ValueError(f"{type(self).__name__}: N (number of discretization steps) must be an "
                             f"integer >= 2, got {self.N!r}; set config.model.num_scales.")


@dataclasses.dataclass(frozen=True)
class VESDE(SDE):
    """Variance-exploding SDE (SMLD / NCSN).

    ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``, ``f = 0``,
    ``g(t) = sigma(t) sqrt(2 log(sigma_max / sigma_min))``, ``p_0t = N(x_0, sigma(t)^2 I)``,
    prior ``N(0, sigma_max^2 I)``.  Discretization (SMLD): ``f_i = 0``, ``G_i = sqrt(sigma_i^2 - sigma_{i-1}^2)``
    with ``sigma_{-1} = 0``, on the geometric grid ``discrete_sigmas``.
    """

    kind: ClassVar[str] = "ve"
    default_time_grid: ClassVar[str] = "logsnr"
    """Uniform in ``log sigma``, which for VE is uniform in ``t``."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    N: int = 1000
    T: float = 1.0

    def __post_init__(self):
        self._check_scales()
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"VESDE needs 0 < sigma_min < sigma_max, got sigma_min={self.sigma_min}, "
                             f"sigma_max={self.sigma_max}.")

    @property
    def discrete_sigmas(self) -> np.ndarray:
        """``exp(linspace(log sigma_min, log sigma_max, N))`` (float64 numpy; cast at use)."""
        return np.exp(np.linspace(np.log(self.sigma_min), np.log(self.sigma_max), self.N))

    @property
    def prior_std(self) -> float:
        return float(self.sigma_max)

    def sigma(self, t):
        """``sigma(t) = sigma_min (sigma_max / sigma_min)^t``."""
        t = _as_t(t)
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def mean_coeff(self, t):
        return jnp.ones_like(_as_t(t))

    def marginal_std(self, t):
        return self.sigma(t)

    def drift_coeff(self, t):
        return jnp.zeros_like(_as_t(t))

    def diffusion_coeff(self, t):
        return self.sigma(t) * math.sqrt(2 * (math.log(self.sigma_max) - math.log(self.sigma_min)))

    def discretize(self, x, t):
        """SMLD chain: ``f_i = 0``, ``G_i = sqrt(sigma_i^2 - sigma_{i-1}^2)``."""
        i = self.timestep(t)
        sigmas = jnp.asarray(self.discrete_sigmas, dtype=x.dtype)
        sigma = sigmas[i]
        adjacent = jnp.where(i == 0, jnp.zeros_like(sigma), sigmas[jnp.maximum(i - 1, 0)])
        return jnp.zeros_like(x), jnp.sqrt(sigma**2 - adjacent**2)

    def ancestral_std(self, t, dtype):
        """The posterior standard deviation of ``q(x_{i-1} | x_i, x_0)`` of the SMLD chain, ``sigma_{i-1} G_i /
        sigma_i`` (as the official code)."""
        _, G = self.discretize(jnp.ones(jnp.shape(t), dtype), jnp.asarray(t, dtype))
        sigma = jnp.asarray(self.discrete_sigmas, dtype)[self.timestep(t)]
        prev_var = jnp.maximum(sigma**2 - G**2, 0.0)  # sigma_{i-1}^2 (0 at i = 0)
        return jnp.sqrt(prev_var) * G / sigma


@dataclasses.dataclass(frozen=True)
class LinearBetaSDE(SDE):
    """The linear schedule ``beta(t) = beta_min + t (beta_max - beta_min)`` shared by VP and sub-VP.

    Drift ``f = -beta(t) x / 2``, hence ``log a(t) = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2``,
    prior ``N(0, I)``.  Subclasses give ``s(t)`` and ``g(t)``; the discretization is Euler-Maruyama
    unless a subclass defines its own chain (VP: DDPM).
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    N: int = 1000
    T: float = 1.0

    def __post_init__(self):
        self._check_scales()
        if not 0 <= self.beta_min < self.beta_max:
            raise ValueError(f"{type(self).__name__} needs 0 <= beta_min < beta_max, got "
                             f"beta_min={self.beta_min}, beta_max={self.beta_max}.")

    @property
    def prior_std(self) -> float:
        return 1.0

    def beta(self, t):
        """``beta(t) = beta_min + t (beta_max - beta_min)``."""
        return self.beta_min + _as_t(t) * (self.beta_max - self.beta_min)

    def log_mean_coeff(self, t):
        """``log a(t) = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2``."""
        t = _as_t(t)
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def mean_coeff(self, t):
        return jnp.exp(self.log_mean_coeff(t))

    def drift_coeff(self, t):
        return -0.5 * self.beta(t)


@dataclasses.dataclass(frozen=True)
class VPSDE(LinearBetaSDE):
    """Variance-preserving SDE (DDPM).

    ``beta(t) = beta_min + t (beta_max - beta_min)``, ``f = -beta(t) x / 2``, ``g = sqrt(beta(t))``,
    ``log a(t) = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2``, ``s(t) = sqrt(1 - a(t)^2)``, prior ``N(0, I)``.
    Discretization (DDPM): ``beta_i = beta_min / N + i (beta_max - beta_min) / (N (N - 1))``,
    ``f_i = (sqrt(1 - beta_i) - 1) x``, ``G_i = sqrt(beta_i)``.
    """

    kind: ClassVar[str] = "vp"

    def __post_init__(self):
        super().__post_init__()
        # The DDPM chain needs every discrete beta_i = beta(t_i) / N below 1 (else alphas_cumprod hits 0).
        if self.beta_max / self.N >= 1.0:
            raise ValueError(f"VPSDE with N={self.N} and beta_max={self.beta_max} has a discrete beta of "
                             f"{self.beta_max / self.N:g} >= 1, which breaks the DDPM chain; use N > beta_max "
                             "(config.model.num_scales) or the continuous samplers with more steps.")

    # discrete DDPM tables (float64 numpy; cast to the data dtype at use)
    @property
    def discrete_betas(self) -> np.ndarray:
        return np.linspace(self.beta_min / self.N, self.beta_max / self.N, self.N)

    @property
    def alphas(self) -> np.ndarray:
        return 1.0 - self.discrete_betas

    @property
    def alphas_cumprod(self) -> np.ndarray:
        return np.cumprod(self.alphas)

    @property
    def sqrt_alphas_cumprod(self) -> np.ndarray:
        return np.sqrt(self.alphas_cumprod)

    @property
    def sqrt_1m_alphas_cumprod(self) -> np.ndarray:
        return np.sqrt(1.0 - self.alphas_cumprod)

    def marginal_std(self, t):
        # sqrt(1 - a^2) = sqrt(-expm1(2 log a)), accurate for small t.
        return jnp.sqrt(-jnp.expm1(2.0 * self.log_mean_coeff(t)))

    def diffusion_coeff(self, t):
        return jnp.sqrt(self.beta(t))

    def discretize(self, x, t):
        """DDPM chain: ``f_i = (sqrt(1 - beta_i) - 1) x``, ``G_i = sqrt(beta_i)``."""
        i = self.timestep(t)
        beta = jnp.asarray(self.discrete_betas, dtype=x.dtype)[i]
        alpha = jnp.asarray(self.alphas, dtype=x.dtype)[i]
        return batch_mul(jnp.sqrt(alpha), x) - x, jnp.sqrt(beta)


@dataclasses.dataclass(frozen=True)
class subVPSDE(LinearBetaSDE):
    """Sub-variance-preserving SDE (the paper's new SDE, eq. 29 of the appendix).

    Same drift as VP; ``g(t) = sqrt(beta(t) (1 - exp(-2 int_0^t beta(s) ds)))``; ``s(t) = 1 - a(t)^2``
    (no square root); prior ``N(0, I)``.  Discretization: Euler-Maruyama with ``dt = T / N`` (it has no
    DDPM chain, and networks trained on it are always continuous-time).
    """

    kind: ClassVar[str] = "subvp"

    def marginal_std(self, t):
        # 1 - a^2 = -expm1(2 log a)
        return -jnp.expm1(2.0 * self.log_mean_coeff(t))

    def diffusion_coeff(self, t):
        # int_0^t beta = beta_min t + (beta_max - beta_min) t^2 / 2 = -2 log a(t)
        discount = -jnp.expm1(4.0 * self.log_mean_coeff(t))
        return jnp.sqrt(self.beta(t) * discount)


@dataclasses.dataclass(frozen=True)
class EDMSDE(SDE):
    """EDM's SDE (Karras et al. 2022, eq. 5, ``sigma(t) = t``): ``f = 0``, ``g(t) = sqrt(2 t)``, ``p_0t =
    N(x_0, t^2 I)`` on ``[sigma_min, T = sigma_max]``, prior ``N(0, sigma_max^2 I)``; ``sigma_data``: the data
    std of EDM's preconditioning and loss (0.5 for data in ``[-1, 1]``).  Discretization: ``f_i = 0``,
    ``G_i = sqrt(t^2 - max(t - T/N, 0)^2)`` (the exact variance increment on the grid of step ``T / N``)."""

    kind: ClassVar[str] = "edm"
    default_time_grid: ClassVar[str] = "edm"  # EDM's rho = 7 grid in sigma = t
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    N: int = 1000
    sigma_data: float = 0.5

    def __post_init__(self):
        self._check_scales()
        if not 0 < self.sigma_min < self.sigma_max or not self.sigma_data > 0:
            raise ValueError(f"EDMSDE needs 0 < sigma_min < sigma_max and sigma_data > 0, got "
                             f"{self.sigma_min}, {self.sigma_max}, {self.sigma_data}.")

    T = property(lambda self: float(self.sigma_max), doc="``T = sigma_max`` (``sigma(t) = t``).")
    prior_std = property(lambda self: float(self.sigma_max), doc="``sigma_max``.")

    mean_coeff, drift_coeff = VESDE.mean_coeff, VESDE.drift_coeff  # a = 1, f = 0

    def marginal_std(self, t):
        return _as_t(t)

    def diffusion_coeff(self, t):
        return jnp.sqrt(2.0 * _as_t(t))

    def discretize(self, x, t):
        """``f_i = 0``, ``G_i = sqrt(t^2 - max(t - T / N, 0)^2)``."""
        t = _as_t(t, x)
        return jnp.zeros_like(x), jnp.sqrt(t**2 - jnp.maximum(t - self.T / self.N, 0.0) ** 2)

    def ancestral_std(self, t, dtype):
        """The posterior std ``max(t - T/N, 0) G / t`` of the chain (as VE's SMLD posterior)."""
        t, G = jnp.asarray(t, dtype), self.discretize(jnp.ones(jnp.shape(t), dtype), t)[1]
        return jnp.maximum(t - self.T / self.N, 0.0) * G / t


@dataclasses.dataclass(frozen=True)
class ReverseSDE:
    """Reverse-time SDE ``dx = [f - g^2 score] dt + g dw_bar`` (Anderson, 1982), or the probability-flow ODE
    ``dx = [f - g^2 score / 2] dt`` when ``probability_flow``.  Time runs from ``T`` down to 0: these are the
    coefficients of ``dx`` for a *negative* ``dt``, as in the official code."""

    forward: SDE
    score_fn: ScoreFn
    probability_flow: bool = False

    N = property(lambda self: self.forward.N, doc="``N`` of the forward SDE.")
    T = property(lambda self: self.forward.T, doc="``T`` of the forward SDE.")

    def sde(self, x, t):
        """Drift ``f - g^2 score (x 1/2 for the ODE)`` and diffusion ``g`` (0 for the ODE)."""
        drift, diffusion = self.forward.sde(x, t)
        score = self.score_fn(x, t)
        weight = 0.5 if self.probability_flow else 1.0
        drift = drift - batch_mul(diffusion**2 * weight, score)
        return drift, (jnp.zeros_like(diffusion) if self.probability_flow else diffusion)

    def discretize(self, x, t):
        """Reverse of the discrete chain: ``f_rev = f - G^2 score (x 1/2)``, ``G_rev = G`` (0 for the ODE)."""
        f, G = self.forward.discretize(x, t)
        weight = 0.5 if self.probability_flow else 1.0
        rev_f = f - batch_mul(G**2 * weight, self.score_fn(x, t))
        return rev_f, (jnp.zeros_like(G) if self.probability_flow else G)


SDES = {"vesde": VESDE, "vpsde": VPSDE, "subvpsde": subVPSDE, "edmsde": EDMSDE}
"""SDE classes by the official name ``config.training.sde``."""
