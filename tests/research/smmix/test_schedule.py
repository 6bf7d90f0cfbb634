"""research/smmix/steps.py: the AdamW + warm-up / cosine optimizer whose schedule lengths live in
the optimizer state (equal to optax.adamw on optax's schedule; changed without recompiling)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research.smmix import steps

OPTIONS = steps.TrainOptions(batch_size=256, base_lr=2e-3, warmup_epochs=2.0, min_lr=1e-5)


def test_the_schedule_equals_optax_warmup_cosine():
    warmup, total = steps.schedule_lengths(OPTIONS, num_steps=50, steps_per_epoch=5)
    assert (warmup, total) == (10, 50)
    reference = optax.warmup_cosine_decay_schedule(1e-6, 1e-3, 10, 50, 1e-5)
    for count in [0, 1, 5, 9, 10, 11, 30, 49, 50, 60]:
        np.testing.assert_allclose(
            steps.lr_at(OPTIONS, count, warmup, total), reference(count), rtol=1e-5
        )


def test_the_optimizer_equals_optax_adamw_and_its_lengths_change_without_recompiling():
    params = {"w": jnp.arange(6.0).reshape(2, 3) / 7, "b": jnp.ones(3)}
    grads = [jax.tree.map(lambda p, k=k: jnp.sin(p * (k + 1)), params) for k in range(12)]
    ours = steps.make_optimizer(OPTIONS, num_steps=50, steps_per_epoch=5)
    reference = optax.adamw(
        optax.warmup_cosine_decay_schedule(1e-6, 1e-3, 10, 50, 1e-5),
        weight_decay=OPTIONS.weight_decay,
        mask=steps._decay_mask,
    )

    def run(opt, state, p):
        update = jax.jit(opt.update)
        for g in grads:
            u, state = update(g, state, p)
            p = optax.apply_updates(p, u)
        return p, update

    mine, update = run(ours, ours.init(params), params)
    theirs, _ = run(reference, reference.init(params), params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), mine, theirs)
    # A shorter schedule through the state: the same compiled update, optax's shorter schedule.
    short = steps.set_schedule(ours.init(params), 3, 12)
    state, p = short, params
    for g in grads:
        u, state = update(g, state, p)
        p = optax.apply_updates(p, u)
    assert update._cache_size() == 1
    reference = optax.adamw(
        optax.warmup_cosine_decay_schedule(1e-6, 1e-3, 3, 12, 1e-5),
        weight_decay=OPTIONS.weight_decay,
        mask=steps._decay_mask,
    )
    theirs, _ = run(reference, reference.init(params), params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), p, theirs)
    assert not np.allclose(p["w"], mine["w"])  # the lengths matter
