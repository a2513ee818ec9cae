"""Config -> components: the SDE, the network and the data pipeline of a config.

Part of the config boundary (:mod:`scoresde_jax.config`); a key the config does not set is not
passed, so the signature of the function it configures holds the only default.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax import data as data_lib
from scoresde_jax import sde as sde_lib
from scoresde_jax.data.spec import DataSpec
from scoresde_jax.models import (DDPM, MLP, NCSNpp, NCSNv2, NoiseConditionalClassifier,
                                 uses_sigma_labels)
from scoresde_jax.models.diffusers_unet import UNet2DModel
from scoresde_jax.models.song_unet import EDMSongUNet


def given_keys(section: Any, names: Mapping[str, str] | Sequence[str]) -> dict:
    """``{argument: section[key]}`` for the keys ``section`` sets (``names``: argument -> key)."""
    pairs = names.items() if isinstance(names, Mapping) else ((n, n) for n in names)
    return {arg: section[key] for arg, key in pairs if section is not None and key in section}


def required_key(section: Any, key: str, where: str, reader: str) -> Any:
    if key not in section:
        raise ValueError(f"config.{where}.{key} is required by {reader}; add it to the config.")
    return section[key]


def section_of(config: Any, name: str) -> Any:
    section = config.get(name) if hasattr(config, "get") else getattr(config, name, None)
    if section is None:
        raise ValueError(f"the config has no `{name}` section; see configs/default_cifar10_configs.py.")
    return section


# --- SDE -------------------------------------------------------------------------------------------

_SAMPLING_EPS = {"vesde": 1e-5, "vpsde": 1e-3, "subvpsde": 1e-3}
_SDE_KEYS = {"vesde": ("sigma_min", "sigma_max"), "edmsde": ("sigma_min", "sigma_max", "sigma_data")}


def get_sde(config: Any) -> tuple[sde_lib.SDE, float]:
    """The SDE of ``config.training.sde`` (``vesde`` | ``vpsde`` | ``subvpsde`` | ``edmsde``) with the
    noise scales of ``config.model`` (``sigma_min, sigma_max`` (and ``sigma_data`` for EDM) or ``beta_min,
    beta_max``; ``num_scales`` as ``N``), and its sampling epsilon (1e-5 for VE, 1e-3 for VP and sub-VP,
    as the paper; ``sigma_min`` for EDM)."""
    name = str(section_of(config, "training").sde).lower()
    if name not in sde_lib.SDES:
        raise ValueError(f"Unknown config.training.sde={config.training.sde!r}; use one of "
                         f"{sorted(sde_lib.SDES)}.")
    m = section_of(config, "model")
    keys = _SDE_KEYS.get(name, ("beta_min", "beta_max"))
    kwargs = {k: float(m[k]) for k in keys if k in m}
    if "num_scales" in m:
        kwargs["N"] = int(m.num_scales)
    sde = sde_lib.SDES[name](**kwargs)
    return sde, (float(sde.sigma_min) if name == "edmsde" else _SAMPLING_EPS[name])


# --- models ----------------------------------------------------------------------------------------

_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
_SCALES = ("scale_by_sigma", "sigma_min", "sigma_max", "num_scales", "nonlinearity")
_UNET = ("nf", "ch_mult", "num_res_blocks", "attn_resolutions", "dropout", "resamp_with_conv",
         "conditional")
_CLASSES = ("num_classes", "class_dropout")  # label conditioning (0 classes = unconditional)
# config.model.name -> (module, keys it reads, keys it requires)
_MODELS: dict[str, tuple[type, tuple[str, ...], tuple[str, ...]]] = {
    "ncsnpp": (NCSNpp, _UNET + _SCALES + (
        "fir", "fir_kernel", "skip_rescale", "resblock_type", "progressive", "progressive_input",
        "progressive_combine", "embedding_type", "fourier_scale", "init_scale") + _CLASSES,
        _UNET[:4]),
    "ddpm": (DDPM, _UNET + _SCALES + ("num_groups",) + _CLASSES, _UNET[:4]),
    "ncsnv2": (NCSNv2, _SCALES + ("nf", "normalization", "interpolation"), ("nf",)),
    "ncsn": (NCSNv2, _SCALES + ("nf", "normalization", "interpolation"), ("nf",)),
    "mlp": (MLP, ("hidden_sizes", "embedding_type", "embedding_dim", "fourier_scale",
                  "nonlinearity", "dropout") + _CLASSES, ()),
    # the noise-conditional classifier of classifier guidance (trained by the classifier loss)
    "classifier": (NoiseConditionalClassifier, ("num_classes", "nf", "ch_mult", "num_res_blocks",
                                                "dropout", "embedding_type", "fourier_scale",
                                                "nonlinearity"), ("num_classes",)),
}
# config.model.name -> the module of a converted pretrained network (scoresde_jax.pretrained)
_CONVERTED: dict[str, type] = {"edm_song_unet": EDMSongUNet, "diffusers_unet": UNet2DModel}
_LOWERCASE = {"embedding_type", "resblock_type", "progressive", "progressive_input",
              "progressive_combine"}
MODEL_NAMES = ("ncsnpp", "ddpm", "ncsnv2_64", "ncsnv2_128", "ncsnv2_256", "ncsn", "mlp",
               "classifier")


def _typed(value: Any, default: Any, key: str) -> Any:
    """A config value in the type of the module attribute's default (lists become tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(value)
    if isinstance(default, bool):
        return bool(value)
    if isinstance(default, (int, float)):
        return type(default)(value)
    if isinstance(default, str):
        return str(value).lower() if key in _LOWERCASE else str(value)
    return value


def _module_kwargs(cls: type, section: Any, keys: Sequence[str]) -> dict:
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    return {k: _typed(section[k], defaults.get(k), k) for k in keys if k in section}


def _resolve_dtype(dtype: Any) -> Any:
    if dtype is None or not isinstance(dtype, str):
        return None if dtype is not None and jnp.dtype(dtype) == jnp.float32 else dtype
    if dtype.lower() not in _DTYPES:
        raise ValueError(f"config.model.dtype={dtype!r} not in {sorted(_DTYPES)}.")
    return _DTYPES[dtype.lower()]


def create_model(config: Any, *, dtype: Any = None, remat: bool | None = None) -> nn.Module:
    """The network of ``config.model.name`` with the sizes of ``config.model`` (official keys).

    Names: ``ncsnpp`` (NCSN++ / DDPM++), ``ddpm``, ``ncsnv2_64`` | ``ncsnv2_128`` | ``ncsnv2_256``
    (``ncsnv2`` picks the depth from ``data.image_size``), ``ncsn`` (NCSNv1), ``mlp`` (vector data).
    ``dtype`` / ``remat`` override ``config.model.dtype`` ('float32' | 'bfloat16') and
    ``config.model.remat``. Keys the config leaves out take the module's defaults.
    """
    m, d = section_of(config, "model"), section_of(config, "data")
    full = str(required_key(m, "name", "model", "create_model")).lower()
    name = "ncsnv2" if full.startswith("ncsnv2") else full
    if name in _CONVERTED:  # networks of other code bases (scoresde convert): their own fields
        cls = _CONVERTED[name]
        fields = [f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name")]
        kwargs = _module_kwargs(cls, m, fields)
        return cls(**kwargs)
    if name not in _MODELS:
        raise ValueError(f"config.model.name={full!r} is not a known model; choose one of "
                         f"{MODEL_NAMES}.")
    cls, keys, required = _MODELS[name]
    if cls is NCSNv2 and int(m.get("num_classes", 0)):
        raise ValueError(f"config.model.name={full!r} has no time embedding to condition on labels; "
                         "use ncsnpp, ddpm or mlp for config.model.num_classes > 0.")
    for key in required:
        required_key(m, key, "model", "create_model")
    kwargs = _module_kwargs(cls, m, keys)
    kwargs["dtype"] = _resolve_dtype(dtype if dtype is not None else m.get("dtype"))
    if cls is MLP:
        return cls(**kwargs)
    kwargs["centered"] = bool(required_key(d, "centered", "data", "create_model"))
    kwargs["remat"] = bool(remat if remat is not None else m.get("remat", False))
    if name == "ncsnpp" and kwargs.get("embedding_type", "fourier") == "fourier" and \
            not bool(section_of(config, "training").get("continuous", True)):
        raise ValueError("Fourier embeddings take noise levels and need continuous training; "
                         "set config.model.embedding_type='positional' for discrete training.")
    if name == "ncsn":
        kwargs.update(depth="64", conditional=True)
    elif name == "ncsnv2":
        depth = full.split("_")[-1] if "_" in full else None
        if depth is None:
            size = int(d.get("image_size", 32))
            depth = "64" if size < 96 else "128" if size <= 128 else "256"
        if depth not in ("64", "128", "256"):
            raise ValueError(f"config.model.name={full!r}: use ncsnv2_64, ncsnv2_128 or ncsnv2_256.")
        kwargs["depth"] = depth
    return cls(**kwargs)


def is_vector_data(config: Any) -> bool:
    """True for vector (non-image) datasets (the 2-D ``TOY_*`` mixtures): batches ``(B, D)``."""
    return data_lib.is_vector_dataset(str(section_of(config, "data").get("dataset", "")))


def example_shape(config: Any) -> tuple[int, ...]:
    """Shape of one example: ``(H, W, C)`` for images, ``(D,)`` for vector data."""
    d = section_of(config, "data")
    return data_lib.example_shape(str(d.get("dataset", "")), image_size=int(d.get("image_size", 0)),
                                  num_channels=int(d.get("num_channels", 3)))


def dummy_inputs(config: Any, batch_size: int = 1, model: nn.Module | None = None):
    """Zero inputs ``(B, *example_shape)`` and valid labels ``(B,)`` for init and shape checks."""
    model = model if model is not None else create_model(config)
    x = jnp.zeros((batch_size,) + example_shape(config), jnp.float32)
    if uses_sigma_labels(model):
        labels = jnp.ones((batch_size,), jnp.float32)
    else:
        labels = jnp.zeros((batch_size,), jnp.int32)
    return x, labels


def init_model(rng: jax.Array, config: Any, batch_size: int = 1, **model_kwargs) -> Any:
    """The float32 parameters of ``create_model(config)`` (jitted init)."""
    model = create_model(config, **model_kwargs)
    x, labels = dummy_inputs(config, batch_size, model)
    p_rng, d_rng = jax.random.split(rng)
    init = jax.jit(lambda p, d: model.init({"params": p, "dropout": d}, x, labels,
                                           train=False)["params"])
    return init(p_rng, d_rng)


def param_shapes(config: Any, batch_size: int = 1, **model_kwargs) -> Any:
    """The parameter ``ShapeDtypeStruct`` tree of ``create_model(config)`` (``jax.eval_shape``)."""
    model = create_model(config, **model_kwargs)
    x, labels = dummy_inputs(config, batch_size, model)
    keys = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    return jax.eval_shape(lambda: model.init(keys, x, labels, train=False))["params"]


# --- data ------------------------------------------------------------------------------------------

_DATA_KEYS = ("image_size", "num_channels", "random_flip", "uniform_dequantization", "category",
              "tfds_name", "digits_resize", "path", "eval_path", "skip_bad_files", "class_names")


def data_spec(config: Any) -> DataSpec:
    """The :class:`~scoresde_jax.data.spec.DataSpec` of ``config.data`` with the batch sizes of
    ``config.training`` / ``config.eval`` and ``config.seed``."""
    d = section_of(config, "data")
    name = str(required_key(d, "dataset", "data", "data_spec"))
    centered = bool(d.get("centered", False))
    train = config.get("training") or {}
    ev = config.get("eval") or {}
    folder_options = {}
    if name == data_lib.FOLDER:  # its labels must fit the model; its classes go to config.json
        folder_options["num_classes"] = int((config.get("model") or {}).get("num_classes", 0))
        if folder_options["num_classes"] > 0 and d.get("class_names") is None:
            names = data_lib.folder_class_names(required_key(d, "path", "data", "data_spec"))
            if names is not None:
                d.class_names = list(names)
    return DataSpec(name, centered, int(train.get("batch_size", 0)), int(ev.get("batch_size", 0)),
                    run_seed(config), {**given_keys(d, _DATA_KEYS), **folder_options})


def get_dataset(config: Any, *, split: str = "train", seed: int | None = None,
                batch_size: int | None = None, uniform_dequantization: bool | None = None,
                **kwargs) -> data_lib.DataIterator:
    """Iterator of numpy batches ``{'image', 'label'}`` of ``config.data`` (official
    ``datasets.get_dataset``): :func:`scoresde_jax.data.make_dataset` with the dataset, sizes and
    augmentation of ``config.data``, the global batch size of ``config.training`` (train split) or
    ``config.eval``, and ``config.seed``. Other keyword arguments (``shard``, ``data_dir``,
    ``shuffle``, ``num_epochs``, ``start_step``, ``num_threads``, ``backend``) go to
    ``make_dataset``."""
    if batch_size is None:
        batch_size = int(section_of(config, "training" if split == "train" else "eval").batch_size)
    if uniform_dequantization is not None:
        kwargs["uniform_dequantization"] = uniform_dequantization
    return data_spec(config).dataset(split=split, batch_size=batch_size, seed=seed, **kwargs)


def run_seed(config: Any) -> int:
    """``config.seed`` (0 when the config has none)."""
    return int(config.get("seed", 0))


def _centered(config_or_centered: Any) -> bool:
    if isinstance(config_or_centered, (bool, np.bool_)):
        return bool(config_or_centered)
    if not hasattr(config_or_centered, "data"):
        raise TypeError("get_data_scaler / get_data_inverse_scaler take `centered: bool` or a config "
                        f"with `config.data.centered`; got {type(config_or_centered).__name__}.")
    return bool(section_of(config_or_centered, "data").centered)


def get_data_scaler(config_or_centered: Any) -> Callable[[Any], Any]:
    """``x -> 2x - 1`` when ``config.data.centered`` (or ``centered=True``), else the identity;
    vector data are never rescaled."""
    if hasattr(config_or_centered, "data") and is_vector_data(config_or_centered):
        return lambda x: x
    return data_lib.scaler(_centered(config_or_centered))


def get_data_inverse_scaler(config_or_centered: Any) -> Callable[[Any], Any]:
    """Inverse of :func:`get_data_scaler`."""
    if hasattr(config_or_centered, "data") and is_vector_data(config_or_centered):
        return lambda x: x
    return data_lib.inverse_scaler(_centered(config_or_centered))
