"""Config files: load ml_collections configs (official score_sde layout) by path and apply
``section.key=value`` overrides, rejecting keys that no reader knows.

This module imports no JAX (only ml_collections): the command line checks a config here, in a
fraction of a second, before it loads the library (:func:`scoresde_jax.cli.main`).
:mod:`scoresde_jax.config` builds the objects from the config it returns.

Config files import their defaults as ``from configs.default_cifar10_configs import
get_default_configs``, so the directory that contains ``configs/`` (the repository root) has to be
importable: ``load_config`` puts it on ``sys.path`` first.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Optional

import ml_collections


log = logging.getLogger("scoresde_jax.config")

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKDIR_CONFIG = "config.json"  # written by the training loop (scoresde_jax.training.workdir)
CONFIG_DIR = REPO_ROOT / "configs"

# Keys this library reads that the official configs do not define (accepted as overrides), with
# the type an override of each is parsed as (an unset key has no type of its own:
# ``--config.model.remat=false`` must be False, not the string "false"); None: a Python literal,
# else the string.
_FREE_FORM = ("data.digits_resize", "data.tfds_name", "data.category", "model.dtype",
              "sampling.method", "sampling.ode_solver", "sampling.grid", "sampling.unipc_variant",
              "eval.inception_path", "eval.stats_path", "eval.inception_preprocess", "eval.classes")
OPTIONAL_TYPES: dict[str, type | None] = {
    **dict.fromkeys(_FREE_FORM),
    **dict.fromkeys(("model.remat", "eval.dequantize", "sampling.lower_order_final",
                     "sampling.noise_removal"), bool),
    **dict.fromkeys(("data.path", "data.eval_path"), str),  # a folder dataset's images
    "training.loss": str,  # 'dsm' | 'edm' (EDM's loss, the default of training.sde='edmsde')
    "data.skip_bad_files": bool, "data.class_names": None,
    **dict.fromkeys(("training.grad_accum_steps", "training.keep_checkpoints",
                     "training.snapshot_num_samples", "model.num_classes", "model.num_groups",
                     "sampling.num_steps", "sampling.nfe", "sampling.order", "sampling.max_nfe",
                     "eval.likelihood_repeats"), int),
    **dict.fromkeys(("sampling.eta", "sampling.rtol", "sampling.atol", "sampling.r", "sampling.rho",
                     "sampling.S_churn", "sampling.S_min", "sampling.S_max", "sampling.S_noise",
                     "sampling.h_init", "sampling.safety", "sampling.exponent", "eval.guidance",
                     "model.class_dropout", "training.eps", "training.P_mean", "training.P_std",
                     "model.sigma_data"), float),
}
OPTIONAL_KEYS = frozenset(OPTIONAL_TYPES)




def jsonable(value: Any) -> Any:
    """``value`` (a ConfigDict, dicts, sequences, numpy scalars) as plain JSON values."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    try:
        return value.item()  # numpy scalars
    except AttributeError:
        return repr(value)


def _root_for(path: Path) -> Path:
    """The directory holding the outermost ``configs`` folder on ``path`` (else the repo root)."""
    parts = path.parts
    for i, part in enumerate(parts[:-1]):
        if part == "configs":
            return Path(*parts[:i]) if i > 0 else Path(os.sep)
    return REPO_ROOT


def _ensure_on_path(root: Path) -> None:
    root_s = str(root)
    if root_s not in sys.path:
        sys.path.insert(0, root_s)
    # A different ``configs`` package imported earlier would shadow this one's defaults.
    mod = sys.modules.get("configs")
    if mod is not None:
        locations = [str(Path(p).resolve()) for p in getattr(mod, "__path__", [])]
        if str((root / "configs").resolve()) not in locations:
            for name in [n for n in sys.modules if n == "configs" or n.startswith("configs.")]:
                del sys.modules[name]


def resolve_config_path(path: str | os.PathLike) -> Path:
    """The config file for ``path``: as given, or relative to the repository's ``configs/``."""
    p = Path(path).expanduser()
    candidates = [p]
    if not p.is_absolute():
        candidates += [REPO_ROOT / p, CONFIG_DIR / p]
    candidates += [c.with_suffix(".py") for c in candidates if c.suffix != ".py"]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    shipped = ", ".join(list_configs()[:6])
    raise FileNotFoundError(
        f"config file {str(path)!r} does not exist (also looked in {CONFIG_DIR}). Pass the path "
        f"of a config .py file with get_config(), e.g. configs/ve/cifar10_ncsnpp_continuous.py; "
        f"shipped configs include: {shipped}, ...")


def load_config(path: str | os.PathLike, overrides: Optional[Iterable[str]] = None
                ) -> ml_collections.ConfigDict:
    """Run ``get_config()`` of the config file at ``path`` and return the ConfigDict.

    ``overrides``: optional ``"section.key=value"`` strings (values parsed as Python literals when
    possible), e.g. ``["training.batch_size=8", "model.nf=64"]``; a key the config does not have
    (and that is not in :data:`OPTIONAL_KEYS`) is a ValueError naming the keys it has.
    """
    file = resolve_config_path(path)
    _ensure_on_path(_root_for(file))
    module_name = "_scoresde_config_" + "_".join(file.with_suffix("").parts[-3:]).replace("-", "_")
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import config file {file}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {file} defines no get_config(); a config file must define "
                         "get_config() returning an ml_collections.ConfigDict")
    config = module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise TypeError(f"get_config() of {file} returned a {type(config).__name__}; it must "
                        "return an ml_collections.ConfigDict (see configs/digits_ddpmpp.py).")
    for item in overrides or ():
        check_override_key(config, item)
        apply_override(config, item)
    return config


def check_override_key(config: ml_collections.ConfigDict, item: str) -> None:
    """Raise ValueError when the key of a ``"a.b=value"`` override is not in ``config`` (nor in
    :data:`OPTIONAL_KEYS`), naming the keys its section has."""
    key = item.split("=", 1)[0].strip()
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        if part not in node:
            raise ValueError(f"--config.{key}: the config has no section {part!r}.")
        node = node[part]
    if leaf not in node and key not in OPTIONAL_KEYS:
        raise ValueError(f"--config.{key}: unknown key {leaf!r}; {'.'.join(parents) or 'the config'}"
                         f" has {sorted(node.keys())}.")


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def parse_override_value(key: str, raw: str, kind: type) -> Any:
    """``raw`` as a value of type ``kind`` (the type the config's key has), as absl
    ``config_flags`` parses it: bool takes true/false/1/0 (any case), int rejects ``8.0`` and
    ``abc``, float takes ints; tuples/lists are Python literals; a key without a typed default
    (None, or a key the config does not set) takes a Python literal, else the string."""
    text = raw.strip()

    def bad(what: str) -> ValueError:
        return ValueError(f"--config.{key}={raw}: expected {what}; fix the value.")

    if kind is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise bad("a boolean (true/false/1/0)")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise bad("an integer, e.g. 8 (not 8.0)") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise bad("a number, e.g. 2e-4") from None
    if kind is str:
        return text
    try:
        value: Any = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if kind in (tuple, list):
            raise bad(f"a {kind.__name__} literal, e.g. (1, 2)") from None
        return text
    if kind in (tuple, list):
        if not isinstance(value, (tuple, list)):
            raise bad(f"a {kind.__name__} literal, e.g. (1, 2)")
        return kind(value)
    return value


def apply_override(config: ml_collections.ConfigDict, item: str) -> None:
    """Apply one ``"a.b.c=value"`` override in place, the value parsed to the key's type
    (:func:`parse_override_value`)."""
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like section.key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        if part not in node:
            raise ValueError(f"override {item!r}: config has no section {part!r}")
        node = node[part]
    kind = node.get_type(leaf) if leaf in node else type(None)
    if kind is type(None):  # unset, or set to None: the optional key's type, if it has one
        kind = OPTIONAL_TYPES.get(key) or kind
    if isinstance(node[leaf] if leaf in node else None, ml_collections.ConfigDict):
        raise ValueError(f"--config.{key} is a section, not a value; override its keys "
                         f"(--config.{key}.<key>=VALUE).")
    node[leaf] = parse_override_value(key, raw, kind)


def _tuples(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def to_record(config: ml_collections.ConfigDict) -> dict:
    """The resolved config as plain JSON values (what ``config.json`` stores)."""
    return jsonable(config)


def saved_config(workdir: str | os.PathLike) -> Optional[ml_collections.ConfigDict]:
    """The config a training run saved in ``<workdir>/config.json`` (None when there is none)."""
    path = Path(workdir).expanduser().resolve() / WORKDIR_CONFIG
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())["config"]
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{path} is damaged ({e}); pass --config explicitly.") from None
    return ml_collections.ConfigDict(_tuples(record))


def config_differences(saved: Any, given: Any, sections: Iterable[str] = ("model", "data")
                       ) -> list[str]:
    """``section.key: trained vs given`` for the keys of ``sections`` that differ."""
    a_all, b_all = _tuples(saved.to_dict()), _tuples(given.to_dict())
    out = []
    for sec in sections:
        a, b = a_all.get(sec) or {}, b_all.get(sec) or {}
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                out.append(f"{sec}.{key}: {a.get(key)!r} (trained) vs {b.get(key)!r} (given)")
    return out


def config_for_workdir(path: Optional[str], workdir: str, overrides: Optional[Iterable[str]] = None
                       ) -> ml_collections.ConfigDict:
    """The config of a job on a trained ``workdir`` (sample, eval, likelihood): the file at
    ``path`` (a warning lists its model/data keys that differ from the run's ``config.json``),
    or the saved ``config.json`` when ``path`` is None; ``overrides`` apply to either."""
    if not str(workdir or "").strip():
        raise ValueError("--workdir is empty; give the training run's directory.")
    if not Path(workdir).expanduser().is_dir():
        raise FileNotFoundError(f"Workdir {os.path.abspath(workdir)} does not exist; pass the "
                                "--workdir of a training run.")
    saved = saved_config(workdir)
    if path is None:
        if saved is None:
            raise ValueError(f"{os.path.abspath(workdir)} has no {WORKDIR_CONFIG} (training writes it "
                             "with its first checkpoint); pass --config.")
        config = saved
        for item in overrides or ():
            check_override_key(config, item)
            apply_override(config, item)
        return config
    config = load_config(path, overrides)
    if saved is not None:
        diff = config_differences(saved, config)
        if diff:
            log.warning("The config differs from the one %s was trained with (%s) in %d model/data "
                        "keys: %s. Omit --config to use the saved one.", workdir, WORKDIR_CONFIG,
                        len(diff), "; ".join(diff[:8]))
    return config


def list_configs() -> list[str]:
    """Shipped paper configs, relative to the repository root (``configs/ve/...`` etc.)."""
    out = []
    for sub in ("ve", "vp", "subvp"):
        for f in sorted((CONFIG_DIR / sub).rglob("*.py")):
            if f.name != "__init__.py":
                out.append(str(f.relative_to(REPO_ROOT)))
    return out
