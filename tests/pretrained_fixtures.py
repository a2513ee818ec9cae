"""Fixtures of tests/test_pretrained_*.py: each format's files written by the library's writers
(:mod:`scoresde_jax.pretrained.fixtures`) from the committed manifests of
tests/fixtures/pretrained/ (names, shapes, constructor arguments, written by its
make_reference.py with each format's own code, which also wrote the reference outputs); the
weights are regenerated here (NumPy ``default_rng(seed)``, state-dict order)."""

from __future__ import annotations

import json
import pathlib

import numpy as np

from scoresde_jax.pretrained.fixtures import (Global, Reduce, add_resample_filters, dumps,
                                              write_diffusers_folder, write_edm_pickle)

__all__ = ["Global", "Reduce", "dumps", "manifest", "reference", "fixture_weights",
           "write_diffusers", "write_edm"]

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "pretrained"


def manifest(case: str) -> dict:
    return json.loads((FIXTURES / f"{case}.json").read_text())


def reference(case: str) -> dict:
    with np.load(FIXTURES / f"{case}.npz") as z:
        return {k: z[k] for k in z.files}


def fixture_weights(names_shapes, seed, scale=0.3) -> dict:
    """The weights of make_reference.py: ``N(0, scale^2)`` float32 in state-dict order."""
    rng = np.random.default_rng(seed)
    return {n: (rng.standard_normal(s) * scale).astype(np.float32) for n, s in names_shapes}


def write_diffusers(root: pathlib.Path, case: str, *, fmt: str = "safetensors",
                    legacy_names: bool = False) -> pathlib.Path:
    """``root`` as a diffusers pipeline folder of ``case`` (weights as safetensors or a torch
    ``.bin``; ``legacy_names``: the attention names of old DDPM hub files and ``time_proj.W``)."""
    m = manifest(case)
    w = fixture_weights(m["tensors"], m["seed"])
    if legacy_names:
        renames = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
        out = {}
        for n, v in w.items():
            for new, old in renames.items():
                if f".attentions.0.{new}." in n or f".attentions.1.{new}." in n:
                    n = n.replace(f".{new}.", f".{old}.")
            out[n.replace("time_proj.weight", "time_proj.W")] = v
        w = out
    return write_diffusers_folder(root, pipeline=m["pipeline"], unet_config=m["unet"],
                                  scheduler_config=m["scheduler"], weights=w,
                                  fmt="safetensors" if fmt == "safetensors" else "bin")


def write_edm(path: pathlib.Path, case: str, *, module_src: str = "# not EDM's source\n"
              ) -> pathlib.Path:
    """An EDM network pickle of ``case`` (``{'ema', 'loss_fn', 'augment_pipe',
    'dataset_kwargs'}``), its resample filters as EDM stores them."""
    m = manifest(case)
    w = fixture_weights(m["tensors"], m["seed"])
    f = np.asarray(m["init_kwargs"].get("resample_filter", [1, 1]), np.float32)
    w = add_resample_filters(w, (np.outer(f, f) / f.sum() ** 2)[None, None])
    return write_edm_pickle(path, m["class_name"], m["init_kwargs"], w, module_src=module_src)
