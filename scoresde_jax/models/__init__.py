"""Score networks of the paper as flax.linen modules, and ``create_model(config)``.

Modules (they take plain arguments, never the config):
  * ``MLP`` (``mlp.py``): a time-conditioned MLP for vector data ``(B, D)`` (2-D toy datasets).
  * ``NCSNpp`` (``unet.py``): NCSN++ and DDPM++, one configurable U-Net.
  * ``DDPM`` (``ddpm.py``): the DDPM U-Net.
  * ``NCSNv2`` (``ncsnv2.py``): the SMLD baseline (RefineNet), variants ``depth='64'|'128'|'256'``;
    with ``conditional=True`` it is NCSNv1 (``config.model.name='ncsn'``).
  * ``NoiseConditionalClassifier`` (``classifier.py``): time-dependent classifier for
    controllable generation.

Usage::

    model = create_model(config)                       # reads config.model.* and config.data.*
    params = init_model(jax.random.key(0), config)      # float32 parameter pytree
    out = model.apply({'params': params}, x, labels, train=False)
    out = model.apply({'params': params}, x, labels, train=True, rngs={'dropout': key})

``x`` is NHWC; ``labels`` has shape ``(B,)``: sigma(t) for VE models with Fourier embeddings,
``(N-1) t`` (or integer steps / SMLD noise indices) for positional embeddings, DDPM and NCSNv2.

Precision and memory: ``create_model(config, dtype=jnp.bfloat16)`` computes in bfloat16 with
float32 parameters; ``remat=True`` rematerializes every residual block (``jax.checkpoint``). Both
can also be set in the config as ``config.model.dtype`` ('float32' | 'bfloat16') and
``config.model.remat``.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from scoresde_jax.models.classifier import NoiseConditionalClassifier
from scoresde_jax.models.ddpm import DDPM
from scoresde_jax.models.mlp import MLP
from scoresde_jax.models.ncsnv2 import NCSNv2
from scoresde_jax.models.unet import NCSNpp

__all__ = [
    "NCSNpp", "DDPM", "NCSNv2", "MLP", "NoiseConditionalClassifier", "MODEL_NAMES", "create_model",
    "init_model", "param_shapes", "count_params", "dummy_inputs", "uses_sigma_labels",
]

MODEL_NAMES = ("ncsnpp", "ddpm", "ncsnv2_64", "ncsnv2_128", "ncsnv2_256", "ncsn", "mlp")

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _get(section: Any, key: str, default: Any = None) -> Any:
    """``section.key`` or ``default`` when the key is absent (ConfigDict or plain object)."""
    try:
        return section[key] if isinstance(section, dict) else getattr(section, key)
    except (AttributeError, KeyError):
        return default


def _require(section: Any, key: str, where: str) -> Any:
    value = _get(section, key, _MISSING)
    if value is _MISSING:
        raise ValueError(f"config.{where}.{key} is required by create_model; add it to the config")
    return value


_MISSING = object()


def _resolve_dtype(dtype: Any) -> Any:
    if dtype is None or not isinstance(dtype, str):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ValueError(f"config.model.dtype={dtype!r} not in {sorted(_DTYPES)}") from None


def create_model(config: Any, *, dtype: Any = None, remat: Optional[bool] = None) -> nn.Module:
    """Build the network described by ``config.model.*`` / ``config.data.*`` (official keys).

    ``config.model.name``: 'ncsnpp' (NCSN++ / DDPM++), 'ddpm', 'ncsnv2_64' | 'ncsnv2_128' |
    'ncsnv2_256', 'ncsn' (NCSNv1), 'mlp' (vector data, e.g. the 2-D ``TOY_*`` datasets).
    ``dtype`` / ``remat`` override ``config.model.dtype`` / ``config.model.remat``.
    Besides the official keys, ``config.model.num_groups`` (DDPM GroupNorm groups, default 32)
    is read when present, for toy widths below 32 channels.
    """
    m, data = config.model, config.data
    name = str(_require(m, "name", "model")).lower()
    dtype = _resolve_dtype(dtype if dtype is not None else _get(m, "dtype"))
    if dtype is not None and jnp.dtype(dtype) == jnp.float32:
        dtype = None  # float32 computation is the default; follow the inputs (x64 stays x64).
    if name == "mlp":
        # Vector data (B, D): config.model.hidden_sizes / embedding_type / embedding_dim.
        return MLP(
            hidden_sizes=tuple(int(h) for h in _get(m, "hidden_sizes", (128, 128, 128))),
            embedding_type=str(_get(m, "embedding_type", "positional")).lower(),
            embedding_dim=int(_get(m, "embedding_dim", 64)),
            fourier_scale=float(_get(m, "fourier_scale", 16.0)),
            nonlinearity=str(_get(m, "nonlinearity", "swish")),
            dropout=float(_get(m, "dropout", 0.0)),
            dtype=dtype,
        )
    remat = bool(remat if remat is not None else _get(m, "remat", False))
    common = dict(
        centered=bool(_require(data, "centered", "data")),
        scale_by_sigma=bool(_get(m, "scale_by_sigma", False)),
        sigma_min=float(_get(m, "sigma_min", 0.01)),
        sigma_max=float(_get(m, "sigma_max", 50.0)),
        num_scales=int(_get(m, "num_scales", 1000)),
        nonlinearity=str(_get(m, "nonlinearity", "swish")),
        dtype=dtype,
        remat=remat,
    )
    if name == "ncsnpp":
        embedding_type = str(_get(m, "embedding_type", "fourier")).lower()
        training = _get(config, "training")
        if embedding_type == "fourier" and training is not None and \
                _get(training, "continuous", True) is False:
            raise ValueError("Fourier embeddings take noise levels and need continuous training; "
                             "set config.model.embedding_type='positional' for discrete training")
        return NCSNpp(
            nf=int(_require(m, "nf", "model")),
            ch_mult=tuple(_require(m, "ch_mult", "model")),
            num_res_blocks=int(_require(m, "num_res_blocks", "model")),
            attn_resolutions=tuple(_require(m, "attn_resolutions", "model")),
            dropout=float(_get(m, "dropout", 0.1)),
            resamp_with_conv=bool(_get(m, "resamp_with_conv", True)),
            conditional=bool(_get(m, "conditional", True)),
            fir=bool(_get(m, "fir", False)),
            fir_kernel=tuple(_get(m, "fir_kernel", (1, 3, 3, 1))),
            skip_rescale=bool(_get(m, "skip_rescale", True)),
            resblock_type=str(_get(m, "resblock_type", "biggan")).lower(),
            progressive=str(_get(m, "progressive", "none")).lower(),
            progressive_input=str(_get(m, "progressive_input", "none")).lower(),
            progressive_combine=str(_get(m, "progressive_combine", "sum")).lower(),
            embedding_type=embedding_type,
            fourier_scale=float(_get(m, "fourier_scale", 16.0)),
            init_scale=float(_get(m, "init_scale", 0.0)),
            **common,
        )
    if name == "ddpm":
        return DDPM(
            nf=int(_require(m, "nf", "model")),
            ch_mult=tuple(_require(m, "ch_mult", "model")),
            num_res_blocks=int(_require(m, "num_res_blocks", "model")),
            attn_resolutions=tuple(_require(m, "attn_resolutions", "model")),
            dropout=float(_get(m, "dropout", 0.1)),
            resamp_with_conv=bool(_get(m, "resamp_with_conv", True)),
            conditional=bool(_get(m, "conditional", True)),
            num_groups=int(_get(m, "num_groups", 32)),
            **common,
        )
    if name == "ncsn":
        common["nonlinearity"] = str(_get(m, "nonlinearity", "elu"))
        return NCSNv2(
            nf=int(_require(m, "nf", "model")),
            depth="64",
            conditional=True,
            normalization=str(_get(m, "normalization", "InstanceNorm++")),
            interpolation=str(_get(m, "interpolation", "bilinear")),
            **common,
        )
    if name.startswith("ncsnv2"):
        depth = name.split("_")[-1] if "_" in name else None
        size = int(_get(data, "image_size", 32))
        if depth is None:
            depth = "64" if size < 96 else "128" if size <= 128 else "256"
        if depth not in ("64", "128", "256"):
            raise ValueError(f"config.model.name={name!r}: use ncsnv2_64, ncsnv2_128 or ncsnv2_256")
        common["nonlinearity"] = str(_get(m, "nonlinearity", "elu"))
        return NCSNv2(
            nf=int(_require(m, "nf", "model")),
            depth=depth,
            normalization=str(_get(m, "normalization", "InstanceNorm++")),
            interpolation=str(_get(m, "interpolation", "bilinear")),
            **common,
        )
    raise ValueError(f"config.model.name={name!r} is not a known model; choose one of "
                     f"{MODEL_NAMES}")


def uses_sigma_labels(model: nn.Module) -> bool:
    """True when the model's labels are noise levels sigma (NCSN++ with Fourier embeddings)."""
    return getattr(model, "embedding_type", None) == "fourier"


def dummy_inputs(config: Any, batch_size: int = 1, model: Optional[nn.Module] = None):
    """Zero images ``(B, H, W, C)`` (vectors ``(B, D)`` for ``TOY_*`` data) and valid labels
    ``(B,)`` for initialization / shape checks."""
    model = model if model is not None else create_model(config)
    from scoresde_jax.data import TOY_DISTRIBUTIONS, get_toy_distribution

    dataset = str(_get(config.data, "dataset", "")).upper()
    if dataset in TOY_DISTRIBUTIONS:
        x = jnp.zeros((batch_size, get_toy_distribution(dataset).dim), jnp.float32)
    else:
        size = int(config.data.image_size)
        channels = int(_get(config.data, "num_channels", 3))
        x = jnp.zeros((batch_size, size, size, channels), jnp.float32)
    if uses_sigma_labels(model):
        labels = jnp.ones((batch_size,), jnp.float32)
    else:
        labels = jnp.zeros((batch_size,), jnp.int32)
    return x, labels


def init_model(rng: jax.Array, config: Any, batch_size: int = 1, **model_kwargs) -> Any:
    """Initialize the parameters of ``create_model(config)`` (a float32 pytree, jitted init)."""
    model = create_model(config, **model_kwargs)
    x, labels = dummy_inputs(config, batch_size, model)
    params_rng, dropout_rng = jax.random.split(rng)

    @jax.jit
    def _init(p_rng, d_rng):
        return model.init({"params": p_rng, "dropout": d_rng}, x, labels, train=False)["params"]

    return _init(params_rng, dropout_rng)


def param_shapes(config: Any, batch_size: int = 1, **model_kwargs) -> Any:
    """Parameter ``ShapeDtypeStruct`` tree of ``create_model(config)`` via ``jax.eval_shape``."""
    model = create_model(config, **model_kwargs)
    x, labels = dummy_inputs(config, batch_size, model)
    variables = jax.eval_shape(
        lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, labels,
                           train=False))
    return variables["params"]


def count_params(tree: Any) -> int:
    """Total number of scalars in a pytree of arrays / ``ShapeDtypeStruct``."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        n = 1
        for s in leaf.shape:
            n *= int(s)
        total += n
    return total
