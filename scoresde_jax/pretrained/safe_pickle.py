"""A restricted unpickler for PyTorch and EDM files: it rebuilds tensors and plain state and never
executes code from the file.

Python's pickle calls whatever global a file names (``os.system``, ``builtins.exec``, EDM's
``torch_utils.persistence._reconstruct_persistent_obj``, which compiles and runs the network source
stored in the pickle). :class:`SafeUnpickler` resolves a global only if it is in
:data:`ALLOWED_GLOBALS`, each mapped to a reconstructor written here; any other name is refused
with a one-line :class:`UnsafePickleError`. Nothing from ``torch`` or from the file is imported.

What the allowed names rebuild:

* tensors (``torch._utils._rebuild_tensor_v2``, ``_rebuild_parameter``,
  ``torch._tensor._rebuild_from_type_v2``) as NumPy arrays, from storages that are either records
  of ``torch.save``'s zip format (``persistent_load(('storage', torch.FloatStorage, key,
  location, numel))``, data in ``archive/data/<key>``) or, inside a plain pickle, the blobs of
  ``torch.storage._load_from_bytes`` (the legacy ``torch.save`` format: magic number, protocol,
  system info, the storage record, its key list, then per storage an int64 element count and the
  raw little-endian bytes);
* EDM's persistent objects as :class:`PersistentObject` (class name and state; the stored source
  code is dropped unread) and PyTorch containers (``ModuleDict``, ...) as :class:`TorchObject`;
* NumPy scalars and arrays under both module names (``numpy.core.multiarray`` of files written
  with NumPy 1, ``numpy._core.multiarray`` of NumPy 2), ``collections.OrderedDict``, sets.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import pickle
import struct
from typing import Any, Callable, Mapping, Optional

import ml_dtypes
import numpy as np


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """The file names a global that the safe unpickler does not rebuild."""


STORAGE_DTYPES: dict[str, Any] = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
"""``torch.<Name>Storage`` -> the NumPy dtype of its elements."""


@dataclasses.dataclass(frozen=True)
class StorageType:
    """A ``torch.<Name>Storage`` class named by a file."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(STORAGE_DTYPES[self.name])


class Storage:
    """A flat typed buffer (``data``: a 1-D NumPy array, filled when its bytes are read)."""

    def __init__(self, dtype: np.dtype, data: Optional[np.ndarray] = None):
        self.dtype = np.dtype(dtype)
        self.data = data


@dataclasses.dataclass
class PersistentObject:
    """An EDM ``persistence`` object: ``class_name`` and ``state`` (its ``__dict__``; for a
    network ``_init_kwargs``, ``_parameters``, ``_buffers``, ``_modules``, ...)."""

    class_name: str
    state: dict
    version: Any = None

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs") or {})


class TorchObject:
    """A plain PyTorch object (``torch.nn.ModuleDict``, ...): its class name and state."""

    def __init__(self, class_name: str):
        self.class_name = class_name
        self.state: dict = {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {"state": state}


def _torch_class(name: str):
    return type(name, (TorchObject,), {"__init__": lambda self: TorchObject.__init__(self, name)})


class _TensorType:
    """``torch.Tensor`` / ``torch.nn.Parameter`` named as the type of a rebuilt tensor."""


def rebuild_tensor(storage: Storage, offset: int, size, stride, requires_grad=False,
                   backward_hooks=None, metadata=None) -> np.ndarray:
    """``torch._utils._rebuild_tensor_v2``: a copy of ``storage[offset:]`` viewed with ``size``
    and ``stride`` (in elements)."""
    del requires_grad, backward_hooks, metadata
    if not isinstance(storage, Storage):
        raise UnsafePickleError("a tensor refers to something that is not a storage")
    if storage.data is None:  # legacy files: the bytes follow the pickle
        return PendingTensor(storage, int(offset), tuple(size), tuple(stride))
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    need = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if all(size) else offset
    if need > storage.data.size:
        raise UnsafePickleError(f"a tensor of size {size} overruns its storage "
                                f"({storage.data.size} elements)")
    flat = storage.data[offset:]
    item = flat.itemsize
    view = np.lib.stride_tricks.as_strided(flat, size, tuple(s * item for s in stride),
                                           writeable=False)
    return np.array(view)


@dataclasses.dataclass(frozen=True)
class PendingTensor:
    """A tensor of a storage whose bytes are read after the pickle (legacy ``torch.save``)."""

    storage: Storage
    offset: int
    size: tuple
    stride: tuple

    def resolve(self) -> np.ndarray:
        if self.storage.data is None:
            raise UnsafePickleError("a tensor refers to a storage whose bytes the file lacks")
        return rebuild_tensor(self.storage, self.offset, self.size, self.stride)


def resolve_pending(obj: Any) -> Any:
    """``obj`` with every :class:`PendingTensor` replaced by its array (containers rebuilt,
    records updated in place)."""
    if isinstance(obj, PendingTensor):
        return obj.resolve()
    if isinstance(obj, (PersistentObject, TorchObject)):
        obj.state = resolve_pending(obj.state)
        return obj
    if isinstance(obj, dict):
        for k in list(obj):
            obj[k] = resolve_pending(obj[k])
        return obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(resolve_pending(v) for v in obj)
    return obj


def _rebuild_tensor_v1(storage, offset, size, stride):
    return rebuild_tensor(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    del requires_grad, backward_hooks, state
    return data


def _rebuild_from_type_v2(func, new_type, args, state=None):
    del new_type, state
    if func not in (rebuild_tensor, _rebuild_tensor_v1, _rebuild_parameter):
        raise UnsafePickleError("_rebuild_from_type_v2 names a function that is not a tensor "
                                "rebuild")
    return func(*args)


def _numpy_scalar(dtype, data=None):
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        return data
    return np.frombuffer(data, dtype)[0]


def _numpy_reconstruct(cls, shape, dtype):
    del cls
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _reconstructor(cls, base, state=None):
    """``copyreg._reconstructor`` for the container classes allowed here only."""
    del base, state
    if not (isinstance(cls, type) and issubclass(cls, TorchObject)):
        raise UnsafePickleError(f"copyreg._reconstructor of {cls!r} is not allowed")
    return cls.__new__(cls)


def _persistent(meta: Mapping) -> PersistentObject:
    """EDM's ``_reconstruct_persistent_obj(meta)`` without running ``meta['module_src']``."""
    if not isinstance(meta, Mapping) or meta.get("type") != "class":
        raise UnsafePickleError("a torch_utils.persistence record without type 'class'")
    state = meta.get("state")
    return PersistentObject(str(meta.get("class_name")), dict(state or {}), meta.get("version"))


def _load_from_bytes(blob: bytes) -> Storage:
    """``torch.storage._load_from_bytes``: a storage saved in the legacy ``torch.save`` format."""
    obj = read_legacy(blob, source="a legacy torch storage")
    if not isinstance(obj, Storage):
        raise UnsafePickleError(f"_load_from_bytes holds {type(obj).__name__}, not a storage")
    return obj


def _codecs_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode``: how protocol-2 pickles write bytes."""
    if not isinstance(text, str) or encoding.lower() not in ("latin1", "latin-1", "ascii",
                                                               "utf-8", "utf8"):
        raise UnsafePickleError(f"_codecs.encode of {type(text).__name__} as {encoding!r}")
    return text.encode(encoding)


_NUMPY = {"scalar": _numpy_scalar, "_reconstruct": _numpy_reconstruct}
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("_codecs", "encode"): _codecs_encode,
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor_v1,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch._tensor", "Tensor"): _TensorType,
    ("torch", "Tensor"): _TensorType,
    ("torch.nn.parameter", "Parameter"): _TensorType,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    **{(f"numpy.{core}.multiarray", n): f for core in ("core", "_core") for n, f in _NUMPY.items()},
    **{("torch", name): StorageType(name) for name in STORAGE_DTYPES},
    **{("torch.nn.modules.container", n): _torch_class(n)
       for n in ("ModuleDict", "ModuleList", "Sequential")},
}
"""``(module, name)`` -> what the safe unpickler puts in its place; nothing else is resolved."""

_RENAMED_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class SafeUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`ALLOWED_GLOBALS` (see the module doc).

    ``storages(record)`` answers the file's persistent ids (``torch.save`` storage records);
    without it a persistent id is refused."""

    def __init__(self, file, *, source: str = "the file",
                 storages: Optional[Callable[[tuple], Storage]] = None):
        super().__init__(file)
        self.source = source
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        module = _RENAMED_MODULES.get(module, module)
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: refusing to load the global {module}.{name} (only tensors, "
                "EDM network records and plain data are read; nothing from the file is "
                "executed)") from None

    def persistent_load(self, pid: Any) -> Any:
        if self.storages is None:
            raise UnsafePickleError(f"{self.source}: unexpected persistent id {pid!r}")
        return self.storages(pid)


def safe_load(data: bytes | io.BufferedIOBase, *, source: str = "the file",
              storages: Optional[Callable[[tuple], Storage]] = None) -> Any:
    """Unpickle ``data`` (bytes or a binary file) with :class:`SafeUnpickler`."""
    f = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    return SafeUnpickler(f, source=source, storages=storages).load()


LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
"""The first pickle of a legacy ``torch.save`` file."""


def _storage_record(pid: Any) -> tuple[StorageType, str, int, Any]:
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
            and isinstance(pid[1], StorageType)):
        raise UnsafePickleError(f"unexpected persistent id {pid!r} (expected a torch storage "
                                "record)")
    return pid[1], str(pid[2]), int(pid[4]), pid[5] if len(pid) > 5 else None


def read_legacy(blob: bytes, *, source: str = "the file") -> Any:
    """The object of a legacy-format ``torch.save`` blob (see the module doc), its storages
    filled."""
    f = io.BytesIO(blob)
    src = source
    if safe_load(f, source=src) != LEGACY_MAGIC:
        raise UnsafePickleError(f"{src}: bad magic number (not a legacy torch.save file)")
    safe_load(f, source=src)  # protocol version
    info = safe_load(f, source=src)
    if isinstance(info, Mapping) and not info.get("little_endian", True):
        raise ValueError(f"{src}: big-endian storages are not supported")
    found: dict[str, Storage] = {}
    views = []

    def storage(pid):
        stype, key, _, view = _storage_record(pid)
        if key not in found:
            found[key] = Storage(stype.dtype)
        if view is None:
            return found[key]
        _, offset, size = view  # (view key, offset, size) of a view into storage `key`
        views.append((Storage(stype.dtype), key, int(offset), int(size)))
        return views[-1][0]

    obj = safe_load(f, source=src, storages=storage)
    keys = safe_load(f, source=src)
    for key in keys:
        st = found[str(key)]
        (n,) = struct.unpack("<q", f.read(8))
        raw = f.read(n * st.dtype.itemsize)
        if len(raw) != n * st.dtype.itemsize:
            raise ValueError(f"{src}: truncated storage data")
        st.data = np.frombuffer(raw, st.dtype)
    for view, key, offset, size in views:
        view.data = found[key].data[offset:offset + size]
    return resolve_pending(obj)


def zip_storages(read: Callable[[str], bytes]) -> Callable[[tuple], Storage]:
    """The ``persistent_load`` of ``torch.save``'s zip format: record key ``k`` is the file
    ``<archive>/data/<k>`` (``read(k)`` returns its bytes)."""
    cache: dict[str, Storage] = {}

    def storage(pid):
        stype, key, numel, _ = _storage_record(pid)
        if key not in cache:
            raw = read(key)
            cache[key] = Storage(stype.dtype, np.frombuffer(raw, stype.dtype)[:numel])
        return cache[key]

    return storage


def module_tensors(obj: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """The state dict of a rebuilt PyTorch module (:class:`PersistentObject` or
    :class:`TorchObject`): ``{'model.enc.32x32_conv.weight': array, ...}`` from its
    ``_parameters``, ``_buffers`` and, recursively, ``_modules``."""
    state = getattr(obj, "state", None)
    if not isinstance(state, Mapping):
        return {}
    out: dict[str, np.ndarray] = {}
    for field in ("_parameters", "_buffers"):
        for name, value in (state.get(field) or {}).items():
            if value is not None:
                out[prefix + name] = np.asarray(value)
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            out.update(module_tensors(child, f"{prefix}{name}."))
    return out


__all__ = ["UnsafePickleError", "SafeUnpickler", "safe_load", "PersistentObject", "TorchObject",
           "Storage", "StorageType", "ALLOWED_GLOBALS", "LEGACY_MAGIC", "read_legacy", "zip_storages",
           "module_tensors", "rebuild_tensor"]
