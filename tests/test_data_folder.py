"""The folder dataset (``data.dataset = "folder"``): PNG / JPEG / WebP folders and zips built in
tmp dirs; pixels exact, mode conversion, EDM's center crop + Lanczos resize, labels from class
subfolders and EDM's dataset.json, the model's class count checked, bad / empty inputs named in
one line (and skipped on request), the scan cached, and the TFDS pipeline's determinism,
resumption, host blocks, flips and dequantization. Training on a folder through the CLI is in
test_data_folder_train.py."""

from __future__ import annotations

import io
import json
import logging
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from data_helpers import assert_batches_equal, make_config, take
from scoresde_jax import config as config_lib
from scoresde_jax import data
from scoresde_jax.data import folder as folder_lib
from scoresde_jax.data.folder_source import FolderSource, decode_image


@pytest.fixture(autouse=True)
def scan_cache(tmp_path, monkeypatch):
    """The scan cache inside tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write_images(root, classes=("a", "b", "c"), per_class=4, size=(8, 8), fmt="PNG",
                 mode="RGB"):
    """Class ``k``'s images are constant ``40 k + i`` (i = index within the class); returns
    ``{relative path: pixel value}``."""
    values = {}
    for k, c in enumerate(classes):
        d = os.path.join(root, c) if c else root
        os.makedirs(d, exist_ok=True)
        for i in range(per_class):
            v = 40 * k + i
            channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
            arr = np.full(size[::-1] + ((channels,) if channels > 1 else ()), v, np.uint8)
            name = f"{i:03d}.{fmt.lower()}"
            Image.fromarray(arr, mode).save(os.path.join(d, name), format=fmt,
                                            **({"lossless": True} if fmt == "WEBP" else {}))
            values[f"{c}/{name}" if c else name] = v
    return values


def make(path, batch_size=4, image_size=8, **kw):
    kw.setdefault("shard", (0, 1))
    return data.make_dataset("folder", path=str(path), batch_size=batch_size,
                             image_size=image_size, **kw)


def zip_folder(root, out, inner=""):
    with zipfile.ZipFile(out, "w") as z:
        for top, _, names in os.walk(root):
            for n in names:
                full = os.path.join(top, n)
                z.write(full, inner + os.path.relpath(full, root).replace(os.sep, "/"))
    return out


# ------------------------------------------------------------------------- pixels and labels


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_formats_pixels_and_subfolder_labels(tmp_path, fmt):
    write_images(tmp_path / "d", fmt=fmt)
    it = make(tmp_path / "d", batch_size=12, shuffle=False, num_epochs=1, num_classes=3)
    b = next(it)
    assert b["image"].shape == (12, 8, 8, 3) and b["image"].dtype == np.float32
    assert b["label"].dtype == np.int32 and b["label"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    expect = np.array([40 * k + i for k in range(3) for i in range(4)], np.float32) / 255.0
    tol = 0 if fmt != "JPEG" else 2 / 255  # JPEG is lossy (flat images: off by a level at most)
    np.testing.assert_allclose(b["image"].mean(axis=(1, 2, 3)), expect, atol=tol + 1e-7)
    assert it.info["class_names"] == ("a", "b", "c") and it.info["label_source"] == "subfolders"


def test_channels_follow_num_channels(tmp_path):
    write_images(tmp_path / "gray", classes=("",), mode="L")
    write_images(tmp_path / "rgba", classes=("",), mode="RGBA")
    b = next(make(tmp_path / "gray", num_channels=3, shuffle=False))
    assert b["image"].shape == (4, 8, 8, 3)
    np.testing.assert_array_equal(b["image"][..., 0], b["image"][..., 2])
    b = next(make(tmp_path / "rgba", num_channels=1, shuffle=False))
    assert b["image"].shape == (4, 8, 8, 1)
    np.testing.assert_allclose(b["image"][:, 0, 0, 0] * 255, [0, 1, 2, 3], atol=1e-4)
    with pytest.raises(ValueError, match="num_channels=2"):
        make(tmp_path / "gray", num_channels=2)


def test_resize_is_edm_center_crop_then_lanczos(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (30, 50, 3), np.uint8)  # H=30, W=50: keep the middle 30x30
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    out = decode_image(buf.getvalue(), image_size=16, num_channels=3)
    crop = arr[:, 10:40]  # EDM: [(w - c) // 2 : (w + c) // 2]
    ref = np.asarray(Image.fromarray(crop).resize((16, 16), Image.LANCZOS))
    np.testing.assert_array_equal(out, ref)
    assert decode_image(buf.getvalue(), image_size=0, num_channels=1).shape == (30, 50, 1)
    up = decode_image(buf.getvalue(), image_size=64, num_channels=3)  # smaller images grow
    assert up.shape == (64, 64, 3)


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits():
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4), 257 * 200, np.uint16)).save(buf, format="PNG")
    np.testing.assert_array_equal(decode_image(buf.getvalue(), image_size=4, num_channels=1),
                                  np.full((4, 4, 1), 200, np.uint8))


def test_dataset_json_labels_and_class_names_order(tmp_path):
    values = write_images(tmp_path / "d", classes=("x", "y"), per_class=2)
    labels = [[rel, 5 if rel.startswith("x") else 2] for rel in values]
    (tmp_path / "d" / "dataset.json").write_text(json.dumps({"labels": labels}))
    it = make(tmp_path / "d", batch_size=4, shuffle=False, num_classes=6)
    assert next(it)["label"].tolist() == [5, 5, 2, 2] and it.info["label_source"] == "dataset.json"
    with pytest.raises(ValueError, match=r"labels 2\.\.5 but model.num_classes=3;.*=6"):
        make(tmp_path / "d", num_classes=3)
    (tmp_path / "d" / "dataset.json").write_text(json.dumps({"labels": labels[:3]}))
    with pytest.raises(ValueError, match="1 image\\(s\\) have no label in dataset.json"):
        make(tmp_path / "d")
    (tmp_path / "d" / "dataset.json").write_text(json.dumps({"labels": None}))  # EDM: unlabeled
    assert make(tmp_path / "d", num_classes=0).info["label_source"] == "subfolders"
    os.remove(tmp_path / "d" / "dataset.json")
    it = make(tmp_path / "d", shuffle=False, class_names=["y", "x"], num_classes=2)
    assert next(it)["label"].tolist() == [1, 1, 0, 0]
    with pytest.raises(ValueError, match=r"folder\(s\) \['x'\] are not among data.class_names"):
        make(tmp_path / "d", class_names=["y", "z"])


def test_class_count_and_unlabeled_folders_are_one_line_errors(tmp_path):
    write_images(tmp_path / "d")
    with pytest.raises(ValueError, match=r"has 3 class folders \['a', 'b', 'c'\] but "
                       r"model.num_classes=5; set --config.model.num_classes=3\.$"):
        make(tmp_path / "d", num_classes=5)
    (tmp_path / "d" / "empty").mkdir()
    with pytest.raises(ValueError, match=r"class folder\(s\) \['empty'\] hold no images"):
        make(tmp_path / "d", num_classes=4)
    make(tmp_path / "d", num_classes=0)  # unconditional: the subfolders are only folders
    write_images(tmp_path / "flat", classes=("",))
    with pytest.raises(ValueError, match="has no labels .*num_classes=0"):
        make(tmp_path / "flat", num_classes=2)


def test_missing_empty_and_imageless_inputs(tmp_path):
    with pytest.raises(ValueError, match="needs data.path"):
        make("")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no image files"):
        make(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="neither a folder nor a zip"):
        make(tmp_path / "notes.txt")
    with zipfile.ZipFile(tmp_path / "texts.zip", "w") as z:
        z.writestr("a.txt", "hello")
    with pytest.raises(ValueError, match=r"texts.zip holds no image files"):
        make(tmp_path / "texts.zip")
    write_images(tmp_path / "few", classes=("",), per_class=3)
    with pytest.raises(ValueError, match="fewer than one per-host batch"):
        make(tmp_path / "few", batch_size=4)


# ------------------------------------------------------------------------- bad files


def test_bad_files_are_named_then_skipped_with_a_warning(tmp_path, caplog):
    write_images(tmp_path / "d")
    good = (tmp_path / "d" / "a" / "000.png").read_bytes()
    (tmp_path / "d" / "a" / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "d" / "b" / "corrupt.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (tmp_path / "d" / "c" / "notes.txt").write_text("not an image")
    (tmp_path / "d" / "c" / ".hidden.png").write_bytes(b"ignored")
    with pytest.raises(ValueError) as err:
        make(tmp_path / "d")
    msg = str(err.value)
    assert "\n" not in msg and "3 bad file(s)" in msg and "skip_bad_files=True" in msg
    for rel in ("a/truncated.png", "b/corrupt.jpg", "c/notes.txt (not an image file (.txt))"):
        assert rel in msg
    with caplog.at_level(logging.WARNING, logger="scoresde_jax.data"):
        it = make(tmp_path / "d", skip_bad_files=True, batch_size=12, num_classes=3)
    assert "leaving out 3 bad file(s)" in caplog.text and "a/truncated.png" in caplog.text
    assert it.info["num_images"] == 12 and len(it.info["bad_files"]) == 3
    assert next(it)["image"].shape == (12, 8, 8, 3)


def test_scan_is_cached_by_listing(tmp_path, scan_cache, monkeypatch):
    write_images(tmp_path / "d")
    make(tmp_path / "d")
    assert len(list(scan_cache.rglob("*.json"))) == 1

    def no_decode(*args):
        raise AssertionError("the cached scan decoded a file again")

    monkeypatch.setattr(folder_lib, "_check_file", no_decode)
    make(tmp_path / "d")  # same listing: the cache answers
    (tmp_path / "d" / "a" / "000.png").write_bytes(b"changed")  # new size: scanned again
    with pytest.raises(AssertionError, match="decoded a file again"):
        make(tmp_path / "d")


# ------------------------------------------------------------------------- zips


def test_zip_gives_the_folders_batches(tmp_path):
    write_images(tmp_path / "faces")
    z1 = zip_folder(tmp_path / "faces", tmp_path / "flat.zip")
    z2 = zip_folder(tmp_path / "faces", tmp_path / "faces.zip", inner="faces/")  # zip -r style
    ref = take(make(tmp_path / "faces", seed=3, num_classes=3, random_flip=True), 5)
    for z in (z1, z2):
        it = make(z, seed=3, num_classes=3, random_flip=True)
        assert it.info["class_names"] == ("a", "b", "c")
        assert_batches_equal(take(it, 5), ref)
    assert data.folder_class_names(str(z2)) == ("a", "b", "c")


# ------------------------------------------------------------------------- Grain semantics


def test_determinism_resumption_epochs_and_labels_follow_images(tmp_path):
    write_images(tmp_path / "d")
    a, b = take(make(tmp_path / "d", seed=1), 9), take(make(tmp_path / "d", seed=1), 9)
    assert_batches_equal(a, b)
    assert not np.array_equal(a[0]["image"], take(make(tmp_path / "d", seed=2), 1)[0]["image"])
    for batch in a:  # the label is the class of the image (pixel 40 k + i)
        np.testing.assert_array_equal(np.rint(batch["image"][:, 0, 0, 0] * 255) // 40,
                                      batch["label"])
    epoch = np.sort(np.concatenate([x["image"][:, 0, 0, 0] for x in a[:3]]))
    np.testing.assert_array_equal(np.rint(epoch * 255), sorted(40 * k + i for k in range(3)
                                                               for i in range(4)))
    it = make(tmp_path / "d", seed=1)
    take(it, 4)
    state = it.get_state()
    resumed = make(tmp_path / "d", seed=1)
    resumed.set_state(state)
    assert_batches_equal(take(resumed, 5), a[4:])
    with pytest.raises(ValueError, match="saved for pipeline"):
        make(tmp_path / "d", seed=1, batch_size=2).set_state(state)


def test_host_shards_are_disjoint_blocks(tmp_path):
    write_images(tmp_path / "d")
    seen = []
    for i in range(2):
        it = make(tmp_path / "d", batch_size=4, shard=(i, 2), shuffle=False, num_epochs=1)
        assert it.info["examples_per_host"] == 6 and it.info["per_host_batch_size"] == 2
        seen.append(np.concatenate([b["image"][:, 0, 0, 0] for b in it]))
    assert len(set(seen[0]) & set(seen[1])) == 0 and len(set(seen[0]) | set(seen[1])) == 12


def test_flips_and_dequantization_train_only(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    arr = np.zeros((8, 8, 3), np.uint8)
    arr[:, :4] = 255  # left half white: a flip moves it right
    for i in range(8):
        Image.fromarray(arr).save(root / f"{i}.png")
    b = next(make(root, batch_size=8, random_flip=True, seed=0))
    flipped = b["image"][:, 0, 0, 0] == 0
    assert 0 < flipped.sum() < 8
    ev = next(make(root, batch_size=8, split="eval", random_flip=True))["image"]
    assert (ev[:, 0, 0, 0] == 1).all()  # no flips outside training
    d = next(make(root, batch_size=8, uniform_dequantization=True, shuffle=False))["image"]
    np.testing.assert_array_equal(np.floor(d * 256), np.where(arr > 0, 255, 0)[None].repeat(8, 0))
    assert len(np.unique(d)) > 2  # (255 x + U[0, 1)) / 256, not the plain pixels


def test_eval_path_is_the_eval_split(tmp_path):
    write_images(tmp_path / "train", classes=("",), per_class=4)
    test_values = write_images(tmp_path / "test", classes=("",), per_class=4)
    for v, name in enumerate(test_values):  # distinct from the train images
        Image.fromarray(np.full((8, 8, 3), 200 + v, np.uint8)).save(tmp_path / "test" / name)
    it = make(tmp_path / "train", split="test", eval_path=str(tmp_path / "test"), shuffle=False)
    assert np.rint(next(it)["image"][:, 0, 0, 0] * 255).tolist() == [200, 201, 202, 203]
    it = make(tmp_path / "train", split="eval", shuffle=False)  # default: the train folder
    assert np.rint(next(it)["image"][:, 0, 0, 0] * 255).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="splits 'train'"):
        make(tmp_path / "train", split="train[:50%]")


# ------------------------------------------------------------------------- the config front door


def test_config_records_class_names_and_checks_the_model(tmp_path):
    write_images(tmp_path / "d")
    c = make_config("folder", image_size=8, path=str(tmp_path / "d"))
    c.model = {"num_classes": 3}
    spec = config_lib.data_spec(c)
    assert list(c.data.class_names) == ["a", "b", "c"]  # what config.json stores
    assert spec.options["num_classes"] == 3 and spec.example_shape == (8, 8, 3)
    assert next(config_lib.get_dataset(c, shard=(0, 1)))["label"].shape == (4,)
    c.model.num_classes = 2
    del c.data["class_names"]
    with pytest.raises(ValueError, match="model.num_classes=2"):
        config_lib.get_dataset(c, shard=(0, 1))
    c.model.num_classes = 3
    total, read = config_lib.data_spec(c).split_reader("train", batch_size=5)
    assert total == 12 and read(2, 2).shape == (2, 8, 8, 3)  # the tail read one by one
    c2 = config_lib.load_config(
        os.path.join(os.path.dirname(__file__), "..", "configs", "digits_ddpmpp.py"),
        ["data.dataset=folder", f"data.path={tmp_path / 'd'}", "data.skip_bad_files=true"])
    assert c2.data.path == str(tmp_path / "d") and c2.data.skip_bad_files is True


def test_source_pickles_for_worker_processes(tmp_path):
    import pickle

    write_images(tmp_path / "d")
    z = zip_folder(tmp_path / "d", tmp_path / "d.zip")
    src = FolderSource(folder_lib.index_folder(str(z)), image_size=8, num_channels=3)
    first = src[5]  # opens the zip in this thread
    clone = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(clone[5]["image"], first["image"])
    assert clone[5]["label"] == first["label"] == 1
