"""Median-of-means: the partition, the exact median-block selection and its gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.mom_gan import objectives


@pytest.mark.parametrize("n,k", [(12, 3), (500, 201), (10, 10), (7, 2)])
def test_random_blocks_partition_the_batch(n, k):
    blocks = np.asarray(objectives.random_blocks(jax.random.PRNGKey(n), n, k))
    assert blocks.shape == (k, n // k)
    flat = blocks.ravel()
    assert len(np.unique(flat)) == flat.size and flat.min() >= 0 and flat.max() < n
    if n % k == 0:
        np.testing.assert_array_equal(np.sort(flat), np.arange(n))  # every point exactly once
    other = np.asarray(objectives.random_blocks(jax.random.PRNGKey(n + 1), n, k))
    assert not np.array_equal(blocks, other)  # a fresh partition per key
    with pytest.raises(ValueError, match="num_blocks"):
        objectives.random_blocks(jax.random.PRNGKey(0), n, n + 1)


def test_median_of_means_picks_the_median_block_and_ignores_outlying_blocks():
    values = jnp.array([1.0, 1.0, 5.0, 5.0, 3.0, 3.0, 1e6, 1e6, 2.0, 2.0])
    blocks = jnp.arange(10).reshape(5, 2)  # block means 1, 5, 3, 1e6, 2
    assert float(objectives.median_of_means(values, blocks)) == 3.0
    even = jnp.arange(8).reshape(4, 2)  # means 1, 5, 3, 1e6: the upper median, as the MoM code
    assert float(objectives.median_of_means(values, even)) == 5.0


def test_median_of_blocks_gradient_is_the_chosen_blocks_gradient():
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (60, 3))
    w = jnp.array([0.3, -1.0, 2.0])
    blocks = objectives.random_blocks(jax.random.PRNGKey(1), 60, 7)  # 7 blocks of 8, 4 left out

    def per_sample(w):
        return jnp.tanh(x @ w) ** 2

    grad_mom = jax.grad(lambda w: objectives.median_of_means(per_sample(w), blocks))(w)
    means = np.asarray(per_sample(w))[np.asarray(blocks)].mean(axis=1)
    chosen = np.asarray(blocks)[np.argsort(means)[3]]
    grad_block = jax.grad(lambda w: per_sample(w)[chosen].mean())(w)
    np.testing.assert_allclose(grad_mom, grad_block, rtol=1e-6)
    assert not np.allclose(grad_mom, jax.grad(lambda w: per_sample(w).mean())(w))
    jitted = jax.jit(jax.grad(lambda w: objectives.median_of_means(per_sample(w), blocks)))
    np.testing.assert_allclose(jitted(w), grad_block, rtol=1e-6)


def test_real_term_is_the_plain_mean_with_one_block():
    v = jnp.arange(10.0)
    assert float(objectives.real_term(v, jax.random.PRNGKey(0), 1)) == 4.5


def test_block_count_rule_exceeds_twice_the_expected_outliers():
    assert objectives.blocks_for_contamination(0.0, 500) == 1
    assert objectives.blocks_for_contamination(0.2, 500) == 201
    assert objectives.blocks_for_contamination(0.05, 200) == 21
    assert objectives.blocks_for_contamination(0.45, 10) == 10  # at most one point per block


def test_discriminator_losses_and_gradient_penalty():
    real, fake = jnp.array([2.0, 2.0]), jnp.array([-2.0, -2.0])
    key = jax.random.PRNGKey(0)
    js, _ = objectives.discriminator_loss("js", real, fake, key, 1)
    np.testing.assert_allclose(js, 2 * np.log1p(np.exp(-2.0)), rtol=1e-6)
    w, real_term = objectives.discriminator_loss("wasserstein", real, fake, key, 1)
    assert float(w) == -4.0 and float(real_term) == -2.0
    assert float(objectives.generator_loss("wasserstein", fake)) == 2.0
    # A 1-Lipschitz linear critic has no penalty; a 3-Lipschitz one has (3 - 1)^2.
    x, y = jnp.ones((4, 2)), jnp.zeros((4, 2))
    unit = lambda z: z @ jnp.array([0.6, 0.8])
    steep = lambda z: z @ jnp.array([1.8, 2.4])
    assert float(objectives.gradient_penalty(unit, x, y, key)) == pytest.approx(0.0, abs=1e-6)
    assert float(objectives.gradient_penalty(steep, x, y, key)) == pytest.approx(4.0, rel=1e-5)
