"""State dicts from files: safetensors (preferred) and PyTorch ``.bin`` / ``.pt`` files, as NumPy.

* safetensors: an 8-byte little-endian header length ``n``, a JSON header ``{name: {dtype, shape,
  data_offsets: [begin, end]}, "__metadata__": {...}}`` and the raw little-endian bytes after it
  (:func:`read_safetensors`; no code, no pickle).
* ``torch.save`` files: the zip format (``<archive>/data.pkl`` and ``<archive>/data/<key>``) or
  the legacy format, read with the restricted unpickler of
  :mod:`scoresde_jax.pretrained.safe_pickle` (the semantics of ``torch.load(weights_only=True)``:
  tensors and plain containers only). torch is not needed.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path
from typing import Mapping

import ml_dtypes
import numpy as np

from scoresde_jax.pretrained.safe_pickle import (module_tensors, read_legacy, safe_load,
                                                 zip_storages)

SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """``{name: array}`` of a ``.safetensors`` file (see the module doc)."""
    raw = Path(path).read_bytes()
    if len(raw) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise ValueError(f"{path}: safetensors header of {n} bytes overruns the file")
    try:
        header = json.loads(raw[8:8 + n])
    except ValueError as e:
        raise ValueError(f"{path}: not a safetensors file ({e})") from None
    data = memoryview(raw)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in SAFETENSORS_DTYPES:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        dtype = np.dtype(SAFETENSORS_DTYPES[info["dtype"]])
        begin, end = (int(v) for v in info["data_offsets"])
        shape = tuple(int(s) for s in info["shape"])
        if end > len(data) or end - begin != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise ValueError(f"{path}: tensor {name} has inconsistent offsets")
        out[name] = np.frombuffer(data[begin:end], dtype).reshape(shape).copy()
    return out


def write_safetensors(path: str | Path, tensors: Mapping[str, np.ndarray]) -> None:
    """Write ``tensors`` as a safetensors file (little-endian, offsets in name order)."""
    names = {np.dtype(v): k for k, v in SAFETENSORS_DTYPES.items()}
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        b = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": names[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(b)]}
        chunks.append(b)
        offset += len(b)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(head)) + head + b"".join(chunks))


def _flatten_state(obj, source: str) -> dict[str, np.ndarray]:
    """A loaded object as a state dict: a mapping of arrays (``state_dict``, possibly under a
    ``state_dict`` key) or a module record."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if isinstance(obj, Mapping):
        out = {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}
        if out:
            return out
    tensors = module_tensors(obj)
    if not tensors:
        raise ValueError(f"{source}: holds {type(obj).__name__} without tensors; expected a "
                         "state dict")
    return tensors


def read_torch_file(path: str | Path) -> dict[str, np.ndarray]:
    """The state dict of a ``torch.save`` file (zip or legacy format) as NumPy arrays."""
    path = Path(path)
    src = str(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            pkl = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(pkl) != 1:
                raise ValueError(f"{src}: a zip file without one data.pkl (not a torch.save file)")
            root = pkl[0][: -len("data.pkl")]
            order = [n for n in z.namelist() if n.endswith("byteorder")]
            if order and z.read(order[0]).strip() not in (b"little", b""):
                raise ValueError(f"{src}: big-endian tensors are not supported")
            obj = safe_load(z.read(pkl[0]), source=src,
                            storages=zip_storages(lambda key: z.read(f"{root}data/{key}")))
        return _flatten_state(obj, src)
    return _flatten_state(read_legacy(path.read_bytes(), source=src), src)
