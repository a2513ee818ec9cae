"""The config boundary: the one place that reads ml_collections configs and builds objects.

Configs keep the official score_sde layout and keys (``configs/``), loaded by path with
:func:`load_config` (:mod:`.files`); :mod:`.components` builds the SDE, the network and the data
pipeline, :mod:`.run` the optimizer, train setup, loop cadence, sampler and evaluation functions.
Everything below this package receives plain values: networks get their sizes, samplers their
options, the data pipeline its dataset name and sizes, the training loop a
:class:`~scoresde_jax.training.loop.LoopOptions`. A key the config does not set is not passed at
all, so the signature of the function it configures holds the only default.

Which function reads which section (nothing outside this package reads any):

=================  =========================================================================
section            read by
=================  =========================================================================
``training``       :func:`get_sde` (``sde``), :func:`setup` (batch size, accumulation,
                   ``continuous``), :func:`get_loss_fn`, :func:`loop_options`,
                   :func:`get_optimizer` (``grad_accum_steps``), :func:`snapshot_sample_fn`,
                   :func:`create_model` (``continuous``), :func:`get_dataset` (batch size)
``model``          :func:`create_model`, :func:`get_sde` (noise scales), :func:`setup`
                   (``ema_rate``)
``data``           :func:`get_dataset`, :func:`example_shape`, :func:`is_vector_data`,
                   :func:`get_data_scaler`, :func:`create_model` (``centered``),
                   :func:`get_likelihood_fn`, :func:`get_quality_fn`
``optim``          :func:`get_optimizer`
``sampling``       :func:`sampler_options` (used by :func:`get_sampling_fn`)
``eval``           :func:`eval_num_samples`, :func:`get_dataset` and :func:`setup` (batch size)
``seed``           :func:`run_seed`
=================  =========================================================================

The official names (``get_sde``, ``create_model``, ``get_optimizer``, ``get_sampling_fn``,
``get_dataset``, ``get_data_scaler``, ``get_data_inverse_scaler``) are re-exported where score_sde
users look for them (``scoresde_jax.sde``, ``.models``, ``.training``, ``.samplers``, ``.data``).
"""

from __future__ import annotations

from scoresde_jax.config.components import (
    MODEL_NAMES,
    create_model,
    dummy_inputs,
    example_shape,
    get_data_inverse_scaler,
    get_data_scaler,
    get_dataset,
    get_sde,
    init_model,
    is_vector_data,
    param_shapes,
    run_seed,
)
from scoresde_jax.config.files import (
    OPTIONAL_KEYS,
    apply_override,
    check_override_key,
    config_differences,
    config_for_workdir,
    list_configs,
    load_config,
    parse_override_value,
    saved_config,
)
from scoresde_jax.config.run import (
    Setup,
    class_accuracy,
    conditional_eval_options,
    eval_num_samples,
    get_likelihood_fn,
    get_loss_fn,
    get_optimizer,
    get_quality_fn,
    get_sampling_fn,
    loop_options,
    make_sample_fn,
    sample_classes,
    sampler_options,
    setup,
    snapshot_sample_fn,
)

__all__ = [
    "config_differences", "config_for_workdir", "parse_override_value", "saved_config",
    "MODEL_NAMES", "OPTIONAL_KEYS", "Setup", "apply_override", "check_override_key",
    "create_model", "dummy_inputs", "eval_num_samples", "example_shape", "get_data_inverse_scaler",
    "get_data_scaler", "get_dataset", "get_likelihood_fn", "get_loss_fn", "get_optimizer",
    "get_quality_fn", "get_sampling_fn", "get_sde", "init_model", "is_vector_data", "list_configs",
    "load_config", "loop_options", "make_sample_fn", "param_shapes", "run_seed",
    "sampler_options", "setup", "snapshot_sample_fn", "class_accuracy", "conditional_eval_options",
    "sample_classes",
]
