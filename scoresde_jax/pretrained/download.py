"""Pretrained files from a URL, kept in a cache folder and checked by sha256.

``fetch(url, sha256=...)`` downloads ``url`` once into ``<cache>/<digest of the url>/<file name>``
(``<cache>`` is ``$SCORESDE_JAX_CACHE/pretrained``, else ``~/.cache/scoresde_jax/pretrained``),
through a temporary file renamed when complete, so a killed download never leaves a partial file
under the final name. With ``sha256`` the file is checked after the download and on every later
use; a mismatch deletes it and is an error. The file's sha256 is written beside it
(``<name>.sha256``), so a file damaged in the cache is noticed even when no checksum is given.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional

__all__ = ["cache_dir", "fetch", "file_sha256", "is_url"]


def is_url(src: object) -> bool:
    return isinstance(src, str) and src.split("://", 1)[0] in ("http", "https")


def cache_dir() -> Path:
    base = os.environ.get("SCORESDE_JAX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "scoresde_jax")
    return Path(base) / "pretrained"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _checked(path: Path, sha256: Optional[str]) -> bool:
    """True when the cached ``path`` is whole: its recorded and (if given) expected sha256."""
    record = path.with_name(path.name + ".sha256")
    if not path.is_file() or not record.is_file():
        return False
    got = file_sha256(path)
    want = sha256 or record.read_text().strip()
    return got == want.lower()


def fetch(url: str, *, sha256: Optional[str] = None, cache: Optional[str | Path] = None,
          timeout: float = 60.0) -> Path:
    """The local path of ``url`` (downloaded once; see the module docstring)."""
    if not is_url(url):
        raise ValueError(f"{url!r} is not an http(s) URL.")
    name = os.path.basename(urllib.parse.urlparse(url).path) or "download"
    folder = Path(cache or cache_dir()) / hashlib.sha256(url.encode()).hexdigest()[:16]
    path = folder / name
    if _checked(path, sha256):
        return path
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp{os.getpid()}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f, 1 << 20)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(f"could not download {url}: {e}; download it by hand and pass the local "
                      "path instead.") from None
    got = file_sha256(tmp)
    if sha256 is not None and got != sha256.lower():
        tmp.unlink(missing_ok=True)
        raise ValueError(f"{url}: sha256 {got} differs from the expected {sha256}; the download is "
                         "damaged or the file changed (nothing was kept).")
    os.replace(tmp, path)
    path.with_name(name + ".sha256").write_text(got + "\n")
    return path
