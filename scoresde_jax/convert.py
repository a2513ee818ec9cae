"""Load checkpoints of the official score_sde code (github.com/yang-song/score_sde).

The official code saved ``flax.serialization.msgpack_serialize`` of its training state in files
named ``checkpoint_<step>`` (``flax.training.checkpoints``). The state is a dict with::

    step, optimizer {target: params, state: {step, param_states: params tree whose leaves are
    {grad_ema, grad_sq_ema}}}, lr, model_state, ema_rate, params_ema, rng

and the parameter tree uses flax auto-names (``ResnetBlockBigGANpp_0``, ``AttnBlockpp_0``,
``NIN_0/W``, ``Conv2d_0/weight``, ``GaussianFourierProjection_0/W``, ...). This library's modules
use the same names, so the mapping is name-for-name (``OFFICIAL_RENAMES`` lists the exceptions);
every entry's shape is checked against the model's own parameter tree (:func:`model_param_shapes`
of a module and an input shape; :func:`convert_official_params` is the config-free core) and
missing or unexpected entries are reported by name. Nothing is unpickled: the file is read with
``flax.serialization.msgpack_restore``.

Usage::

    params = load_official_checkpoint('exp/checkpoints/checkpoint_26', config)   # EMA weights
    raw = load_official_checkpoint(path, config, ema=False)                       # optimizer.target

Command line: ``python -m scoresde_jax.convert CHECKPOINT --config CONFIG.py --out params.msgpack``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Optional, Sequence

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax import config as config_lib
from scoresde_jax.models import count_params, uses_sigma_labels

# (official path regex, local replacement) applied to '/'-joined parameter paths. Empty because the
# modules here keep the official names; add entries here if a local module is ever renamed.
OFFICIAL_RENAMES: tuple[tuple[str, str], ...] = ()

STATE_KEYS = ("step", "optimizer", "lr", "model_state", "ema_rate", "params_ema", "rng")
_CKPT_RE = re.compile(r"^checkpoint_(\d+)$")


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the model built from the config (names or shapes differ)."""


class OfficialState(NamedTuple):
    """The parts of an official training state that matter here."""

    step: int
    params: dict
    params_ema: Optional[dict]
    ema_rate: Optional[float]
    path: Path


def find_official_checkpoint(path: str | Path, step: Optional[int] = None) -> Path:
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


def read_official_checkpoint(path: str | Path, step: Optional[int] = None) -> OfficialState:
    """Read an official ``checkpoint_<step>`` (msgpack, no pickle) and return its parameters."""
    file = find_official_checkpoint(path, step)
    data = file.read_bytes()
    try:
        state = flax.serialization.msgpack_restore(data)
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
    params_ema = state.get("params_ema")
    ema_rate = state.get("ema_rate")
    return OfficialState(
        step=int(np.asarray(state.get("step", 0))),
        params=_to_plain(optimizer["target"]),
        params_ema=_to_plain(params_ema) if isinstance(params_ema, Mapping) else None,
        ema_rate=float(np.asarray(ema_rate)) if ema_rate is not None else None,
        path=file,
    )


def flatten(tree: Mapping) -> dict[str, Any]:
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


def unflatten(flat: Mapping[str, Any]) -> dict:
    """Inverse of ``flatten``."""
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


def map_official_params(official: Mapping, expected: Any, *, what: str = "checkpoint",
                        model_desc: str = "the model") -> dict:
    """Map an official parameter tree onto ``expected`` (a tree of arrays / ShapeDtypeStructs).

    Raises ``CheckpointMismatchError`` naming every missing, unexpected or mis-shaped entry, or
    saying that the checkpoint belongs to another architecture.
    """
    src = {_official_to_local(k): v for k, v in flatten(official).items()}
    exp = flatten(_to_plain(expected))
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
    out = {k: jax.numpy.asarray(np.asarray(src[k]), dtype=exp[k].dtype) for k in exp}
    return unflatten(out)


# Sizes that tell the networks apart, in the order they are listed in a model description.
_SIZE_FIELDS = ("nf", "ch_mult", "num_res_blocks", "attn_resolutions", "resblock_type",
                "progressive", "progressive_input", "embedding_type", "depth", "conditional",
                "normalization", "hidden", "num_layers")


def describe_model(model: nn.Module, input_shape: Sequence[int]) -> str:
    """``'NCSNpp(nf=128, ch_mult=(1, 2, 2, 2), ...) on (32, 32, 3) inputs'`` for error messages."""
    sizes = [f"{k}={getattr(model, k)!r}" for k in _SIZE_FIELDS if hasattr(model, k)]
    return f"{type(model).__name__}({', '.join(sizes)}) on {tuple(input_shape)} inputs"


def model_param_shapes(model: nn.Module, input_shape: Sequence[int]) -> Any:
    """The parameter ``ShapeDtypeStruct`` tree of ``model`` for one example of ``input_shape``.

    Labels are noise levels (float) for a model that takes sigma labels, time indices otherwise.
    """
    x = jnp.zeros((1, *input_shape), jnp.float32)
    if uses_sigma_labels(model):
        labels = jnp.ones((1,), jnp.float32)
    else:
        labels = jnp.zeros((1,), jnp.int32)
    keys = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    return jax.eval_shape(lambda: model.init(keys, x, labels, train=False))["params"]


def convert_official_params(official: Mapping, model: nn.Module, input_shape: Sequence[int], *,
                            what: str = "the checkpoint") -> dict:
    """This library's parameters for ``model`` (inputs ``(B, *input_shape)``) from an official
    parameter tree (``params_ema`` or ``optimizer.target``); see :func:`map_official_params`."""
    return map_official_params(official, model_param_shapes(model, input_shape), what=what,
                               model_desc=describe_model(model, input_shape))


def load_official_checkpoint(path: str | Path, config: Any, ema: bool = True, *,
                             step: Optional[int] = None, model: Any = None) -> dict:
    """This library's parameters for ``create_model(config)`` from an official checkpoint.

    ``path``: a ``checkpoint_<step>`` file, or a directory (newest checkpoint, or ``step``).
    ``ema=True`` returns ``params_ema`` (what the paper evaluates), ``ema=False`` the raw
    ``optimizer.target``. ``model``: the module to load into (default ``create_model(config)``).
    ``config`` is read only at the config boundary (:mod:`scoresde_jax.config`): for the model
    and the example shape; the conversion itself is :func:`convert_official_params`.
    """
    state = read_official_checkpoint(path, step)
    if ema:
        if state.params_ema is None:
            raise ValueError(f"{state.path} has no params_ema; pass ema=False for the raw weights")
        tree = state.params_ema
    else:
        tree = state.params
    if model is None:
        model = config_lib.create_model(config)
    x, _ = config_lib.dummy_inputs(config, 1, model)
    return convert_official_params(tree, model, x.shape[1:], what=f"checkpoint {state.path}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``scoresde convert``: official checkpoint -> msgpack file of this library's params."""
    parser = argparse.ArgumentParser(prog="scoresde convert", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="official checkpoint_<step> file or its directory")
    parser.add_argument("--config", required=True, help="config file the checkpoint was trained "
                        "with, e.g. configs/ve/cifar10_ncsnpp_continuous.py")
    parser.add_argument("--out", required=True, help="output file (flax msgpack of the params)")
    parser.add_argument("--raw", action="store_true", help="raw weights instead of the EMA")
    parser.add_argument("--step", type=int, default=None, help="step when given a directory")
    args = parser.parse_args(argv)
    config = config_lib.load_config(args.config)
    params = load_official_checkpoint(args.checkpoint, config, ema=not args.raw, step=args.step)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(flax.serialization.msgpack_serialize(jax.tree.map(np.asarray, params)))
    print(f"wrote {count_params(params):,} parameters "
          f"({'raw' if args.raw else 'EMA'}) to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
