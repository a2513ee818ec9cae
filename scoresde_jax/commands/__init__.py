"""The jobs run on a workdir, one function each: what ``scoresde <command>`` and
``python -m experiments.main`` call.

=================  =====================================================================
job                function
=================  =====================================================================
train              :func:`train` (:func:`train_and_evaluate` adds final samples + metric)
sample             :func:`sample`
eval               :func:`evaluate`
likelihood         :func:`likelihood`
convert            :func:`convert`
stats              :func:`stats` (reference feature statistics of a dataset split)
convert-inception  :func:`scoresde_jax.evaluation.convert_weights`
=================  =====================================================================

Each takes a config (read only through :mod:`scoresde_jax.config`) and a workdir, and returns a
JSON-able result. One module per job; they share nothing but the config boundary and
:mod:`scoresde_jax.training`.
"""

from __future__ import annotations

from scoresde_jax.commands.convert_cmd import convert
from scoresde_jax.commands.eval_cmd import evaluate, train_and_evaluate
from scoresde_jax.commands.likelihood_cmd import likelihood
from scoresde_jax.commands.sample_cmd import sample
from scoresde_jax.commands.stats_cmd import stats
from scoresde_jax.commands.train_cmd import train

__all__ = ["train", "train_and_evaluate", "sample", "evaluate", "likelihood", "convert",
           "stats"]
