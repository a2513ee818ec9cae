"""diffusers pipeline folders (``model_index.json``, ``unet/``, ``scheduler/``) as
:class:`Pretrained`: the ``DDPMPipeline`` (``google/ddpm-cifar10-32``, ...) and the
``ScoreSdeVePipeline`` (``google/ncsnpp-celebahq-256``, ``google/ncsnpp-ffhq-1024``, ...).

The UNet's ``config.json`` gives the architecture (:class:`scoresde_jax.models.diffusers_unet.
UNet2DModel`, keys the module does not know are listed in ``info['ignored_config']``); the weights
come from ``diffusion_pytorch_model.safetensors`` (preferred) or the ``.bin`` file (read without
torch and without executing code, the semantics of ``torch.load(weights_only=True)``). Old
checkpoints' names are mapped as diffusers maps them: attention ``query/key/value/proj_attn`` ->
``to_q/to_k/to_v/to_out.0``, the Fourier weight ``time_proj.W`` -> ``time_proj.weight``, a
downsampler's ``op`` / ``Conv2d_0`` -> ``conv``.

The SDE comes from the scheduler: ``DDPMScheduler`` (linear betas, epsilon prediction) -> the
discrete VP SDE with ``beta_min = N beta_start``, ``beta_max = N beta_end`` (its chain is DDPM's),
data in ``[-1, 1]``; ``ScoreSdeVeScheduler`` -> the continuous VE SDE on ``[sigma_min,
sigma_max]``, data in ``[0, 1]``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax.models.diffusers_unet import UNet2DModel
from scoresde_jax.pretrained.common import Pretrained, check_and_nest, make_config
from scoresde_jax.pretrained.tensor_files import read_safetensors, read_torch_file
from scoresde_jax.sde import VESDE, VPSDE

UNET_FIELDS = tuple(f.name for f in dataclasses.fields(UNet2DModel)
                    if f.name not in ("parent", "name"))
# config keys that must keep diffusers' default for the blocks implemented here
REQUIRED_VALUES = {"class_embed_type": (None,), "downsample_type": ("conv",),
                   "upsample_type": ("conv",), "mid_block_type": ("UNetMidBlock2D",)}
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_LEGACY = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist: expected a diffusers pipeline folder "
                                "(model_index.json, unet/, scheduler/)") from None


def unet_kwargs(config: Mapping[str, Any], source: str = "unet/config.json"
                ) -> tuple[dict, dict]:
    """``(UNet2DModel arguments, ignored keys)`` of a diffusers UNet ``config.json``."""
    cls = config.get("_class_name", "UNet2DModel")
    if cls != "UNet2DModel":
        raise ValueError(f"{source}: _class_name={cls!r}; only UNet2DModel is supported")
    for key, allowed in REQUIRED_VALUES.items():
        if config.get(key, allowed[0]) not in allowed:
            raise ValueError(f"{source}: {key}={config[key]!r} is not supported "
                             f"(only {allowed[0]!r})")
    kwargs, ignored = {}, {}
    for k, v in config.items():
        if k in UNET_FIELDS:
            kwargs[k] = tuple(v) if isinstance(v, list) else v
        elif not k.startswith("_") and k not in REQUIRED_VALUES:
            ignored[k] = v
    return kwargs, ignored


def torch_to_flax_key(name: str) -> str:
    """A diffusers state-dict name as this module's parameter path (see the module doc)."""
    parts = name.split(".")
    if len(parts) >= 2 and parts[-2] in _LEGACY:
        parts = parts[:-2] + _LEGACY[parts[-2]].split(".") + parts[-1:]
    if parts[:2] == ["time_proj", "W"]:
        parts = ["time_proj", "weight"]
    merged: list[str] = []
    for p in parts:
        if p.isdigit() and merged:
            merged[-1] = f"{merged[-1]}_{p}"
        else:
            merged.append(p)
    if merged[0] in ("class_embedding",):
        return "class_embedding_weight"
    if re.match(r"^(down_blocks_\d+|up_blocks_\d+|mid_block)$", merged[0]) and len(merged) > 2:
        block, second = merged[0], merged[1]
        if re.match(r"^(downsamplers|upsamplers)_\d+$", second):
            conv = "conv" if merged[2] in ("conv", "op", "Conv2d_0") else merged[2]
            return f"{block}_{second}_{conv}/" + "/".join(merged[3:])
        return f"{block}_{second}/" + "/".join(merged[2:])
    return "/".join(merged)


def map_weights(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """diffusers state dict -> flax paths in JAX layouts (a name stored twice, as diffusers'
    ``Conv2d_0`` alias of ``conv``, is kept once)."""
    out: dict[str, np.ndarray] = {}
    for name in sorted(tensors, key=lambda n: ("Conv2d_0" in n, n)):
        key = torch_to_flax_key(name)
        if key in out:
            continue
        a = np.asarray(tensors[name], np.float32)
        if key != "class_embedding_weight" and key.endswith("weight"):
            if a.ndim == 4 and re.search(r"attentions_\d+/(to_q|to_k|to_v|to_out_0)/", key):
                a = a[:, :, 0, 0]  # attention projections stored as 1x1 convolutions
            if a.ndim == 4:
                a = np.transpose(a, (2, 3, 1, 0))
            elif a.ndim == 2:
                a = a.T
        out[key] = a
    return out


def read_weights(unet_dir: Path) -> tuple[dict[str, np.ndarray], Path]:
    """The UNet state dict (safetensors preferred) and the file it came from."""
    for name in WEIGHT_FILES:
        f = unet_dir / name
        if f.exists():
            return (read_safetensors(f) if f.suffix == ".safetensors" else read_torch_file(f)), f
    raise FileNotFoundError(f"{unet_dir}: none of {WEIGHT_FILES}")


def scheduler_sde(config: Mapping[str, Any], source: str = "scheduler_config.json"):
    """``(sde, config name, sde params, continuous, centered, sampling eps, default sampler)``."""
    cls = config.get("_class_name")
    if cls == "DDPMScheduler":
        schedule = config.get("beta_schedule", "linear")
        pred = config.get("prediction_type", "epsilon")
        if schedule != "linear" or pred != "epsilon" or config.get("trained_betas"):
            raise ValueError(f"{source}: DDPMScheduler with beta_schedule={schedule!r}, "
                             f"prediction_type={pred!r} is not supported (linear, epsilon)")
        n = int(config.get("num_train_timesteps", 1000))
        b0, b1 = float(config.get("beta_start", 1e-4)) * n, float(config.get("beta_end", 0.02)) * n
        return (VPSDE(beta_min=b0, beta_max=b1, N=n), "vpsde",
                dict(beta_min=b0, beta_max=b1, num_scales=n), False, True, 1e-3,
                {"method": "ddim", "num_steps": 100})
    if cls == "ScoreSdeVeScheduler":
        lo, hi = float(config.get("sigma_min", 0.01)), float(config.get("sigma_max", 1348.0))
        n = int(config.get("num_train_timesteps", 2000))
        return (VESDE(sigma_min=lo, sigma_max=hi, N=n), "vesde",
                dict(sigma_min=lo, sigma_max=hi, num_scales=n), True, False,
                float(config.get("sampling_eps", 1e-5)),
                {"method": "pc", "predictor": "reverse_diffusion", "corrector": "langevin",
                 "snr": float(config.get("snr", 0.15)), "n_steps_each": 1,
                 "noise_removal": True})
    raise ValueError(f"{source}: scheduler {cls!r} is not supported (DDPMScheduler, "
                     "ScoreSdeVeScheduler)")


def load(path: str | Path, *, dataset: Optional[str] = None) -> Pretrained:
    """A diffusers pipeline folder as :class:`Pretrained` (see the module doc)."""
    root = Path(path)
    index = _read_json(root / "model_index.json")
    unet_dir = root / "unet"
    cfg = _read_json(unet_dir / "config.json")
    kwargs, ignored = unet_kwargs(cfg, str(unet_dir / "config.json"))
    sched = _read_json(root / "scheduler" / "scheduler_config.json")
    sde, sde_name, sde_params, continuous, centered, eps, sampling = scheduler_sde(
        sched, str(root / "scheduler" / "scheduler_config.json"))
    model = UNet2DModel(**kwargs)
    size = kwargs.get("sample_size", 32)
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    c = int(kwargs.get("in_channels", 3))
    x = jnp.zeros((1, size, size, c), jnp.float32)
    labels = jnp.ones((1,), jnp.float32)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    expected = jax.eval_shape(lambda: model.init(rngs, x, labels))["params"]
    tensors, wfile = read_weights(unet_dir)
    params = check_and_nest(map_weights(tensors), expected, what=str(wfile))
    model_cfg = {"name": "diffusers_unet",
                 **{k: v for k, v in kwargs.items() if k != "sample_size"},
                 "sample_size": size}
    config = make_config(model=model_cfg, sde=sde_name, sde_params=sde_params,
                         image_size=size, num_channels=c, centered=centered,
                         continuous=continuous, dataset=dataset, sampling=sampling)
    return Pretrained(sde=sde, model=model, params=params, config=config,
                      continuous=continuous, num_classes=model.num_classes, sampling_eps=eps,
                      source=str(root), format="diffusers",
                      info={"pipeline": index.get("_class_name"), "weights": str(wfile),
                            "ignored_config": ignored})
