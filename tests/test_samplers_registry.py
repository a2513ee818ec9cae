"""The sampler registry: a sampler is one record (function, nfe plan, config keys) in one table.

Adding a sampler is one module and one line in ``samplers/registry.py``; here the module is this
test file and the line a ``monkeypatch.setitem``: an Euler sampler of the probability-flow ODE runs
through the front door ``samplers.sample(method=..., nfe=...)`` with its plan honoured and samples
a Gaussian as closely as its closed form says.
"""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax import samplers
from scoresde_jax.analytic import exact_score_fn, gaussian
from scoresde_jax.flow import probability_flow_drift
from scoresde_jax.samplers.common import Sampler, initial_state
from scoresde_jax.samplers.grid import denoised_result, one_eval_per_step, run_solver, time_grid
from scoresde_jax.sde import VPSDE, subVPSDE


# --- the example of CONTRIBUTING.md: a sampler in one module --------------------------------------
@functools.partial(jax.jit, static_argnames=("sde", "shape", "dtype", "num_steps", "grid",
                                             "denoise"))
def _euler(score, rng, x_init, eps, *, sde, shape, dtype, num_steps, grid, denoise):
    x = initial_state(sde, shape, dtype, rng, x_init)
    ts = time_grid(sde, num_steps, eps, grid, dtype=dtype)

    def step(i, x):  # x(t_{i+1}) = x(t_i) + (t_{i+1} - t_i) dx/dt, backwards in time
        return x + (ts[i + 1] - ts[i]) * probability_flow_drift(sde, score, x, ts[i])

    x = jax.lax.fori_loop(0, num_steps - 1, step, x)
    return denoised_result(score, sde, x, ts, num_steps, denoise)


def euler_sample(score_fn, sde, shape, rng, *, num_steps=100, eps=1e-3, grid=None, denoise=True,
                 x_init=None, dtype=None):
    """Euler's method on the probability-flow ODE; ``nfe = num_steps - 1 + denoise``."""
    return run_solver(_euler, score_fn, sde, shape, rng, (eps,), eps=eps, x_init=x_init, dtype=dtype,
                      num_steps=num_steps, grid=grid, denoise=bool(denoise))


EULER = Sampler(euler_sample, one_eval_per_step, {"num_steps": "num_steps", "grid": "grid"})
# --- and its registration: one line in samplers/registry.py, "my_euler": my_module.EULER ----------

MU = np.array([1.0, -0.5])
VAR = np.array([0.5, 2.0])


def test_a_sampler_is_one_record_registered_in_one_place(monkeypatch):
    monkeypatch.setitem(samplers.SAMPLERS, "my_euler", EULER)
    n = 4000
    for sde in (VPSDE(N=100), subVPSDE(N=100)):
        score = exact_score_fn(gaussian(jnp.asarray(MU, jnp.float32),
                                        jnp.asarray(VAR, jnp.float32)), sde)
        key = jax.random.PRNGKey(0)
        result = samplers.sample(score, sde, (n, 2), key, method="my_euler", nfe=60)
        assert int(result.nfe) == 60  # the plan: 59 steps on a 60-point grid, then denoising
        assert samplers.options_for_nfe("my_euler", 60, sde) == ({"num_steps": 60}, sde)
        direct = euler_sample(score, sde, (n, 2), key, num_steps=60)
        np.testing.assert_array_equal(np.asarray(result.x), np.asarray(direct.x))
        # the exact p_0 is N(MU, diag(VAR)); the sampled moments within ~4 standard errors plus the
        # first-order bias of 59 Euler steps
        x = np.asarray(result.x, np.float64)
        np.testing.assert_allclose(x.mean(0), MU, atol=4 * np.sqrt(VAR.max() / n) + 0.03)
        np.testing.assert_allclose(x.var(0), VAR, rtol=4 * np.sqrt(2 / n) + 0.05)


def test_every_record_has_a_function_a_plan_and_config_keys():
    for name, record in samplers.SAMPLERS.items():
        assert isinstance(record, Sampler), name
        assert callable(record.fn) and callable(record.plan), name
        arguments = inspect.signature(record.fn).parameters
        for arg, key in record.config_keys.items():  # sampler argument -> config.sampling key
            assert arg in arguments and isinstance(key, str), (name, arg)
