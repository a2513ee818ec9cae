"""Readers of pretrained checkpoints written by other code bases, mapped onto this library's models.

* :mod:`scoresde_jax.pretrained.score_sde`: the official score_sde code (github.com/yang-song/
  score_sde), flax msgpack ``checkpoint_<step>`` files.

Each reader takes the expected parameter tree (``ShapeDtypeStruct`` leaves, e.g.
``scoresde_jax.config.param_shapes(config)``) instead of building a model itself, so what a network
looks like is decided in one place (:mod:`scoresde_jax.config`).
"""
