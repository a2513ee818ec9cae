"""Pretrained models: an EDM network pickle written here (random and all-zero weights), loaded, checked
against closed forms and sampled.

Cells of ``02_pretrained_models.ipynb`` (written by ``build_notebooks.py``).
"""

from __future__ import annotations

NAME = "02_pretrained_models.ipynb"

CELLS = [
    ("md", """# Pretrained models of the field in one JAX API

`scoresde_jax.pretrained.load(src)` reads the published checkpoints of three code bases and returns a
`Pretrained`: the SDE the network was trained on, the flax network and its parameters, `score_fn(x, t)` (what every
sampler, the likelihood and guidance take) and EDM's denoiser `denoise(x, sigma)`.

| format | published files (download them by hand; this library fetches nothing) |
| --- | --- |
| EDM network pickle | https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/edm-cifar10-32x32-uncond-vp.pkl, `...-cond-vp.pkl`, `...-uncond-ve.pkl`, `edm-ffhq-64x64-uncond-vp.pkl`, ... |
| diffusers pipeline folder | https://huggingface.co/google/ddpm-cifar10-32 (`git clone` the repository: a folder with `model_index.json`) |
| official score_sde checkpoint | https://github.com/yang-song/score_sde (`checkpoint_<step>`, read with its config) |

With internet, on a downloaded file:

```python
from scoresde_jax import pretrained, samplers
p = pretrained.load("edm-cifar10-32x32-uncond-vp.pkl")       # or the ddpm-cifar10-32 folder
res = samplers.sample(p.score_fn, p.sde, (16, 32, 32, 3), key, method="heun", nfe=35)
```
```bash
scoresde convert --from edm edm-cifar10-32x32-uncond-vp.pkl --workdir runs/edm_c10_vp
scoresde sample --workdir runs/edm_c10_vp --num_samples 64
```

Nothing is downloaded in this notebook, so it first *writes* a small file in exactly EDM's format
(`scoresde_jax.pretrained.fixtures`: the pickled `{'ema', 'loss_fn', 'augment_pipe', 'dataset_kwargs'}` dict, the
network a tree of `torch_utils.persistence` records with EDM's constructor arguments and torch tensors) and then
uses it as one would use a downloaded one. The network is EDM's `SongUNet` (DDPM++) with `EDMPrecond`, on 8x8 RGB
images with 16 channels, its weights **randomly initialized**: training it would take longer than this notebook
may run, so its pictures are noise-like. What the notebook does show: the file is read without running anything
from it, the loaded model is EDM's denoiser on EDM's SDE, and with weights whose answer is known in closed form
the samplers draw exactly the distribution they should."""),
    ("code", """import time
import tempfile
from pathlib import Path
import jax, jax.numpy as jnp, numpy as np
import matplotlib.pyplot as plt
from scoresde_jax import models, pretrained, samplers
from scoresde_jax.metrics_io import image_grid
from scoresde_jax.models.song_unet import EDMSongUNet
from scoresde_jax.pretrained import edm, fixtures

T0 = time.perf_counter()
SHAPE = (8, 8, 3)
def show(rows, titles, *, nrow=6, size=2.6):
    fig, axes = plt.subplots(1, len(rows), figsize=(size * len(rows), size + 0.4), squeeze=False)
    for ax, x, title in zip(axes[0], rows, titles):
        x = np.clip((np.asarray(x) + 1) / 2, 0, 1)
        ax.imshow(image_grid(x, nrow=nrow)); ax.set_title(title, fontsize=9); ax.axis("off")
    plt.show()

# EDM's constructor arguments of an EDMPrecond(SongUNet) network, as its train.py stores them
init_kwargs = dict(img_resolution=8, img_channels=3, label_dim=0, model_type="SongUNet",
                   model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4],
                   dropout=0.0, embedding_type="positional", encoder_type="standard",
                   decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1])
net = EDMSongUNet(precond="edm", sde="edm", **{k: v for k, v in init_kwargs.items()
                                              if k not in ("model_type", "label_dim")})
shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, *SHAPE)), jnp.zeros((1,)))["params"]
rng = np.random.default_rng(0)
def random_weight(path, s):            # a random initialization: N(0, 1/fan_in) weights, unit norms, zero biases
    if path[-1].key == "bias":
        return np.zeros(s.shape, np.float32)
    if len(s.shape) == 1:
        return np.ones(s.shape, np.float32)
    return (rng.standard_normal(s.shape) / np.sqrt(np.prod(s.shape[:-1]))).astype(np.float32)
params = jax.tree_util.tree_map_with_path(random_weight, shapes)
state_dict = fixtures.edm_state_dict(params, init_kwargs["resample_filter"])  # torch names and layouts
folder = Path(tempfile.mkdtemp())
path = fixtures.write_edm_pickle(folder / "network-snapshot-000000.pkl", "EDMPrecond", init_kwargs, state_dict)
print(f"wrote {path.name}: {path.stat().st_size / 1e3:.0f} kB, {len(state_dict)} tensors, e.g.")
for name in list(state_dict)[:3]:
    print(f"  {name:40s} {tuple(state_dict[name].shape)}")"""),
    ("md", """## Load it

`pretrained.load` recognizes the pickle and reads it with a restricted unpickler: torch tensors and plain data
only, any other global is refused, and the `module_src` code EDM stores in every record is never run. The
architecture comes from the stored constructor arguments, the weights from the state dict (every name and shape
checked). An `EDMPrecond` network lands on EDM's SDE (`sigma(t) = t` on `[0.002, 80]`, `sigma_data = 0.5`) with
EDM's sampler in its config; `VPPrecond` / `VEPrecond` networks land on the VP / VE SDE they were trained on."""),
    ("code", """record = edm.read_network(path)
print("record:", record.class_name, {k: record.init_kwargs[k] for k in ("model_type", "model_channels")})
p = pretrained.load(path)
print("SDE:", p.sde)
print("sampler of its config:", dict(p.config.sampling))
print(f"{models.count_params(p.params):,} parameters, data in [-1, 1]: {p.config.data.centered}")

# the score is EDM's denoiser through Tweedie's formula at sigma = t: (D(x; sigma) - x) / sigma^2
x = jax.random.normal(jax.random.key(1), (4, *SHAPE))
t = jnp.array([0.01, 0.3, 2.0, 40.0])
d = p.denoise(x, t)
tweedie = (d - x) / (t ** 2)[:, None, None, None]
err = float(jnp.max(jnp.abs(p.score_fn(x, t) - tweedie) / jnp.max(jnp.abs(tweedie), axis=(1, 2, 3), keepdims=True)))
print(f"score vs (D - x) / sigma^2: largest relative difference {err:.1e}")
same = all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), params, p.params)))
print("loaded weights equal the written ones:", same)"""),
    ("md", """## Sample

EDM's deterministic sampler (Heun on the `rho = 7` grid, 18 points, 35 evaluations: the sampler of the loaded
config) and DPM-Solver++ with 20 evaluations, from the same prior draw `x_T ~ N(0, 80^2 I)`: every sampler takes
`p.score_fn` and `p.sde`. With random weights the pictures are colored noise; with a downloaded CIFAR-10 pickle
the same cell draws CIFAR-10 images on `(B, 32, 32, 3)`."""),
    ("code", """shape = (36, *SHAPE)
x_T = p.sde.prior_std * jax.random.normal(jax.random.key(2), shape)
SAMPLERS = {"Heun, EDM grid": dict(p.config.sampling), "DPM-Solver++": dict(method="dpm_solver_pp", nfe=20)}
def draw(model):
    return {name: samplers.sample(model.score_fn, model.sde, shape, jax.random.key(3), x_init=x_T,
                                  eps=model.sampling_eps, **kw)
            for name, kw in SAMPLERS.items()}
drawn = draw(p)
show([r.x for r in drawn.values()], [f"{name} (NFE {int(r.nfe)})" for name, r in drawn.items()])"""),
    ("md", """## A file whose answer is known

EDM's preconditioning writes the denoiser as `D(x; sigma) = c_skip x + c_out F`. A network whose output `F` is
zero is therefore EDM's *exact* denoiser of Gaussian data `N(0, sigma_data^2 I)`:
`D = sigma_data^2 / (sigma^2 + sigma_data^2) x`. Written with all weights zero (same format, same loader), the
probability-flow ODE maps `x_T` to `sigma_data x_T / sqrt(80^2 + sigma_data^2)`, i.e. `x_T / 160` (a sample of
standard deviation 0.5), and every deterministic solver is a linear map `x_0 = gain * x_T`. Heun's gain on EDM's
18-point grid is a product of 18 scalar factors, computed below in NumPy from EDM's Algorithm 1: the library's
sampler must reproduce it to float precision (its own discretization error on this distribution, 5.5 %, is the
price of 35 evaluations). A check of the whole path (file, SDE, parameterization, grid, solver) against closed
forms."""),
    ("code", """zero = fixtures.write_edm_pickle(folder / "zero.pkl", "EDMPrecond", init_kwargs, {
    k: v if k.endswith("resample_filter") else np.zeros_like(v) for k, v in state_dict.items()})
g = pretrained.load(zero)
sd, s_min, s_max = g.sde.sigma_data, g.sde.sigma_min, g.sde.sigma_max
print("D(x; 2) = sd^2 / (4 + sd^2) x:", bool(jnp.allclose(g.denoise(x, 2.0), sd ** 2 / (4 + sd ** 2) * x, atol=1e-6)))

steps = (s_max ** (1 / 7) + np.arange(18) / 17 * (s_min ** (1 / 7) - s_max ** (1 / 7))) ** 7
steps, gain = np.append(steps, 0.0), 1.0                # EDM's Algorithm 1 on x' = (x - D(x; t)) / t
slope = lambda t: t / (t ** 2 + sd ** 2)                # (x - D) / t = slope(t) x
for i, (t, t_next) in enumerate(zip(steps[:-1], steps[1:])):
    euler = 1 + (t_next - t) * slope(t)
    gain *= euler if t_next == 0 else 1 + (t_next - t) * (slope(t) + euler * slope(t_next)) / 2
gauss = draw(g)       # the same samplers, the same compiled code: only the parameters differ
print(f"exact ODE gain {sd / np.hypot(s_max, sd):.6f}; Heun's on 18 points (NumPy) {gain:.6f}")
for name, r in gauss.items():
    ratio = np.asarray(r.x / x_T)
    print(f"{name:15s} NFE {int(r.nfe):2d}: x_0 / x_T in [{ratio.min():.6f}, {ratio.max():.6f}] "
          f"(x 160 = {ratio.mean() * 160:.4f}), sample std {float(jnp.std(r.x)):.3f}")
show([r.x for r in gauss.values()], [f"Gaussian model: {name.split(',')[0]}" for name in gauss], size=3.2)
print(f"notebook ran in {time.perf_counter() - T0:.0f} s ({time.process_time():.0f} s of CPU in this kernel)")"""),
]
