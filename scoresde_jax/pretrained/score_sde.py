"""Checkpoints of the official score_sde code (github.com/yang-song/score_sde) as this library's params.

The official code saved ``flax.serialization.msgpack_serialize`` of its training state in files
named ``checkpoint_<step>`` (``flax.training.checkpoints``). The state is a dict with::

    step, optimizer {target: params, state: {step, param_states: params tree whose leaves are
    {grad_ema, grad_sq_ema}}}, lr, model_state, ema_rate, params_ema, rng

and the parameter tree uses flax auto-names (``ResnetBlockBigGANpp_0``, ``AttnBlockpp_0``,
``NIN_0/W``, ``Conv2d_0/weight``, ``GaussianFourierProjection_0/W``, ...). This library's modules
use the same names, so the mapping is name-for-name (``OFFICIAL_RENAMES`` lists the exceptions).
:func:`load_checkpoint` reads the file once (``flax.serialization.msgpack_restore``; nothing is
unpickled) and maps the raw and the EMA parameters onto ``expected``, the parameter tree of the
model (``ShapeDtypeStruct`` leaves, from ``scoresde_jax.config.param_shapes(config)``): every
entry's name and shape is checked, and missing, unexpected or mis-shaped entries are reported by
name (:class:`CheckpointMismatchError`). The Adam moments, ``lr`` and ``rng`` are not read.

Usage::

    ckpt = load_checkpoint('exp/checkpoints', param_shapes(config))   # newest checkpoint_<step>
    ckpt.step, ckpt.params, ckpt.ema_params                           # optimizer.target, params_ema
    params = ckpt.weights()                                           # EMA (what the paper evaluates)
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import flax.linen as nn
import flax.serialization
import jax.numpy as jnp
import numpy as np

# (official path regex, local replacement) applied to '/'-joined parameter paths. Empty because the
# modules here keep the official names; add entries here if a local module is ever renamed.
OFFICIAL_RENAMES: tuple[tuple[str, str], ...] = ()

STATE_KEYS = ("step", "optimizer", "lr", "model_state", "ema_rate", "params_ema", "rng")
_CKPT_RE = re.compile(r"^checkpoint_(\d+)$")


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the expected parameter tree (names or shapes differ)."""


@dataclasses.dataclass(frozen=True)
class ScoreSdeCheckpoint:
    """An official training state mapped onto this library's parameter tree.

    ``params``: ``optimizer.target`` (the raw weights); ``ema_params``: ``params_ema`` (``None``
    when the file has none); ``ema_rate``: the official EMA rate (``None`` when absent).
    """

    step: int
    params: dict
    ema_params: Optional[dict]
    ema_rate: Optional[float]
    path: Path

    def weights(self, ema: bool = True) -> dict:
        """``ema_params`` (``ema=True``, what the paper evaluates) or the raw ``params``."""
        if not ema:
            return self.params
        if self.ema_params is None:
            raise ValueError(f"{self.path} has no params_ema; pass ema=False for the raw weights")
        return self.ema_params


def find_checkpoint(path: str | Path, step: Optional[int] = None) -> Path:
    """``path`` itself if it is a file, else ``<dir>/checkpoint_<step>`` (newest when no step)."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if not p.exists():
        raise FileNotFoundError(f"official checkpoint {str(p)!r} does not exist; pass a "
                                "checkpoint_<step> file or the directory that holds them")
    found = {int(m.group(1)): f for f in p.iterdir()
             if f.is_file() and (m := _CKPT_RE.match(f.name))}
    if not found:
        raise FileNotFoundError(f"no checkpoint_<step> files in directory {str(p)!r}")
    if step is None:
        return found[max(found)]
    if step not in found:
        raise FileNotFoundError(f"no checkpoint_{step} in {str(p)!r}; available steps: "
                                f"{sorted(found)}")
    return found[step]


def _to_plain(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {str(k): _to_plain(v) for k, v in tree.items()}
    return tree


def _read_state(file: Path) -> Mapping:
    """The training state dict of ``file`` (msgpack, no pickle), checked to be score_sde's."""
    try:
        state = flax.serialization.msgpack_restore(file.read_bytes())
    except Exception as e:  # msgpack raises several exception types for garbage input
        raise ValueError(f"{file} is not a flax msgpack checkpoint ({type(e).__name__}: {e}); "
                         "expected a checkpoint_<step> file written by the official score_sde "
                         "code") from None
    if not isinstance(state, Mapping) or "optimizer" not in state:
        keys = sorted(state) if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(f"{file} is not an official score_sde training state: expected keys "
                         f"{STATE_KEYS}, found {keys}")
    optimizer = state["optimizer"]
    if not isinstance(optimizer, Mapping) or "target" not in optimizer:
        raise ValueError(f"{file}: optimizer has no 'target' (the raw parameters); not an "
                         "official score_sde training state")
    return state


def load_checkpoint(path: str | Path, expected: Any, *, step: Optional[int] = None,
                    model_desc: str = "the model") -> ScoreSdeCheckpoint:
    """Read an official ``checkpoint_<step>`` once and map its parameters onto ``expected``.

    ``path``: a ``checkpoint_<step>`` file, or a directory (its newest checkpoint, or ``step``).
    ``expected``: the model's parameter tree (``ShapeDtypeStruct`` or array leaves; the mapped
    arrays take its dtypes). ``model_desc`` names the model in error messages (e.g.
    :func:`describe_model`). Raises :class:`CheckpointMismatchError` (see :func:`map_params`).
    """
    file = find_checkpoint(path, step)
    state = _read_state(file)
    what = f"checkpoint {file}"
    params_ema = state.get("params_ema")
    ema_rate = state.get("ema_rate")
    return ScoreSdeCheckpoint(
        step=int(np.asarray(state.get("step", 0))),
        params=map_params(state["optimizer"]["target"], expected, what=what,
                          model_desc=model_desc),
        ema_params=map_params(params_ema, expected, what=what, model_desc=model_desc)
        if isinstance(params_ema, Mapping) else None,
        ema_rate=float(np.asarray(ema_rate)) if ema_rate is not None else None,
        path=file,
    )


def _flatten(tree: Mapping) -> dict[str, Any]:
    """``{'a': {'b': x}} -> {'a/b': x}``."""
    out: dict[str, Any] = {}

    def rec(node, prefix):
        for k, v in node.items():
            key = f"{prefix}/{k}" if prefix else str(k)
            if isinstance(v, Mapping):
                rec(v, key)
            else:
                out[key] = v

    rec(tree, "")
    return out


def _unflatten(flat: Mapping[str, Any]) -> dict:
    """Inverse of ``_flatten``."""
    out: dict = {}
    for key, v in flat.items():
        node = out
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def _official_to_local(key: str) -> str:
    for pattern, repl in OFFICIAL_RENAMES:
        key = re.sub(pattern, repl, key)
    return key


def _module_kinds(keys) -> set[str]:
    """Top-level module class names without the ``_<index>`` suffix."""
    return {re.sub(r"_\d+$", "", k.split("/")[0]) for k in keys}


def _listing(names: Sequence[str], limit: int = 12) -> str:
    names = sorted(names)
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def map_params(official: Mapping, expected: Any, *, what: str = "checkpoint",
               model_desc: str = "the model") -> dict:
    """Map one official parameter tree onto ``expected`` (a tree of arrays / ShapeDtypeStructs).

    Raises :class:`CheckpointMismatchError` naming every missing, unexpected or mis-shaped entry,
    or saying that the checkpoint belongs to another architecture.
    """
    src = {_official_to_local(k): v for k, v in _flatten(_to_plain(official)).items()}
    exp = _flatten(_to_plain(expected))
    src_kinds, exp_kinds = _module_kinds(src), _module_kinds(exp)
    shared = set(src) & set(exp)
    if src_kinds != exp_kinds and len(shared) < 0.5 * len(exp):
        raise CheckpointMismatchError(
            f"{what} belongs to another architecture than {model_desc}: the checkpoint has "
            f"modules of kinds [{_listing(src_kinds - exp_kinds)}] that the model lacks and lacks "
            f"[{_listing(exp_kinds - src_kinds)}]. Use the config the checkpoint was trained with "
            "(config.model.name and its sizes).")
    missing = sorted(set(exp) - set(src))
    unexpected = sorted(set(src) - set(exp))
    bad_shapes = [f"{k}: checkpoint {tuple(np.shape(src[k]))} vs model {tuple(exp[k].shape)}"
                  for k in sorted(shared) if tuple(np.shape(src[k])) != tuple(exp[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing from the checkpoint ({len(missing)}): {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected in the checkpoint ({len(unexpected)}): "
                        f"{_listing(unexpected)}")
    if bad_shapes:
        problems.append(f"shape mismatches ({len(bad_shapes)}): {_listing(bad_shapes, 6)}")
    if problems:
        raise CheckpointMismatchError(
            f"{what} does not match {model_desc}; " + "; ".join(problems) +
            ". Check that the config (nf, ch_mult, num_res_blocks, attn_resolutions, "
            "progressive*, image size and channels) is the one the checkpoint was trained with.")
    return _unflatten({k: jnp.asarray(np.asarray(src[k]), dtype=exp[k].dtype) for k in exp})


# Sizes that tell the networks apart, in the order they are listed in a model description.
_SIZE_FIELDS = ("nf", "ch_mult", "num_res_blocks", "attn_resolutions", "resblock_type",
                "progressive", "progressive_input", "embedding_type", "depth", "conditional",
                "normalization", "hidden", "num_layers")


def describe_model(model: nn.Module, input_shape: Sequence[int]) -> str:
    """``'NCSNpp(nf=128, ch_mult=(1, 2, 2, 2), ...) on (32, 32, 3) inputs'`` for error messages."""
    sizes = [f"{k}={getattr(model, k)!r}" for k in _SIZE_FIELDS if hasattr(model, k)]
    return f"{type(model).__name__}({', '.join(sizes)}) on {tuple(input_shape)} inputs"
