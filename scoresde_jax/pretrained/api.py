"""``load(src)``: any supported pretrained model as a :class:`~scoresde_jax.pretrained.common.
Pretrained` (an SDE, a network, its parameters, ``score_fn``, ``denoise``, the config).

========================  ==================================  =================================
source                    recognized by                       reader
========================  ==================================  =================================
EDM network pickle        a file holding a pickle (``.pkl``)  :mod:`.edm` (no code is executed)
diffusers pipeline        a folder with ``model_index.json``  :mod:`.diffusers`
official score_sde        ``checkpoint_<step>`` (or a folder  :mod:`.score_sde` with ``config``
checkpoint                of them) and ``config=``            (a config or its file)
========================  ==================================  =================================

``format`` names the reader when the source does not tell it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from scoresde_jax.config import build
from scoresde_jax.config.components import param_shapes
from scoresde_jax.config_files import load_config, to_record
from scoresde_jax.pretrained import diffusers, download, edm, score_sde
from scoresde_jax.pretrained.common import Pretrained

FORMATS = ("edm", "diffusers", "score_sde")


def detect_format(src: str | Path) -> str:
    """``'edm'``, ``'diffusers'`` or ``'score_sde'`` for ``src`` (see the module table)."""
    p = Path(src)
    if p.is_dir():
        if (p / "model_index.json").exists():
            return "diffusers"
        return "score_sde"
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist")
    with open(p, "rb") as f:
        head = f.read(2)
    if head[:1] == b"\x80":  # a pickle's PROTO opcode
        return "edm"
    return "score_sde"


def load(src: str | Path, *, format: Optional[str] = None, config: Any = None,
         dataset: Optional[str] = None, ema: bool = True,
         sha256: Optional[str] = None) -> Pretrained:
    """The pretrained model at ``src`` (see the module table); an http(s) URL of a file is
    downloaded once into the cache folder and checked against ``sha256``
    (:func:`~scoresde_jax.pretrained.download.fetch`). ``config``: the official checkpoint's
    config (a ``ConfigDict`` or a config file); ``dataset``: the data set named in
    ``Pretrained.config`` (EDM / diffusers; default CIFAR10 for 32x32 RGB, else FOLDER);
    ``ema``: the EMA weights of an official checkpoint (else the raw ones)."""
    if download.is_url(src):
        src = download.fetch(str(src), sha256=sha256)
    fmt = format or detect_format(src)
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r}: one of {FORMATS}")
    if fmt == "edm":
        return edm.load(src, dataset=dataset)
    if fmt == "diffusers":
        return diffusers.load(src, dataset=dataset)
    if config is None:
        raise ValueError(f"{src}: an official score_sde checkpoint needs the config it was "
                         "trained with: load(src, config='configs/ve/cifar10_ncsnpp_continuous.py')")
    cfg = load_config(config) if isinstance(config, (str, Path)) else config
    s = build.setup(cfg)
    ckpt = score_sde.load_checkpoint(src, param_shapes(cfg),
                                     model_desc=score_sde.describe_model(s.model,
                                                                         s.input_shape[1:]))
    k = int(getattr(s.model, "num_classes", 0) or 0)
    return Pretrained(sde=s.sde, model=s.model, params=ckpt.weights(ema), config=cfg,
                      continuous=s.continuous, num_classes=k, sampling_eps=s.sampling_eps,
                      source=str(ckpt.path), format="score_sde",
                      info={"step": ckpt.step, "ema": ema, "record": to_record(cfg)})
