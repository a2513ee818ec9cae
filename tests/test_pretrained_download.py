"""``pretrained.load(URL)``: downloaded once into the cache folder, checked by sha256, served
here by a local HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import numpy as np
import pytest

from scoresde_jax import pretrained
from scoresde_jax.pretrained import download
from tests.pretrained_fixtures import reference, write_edm


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    hits = []
    orig = handler.func.do_GET

    def counting(self):
        hits.append(self.path)
        return orig(self)

    handler.func.do_GET = counting
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()
    handler.func.do_GET = orig


def test_fetch_caches_and_checks_sha256(server, tmp_path):
    root, base, hits = server
    (root / "w.bin").write_bytes(b"weights" * 100)
    sha = hashlib.sha256(b"weights" * 100).hexdigest()
    cache = tmp_path / "cache"
    p = download.fetch(f"{base}/w.bin", sha256=sha, cache=cache)
    assert p.read_bytes() == b"weights" * 100 and len(hits) == 1
    assert download.fetch(f"{base}/w.bin", sha256=sha, cache=cache) == p and len(hits) == 1
    p.write_bytes(b"damaged")  # a damaged cached file is downloaded again
    assert download.fetch(f"{base}/w.bin", cache=cache).read_bytes() == b"weights" * 100
    assert len(hits) == 2
    with pytest.raises(ValueError, match="sha256"):
        download.fetch(f"{base}/w.bin", sha256="0" * 64, cache=tmp_path / "other")
    assert not any((tmp_path / "other").rglob("w.bin"))  # nothing kept
    with pytest.raises(OSError, match="could not download"):
        download.fetch(f"{base}/missing.pkl", cache=cache)


@pytest.mark.slow  # compiles the EDM network; the download itself is checked above
def test_load_an_edm_pickle_from_a_url(server, tmp_path, monkeypatch):
    root, base, _ = server
    write_edm(root / "edm.pkl", "edm_vp_ddpmpp")
    monkeypatch.setenv("SCORESDE_JAX_CACHE", str(tmp_path / "cache"))
    sha = download.file_sha256(root / "edm.pkl")
    p = pretrained.load(f"{base}/edm.pkl", sha256=sha)
    r = reference("edm_vp_ddpmpp")
    out = np.asarray(p.denoise(r["x"].transpose(0, 2, 3, 1), r["sigma"], None))
    assert np.abs(out.transpose(0, 3, 1, 2) - r["out"]).max() <= 1e-3 * r["out"].std()
