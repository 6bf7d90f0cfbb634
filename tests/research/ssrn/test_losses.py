"""The affinity, the soft boundary labels and the VSLNet losses."""

import jax
import jax.numpy as jnp
import numpy as np

from research.ssrn import losses, sampling


def test_affinity_rows_sum_to_one_with_the_diagonal_zeroed():
    f = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 6, 5))  # B, S, N, P
    mask = jnp.ones((2, 6), bool).at[1, 4:].set(False)
    a = np.asarray(losses.group_affinity(f, mask, 0.1))
    assert a.shape == (2, 6, 4, 4)
    np.testing.assert_allclose(np.diagonal(a, axis1=2, axis2=3), 0.0, atol=1e-12)
    np.testing.assert_allclose(a[0].sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(a[1, :4].sum(-1), 1.0, rtol=1e-6)
    assert np.all(a[1, 4:] == 0)  # padded positions propagate nothing


def test_soft_labels_are_distributions_on_real_positions():
    key = jax.random.PRNGKey(1)
    f = jax.random.normal(key, (3, 3, 7, 4))
    mask = jnp.ones((3, 7), bool).at[2, 5:].set(False)
    logits = jax.random.normal(jax.random.fold_in(key, 1), (3, 3, 7))
    probs = jax.nn.softmax(jnp.where(mask[:, None], logits, -1e9), -1)
    q = np.asarray(
        losses.soft_boundary_labels(losses.group_affinity(f, mask, 0.5), probs, mask, 0.5)
    )
    assert np.all(q >= 0)
    np.testing.assert_allclose(q.sum(-1), 1.0, rtol=1e-6)
    assert np.all(q[2, 5:] == 0)


def test_siamese_labels_place_the_boundary_inside_the_window():
    """With every siamese sequence predicting its own ground-truth window and equal affinity,
    the anchor's soft label has its mean at the true sub-window position (offsets spread evenly
    over the stride), where the one-hot label is off by up to a window."""
    n, duration, k = 8, 40.0, 199
    u = np.linspace(-0.5, 0.5, k + 2)[1:-1]
    for boundary in (11.0, 13.5, 14.6):  # in window 2 (10-15 s)
        index = sampling.time_to_index(boundary, duration, n, u)
        probs = np.zeros((1, k + 1, n), np.float32)
        probs[0, 0, sampling.time_to_index(boundary, duration, n)] = 1.0
        probs[0, np.arange(1, k + 1), index] = 1.0
        features = jnp.ones((1, k + 1, n, 2))  # equal affinity to every siamese frame
        mask = jnp.ones((1, n), bool)
        q = losses.soft_boundary_labels(
            losses.group_affinity(features, mask, 1.0), jnp.asarray(probs), mask, weight=1.0
        )
        mean_position = float(jnp.sum(q[0] * jnp.arange(n)))
        seconds = (mean_position + 0.5) * duration / n
        assert abs(seconds - boundary) < 0.05, (boundary, seconds)


def test_inside_labels_extend_the_moment():
    lab = np.asarray(losses.inside_labels(jnp.array([3]), jnp.array([6]), 12, extend=0.5))
    # length 4 positions, extended by floor(0.5 * 4) = 2 on each side
    np.testing.assert_array_equal(lab[0], [0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0])
