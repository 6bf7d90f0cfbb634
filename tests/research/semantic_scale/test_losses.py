"""Each loss and class-weight rule against a hand computation."""

import jax.numpy as jnp
import numpy as np
import pytest

from research.semantic_scale import losses

LOGITS = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]], np.float32)
LABELS = np.array([0, 2])


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_cross_entropy_focal_and_the_weighted_mean():
    p = _softmax(LOGITS.astype(np.float64))[np.arange(2), LABELS]
    ce = -np.log(p)
    np.testing.assert_allclose(losses.cross_entropy(LOGITS, LABELS), ce, rtol=1e-6)
    np.testing.assert_allclose(losses.focal(LOGITS, LABELS, 2.0), (1 - p) ** 2 * ce, rtol=1e-5)
    np.testing.assert_allclose(losses.focal(LOGITS, LABELS, 0.0), ce, rtol=1e-6)
    w = jnp.array([2.0, 1.0, 0.5])
    want = (2.0 * ce[0] + 0.5 * ce[1]) / 2.5  # PyTorch cross_entropy(weight=w)
    assert float(losses.weighted_mean(jnp.asarray(ce), LABELS, w)) == pytest.approx(want)


def test_ldam_margins_and_logits():
    counts = np.array([1000, 100, 10])
    m = losses.ldam_margins(counts, 0.5)
    raw = counts**-0.25
    np.testing.assert_allclose(m, 0.5 * raw / raw.max(), rtol=1e-6)
    assert m.argmax() == 2 and m.max() == pytest.approx(0.5)
    z = losses.ldam_logits(jnp.asarray(LOGITS), LABELS, jnp.asarray(m), 30.0)
    want = 30.0 * LOGITS.copy()
    want[0, 0] -= 30.0 * m[0]
    want[1, 2] -= 30.0 * m[2]
    np.testing.assert_allclose(z, want, rtol=1e-6)


def test_logit_adjustment_equals_balanced_softmax_at_tau_one():
    counts = np.array([500, 50, 5])
    prior = losses.log_prior(counts)
    np.testing.assert_allclose(np.exp(prior), counts / counts.sum(), rtol=1e-6)
    la = losses.cross_entropy(losses.adjusted_logits(LOGITS, prior, 1.0), LABELS)
    bs = losses.cross_entropy(losses.adjusted_logits(LOGITS, np.log(counts)), LABELS)
    np.testing.assert_allclose(la, bs, rtol=1e-5)
    # Rare classes are penalised during training: the adjusted loss of a rare label is larger.
    assert float(la[1]) > float(losses.cross_entropy(LOGITS, LABELS)[1])


def test_effective_number_and_scale_weights():
    counts = np.array([1000, 100, 10])
    w = losses.effective_number_weights(counts, 0.9999)
    raw = (1 - 0.9999) / (1 - 0.9999 ** counts.astype(float))
    np.testing.assert_allclose(w, 3 * raw / raw.sum(), rtol=1e-5)
    np.testing.assert_allclose(losses.effective_number_weights(counts, 0.0), 1.0)
    s = jnp.array([4.0, 2.0, 1.0])
    sw = losses.scale_weights(s, 1.0, 0.05)
    np.testing.assert_allclose(sw, np.array([0.25, 0.5, 1.0]) / np.mean([0.25, 0.5, 1.0]), 1e-6)
    assert float(jnp.mean(sw)) == pytest.approx(1.0)
    # A class with S = 0 is floored at floor x max S: its weight is bounded.
    floored = losses.scale_weights(jnp.array([4.0, 0.0]), 1.0, 0.25)
    np.testing.assert_allclose(floored, np.array([0.25, 1.0]) / 0.625, rtol=1e-6)
    np.testing.assert_allclose(losses.scale_weights(jnp.zeros(3), 1.0, 0.1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="positive counts"):
        losses.log_prior(np.array([3, 0]))
