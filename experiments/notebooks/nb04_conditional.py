"""Conditional generation: classifier-free and classifier guidance on digits.

Cells of ``04_conditional_generation.ipynb`` (written by ``build_notebooks.py``).
"""

from __future__ import annotations

NAME = "04_conditional_generation.ipynb"

CELLS = [
    ("md", """# Conditional generation: classifier-free guidance and classifier guidance

Two ways to sample digits of a chosen class from a score model (`scoresde_jax.guidance`):

* **classifier-free guidance** (Ho & Salimans 2022): one network learns the conditional score `s(x, t, y)` and,
  with label dropout to a *null class*, the unconditional one; sampling uses
  `(1 + w) s(x, t, y) - w s(x, t, null)`;
* **classifier guidance** (Song et al. 2021, section 5; Dhariwal & Nichol 2021): an unconditional score plus
  `scale * grad_x log p_t(y | x)` of a *noise-conditional* classifier trained on perturbed data.

Both guided scores are plain score functions, so every sampler takes them. To run in about a minute on a CPU the
networks are small MLPs over the flattened 8x8 digits (`models.MLP(num_classes=...)`); the same calls serve a
class-conditional U-Net (`config.model.num_classes`)."""),
    ("code", """import time
import flax.linen as nn
import jax, jax.numpy as jnp, numpy as np
import matplotlib.pyplot as plt
from scoresde_jax import guidance, losses, models, samplers
from scoresde_jax import sde as sde_lib
from scoresde_jax.data import load_digits_images, scaler, inverse_scaler
from scoresde_jax.evaluation.digits import digits_feature_extractor
from scoresde_jax.metrics_io import image_grid
from scoresde_jax.training import create_train_state, make_optimizer, make_train_fn
from scoresde_jax.training.distributed import make_mesh

T0 = time.perf_counter()
images, labels = load_digits_images("train")
data = np.asarray(scaler(True)(images)).reshape(len(images), -1)     # (1437, 64) in [-1, 1]
labels = np.asarray(labels, np.int32)
to_images = lambda x: np.clip(np.asarray(inverse_scaler(True)(x)), 0, 1).reshape(-1, 8, 8, 1)
sde = sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=100)
mesh, rng = make_mesh(), np.random.default_rng(0)

def train(loss_fn, model, steps, lr=2e-3):
    state = create_train_state(jax.random.key(0), model, make_optimizer(lr=lr, warmup=100),
                               input_shape=(1, 64), ema_rate=0.99)
    step = make_train_fn(loss_fn, mesh)
    for _ in range(steps):
        idx = rng.integers(0, len(data), 128)
        state, metrics = step(state, {"image": data[idx][None], "label": labels[idx][None]})
    print(f"{type(model).__name__}: {steps} steps, final loss {float(metrics.loss[0]):.3f}")
    return state.ema_params

def show_per_class(x, title, per_class=6):
    \"\"\"x: (10 * per_class, 64), class k in rows k * per_class ... -> one column per class.\"\"\"
    x = to_images(x).reshape(10, per_class, 8, 8, 1).transpose(1, 0, 2, 3, 4).reshape(-1, 8, 8, 1)
    plt.figure(figsize=(5, 3.4)); plt.imshow(image_grid(x, nrow=10)[..., 0], cmap="gray")
    plt.title(title, fontsize=9); plt.axis("off"); plt.show()"""),
    ("md", """## A class-conditional score network with label dropout

`class_dropout=0.15` replaces a label by the null class (index `num_classes`) for 15% of the training examples,
so the same network gives the unconditional score at `y = null`. The loss is the usual one: a conditional network
gets `batch['label']`."""),
    ("code", """cond_model = models.MLP(hidden_sizes=(256, 256, 256), num_classes=10, class_dropout=0.15)
cond_params = train(losses.get_loss_fn(sde, cond_model, train=True), cond_model, 1000)
label_score = guidance.model_label_score_fn(sde, cond_model, cond_params)      # (x, t, y) -> score
null = guidance.null_label(cond_model)
y = jnp.repeat(jnp.arange(10), 6)                                                # 6 samples per class
for w in (0.0, 2.0):
    score = guidance.classifier_free_guidance(label_score, y, w, null=null)
    out = samplers.pc_sample(score, sde, (60, 64), jax.random.key(1), predictor="euler_maruyama", corrector="none")
    show_per_class(out.x, f"classifier-free guidance, w = {w:g} (columns: classes 0-9)")"""),
    ("md", """## Classifier guidance with a noise-conditional classifier

The classifier sees perturbed data `x_t` and the network label of `t` (`losses.get_classifier_loss_fn`); any flax
module `(x, labels) -> logits` will do, here a small MLP. The unconditional score is the null class of the network
above."""),
    ("code", """class NoisyDigitClassifier(nn.Module):
    \"\"\"(x (B, 64), time labels (B,)) -> logits (B, 10).\"\"\"
    @nn.compact
    def __call__(self, x, labels, train=False):
        h = jnp.concatenate([x, models.layers.get_timestep_embedding(labels, 32)], -1)
        for width in (256, 256):
            h = nn.swish(nn.Dense(width)(h))
        return nn.Dense(10)(h)

classifier = NoisyDigitClassifier()
clf_params = train(losses.get_classifier_loss_fn(sde, classifier, train=True), classifier, 800)
classifier_fn = guidance.model_classifier_fn(sde, classifier, clf_params)       # (x, t) -> logits
uncond = guidance.label_score(label_score, null)
for scale in (1.0, 4.0):
    score = guidance.classifier_guidance(uncond, classifier_fn, y, scale)
    out = samplers.pc_sample(score, sde, (60, 64), jax.random.key(1), predictor="euler_maruyama", corrector="none")
    show_per_class(out.x, f"classifier guidance, scale = {scale:g} (columns: classes 0-9)")"""),
    ("md", """## Accuracy against the guidance scale

An independent judge -- the digits classifier of `scoresde_jax.evaluation` (trained on real digits, about 98%
test accuracy) -- labels 200 samples per setting; accuracy is the fraction that shows the requested class. Labels and
scales are data of the guided score, so each method compiles once for all settings. Guidance trades diversity for
accuracy: stronger guidance gives more recognizable, more uniform digits."""),
    ("code", """judge = digits_feature_extractor()
y = jnp.arange(200) % 10
def accuracy(score):
    x = samplers.pc_sample(score, sde, (200, 64), jax.random.key(2), predictor="euler_maruyama", corrector="none").x
    _, logits = judge(to_images(x))
    return float(np.mean(np.argmax(logits, -1) == np.asarray(y)))

cfg_w, clf_scales = (0.0, 0.5, 1.0, 2.0, 4.0), (0.0, 1.0, 2.0, 4.0, 8.0)
cfg_acc = [accuracy(guidance.classifier_free_guidance(label_score, y, w, null=null)) for w in cfg_w]
clf_acc = [accuracy(guidance.classifier_guidance(uncond, classifier_fn, y, s)) for s in clf_scales]
base = accuracy(guidance.classifier_guidance(uncond, classifier_fn, y, 0.0))   # unconditional: chance
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(cfg_w, cfg_acc, "o-", label="classifier-free guidance, w")
ax.plot(clf_scales, clf_acc, "s-", label="classifier guidance, scale")
ax.axhline(base, color="k", ls=":", label="unconditional samples")
ax.set_xlabel("guidance strength (w or scale)"); ax.set_ylabel("judge accuracy"); ax.set_ylim(0, 1.02); ax.legend()
plt.show()
print("classifier-free guidance, accuracy by w:  ", dict(zip(cfg_w, np.round(cfg_acc, 3).tolist())))
print("classifier guidance, accuracy by scale:   ", dict(zip(clf_scales, np.round(clf_acc, 3).tolist())))
print(f"notebook ran in {time.perf_counter() - T0:.0f} s ({time.process_time():.0f} s of CPU in this kernel)")"""),
]
