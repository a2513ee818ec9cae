"""EDM network pickles (github.com/NVlabs/edm, ``network-snapshot-*.pkl``) as :class:`Pretrained`.

The file is a pickled dict ``{'ema': network, 'loss_fn', 'augment_pipe', 'dataset_kwargs'}`` whose
network is a ``torch_utils.persistence`` object: EDM's loader compiles and runs the source code
stored in it. Here the file is read by :mod:`scoresde_jax.pretrained.safe_pickle`, which never
executes anything from it: the architecture comes from the stored constructor arguments
(``_init_kwargs`` of ``VPPrecond`` / ``VEPrecond`` / ``EDMPrecond`` with ``model_type=
'SongUNet'``), the weights from the state dict, mapped onto
:class:`scoresde_jax.models.song_unet.EDMSongUNet`.

The SDE of the result: ``VPPrecond`` -> the VP SDE with ``beta_min``, ``beta_max = beta_min +
beta_d`` and ``N = M`` (EDM's VP schedule is the score_sde VP SDE); ``VEPrecond`` -> the VE SDE on
``[sigma_min, sigma_max]`` (0.02, 100); ``EDMPrecond`` -> :class:`~scoresde_jax.sde.EDMSDE`
(``sigma(t) = t``) on EDM's sampling range ``[max(0.002, sigma_min), min(80, sigma_max)]`` (as
EDM's ``generate.py`` clamps it; ``EDMPrecond``'s defaults 0 and inf give ``[0.002, 80]``) with its
``sigma_data`` (0.5): the network is then applied in the ``('edm', *)`` row of the
parameterization table (input ``c_in x``, label ``c_noise``, output ``F``) and its config is EDM's
sampling recipe (Heun, 18 grid points = 35 evaluations, ``rho = 7``), as for a network trained
here with ``configs/edm/edm_recipe.py``. Data are in ``[-1, 1]`` (``centered``): EDM's VE sigma is
twice score_sde's VE sigma on ``[0, 1]`` data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax.models.song_unet import EDMSongUNet
from scoresde_jax.pretrained.common import Pretrained, check_and_nest, make_config
from scoresde_jax.pretrained.safe_pickle import PersistentObject, module_tensors, safe_load
from scoresde_jax.sde import EDMSDE, VESDE, VPSDE

PRECONDS = {"VPPrecond": "vp", "VEPrecond": "ve", "EDMPrecond": "edm"}
SONG_UNET_KEYS = ("augment_dim", "model_channels", "channel_mult", "channel_mult_emb",
                  "num_blocks", "attn_resolutions", "dropout", "label_dropout", "embedding_type",
                  "channel_mult_noise", "encoder_type", "decoder_type", "resample_filter")
PRECOND_KEYS = {"vp": ("beta_d", "beta_min", "M", "epsilon_t"), "ve": ("sigma_min", "sigma_max"),
                "edm": ("sigma_min", "sigma_max", "sigma_data")}
EDM_SAMPLING_RANGE = (0.002, 80.0)
"""EDM's sampler's ``(sigma_min, sigma_max)`` (the SDE range of an ``EDMPrecond`` network)."""


def read_network(path: str | Path, key: str = "ema") -> PersistentObject:
    """The network record ``key`` of an EDM pickle (safely unpickled)."""
    path = Path(path)
    data = safe_load(path.read_bytes(), source=str(path))
    if not isinstance(data, Mapping) or key not in data:
        found = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        raise ValueError(f"{path}: not an EDM network pickle (a dict with key {key!r}); found "
                         f"{found}")
    net = data[key]
    if not isinstance(net, PersistentObject):
        raise ValueError(f"{path}: {key!r} is {type(net).__name__}, not an EDM network record")
    return net


def network_kwargs(net: PersistentObject, source: str = "the file") -> dict:
    """The :class:`EDMSongUNet` arguments of a ``VPPrecond``/``VEPrecond``/``EDMPrecond`` record."""
    if net.class_name not in PRECONDS:
        raise ValueError(f"{source}: network class {net.class_name!r} is not supported; "
                         f"supported: {sorted(PRECONDS)} with model_type='SongUNet'")
    kw = dict(net.init_kwargs)
    if net.state.get("_init_args"):
        raise ValueError(f"{source}: the network was built with positional arguments; "
                         "expected keyword arguments only")
    model_type = kw.pop("model_type", "SongUNet" if net.class_name != "EDMPrecond"
                        else "DhariwalUNet")
    if model_type != "SongUNet":
        raise ValueError(f"{source}: model_type={model_type!r} is not supported (only "
                         "SongUNet: EDM's DDPM++ and NCSN++ networks)")
    precond = PRECONDS[net.class_name]
    kw.pop("use_fp16", None)
    out = dict(precond=precond, img_resolution=int(kw.pop("img_resolution")),
               img_channels=int(kw.pop("img_channels")), label_dim=int(kw.pop("label_dim", 0)))
    for k in PRECOND_KEYS[precond]:
        if k in kw:
            out[k] = _plain(kw.pop(k))
    for k in SONG_UNET_KEYS:
        if k in kw:
            out[k] = _plain(kw.pop(k))
    if kw:
        raise ValueError(f"{source}: unknown {net.class_name} arguments {sorted(kw)}")
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(_plain(u) for u in v)
    if isinstance(v, np.generic):
        return v.item()
    return v


def _flax_key(name: str) -> tuple[str, str]:
    """``model.enc.32x32_conv.weight`` -> (``model/enc_32x32_conv/weight``, layout kind)."""
    parts = name.split(".")
    if len(parts) > 2 and parts[1] in ("enc", "dec"):
        parts = [parts[0], f"{parts[1]}_{parts[2]}"] + parts[3:]
    return "/".join(parts), parts[-1]


def map_weights(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """EDM state dict -> ``{'model/enc_32x32_conv/weight': array}`` in JAX layouts (resample
    filters dropped: the network recomputes them from ``resample_filter``)."""
    out = {}
    for name, value in tensors.items():
        if name.endswith("resample_filter"):
            continue
        key, leaf = _flax_key(name)
        a = np.asarray(value, np.float32)
        if leaf == "weight" and a.ndim == 4:
            a = np.transpose(a, (2, 3, 1, 0))  # OIHW -> HWIO
        elif leaf == "weight" and a.ndim == 2:
            a = a.T  # (out, in) -> (in, out)
        out[key] = a
    return out


def _check_filters(tensors: Mapping[str, np.ndarray], kwargs: dict, source: str) -> None:
    f = np.asarray(kwargs.get("resample_filter", (1, 1)), np.float64)
    want = np.outer(f, f) / f.sum() ** 2
    for name, value in tensors.items():
        if name.endswith("resample_filter") and not np.allclose(np.squeeze(value), want):
            raise ValueError(f"{source}: {name} is not the filter of resample_filter="
                             f"{tuple(float(v) for v in f)}")


def sde_of(kwargs: Mapping[str, Any]):
    """``(sde, sde kind, config params, sampling eps)`` of an :class:`EDMSongUNet` config."""
    p = kwargs["precond"]
    if p == "vp":
        beta_min, beta_d = float(kwargs.get("beta_min", 0.1)), float(kwargs.get("beta_d", 19.9))
        n = int(kwargs.get("M", 1000))
        params = dict(beta_min=beta_min, beta_max=beta_min + beta_d, num_scales=n)
        return (VPSDE(beta_min=beta_min, beta_max=beta_min + beta_d, N=n), "vpsde", params,
                float(kwargs.get("epsilon_t", 1e-5)))
    if p == "ve":
        lo, hi = float(kwargs.get("sigma_min", 0.02)), float(kwargs.get("sigma_max", 100.0))
        return VESDE(sigma_min=lo, sigma_max=hi, N=1000), "vesde", dict(
            sigma_min=lo, sigma_max=hi, num_scales=1000), 1e-5
    lo = max(EDM_SAMPLING_RANGE[0], float(kwargs.get("sigma_min", 0.0)))
    hi = min(EDM_SAMPLING_RANGE[1], float(kwargs.get("sigma_max", np.inf)))
    sd = float(kwargs.get("sigma_data", 0.5))
    if not 0 < lo < hi or not sd > 0:
        raise ValueError(f"EDMPrecond with sigma_min={kwargs.get('sigma_min')}, sigma_max="
                         f"{kwargs.get('sigma_max')}, sigma_data={sd}: EDM's sampling range "
                         f"[{lo}, {hi}] is empty or sigma_data <= 0")
    return EDMSDE(sigma_min=lo, sigma_max=hi, sigma_data=sd, N=1000), "edmsde", dict(
        sigma_min=lo, sigma_max=hi, sigma_data=sd, num_scales=1000), lo


MODULE_SDE = {"vpsde": "vp", "vesde": "ve", "edmsde": "edm"}
"""``EDMSongUNet.sde`` (what its ``__call__`` computes) of each SDE kind."""
EDM_SAMPLING = dict(method="heun", num_steps=18, grid="edm", rho=7.0)
"""EDM's deterministic sampler: Heun on the ``rho = 7`` grid, 18 points (35 evaluations)."""


def build(kwargs: Mapping[str, Any], flat_weights: Mapping[str, np.ndarray], *, source: str,
          dataset: Optional[str] = None, info: Optional[Mapping] = None) -> Pretrained:
    """:class:`Pretrained` of :class:`EDMSongUNet` arguments and mapped weights."""
    sde, sde_name, sde_params, eps = sde_of(kwargs)
    module_kw = {k: v for k, v in kwargs.items() if k not in ("sigma_min", "sigma_max")}
    module_kw.update(sde=MODULE_SDE[sde_name], num_scales=int(sde_params["num_scales"]))
    model = EDMSongUNet(**module_kw)
    r, c = int(kwargs["img_resolution"]), int(kwargs["img_channels"])
    x = jnp.zeros((1, r, r, c), jnp.float32)
    labels = jnp.ones((1,), jnp.float32) * {"vesde": 0.5, "vpsde": 500.0, "edmsde": 0.0}[sde_name]
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    expected = jax.eval_shape(lambda: model.init(rngs, x, labels))["params"]
    params = check_and_nest(flat_weights, expected, what=source)
    config = make_config(model={"name": "edm_song_unet", **module_kw}, sde=sde_name,
                         sde_params=sde_params, image_size=r, num_channels=c, centered=True,
                         dataset=dataset, sampling=EDM_SAMPLING if sde_name == "edmsde" else None)
    return Pretrained(sde=sde, model=model, params=params, config=config, continuous=True,
                      num_classes=int(kwargs.get("label_dim", 0)), sampling_eps=eps,
                      source=source, format="edm", info=dict(info or {}))


def load(path: str | Path, *, key: str = "ema", dataset: Optional[str] = None) -> Pretrained:
    """An EDM network pickle as :class:`Pretrained` (see the module doc)."""
    source = str(path)
    net = read_network(path, key)
    kwargs = network_kwargs(net, source)
    tensors = module_tensors(net)
    _check_filters(tensors, kwargs, source)
    return build(kwargs, map_weights(tensors), source=source, dataset=dataset,
                 info={"class_name": net.class_name, "init_kwargs": net.init_kwargs})
