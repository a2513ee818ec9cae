"""The config boundary: the one place that reads ml_collections configs and builds objects, and
the one home of the official score_sde names.

Configs keep the official score_sde layout and keys (``configs/``), loaded by path with
:func:`load_config` (:mod:`scoresde_jax.config_files`, which imports no JAX). From a config:

* the official builders (:mod:`.components`, :mod:`.run`): :func:`get_sde`, :func:`create_model`
  (+ :func:`init_model`, :func:`param_shapes`, :func:`dummy_inputs`), :func:`get_optimizer`,
  :func:`get_loss_fn`, :func:`get_sampling_fn`, :func:`get_likelihood_fn`, :func:`get_dataset`,
  :func:`get_data_scaler`, :func:`get_data_inverse_scaler`;
* what a job runs on (:mod:`.build`): the :class:`Setup` (SDE, network, optimizer, mesh, data)
  and each job's typed options (:func:`train_options`, :func:`sample_options`,
  :func:`eval_options`, :func:`likelihood_options`, :func:`stats_options`).

Everything below this package receives plain values; a key the config does not set is not passed
at all, so the signature of the function it configures holds the only default.
"""

from __future__ import annotations

from scoresde_jax.config.build import (
    JOB_OPTIONS,
    JOB_SETUP,
    Setup,
    convert_options,
    conditioning,
    eval_options,
    likelihood_options,
    loop_options,
    sample_options,
    setup,
    stats_options,
    train_options,
)
from scoresde_jax.config.components import (
    MODEL_NAMES,
    create_model,
    data_spec,
    dummy_inputs,
    example_shape,
    get_data_inverse_scaler,
    get_data_scaler,
    get_dataset,
    get_sde,
    init_model,
    is_vector_data,
    param_shapes,
)
from scoresde_jax.config_files import (
    OPTIONAL_KEYS,
    apply_override,
    config_differences,
    config_for_workdir,
    list_configs,
    load_config,
    saved_config,
)
from scoresde_jax.config.run import (
    get_likelihood_fn,
    get_loss_fn,
    get_optimizer,
    get_sampling_fn,
    sampler_options,
    sampler_spec,
)

__all__ = [
    # official score_sde names
    "get_sde", "create_model", "get_optimizer", "get_loss_fn", "get_sampling_fn",
    "get_likelihood_fn", "get_dataset", "get_data_scaler", "get_data_inverse_scaler",
    "MODEL_NAMES", "init_model", "param_shapes", "dummy_inputs",
    # config files
    "load_config", "apply_override", "config_for_workdir", "saved_config", "config_differences",
    "list_configs", "OPTIONAL_KEYS",
    # what jobs run on
    "Setup", "setup", "train_options", "sample_options", "eval_options", "likelihood_options",
    "stats_options", "convert_options", "JOB_OPTIONS", "JOB_SETUP", "conditioning", "loop_options", "sampler_options", "sampler_spec",
    "data_spec", "example_shape", "is_vector_data",
]
