"""Your own images as a dataset: a folder or a ``.zip`` of PNG / JPEG / WebP files
(``data.dataset = "folder"``, ``data.path``).

Index. :func:`index_folder` lists the files once (relative paths, sizes, labels) into numpy
arrays; nothing else of the data is held in memory: the Grain source
(:class:`scoresde_jax.data.folder_source.FolderSource`) reads and decodes image ``i`` when Grain
asks for it, in its reader threads, so memory does not grow with the number of images beyond
the index itself. Hidden files and folders (``.name``), ``__MACOSX/``,
``Thumbs.db`` / ``desktop.ini`` and the root's ``dataset.json`` are not data.

Labels (first match wins):

* ``dataset.json`` at the root in EDM's format, ``{"labels": [["dir/img.png", 6], ...]}``
  (``"labels": null``: no labels);
* first-level subfolders, when the root itself holds no image file: class ``k`` is the ``k``-th
  subfolder name in sorted order (or in ``class_names`` order when given), every image below it
  (at any depth) has label ``k``;
* otherwise no labels (all 0).

A zip whose only top-level entry is a folder named as the zip (``faces.zip`` -> ``faces/``, what
``zip -r faces.zip faces`` makes) is read from inside that folder.

Bad files. Every file is decoded once (in threads, with a progress bar for large folders) and the
result cached under ``$XDG_CACHE_HOME/scoresde_jax/folders`` (``~/.cache/...``), keyed by the
listing (names, sizes, modification times); a corrupt, truncated, empty or non-image file stops
the run with one line naming it, or is left out with a warning when ``skip_bad_files``.

Pixels: :mod:`scoresde_jax.data.folder_source` decodes, converts and center-crops/resizes them.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import posixpath
import re
import threading
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np
from PIL import Image
from tqdm import tqdm

log = logging.getLogger("scoresde_jax.data")

__all__ = [
    "IMAGE_EXTENSIONS",
    "FolderIndex",
    "cache_dir",
    "check_labels",
    "folder_class_names",
    "index_folder",
    "read_member",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
_NOT_DATA = ("thumbs.db", "desktop.ini")
_LABELS_FILE = "dataset.json"
_PROGRESS_MIN = 2000  # a progress bar when scanning at least this many files
_SHOWN = 5  # bad files named in an error line


class FolderIndex(NamedTuple):
    """The images of a folder or zip: ``files`` (relative POSIX paths, utf-8 bytes), ``sizes``
    (bytes), ``labels`` (int32), where the labels come from (``'dataset.json'``,
    ``'subfolders'`` or None), the class names (subfolder labels), the ``bad`` files left out
    (``(path, reason)``) and the listing's digest ``key``."""

    path: str
    is_zip: bool
    prefix: str  # zip only: the folder inside the zip that holds the data ('' or 'name/')
    files: np.ndarray
    sizes: np.ndarray
    labels: np.ndarray
    label_source: str | None
    class_names: tuple[str, ...] | None
    bad: tuple[tuple[str, str], ...]
    key: str  # digest of the listing (names, sizes, modification times): the folder's identity

    def __len__(self) -> int:
        return len(self.files)


def cache_dir() -> str:
    """Where scans are cached: ``$XDG_CACHE_HOME/scoresde_jax/folders`` (``~/.cache/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "scoresde_jax", "folders")


def _is_hidden(rel: str) -> bool:
    parts = rel.split("/")
    return any(p.startswith(".") or p == "__MACOSX" for p in parts) or \
        parts[-1].lower() in _NOT_DATA


def _is_image(rel: str) -> bool:
    return posixpath.splitext(rel)[1].lower() in IMAGE_EXTENSIONS


def _check_path(path: str) -> str:
    if not path:
        raise ValueError('data.dataset="folder" needs data.path: a folder or a .zip of images '
                         "(--config.data.path=DIR).")
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not os.path.exists(path):
        raise FileNotFoundError(f"data.path={path} does not exist; pass a folder or a .zip of "
                                "PNG/JPEG/WebP images.")
    if not os.path.isdir(path) and not zipfile.is_zipfile(path):
        raise ValueError(f"data.path={path} is neither a folder nor a zip file; pass a folder "
                         "or a .zip of PNG/JPEG/WebP images.")
    return path


class _Listing(NamedTuple):
    prefix: str
    entries: list[tuple[str, int, int]]  # (relative path, size, mtime) of the data files
    subdirs: list[str]  # first-level folders (not hidden)
    labels_json: bytes | None
    key: str  # what the scan cache is keyed by


def _list(path: str) -> _Listing:
    """Every data file below ``path`` (sorted), its first-level folders and ``dataset.json``."""
    entries, dirs = [], set()
    if os.path.isdir(path):
        for top, subdirs, names in os.walk(path):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and d != "__MACOSX")
            rel_top = os.path.relpath(top, path).replace(os.sep, "/")
            if rel_top == ".":
                dirs.update(subdirs)
            for name in names:
                rel = name if rel_top == "." else f"{rel_top}/{name}"
                if not _is_hidden(rel) and rel != _LABELS_FILE:
                    st = os.stat(os.path.join(top, name))
                    entries.append((rel, st.st_size, st.st_mtime_ns))
        labels_json = None
        if os.path.isfile(os.path.join(path, _LABELS_FILE)):
            with open(os.path.join(path, _LABELS_FILE), "rb") as f:
                labels_json = f.read()
        prefix, st = "", None
    else:
        with zipfile.ZipFile(path) as zf:
            infos = [i for i in zf.infolist() if not _is_hidden(i.filename.rstrip("/"))]
            names = {i.filename for i in infos}
            stem = os.path.splitext(os.path.basename(path))[0]
            tops = {i.filename.split("/")[0] for i in infos}
            prefix = f"{stem}/" if tops == {stem} and all("/" in n for n in names) else ""
            labels_json = zf.read(prefix + _LABELS_FILE) if prefix + _LABELS_FILE in names \
                else None
            for i in infos:
                rel = i.filename[len(prefix):]
                if "/" in rel.rstrip("/"):
                    dirs.add(rel.split("/")[0])
                elif i.is_dir() and rel:
                    dirs.add(rel.rstrip("/"))
                if not i.is_dir() and rel != _LABELS_FILE:
                    entries.append((rel, i.file_size, i.CRC))
        st = os.stat(path)
    entries.sort()
    h = hashlib.sha256(f"{path}|{st and (st.st_size, st.st_mtime_ns)}".encode())
    for rel, size, mtime in entries:
        h.update(f"{rel}\0{size}\0{mtime}\n".encode())
    return _Listing(prefix, entries, sorted(dirs), labels_json, h.hexdigest()[:32])


def _labels_from_json(raw: bytes, path: str) -> dict[str, int] | None:
    try:
        labels = json.loads(raw)["labels"]
        return None if labels is None else {str(f).replace("\\", "/"): int(c) for f, c in labels}
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}/{_LABELS_FILE} is not in EDM's format ({e}); it must be "
                         '{"labels": [["dir/image.png", 0], ...]} or {"labels": null}.') from None


def folder_class_names(path: str) -> tuple[str, ...] | None:
    """The sorted first-level folder names of ``path`` when they are its classes (no image file
    at the top level, no ``dataset.json`` labels), else None. Lists only the top level."""
    path = _check_path(path)
    if os.path.isdir(path):
        with os.scandir(path) as it:
            top = [(e.name, e.is_dir()) for e in it if not _is_hidden(e.name)]
        if os.path.isfile(os.path.join(path, _LABELS_FILE)):
            with open(os.path.join(path, _LABELS_FILE), "rb") as f:
                if _labels_from_json(f.read(), path) is not None:
                    return None
        if any(not d and _is_image(n) for n, d in top):
            return None
        names = sorted(n for n, d in top if d)
    else:
        listing = _list(path)
        if listing.labels_json and _labels_from_json(listing.labels_json, path) is not None:
            return None
        if any("/" not in rel for rel, _, _ in listing.entries if _is_image(rel)):
            return None
        names = listing.subdirs
    return tuple(names) or None


def read_member(path: str, prefix: str, rel: str, zf: zipfile.ZipFile | None) -> bytes:
    if zf is not None:
        return zf.read(prefix + rel)
    with open(os.path.join(path, *rel.split("/")), "rb") as f:
        return f.read()


def _check_file(path: str, prefix: str, rel: str, zf: zipfile.ZipFile | None) -> str | None:
    """None for a readable image, else why it is not one (one short phrase)."""
    if not _is_image(rel):
        return f"not an image file ({posixpath.splitext(rel)[1] or 'no extension'})"
    try:
        data = read_member(path, prefix, rel, zf)
        if not data:
            return "empty file"
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception as e:  # noqa: BLE001 -- any decoder error makes a bad file, reported
        text = re.sub(r" <_io\.BytesIO object at 0x[0-9a-f]+>", "", str(e))
        return (text.splitlines() or [type(e).__name__])[0][:120]
    return None


def _scan(path: str, listing: _Listing, progress: bool) -> dict[str, str]:
    """``{relative path: reason}`` of the bad files (cached by the listing's key)."""
    cache = os.path.join(cache_dir(), f"{listing.key}.json")
    try:
        with open(cache) as f:
            return dict(json.load(f)["bad"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    local = threading.local()

    def check(rel: str) -> str | None:
        zf = None
        if not os.path.isdir(path):
            zf = getattr(local, "zf", None) or zipfile.ZipFile(path)
            local.zf = zf
        return _check_file(path, listing.prefix, rel, zf)

    rels = [rel for rel, _, _ in listing.entries]
    bar = tqdm(total=len(rels), desc=f"scanning {os.path.basename(path)}", unit="file",
               disable=not progress or len(rels) < _PROGRESS_MIN)
    bad = {}
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for rel, reason in zip(rels, pool.map(check, rels, chunksize=256)):
            bar.update()
            if reason is not None:
                bad[rel] = reason
    bar.close()
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        tmp = f"{cache}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump({"path": path, "num_files": len(rels), "bad": sorted(bad.items())}, f)
        os.replace(tmp, cache)
    except OSError as e:  # a read-only cache costs a rescan next time, nothing else
        log.warning("Could not cache the scan of %s in %s: %s", path, cache, e)
    return bad


def _describe(bad: Sequence[tuple[str, str]]) -> str:
    shown = "; ".join(f"{rel} ({why})" for rel, why in bad[:_SHOWN])
    return shown + (f"; and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else "")


def index_folder(path: str, *, skip_bad_files: bool = False,
                 class_names: Sequence[str] | None = None, progress: bool = True) -> FolderIndex:
    """List, label and check the images of the folder or zip ``path`` (module docstring).

    ``class_names`` fixes the class order of subfolder labels (each name a first-level folder).
    Raises a one-line ``ValueError`` for a folder / zip without images, bad files (unless
    ``skip_bad_files``: a warning names them and they are left out), files missing from
    ``dataset.json``."""
    path = _check_path(path)
    listing = _list(path)
    where = f"data.path={path}"
    if not any(_is_image(rel) for rel, _, _ in listing.entries):
        raise ValueError(f"{where} holds no image files (PNG, JPEG or WebP); put the images in "
                         "it (one subfolder per class for labels).")
    bad = _scan(path, listing, progress)
    bad_list = sorted(bad.items())
    if bad_list and not skip_bad_files:
        raise ValueError(f"{where}: {len(bad_list)} bad file(s): {_describe(bad_list)}; fix or "
                         "remove them, or set --config.data.skip_bad_files=True to leave them "
                         "out.")
    if bad_list:
        log.warning("%s: leaving out %d bad file(s): %s", where, len(bad_list),
                    _describe(bad_list))
    good = [(rel, size) for rel, size, _ in listing.entries if rel not in bad]
    if not good:
        raise ValueError(f"{where} holds no readable image (all {len(bad_list)} files are bad).")
    rels = [rel for rel, _ in good]
    labels = np.zeros(len(rels), np.int32)
    json_labels = _labels_from_json(listing.labels_json, path) if listing.labels_json else None
    source, names = None, None
    if json_labels is not None:
        missing = [r for r in rels if r not in json_labels]
        if missing:
            raise ValueError(f"{where}: {len(missing)} image(s) have no label in {_LABELS_FILE} "
                             f"(e.g. {missing[0]}); add them or remove the images.")
        labels[:] = [json_labels[r] for r in rels]
        source = _LABELS_FILE
    elif all("/" in r for r in rels):
        found = sorted({r.split("/")[0] for r in rels})
        names = tuple(class_names) if class_names is not None else tuple(listing.subdirs)
        unknown = sorted(set(found) - set(names))
        if unknown:
            raise ValueError(f"{where}: folder(s) {unknown} are not among data.class_names "
                             f"{list(names)}; add them or remove the folders.")
        order = {n: k for k, n in enumerate(names)}
        labels[:] = [order[r.split("/")[0]] for r in rels]
        source = "subfolders"
    elif class_names:
        raise ValueError(f"{where} has images at its top level, so no class folders, but "
                         f"data.class_names={list(class_names)}; move every image into its "
                         "class folder.")
    return FolderIndex(path, not os.path.isdir(path), listing.prefix, np.array([r.encode() for r in rels], dtype=bytes),
                       np.array([s for _, s in good], np.int64), labels, source, names,
                       tuple(bad_list), listing.key)


def check_labels(index: FolderIndex, num_classes: int) -> None:
    """One-line ``ValueError`` unless the labels of ``index`` fit a model of ``num_classes``
    classes (0: unconditional, any labels): as many class folders as classes, none empty;
    ``dataset.json`` labels ``0 .. num_classes - 1`` with the largest ``num_classes - 1``."""
    k = int(num_classes)
    if k <= 0:
        return
    where = f"data.path={index.path}"
    if index.label_source is None:
        raise ValueError(f"model.num_classes={k} but {where} has no labels (images at its top "
                         "level, no dataset.json); put each class in its own subfolder, add a "
                         "dataset.json, or set --config.model.num_classes=0.")
    if index.label_source == "subfolders":
        names = index.class_names or ()
        counts = np.bincount(index.labels, minlength=len(names))
        empty = [n for n, c in zip(names, counts) if c == 0]
        if empty:
            raise ValueError(f"{where}: class folder(s) {empty} hold no images; add images or "
                             "remove the folder(s).")
        if len(names) != k:
            raise ValueError(f"{where} has {len(names)} class folders {list(names)[:8]} but "
                             f"model.num_classes={k}; set --config.model.num_classes="
                             f"{len(names)}.")
        return
    top = int(index.labels.max()) + 1
    if index.labels.min() < 0 or top != k:
        raise ValueError(f"{where}/{_LABELS_FILE} has labels {int(index.labels.min())}..{top - 1}"
                         f" but model.num_classes={k}; set --config.model.num_classes={top}.")
