"""FID Inception-v3 in Flax against torch-fidelity (on seeded random weights), the resizes against
their NumPy formulas, and the converter's / loader's error messages.

The reference ``tests/fixtures/inception_parity.npz`` is made by
``tests/fixtures/make_inception_fixture.py`` (torch + torch-fidelity, run by hand).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoresde_jax.evaluation import inception as inc
from scoresde_jax.evaluation import inception_net as net

FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "inception_parity.npz"
OUTPUTS = ("pool_3", "logits_unbiased", "logits")


@pytest.fixture(scope="module")
def reference():
    with np.load(FIXTURE) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def weights_file(reference, tmp_path_factory):
    """The fixture's random state dict (torch names, as an .npz) converted to the Flax layout."""
    d = tmp_path_factory.mktemp("inception")
    sd = inc.random_state_dict(int(reference["seed"]))
    assert len(sd) == 566 and sum(v.size for v in sd.values()) == 23_885_486
    np.savez(d / "torch_names.npz", **sd)
    return inc.convert_weights(d / "torch_names.npz", d / "inception_fid.npz")


@pytest.mark.parametrize("size", ["32", "299"])
def test_matches_torch_fidelity(reference, weights_file, size):
    extractor = inc.load_inception(weights_file, preprocess="torch_fidelity")
    out = extractor(reference[f"images_{size}"])
    for name in OUTPUTS:
        ref = reference[f"{name}_{size}"]
        got = out[name]
        assert got.shape == ref.shape and got.dtype == np.float32
        err = np.abs(got - ref).max()
        assert err / ref.std() <= 1e-4, (name, err / ref.std())
        # Random weights make most of an output a per-column constant: also compare against the
        # spread between images, which a wrong resize or scaling would move.
        assert err / ref.std(axis=0).mean() <= 5e-3, (name, err / ref.std(axis=0).mean())


def test_batch_size_chunks_match_one_batch(reference, weights_file):
    extractor = inc.load_inception(weights_file, preprocess="torch_fidelity")
    images = np.concatenate([reference["images_32"], reference["images_32"][:2]])
    chunked = extractor(images, batch_size=4)  # chunks of 4 and 2 (padded): the compiled B = 4
    for name in OUTPUTS:
        ref = reference[f"{name}_32"]
        ref = np.concatenate([ref, ref[:2]])
        assert chunked[name].shape == ref.shape
        assert np.abs(chunked[name] - ref).max() / ref.std() <= 1e-4
    pool, logits = extractor.as_feature_extractor(logits="logits_unbiased", batch_size=4)(images)
    np.testing.assert_array_equal(pool, chunked["pool_3"])
    np.testing.assert_array_equal(logits, chunked["logits_unbiased"])
    capped = inc.load_inception(weights_file, preprocess="torch_fidelity", max_batch=4)
    assert capped.max_batch == 4  # a larger batch_size is cut to the cap: the same chunks
    np.testing.assert_array_equal(capped(images, batch_size=500)["pool_3"], chunked["pool_3"])
    empty = extractor(images[:0])
    assert empty["pool_3"].shape == (0, 2048) and empty["logits"].shape == (0, 1008)


def test_convolutions_and_classifier_run_at_highest_precision(weights_file):
    """FID features need float32: every convolution and the classifier's matmul ask for HIGHEST
    (true f32 on GPU / TPU, no TF32 / bf16 passes), even under a lower default precision."""
    ext = inc.load_inception(weights_file)
    images = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.uint8)
    with jax.default_matmul_precision("bfloat16"):
        hlo = inc._extract_jit.lower(ext.variables, images, ext.preprocess, ext.pad_valid).as_text()
    convs = [l for l in hlo.splitlines() if "stablehlo.convolution" in l]
    dots = [l for l in hlo.splitlines() if "stablehlo.dot_general" in l]
    assert len(convs) + len(dots) == 94 + 1 and len(dots) > 1  # 1x1 convolutions are matmuls
    assert all("precision_config = [#stablehlo<precision HIGHEST>, #stablehlo<precision HIGHEST>]"
               in l for l in convs)
    assert all("precision = [HIGHEST, HIGHEST]" in l for l in dots)


@pytest.mark.parametrize("kernel, strides, size", [((3, 3), (1, 1), 9), ((3, 3), (2, 2), 9),
                                                   ((3, 3), (2, 2), 8), ((1, 1), (1, 1), 5)])
def test_folded_batchnorm_and_pad_valid_compute_the_same_function(kernel, strides, size):
    """``relu(BN(conv(x)))`` against its formula, for the plain module, ``pad_valid``, the
    folded BatchNorm and the 1x1 matmul (nn.Conv's variable layout)."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, size, size, 5)).astype(np.float32))
    w = rng.normal(size=(*kernel, 5, 7)).astype(np.float32)
    scale, beta = rng.uniform(0.5, 1.5, 7), rng.normal(size=7)
    mean, var = rng.normal(size=7), rng.uniform(0.5, 2.0, 7)
    v = {"params": {"conv": {"kernel": w}, "bn": {"scale": scale, "bias": beta}},
         "batch_stats": {"bn": {"mean": mean, "var": var}}}
    v = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), v)
    plain = net.BasicConv(7, kernel, strides)
    shapes = jax.tree.map(jnp.shape, plain.init(jax.random.key(0), x))
    assert shapes == jax.tree.map(jnp.shape, v)
    conv = np.asarray(jax.lax.conv_general_dilated(
        x, w, strides, "VALID", precision="highest", dimension_numbers=("NHWC", "HWIO", "NHWC")))
    ref = np.maximum((conv - mean) / np.sqrt(var + net.BN_EPS) * scale + beta, 0.0)
    got = np.asarray(plain.apply(v, x))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    padded = np.asarray(net.BasicConv(7, kernel, strides, pad_valid=True).apply(v, x))
    np.testing.assert_array_equal(padded, got)  # the extra zero row is never inside a window
    folded = net.fold_batchnorm(v)
    assert set(folded["params"]["conv"]) == {"kernel", "bias"} and "batch_stats" not in folded
    for pv in (False, True):
        out = net.BasicConv(7, kernel, strides, folded=True, pad_valid=pv).apply(folded, x)
        np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-5)


def test_two_devices_give_the_features_of_one(reference, weights_file):
    """The extractor shards the batch over the process's devices: 2 forced CPU devices in a
    subprocess (XLA_FLAGS must be set before JAX starts), 3 images padded to 2 per device, equal
    to this process's one device."""
    assert jax.local_device_count() == 1
    root = pathlib.Path(__file__).resolve().parents[1]
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(root)!r})
        import jax, numpy as np
        from scoresde_jax.evaluation import inception as inc
        images = np.load({str(FIXTURE)!r})["images_32"][:3]
        ext = inc.load_inception({str(weights_file)!r}, preprocess="torch_fidelity")
        x = jax.device_put(np.concatenate([images, images[:1]]), ext._batch)
        out = inc._extract_jit(ext.variables, x, ext.preprocess, ext.pad_valid)
        print(json.dumps(dict(mesh=int(ext.mesh.devices.size),
                              devices=len(out["pool_3"].sharding.device_set),
                              **{{k: v.tolist() for k, v in ext(images).items()}})))
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=600, cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    two = json.loads(r.stdout.strip().splitlines()[-1])
    assert two["mesh"] == 2 and two["devices"] == 2
    one = inc.load_inception(weights_file, preprocess="torch_fidelity")(reference["images_32"])
    for name in OUTPUTS:
        got, ref = np.asarray(two[name]), one[name][:3]
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= 1e-5 * ref.std(), name


# --------------------------------------------------------------------------------------------
# Resizes and preprocessing.
# --------------------------------------------------------------------------------------------


def _bilinear_numpy(img, out_h, out_w, half_pixel):
    """Reference bilinear resize of one (H, W, C) image in float64: the four-neighbour formula
    (1 - fy)((1 - fx) p00 + fx p01) + fy((1 - fx) p10 + fx p11) at each output pixel."""
    in_h, in_w = img.shape[:2]

    def coord(i, n_in, n_out):
        if half_pixel:  # torch F.interpolate(mode="bilinear", align_corners=False)
            s = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        else:  # TF1 resize_bilinear(align_corners=False, half_pixel_centers=False)
            s = i * n_in / n_out
        lo = min(int(np.floor(s)), n_in - 1)
        return lo, min(lo + 1, n_in - 1), s - lo

    y0, y1, fy = map(np.array, zip(*[coord(i, in_h, out_h) for i in range(out_h)]))
    x0, x1, fx = map(np.array, zip(*[coord(j, in_w, out_w) for j in range(out_w)]))
    fy, fx = fy[:, None, None], fx[None, :, None]
    p = lambda ys, xs: img[np.ix_(ys, xs)]  # noqa: E731
    return (1 - fy) * ((1 - fx) * p(y0, x0) + fx * p(y0, x1)) + fy * (
        (1 - fx) * p(y1, x0) + fx * p(y1, x1)
    )


@pytest.mark.parametrize("half_pixel", [False, True])
@pytest.mark.parametrize("shape", [(32, 32, 299, 299), (7, 5, 3, 11), (40, 9, 29, 6)])
def test_resize_matches_numpy_formula(half_pixel, shape):
    in_h, in_w, out_h, out_w = shape
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, (2, in_h, in_w, 3)).astype(np.float32)
    got = np.asarray(inc.resize_bilinear(img, (out_h, out_w), half_pixel_centers=half_pixel))
    for b in range(2):
        ref = _bilinear_numpy(img[b].astype(np.float64), out_h, out_w, half_pixel)
        np.testing.assert_allclose(got[b], ref, rtol=0, atol=1e-3)


def test_resize_grids_differ_by_about_half_a_pixel():
    tf1 = inc._resize_indices(32, 299, half_pixel_centers=False)
    hp = inc._resize_indices(32, 299, half_pixel_centers=True)
    shift = (tf1[0] + tf1[2]) - (hp[0] + hp[2])
    assert 0.4 < np.median(shift) < 0.5  # 0.5 - 0.5 * 32 / 299 = 0.446 source pixels


def test_preprocess_modes_scale_and_float_input():
    rng = np.random.default_rng(1)
    u = rng.integers(0, 256, (2, 299, 299, 3), dtype=np.uint8)  # 299: no resize, exact values
    uf = u.astype(np.float64)
    expect = {
        "score_sde": (uf - 127.5) / 127.5,
        "torch_fidelity": (uf - 128.0) / 128.0,
        "pytorch_fid": 2.0 * (uf / 255.0) - 1.0,
    }
    for mode, ref in expect.items():
        got = np.asarray(inc.preprocess_images(u, mode=mode))
        assert got.shape == (2, 299, 299, 3) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
    # Float in [0, 1]: quantized by truncation for score_sde / torch_fidelity ...
    x = ((uf + 0.5) / 255.0).astype(np.float32)
    for mode in ("score_sde", "torch_fidelity"):
        np.testing.assert_array_equal(
            np.asarray(inc.preprocess_images(x, mode=mode)),
            np.asarray(inc.preprocess_images(u, mode=mode)),
        )
    almost = np.full((1, 299, 299, 3), 254.9 / 255)
    trunc = np.asarray(inc.preprocess_images(almost, mode="score_sde"))
    np.testing.assert_allclose(trunc, (254 - 127.5) / 127.5, atol=1e-6)
    # ... and used as is (2x - 1) for pytorch_fid.
    xf = (uf / 255.0).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(inc.preprocess_images(xf, mode="pytorch_fid")), expect["pytorch_fid"], atol=1e-6
    )


def test_preprocess_rejects_bad_input():
    with pytest.raises(ValueError, match="preprocess='tf'"):
        inc.preprocess_images(np.zeros((1, 8, 8, 3), np.uint8), mode="tf")
    with pytest.raises(ValueError, match="NHWC"):
        inc.preprocess_images(np.zeros((1, 3, 8, 8), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        inc.preprocess_images(np.zeros((1, 8, 8, 3), np.int32))


# --------------------------------------------------------------------------------------------
# Error messages.
# --------------------------------------------------------------------------------------------


def test_convert_reports_missing_unexpected_and_misshaped_names(tmp_path):
    src = tmp_path / "partial.npz"
    np.savez(
        src,
        **{
            "Conv2d_1a_3x3.conv.weight": np.zeros((32, 3, 3, 3), np.float32),
            "fc.weight": np.zeros((10, 2048), np.float32),
            "aux.weight": np.zeros(3, np.float32),
        },
    )
    with pytest.raises(ValueError) as e:
        inc.convert_weights(src, tmp_path / "out.npz")
    msg = str(e.value)
    assert "missing (470)" in msg and "Mixed_7c.branch_pool.bn.running_var" in msg
    assert "unexpected (1): aux.weight" in msg
    assert "fc.weight: (10, 2048), expected (1008, 2048)" in msg
    assert "Conv2d_1a_3x3.conv.weight" not in msg
    assert not (tmp_path / "out.npz").exists()


def test_convert_pth_without_torch_says_how_to_get_the_npz(tmp_path):
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed here")
    src = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    src.write_bytes(b"not read")
    with pytest.raises(ImportError, match=r"needs torch.*\.npz"):
        inc.convert_weights(src, tmp_path / "out.npz")


def test_load_inception_missing_file_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        inc.load_inception(tmp_path / "inception_fid.npz")
    msg = str(e.value)
    assert "scoresde convert-inception SRC --out inception_fid.npz" in msg and "\n" not in msg


def test_load_inception_rejects_unconverted_file(tmp_path):
    path = tmp_path / "torch_names.npz"
    np.savez(path, **{"fc.bias": np.zeros(1008, np.float32)})
    with pytest.raises(ValueError, match="convert-inception"):
        inc.load_inception(path)
    with pytest.raises(ValueError, match="preprocess"):
        inc.InceptionExtractor({}, preprocess="clean")
