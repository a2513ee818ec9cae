"""Fixtures of tests/test_pretrained_*.py: each format's files written by small writers of our own
from the committed manifests of tests/fixtures/pretrained/ (names, shapes, constructor arguments,
written by its make_reference.py with each format's own code, which also wrote the reference
outputs); the weights are regenerated here (NumPy ``default_rng(seed)``, state-dict order)."""

from __future__ import annotations

import collections
import io
import json
import pathlib
import pickle
import struct

import numpy as np

from scoresde_jax.pretrained.tensor_files import write_safetensors

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


# --- a diffusers pipeline folder -----------------------------------------------------------------
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
    (root / "unet").mkdir(parents=True, exist_ok=True)
    (root / "scheduler").mkdir(exist_ok=True)
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": m["pipeline"], "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DModel"],
        "scheduler": ["diffusers", m["scheduler"]["_class_name"]]}))
    (root / "unet" / "config.json").write_text(json.dumps(
        {"_class_name": "UNet2DModel", **m["unet"]}))
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(m["scheduler"]))
    if fmt == "safetensors":
        write_safetensors(root / "unet" / "diffusion_pytorch_model.safetensors", w)
    else:
        (root / "unet" / "diffusion_pytorch_model.bin").write_bytes(torch_zip(w))
    return root


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
    import zipfile
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


def write_edm(path: pathlib.Path, case: str, *, module_src: str = "# not EDM's source\n"
              ) -> pathlib.Path:
    """An EDM network pickle of ``case`` (``{'ema', 'loss_fn', 'augment_pipe',
    'dataset_kwargs'}``), its resample filters as EDM stores them."""
    m = manifest(case)
    w = fixture_weights(m["tensors"], m["seed"])
    f = np.asarray(m["init_kwargs"].get("resample_filter", [1, 1]), np.float32)
    filt = (np.outer(f, f) / f.sum() ** 2)[None, None]
    for name in list(w):
        if name.endswith(("conv0.weight", "skip.weight")) and ("_down." in name or "_up." in name):
            w[name.rsplit(".", 1)[0] + ".resample_filter"] = filt
    skip_scale = Reduce(Global("numpy._core.multiarray", "scalar"),
                        (Reduce(Global("numpy", "dtype"), ("f8", False, True),
                                (3, "<", None, None, None, -1, -1, 0)),
                         struct.pack("<d", np.sqrt(0.5))))
    net = edm_network(m["class_name"], m["init_kwargs"], w, module_src)
    loss = persistent("VPLoss", {"beta_d": 19.9, "beta_min": 0.1, "epsilon_t": 1e-5,
                                 "skip_scale": skip_scale}, module_src)
    data = {"ema": net, "loss_fn": loss, "augment_pipe": None,
            "dataset_kwargs": {"class_name": "training.dataset.ImageFolderDataset",
                               "path": "datasets/cifar10-32x32.zip", "use_labels": False}}
    path.write_bytes(dumps(data))
    return path
