"""Optimizer chain (clip -> Adam with warmup), EMA and TrainState against closed forms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from scoresde_jax.config import get_optimizer
from scoresde_jax.training.optimizer import learning_rate_schedule, make_optimizer
from scoresde_jax.training.state import TrainState, ema_update


def _optim_config(**kw):
    c = ml_collections.ConfigDict()
    c.optim = dict(optimizer="Adam", lr=2e-4, warmup=5000, grad_clip=1.0, beta1=0.9, eps=1e-8, weight_decay=0.0)
    c.optim.update(kw)
    c.training = dict(batch_size=8)
    return c


def test_warmup_schedule_is_linear_then_constant():
    sched = learning_rate_schedule(lr=2e-4, warmup=5000)
    for step in (0, 1, 2500, 4999, 5000, 10**6):
        assert np.isclose(float(sched(step)), 2e-4 * min(step / 5000, 1.0), rtol=1e-6)
    assert float(learning_rate_schedule(lr=1e-3, warmup=0)(0)) == pytest.approx(1e-3)


def test_first_adam_step_is_lr_times_sign():
    # Adam's first bias-corrected step is -lr * g / (|g| + eps) elementwise.
    tx = make_optimizer(lr=1e-2, warmup=0, grad_clip=-1.0)
    p = {"w": jnp.array([1.0, -2.0, 3.0])}
    g = {"w": jnp.array([0.5, -0.25, 2.0])}
    upd, _ = tx.update(g, tx.init(p), p)
    np.testing.assert_allclose(upd["w"], -1e-2 * np.asarray(g["w"]) / (np.abs(g["w"]) + 1e-8), rtol=1e-4)


def test_grad_clip_by_global_norm():
    # With clipping at 1 and Adam's scale invariance the first step is the same, but the moments see
    # g * 1 / ||g||.
    tx = make_optimizer(lr=1e-2, warmup=0, grad_clip=1.0)
    p = {"a": jnp.zeros(2), "b": jnp.zeros(1)}
    g = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([4.0])}  # ||g|| = 5
    _, state = tx.update(g, tx.init(p), p)
    mu = state[1][0].mu
    np.testing.assert_allclose(mu["a"], 0.1 * np.array([0.6, 0.0]), rtol=1e-6)
    np.testing.assert_allclose(mu["b"], 0.1 * np.array([0.8]), rtol=1e-6)


def test_get_optimizer_reads_config_and_rejects_unknown_names():
    tx = get_optimizer(_optim_config(warmup=0, lr=1e-3))
    p = {"w": jnp.ones(3)}
    upd, _ = tx.update({"w": jnp.ones(3)}, tx.init(p), p)
    np.testing.assert_allclose(upd["w"], -1e-3, rtol=1e-5)
    with pytest.raises(ValueError, match="optim.optimizer"):
        get_optimizer(_optim_config(optimizer="Adagrad"))


def test_weight_decay_is_decoupled():
    tx = make_optimizer(lr=1e-2, warmup=0, grad_clip=-1.0, weight_decay=0.1)
    p = {"w": jnp.array([2.0])}
    upd, _ = tx.update({"w": jnp.array([1.0])}, tx.init(p), p)
    np.testing.assert_allclose(upd["w"], -1e-2 * (1.0 + 0.1 * 2.0), rtol=1e-5)


def test_multisteps_accumulation_equals_mean_gradient():
    p = {"w": jnp.array([1.0, 2.0])}
    g1, g2 = {"w": jnp.array([1.0, -3.0])}, {"w": jnp.array([3.0, 1.0])}
    acc = make_optimizer(lr=1e-1, warmup=0, grad_clip=1.0, grad_accum_steps=2)
    ref = make_optimizer(lr=1e-1, warmup=0, grad_clip=1.0)
    s = acc.init(p)
    u1, s = acc.update(g1, s, p)
    np.testing.assert_array_equal(u1["w"], 0.0)
    u2, s = acc.update(g2, s, p)
    u_ref, _ = ref.update({"w": (g1["w"] + g2["w"]) / 2}, ref.init(p), p)
    np.testing.assert_allclose(u2["w"], u_ref["w"], rtol=1e-6)
    assert bool(optax.MultiSteps(ref, 2).has_updated(s))


def test_ema_closed_form_and_state_step():
    tx = make_optimizer(lr=0.5, warmup=0, grad_clip=-1.0)
    params = {"w": jnp.array([1.0])}
    st = TrainState.create(params=params, tx=tx, rng=jax.random.PRNGKey(0), ema_rate=0.9)
    assert int(st.step) == 0 and st.rng.dtype == jnp.uint32
    np.testing.assert_array_equal(st.ema_params["w"], params["w"])
    st = st.apply_gradients({"w": jnp.array([1.0])})  # Adam step: w -> 1 - 0.5 = 0.5
    assert int(st.step) == 1
    np.testing.assert_allclose(st.params["w"], [0.5], rtol=1e-4)
    np.testing.assert_allclose(st.ema_params["w"], 0.9 * 1.0 + 0.1 * np.asarray(st.params["w"]), rtol=1e-6)
    np.testing.assert_allclose(ema_update({"a": 2.0}, {"a": 4.0}, rate=0.75)["a"], 2.5)


def test_typed_keys_are_stored_as_raw_key_data_and_bad_ema_rate_rejected():
    tx = make_optimizer(warmup=0)
    st = TrainState.create(params={"w": jnp.ones(1)}, tx=tx, rng=jax.random.key(3), ema_rate=0.999)
    np.testing.assert_array_equal(st.rng, jax.random.key_data(jax.random.key(3)))
    with pytest.raises(ValueError, match="ema_rate"):
        TrainState.create(params={"w": jnp.ones(1)}, tx=tx, rng=jax.random.PRNGKey(0), ema_rate=1.5)


def test_the_training_programs_compiled_with_less_llvm_optimization_give_the_same_numbers(monkeypatch):
    """On CPU ``init_state`` compiles with LLVM at level 0 for models up to 8M parameters and at
    level 1 above (``distributed.init_compiler_options``), the train step at level 1
    (``distributed.compiler_options``; less compile time). The parameters of an NCSN++
    (variance-scaling, truncated-normal and zero initializers, Fourier and Dense layers) are the
    same bit for bit as the default compile's at both levels; after a train step every leaf
    agrees to float32 rounding (some gradient sums are vectorized in another order: a few ulp)."""
    from scoresde_jax import config as C, training
    from scoresde_jax.training import distributed
    from scoresde_jax.training.state import create_train_state

    cfg = C.load_config("configs/digits_ddpmpp.py")
    cfg.model.update(nf=4, ch_mult=(1,), attn_resolutions=(8,), embedding_type="fourier")
    cfg.training.batch_size = 4
    s = C.setup(cfg)
    assert distributed.compiler_options(s.mesh) == {"xla_backend_optimization_level": 1}
    assert distributed.init_compiler_options(s.mesh, 10**6) == {"xla_backend_optimization_level": 0}
    assert distributed.init_compiler_options(s.mesh, 10**8) == {"xla_backend_optimization_level": 1}
    events = []
    chosen = distributed.init_compiler_options
    monkeypatch.setattr(distributed, "init_compiler_options",
                        lambda mesh, n: events.append(("compile", n)) or chosen(mesh, n))
    fast = s.init_state(on_lowered=lambda: events.append(("lowered",)))  # level 0: a small model
    n = sum(p.size for p in jax.tree.leaves(fast.params))
    assert events == [("lowered",), ("compile", n)]  # the callback comes before XLA's compile
    monkeypatch.setattr(distributed, "SMALL_INIT_PARAMS", 0)
    large = s.init_state()  # level 1, as a model above the threshold
    plain = jax.jit(lambda k: create_train_state(k, s.model, s.tx, input_shape=(1, 8, 8, 1),
                                                 ema_rate=s.ema_rate))(jax.random.PRNGKey(s.seed))
    for state in (fast, large):
        same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)), state, plain)
        assert jax.tree.all(same)

    loss_fn = C.get_loss_fn(cfg, s, train=True)
    xs = np.random.default_rng(0).uniform(-1, 1, (1, 4, 8, 8, 1)).astype(np.float32)
    batch = distributed.global_batch(xs, s.mesh, leading=1)
    after = [training.make_train_fn(loss_fn, s.mesh, donate=False, compiler_options=o)(fast, batch)
             for o in (None, {})]
    for a, b in zip(jax.tree.leaves(after[0]), jax.tree.leaves(after[1])):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * float(np.abs(b).max()))
    # the defaults reach XLA: an option XLA rejects fails the compile
    monkeypatch.setattr(distributed, "compiler_options", lambda mesh: {"xla_no_such_option": 1})
    with pytest.raises(Exception, match="xla_no_such_option"):
        training.make_train_fn(loss_fn, s.mesh, donate=False).lower(s.abstract_state(), batch).compile()
    monkeypatch.setattr(distributed, "init_compiler_options", lambda mesh, n: {"xla_no_such_init": 1})
    with pytest.raises(Exception, match="xla_no_such_init"):
        s.init_state()
