"""research/smmix/mixing.py and losses.py against brute-force loops and closed forms."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.smmix import losses, mixing


def _brute_force_windows(grid: np.ndarray, r: int) -> tuple[list, list]:
    """Python loops over every image and window: first argmin / argmax top-left corners."""
    lows, highs = [], []
    s = grid.shape[1]
    for g in grid:
        best_lo, best_hi, lo, hi = np.inf, -np.inf, None, None
        for i, j in itertools.product(range(s - r + 1), repeat=2):
            v = g[i : i + r, j : j + r].astype(np.float64).sum()
            if v < best_lo:
                best_lo, lo = v, (i, j)
            if v > best_hi:
                best_hi, hi = v, (i, j)
        lows.append(lo)
        highs.append(hi)
    return lows, highs


@pytest.mark.parametrize("side", [4, 7, 8, 14])
def test_window_search_matches_a_brute_force_loop(side):
    rng = np.random.default_rng(side)
    grid = rng.random((6, side, side)).astype(np.float32)
    received = jnp.asarray(grid.reshape(6, -1))
    select = jax.jit(mixing.select_windows, static_argnums=1)  # r traced: one compilation
    for r in range(1, side + 1):
        scores, valid = mixing.window_scores(jnp.asarray(grid), jnp.int32(r))
        for i, j in itertools.product(range(side - r + 1), repeat=2):
            np.testing.assert_allclose(
                scores[:, i, j], grid[:, i : i + r, j : j + r].sum((1, 2)), rtol=1e-5, atol=1e-5
            )
        assert int(valid.sum()) == (side - r + 1) ** 2
        target, source = select(received, side, jnp.int32(r))
        lows, highs = _brute_force_windows(grid, r)
        assert [tuple(t) for t in np.asarray(target)] == lows
        # image i receives the max window of image B-1-i
        assert [tuple(t) for t in np.asarray(source)] == highs[::-1]


def test_ties_take_the_first_window_like_torch():
    grid = jnp.zeros((2, 5, 5))
    target, source = mixing.select_windows(grid.reshape(2, -1), 5, jnp.int32(2))
    np.testing.assert_array_equal(target, [[0, 0], [0, 0]])
    np.testing.assert_array_equal(source, [[0, 0], [0, 0]])


@pytest.mark.parametrize("patch, side, r", [(2, 8, 3), (1, 6, 2), (4, 4, 4), (3, 5, 1)])
def test_paste_moves_exactly_the_chosen_patches(patch, side, r):
    b, c = 6, 2
    rng = np.random.default_rng(r)
    images = rng.normal(size=(b, side * patch, side * patch, c)).astype(np.float32)
    hi = side - r + 1
    target = rng.integers(0, hi, (b, 2))
    source = rng.integers(0, hi, (b, 2))
    mixed, mask = mixing.paste_windows(
        jnp.asarray(images), jnp.asarray(target), jnp.asarray(source), jnp.int32(r), patch
    )
    mixed, mask = np.asarray(mixed), np.asarray(mask)
    assert (mask.sum(1) == r * r).all()

    def tile(img, p, q):
        return img[p * patch : (p + 1) * patch, q * patch : (q + 1) * patch]

    for i in range(b):
        for p, q in itertools.product(range(side), repeat=2):
            inside = target[i, 0] <= p < target[i, 0] + r and target[i, 1] <= q < target[i, 1] + r
            assert mask[i, p * side + q] == inside
            if inside:
                sp, sq = p - target[i, 0] + source[i, 0], q - target[i, 1] + source[i, 1]
                expected = tile(images[b - 1 - i], sp, sq)
            else:
                expected = tile(images[i], p, q)
            np.testing.assert_array_equal(tile(mixed[i], p, q), expected)


def test_smmix_lam_masks_and_labels_sum_to_one():
    b, side, patch, k = 8, 8, 2, 10
    key = jax.random.PRNGKey(0)
    images = jax.random.normal(key, (b, side * patch, side * patch, 1))
    labels = jnp.arange(b) % k
    received = jax.random.uniform(jax.random.PRNGKey(1), (b, side * side))
    mix = jax.jit(
        lambda x, y, a, kk: mixing.smmix(x, y, a, kk, patch=patch, num_classes=k, smoothing=0.1)
    )
    sides = set()
    for seed in range(20):
        m = mix(images, labels, received, jax.random.PRNGKey(seed))
        r = int(m.side)
        sides.add(r)
        assert 2 <= r <= 6  # int(0.25 * 8) .. int(0.75 * 8)
        np.testing.assert_allclose(float(m.lam), (side * side - r * r) / (side * side))
        np.testing.assert_allclose(m.source_mask.sum(1), r * r)
        np.testing.assert_array_equal(m.target_mask, ~m.source_mask)
        np.testing.assert_allclose(m.targets.sum(1), 1.0, atol=1e-6)
        np.testing.assert_allclose(m.target_targets.sum(1), 1.0, atol=1e-6)
        np.testing.assert_allclose(
            m.targets, m.lam * m.target_targets + (1 - m.lam) * m.source_targets, atol=1e-7
        )
        assert float(m.target_targets[0, labels[0]]) == pytest.approx(0.9 + 0.01)
        np.testing.assert_array_equal(m.source_targets, m.target_targets[::-1])
    assert sides == set(range(2, 7))  # every window side is drawn


def test_mixup_and_cutmix_lam_and_labels():
    b, k = 8, 5
    images = jnp.broadcast_to(jnp.arange(b, dtype=jnp.float32)[:, None, None, None], (b, 12, 12, 1))
    labels = jnp.arange(b) % k
    mixup = jax.jit(lambda *a: mixing.mixup(*a, alpha=0.8, num_classes=k, smoothing=0.1))
    cutmix = jax.jit(lambda *a: mixing.cutmix(*a, alpha=1.0, num_classes=k, smoothing=0.1))
    for seed in range(10):
        key = jax.random.PRNGKey(seed)
        m = mixup(images, labels, key)
        np.testing.assert_allclose(m.targets.sum(1), 1.0, atol=1e-6)
        np.testing.assert_allclose(
            m.images[:, 0, 0, 0], m.lam * jnp.arange(b) + (1 - m.lam) * jnp.arange(b)[::-1],
            rtol=1e-5, atol=1e-5,
        )  # fmt: skip
        c = cutmix(images, labels, key)
        np.testing.assert_allclose(c.targets.sum(1), 1.0, atol=1e-6)
        kept = (np.asarray(c.images)[0] == 0).mean()  # image 0's own pixels (image 7 elsewhere)
        np.testing.assert_allclose(kept, float(c.lam), atol=1e-6)


def test_consistency_kl_and_region_mean_closed_forms():
    rng = np.random.default_rng(0)
    out = rng.normal(size=(6, 4)).astype(np.float32)
    z = rng.normal(size=(6, 4)).astype(np.float32)
    lam = 0.7
    mixed = lam * z + (1 - lam) * z[::-1]
    p = np.exp(mixed) / np.exp(mixed).sum(1, keepdims=True)
    q = np.exp(out) / np.exp(out).sum(1, keepdims=True)
    expected = (p * (np.log(p) - np.log(q))).sum(1).mean()
    got = losses.consistency_kl(jnp.asarray(out), jnp.asarray(z), lam)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    assert float(losses.consistency_kl(jnp.asarray(mixed), jnp.asarray(z), lam)) < 1e-6
    tokens = rng.normal(size=(2, 5, 3)).astype(np.float32)
    mask = np.array([[1, 0, 1, 0, 0], [0, 0, 0, 0, 1]], bool)
    np.testing.assert_allclose(
        losses.region_mean(jnp.asarray(tokens), jnp.asarray(mask)),
        [tokens[0, [0, 2]].mean(0), tokens[1, 4]],
        rtol=1e-6,
    )


def test_bad_window_ratios_raise():
    with pytest.raises(ValueError, match="window sides"):
        mixing.sample_window_side(jax.random.PRNGKey(0), 2, 0.25, 0.75)
