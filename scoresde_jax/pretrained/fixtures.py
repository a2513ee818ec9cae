"""Small files IN the published formats of other code bases, written by this library without
their code (no torch, no EDM, no diffusers): for demos, tutorials and tests, where nothing may be
downloaded. What :mod:`scoresde_jax.pretrained` reads, it can write here:

* :func:`write_edm_pickle`: an EDM network pickle (``network-snapshot-*.pkl`` of
  github.com/NVlabs/edm: ``{'ema': network, 'loss_fn', 'augment_pipe', 'dataset_kwargs'}``, the
  network a tree of ``torch_utils.persistence`` records holding their constructor arguments and
  torch tensors as ``pickle.dump`` writes them) of a state dict, e.g. :func:`edm_state_dict` of
  the parameters of a :class:`~scoresde_jax.models.song_unet.EDMSongUNet`;
* :func:`write_diffusers_folder`: a diffusers pipeline folder (``model_index.json``,
  ``unet/config.json`` and weights as safetensors or a torch ``.bin``, ``scheduler/``);
* the records themselves (:class:`Global`, :class:`Reduce`, :func:`dumps`, :func:`tensor`,
  :func:`torch_zip`), for tests of the safe unpickler.

The files hold no code: EDM's ``module_src`` field is a placeholder comment (EDM's own loader
would fail on it; :mod:`scoresde_jax.pretrained.safe_pickle` never runs it anyway). The resample
filters are stored for the up/down-sampling convolutions with weights (``conv0``/``skip`` of the
``*_down``/``*_up`` blocks); the loader recomputes every filter from ``resample_filter``.
"""

from __future__ import annotations

import collections
import io
import json
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from scoresde_jax.pretrained.tensor_files import write_safetensors

PLACEHOLDER_SRC = "# written by scoresde_jax.pretrained.fixtures: no code\n"


# --- pickle records as torch and EDM write them ---------------------------------------------------
class Global:
    """A global named in a pickle (``module.name``), written without importing it."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle wants reduce functions to be callable
        raise TypeError("a marker")


class Reduce:
    """``func(*args)`` in a pickle (optionally followed by BUILD ``state``)."""

    def __init__(self, func: Global, args: tuple, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args,
                                                                   self.state)


class StorageRef:
    """A storage record: ``persistent_id`` -> ('storage', torch.FloatStorage, key, 'cpu', n)."""

    def __init__(self, key: str, array: np.ndarray):
        self.key, self.array = key, array


class Writer(pickle._Pickler):
    """A pickler that writes :class:`Global` names as they are and storage records as torch's
    persistent ids."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_marker(self, obj):
        self.save_global(obj, obj.name)

    def save_global(self, obj, name=None):
        if isinstance(obj, Global):
            self.save(obj.module)
            self.save(obj.name)
            self.write(pickle.STACK_GLOBAL)
            self.memoize(obj)
            return
        super().save_global(obj, name)

    dispatch[Global] = save_marker

    def persistent_id(self, obj):
        if isinstance(obj, StorageRef):
            dtype = {np.float32: "FloatStorage", np.float64: "DoubleStorage"}[obj.array.dtype.type]
            return ("storage", Global("torch", dtype), obj.key, "cpu", obj.array.size)
        return None


def dumps(obj) -> bytes:
    f = io.BytesIO()
    Writer(f, protocol=4).dump(obj)
    return f.getvalue()


def legacy_storage_blob(a: np.ndarray) -> bytes:
    """``torch.save(storage, _use_new_zipfile_serialization=False)`` of a float32 array."""
    f = io.BytesIO()
    for obj in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                              "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(obj, f, protocol=2)
    w = Writer(f, protocol=2)
    w.dump(StorageRef("94011", a.ravel()))
    pickle.dump(["94011"], f, protocol=2)
    f.write(struct.pack("<q", a.size) + np.ascontiguousarray(a, "<f4").tobytes())
    return f.getvalue()


def tensor(a: np.ndarray, parameter: bool = False) -> Reduce:
    """A tensor as ``pickle.dump`` writes it (its storage as a legacy torch.save blob)."""
    a = np.asarray(a, np.float32)
    storage = Reduce(Global("torch.storage", "_load_from_bytes"), (legacy_storage_blob(a),))
    stride = tuple(int(s // 4) for s in np.ascontiguousarray(a).strides)
    t = Reduce(Global("torch._utils", "_rebuild_tensor_v2"),
               (storage, 0, tuple(a.shape), stride, False, collections.OrderedDict()))
    if parameter:
        return Reduce(Global("torch._utils", "_rebuild_parameter"),
                      (t, False, collections.OrderedDict()))
    return t


def torch_zip(state: dict) -> bytes:
    """``torch.save(state_dict)`` in the zip format."""
    refs = {n: StorageRef(str(i), np.asarray(a, np.float32)) for i, (n, a) in
            enumerate(state.items())}
    od = collections.OrderedDict(
        (n, Reduce(Global("torch._utils", "_rebuild_tensor_v2"),
                   (r, 0, tuple(r.array.shape),
                    tuple(int(s // 4) for s in np.ascontiguousarray(r.array).strides), False,
                    collections.OrderedDict()))) for n, r in refs.items())
    f = io.BytesIO()
    with zipfile.ZipFile(f, "w") as z:
        z.writestr("archive/data.pkl", dumps(od))
        z.writestr("archive/byteorder", "little")
        for r in refs.values():
            z.writestr(f"archive/data/{r.key}", np.ascontiguousarray(r.array, "<f4").tobytes())
        z.writestr("archive/version", "3\n")
    return f.getvalue()


def persistent(class_name: str, state: dict, module_src: str = "# not EDM's source\n") -> Reduce:
    """An EDM ``torch_utils.persistence`` record."""
    meta = dict(type="class", version=6, module_src=module_src, class_name=class_name,
                state=state)
    return Reduce(Global("torch_utils.persistence", "_reconstruct_persistent_obj"), (meta,))


def module_state(init_kwargs: dict | None, params: dict, buffers: dict, modules: dict) -> dict:
    """A ``torch.nn.Module.__dict__`` as pickled (hooks as empty OrderedDicts)."""
    od = collections.OrderedDict
    state = {"training": False, "_parameters": od(params), "_buffers": od(buffers),
             "_non_persistent_buffers_set": set(), "_backward_hooks": od(),
             "_forward_hooks": od(), "_forward_pre_hooks": od(), "_state_dict_hooks": od(),
             "_load_state_dict_pre_hooks": od(), "_modules": od(modules)}
    if init_kwargs is not None:
        state.update(_init_args=(), _init_kwargs=init_kwargs)
    return state


def edm_network(class_name: str, init_kwargs: dict, weights: dict, module_src: str) -> Reduce:
    """An EDM network record tree whose state dict is ``weights`` (dotted names): one record per
    submodule, ``enc`` / ``dec`` as ``torch.nn.ModuleDict``."""
    tree: dict = {}
    for name, value in weights.items():
        node = tree
        *parents, leaf = name.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value

    def build(node, cls, kwargs):
        params = {k: tensor(v, parameter=not k.endswith(("freqs", "resample_filter")))
                  for k, v in node.items() if not isinstance(v, dict)}
        buffers = {k: params.pop(k) for k in list(params) if k in ("freqs", "resample_filter")}
        subs = {}
        for k, v in node.items():
            if isinstance(v, dict):
                if k in ("enc", "dec"):
                    inner = {n: build(c, "UNetBlock", {}) for n, c in v.items()}
                    subs[k] = Reduce(Global("torch.nn.modules.container", "ModuleDict"), (),
                                     module_state(None, {}, {}, inner))
                else:
                    subs[k] = build(v, "Layer", {})
        return persistent(cls, module_state(kwargs, params, buffers, subs), module_src)

    return build(tree, class_name, init_kwargs)


def _torch_name(key: str) -> str:
    """``model/enc_32x32_conv/weight`` -> ``model.enc.32x32_conv.weight`` (inverse of
    :func:`scoresde_jax.pretrained.edm.map_weights`'s names)."""
    parts = key.split("/")
    if len(parts) > 2 and parts[1].split("_", 1)[0] in ("enc", "dec") and "_" in parts[1]:
        parts = [parts[0], *parts[1].split("_", 1)] + parts[2:]
    return ".".join(parts)


def edm_state_dict(params: Mapping[str, Any], resample_filter=(1, 1)) -> dict[str, np.ndarray]:
    """EDM's state dict (names and torch layouts, float32) of the parameters of an
    :class:`~scoresde_jax.models.song_unet.EDMSongUNet` (``params``: its ``'params'`` tree), with
    the resample filters of ``resample_filter`` (see the module doc)."""
    flat: dict[str, np.ndarray] = {}

    def walk(node, prefix):
        for k, v in node.items():
            key = f"{prefix}/{k}" if prefix else str(k)
            if isinstance(v, Mapping):
                walk(v, key)
            else:
                flat[key] = np.asarray(v, np.float32)

    walk(params, "")
    f = np.asarray(resample_filter, np.float32)
    filt = (np.outer(f, f) / f.sum() ** 2)[None, None]
    out = {}
    for key, a in flat.items():
        name = _torch_name(key)
        if name.endswith("weight") and a.ndim == 4:
            a = np.transpose(a, (3, 2, 0, 1))  # HWIO -> OIHW
        elif name.endswith("weight") and a.ndim == 2:
            a = a.T
        out[name] = np.ascontiguousarray(a)
    return add_resample_filters(out, filt)


def add_resample_filters(weights: Mapping[str, np.ndarray], filt: np.ndarray) -> dict:
    """``weights`` with the ``resample_filter`` buffer ``filt`` (``(1, 1, k, k)``) after each
    ``conv0``/``skip`` weight of a ``*_down``/``*_up`` block, as EDM's state dict holds them."""
    out = {}
    for name, value in weights.items():
        out[name] = value
        if name.endswith(("conv0.weight", "skip.weight")) and ("_down." in name or "_up." in name):
            out[name.rsplit(".", 1)[0] + ".resample_filter"] = np.asarray(filt, np.float32)
    return out


def write_edm_pickle(path: str | Path, class_name: str, init_kwargs: Mapping[str, Any],
                     weights: Mapping[str, np.ndarray], *, module_src: str = PLACEHOLDER_SRC,
                     dataset_kwargs: Optional[Mapping[str, Any]] = None) -> Path:
    """An EDM network pickle at ``path``: ``{'ema', 'loss_fn', 'augment_pipe',
    'dataset_kwargs'}`` whose ``'ema'`` is a ``class_name`` (``VPPrecond`` | ``VEPrecond`` |
    ``EDMPrecond``) record built with ``init_kwargs`` (EDM's constructor arguments, e.g.
    ``model_type='SongUNet'``) holding the state dict ``weights`` (dotted names, torch layouts:
    :func:`edm_state_dict`)."""
    path = Path(path)
    skip_scale = Reduce(Global("numpy._core.multiarray", "scalar"),
                        (Reduce(Global("numpy", "dtype"), ("f8", False, True),
                                (3, "<", None, None, None, -1, -1, 0)),
                         struct.pack("<d", np.sqrt(0.5))))
    net = edm_network(class_name, dict(init_kwargs), dict(weights), module_src)
    loss = persistent("VPLoss", {"beta_d": 19.9, "beta_min": 0.1, "epsilon_t": 1e-5,
                                 "skip_scale": skip_scale}, module_src)
    data = {"ema": net, "loss_fn": loss, "augment_pipe": None,
            "dataset_kwargs": dict(dataset_kwargs or {
                "class_name": "training.dataset.ImageFolderDataset",
                "path": "datasets/cifar10-32x32.zip", "use_labels": False})}
    path.write_bytes(dumps(data))
    return path


def write_diffusers_folder(root: str | Path, *, pipeline: str, unet_config: Mapping[str, Any],
                           scheduler_config: Mapping[str, Any], weights: Mapping[str, np.ndarray],
                           fmt: str = "safetensors") -> Path:
    """``root`` as a diffusers pipeline folder (``pipeline``: e.g. ``DDPMPipeline``) of a
    ``UNet2DModel`` with ``unet_config`` and the state dict ``weights``, and a scheduler of
    ``scheduler_config`` (its ``_class_name`` included); weights as ``'safetensors'`` or
    ``'bin'`` (torch's zip format)."""
    if fmt not in ("safetensors", "bin"):
        raise ValueError(f"fmt={fmt!r}: 'safetensors' or 'bin'")
    root = Path(root)
    (root / "unet").mkdir(parents=True, exist_ok=True)
    (root / "scheduler").mkdir(exist_ok=True)
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": pipeline, "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DModel"],
        "scheduler": ["diffusers", scheduler_config["_class_name"]]}))
    (root / "unet" / "config.json").write_text(json.dumps(
        {"_class_name": "UNet2DModel", **unet_config}))
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(dict(scheduler_config)))
    if fmt == "safetensors":
        write_safetensors(root / "unet" / "diffusion_pytorch_model.safetensors", dict(weights))
    else:
        (root / "unet" / "diffusion_pytorch_model.bin").write_bytes(torch_zip(dict(weights)))
    return root
