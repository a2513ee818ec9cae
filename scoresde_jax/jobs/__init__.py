"""The jobs: one module each, holding its options type and its function, which takes built
values (a :class:`scoresde_jax.config.Setup`, the options, a workdir) and never reads a config.

=================  ===========================================  ==============================
``scoresde ...``   function                                     options built by
=================  ===========================================  ==============================
train              :func:`.train.train_and_evaluate`            ``config.train_options``
sample             :func:`.sample.sample`                       ``config.sample_options``
eval               :func:`.eval.evaluate`                       ``config.eval_options``
likelihood         :func:`.likelihood.likelihood`               ``config.likelihood_options``
stats              :func:`.stats.stats`                         ``config.stats_options``
convert            :func:`.convert.convert`                     ``config.convert_options``
convert-inception  :func:`.convert_inception.convert_inception`  (the command line)
fid                :func:`.fid.fid`                             (the command line)
=================  ===========================================  ==============================

Each job's command-line arguments are declared in :mod:`.arguments` (``ARGUMENTS[job]``), a
module that imports nothing heavy, so the CLI parses (and answers ``--help``) without JAX.
Shared pieces: :mod:`.generate` (the one jitted sampling round, used by training snapshots,
``sample`` and ``eval``), :mod:`.rounds` (resumable rounds), :mod:`.common` (the record of a
job's numbers, the results file). :data:`JOBS` is what :mod:`scoresde_jax.cli` assembles its
parser from; this package imports nothing itself, so the CLI loads only the job it runs, and only
to run it.
"""

from __future__ import annotations

JOBS: dict[str, tuple[str, str, str]] = {
    "train": ("scoresde_jax.jobs.train", "train_and_evaluate",
              "train (and by default sample and report the quality of) a score model"),
    "sample": ("scoresde_jax.jobs.sample", "sample",
               "samples of a trained workdir, in resumable rounds"),
    "eval": ("scoresde_jax.jobs.eval", "evaluate",
             "sample-quality report of a workdir (FID / IS / KID; toy data: sliced Wasserstein)"),
    "likelihood": ("scoresde_jax.jobs.likelihood", "likelihood",
                   "bits/dim of a data split via the probability-flow ODE"),
    "stats": ("scoresde_jax.jobs.stats", "stats",
              "reference feature statistics of a dataset split (pool_3, mu, sigma)"),
    "fid": ("scoresde_jax.jobs.fid", "fid",
            "FID / IS / KID of a folder or zip of images against statistics or another folder"),
    "convert": ("scoresde_jax.jobs.convert", "convert",
                "an official score_sde checkpoint as an Orbax checkpoint in --workdir"),
    "convert-inception": ("scoresde_jax.jobs.convert_inception", "convert_inception",
                          "the FID Inception weights (pt_inception-2015-12-05-6726825d.pth) as .npz"),
}

# The jobs that run on a trained workdir: their config is the workdir's saved one (or --config).
WORKDIR_JOBS = ("sample", "eval", "likelihood")
"""``scoresde <name>`` -> (the job's module, its function, one line of help)."""
