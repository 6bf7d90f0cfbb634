"""IoU, recall and mIoU on hand-made spans; top-k span decoding; index -> seconds."""

import jax.numpy as jnp
import numpy as np
import pytest

from research.ssrn import metrics


def test_temporal_iou_by_hand():
    pred = np.array([[0.0, 10.0], [5.0, 15.0], [20.0, 30.0], [2.0, 2.0]])
    gt = np.array([0.0, 10.0])
    np.testing.assert_allclose(metrics.temporal_iou(pred, gt), [1.0, 5 / 15, 0.0, 0.0])


def test_recall_and_miou_by_hand():
    gt = np.array([[0.0, 10.0], [0.0, 10.0]])
    pred = np.zeros((2, 5, 2))
    pred[0, :, :] = [20.0, 30.0]
    pred[0, 0] = [0.0, 6.0]  # IoU 0.6: counts at 0.3 and 0.5, not 0.7
    pred[1, :, :] = [20.0, 30.0]
    pred[1, 3] = [1.0, 10.0]  # IoU 0.9, but only 4th: R@5 not R@1
    out = metrics.grounding_metrics(pred, gt)
    assert out["r1_iou0.3"] == 50.0 and out["r1_iou0.5"] == 50.0 and out["r1_iou0.7"] == 0.0
    assert out["r5_iou0.7"] == 50.0 and out["r5_iou0.5"] == 100.0
    assert out["miou"] == pytest.approx(100 * (0.6 + 0.0) / 2)


def test_grounding_metrics_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"pred \[Q, k, 2\]"):
        metrics.grounding_metrics(np.zeros((3, 2)), np.zeros((3, 2)))


def test_top_k_spans_orders_respects_end_after_start_max_len_and_mask():
    n = 6
    start = jnp.log(jnp.array([[0.05, 0.6, 0.05, 0.1, 0.1, 0.1]]))
    end = jnp.log(jnp.array([[0.5, 0.05, 0.05, 0.3, 0.05, 0.05]]))
    mask = jnp.array([[True] * 5 + [False]])
    spans, scores = metrics.top_k_spans(start, end, mask, k=n * n, max_len=3)
    spans, scores = np.asarray(spans[0]), np.asarray(scores[0])
    allowed = scores > -1
    # brute force over the allowed spans: i <= j < i + 3, both real (positions 0..4)
    p_s = np.array([0.05, 0.6, 0.05, 0.1, 0.1]) / 0.9
    p_e = np.array([0.5, 0.05, 0.05, 0.3, 0.05]) / 0.95
    expected = sorted(
        ((p_s[i] * p_e[j], i, j) for i in range(5) for j in range(i, min(5, i + 3))), reverse=True
    )
    assert allowed.sum() == len(expected)
    np.testing.assert_allclose(scores[: len(expected)], [e[0] for e in expected], rtol=1e-5)
    assert tuple(spans[0]) == (expected[0][1], expected[0][2]) == (1, 3)
    assert all(i <= j < i + 3 and j < 5 for i, j in spans[allowed])


def test_spans_to_seconds_window_and_refined():
    spans = jnp.array([[[2, 5]]])
    duration, n = jnp.array([40.0]), jnp.array([8.0])  # windows of 5 s
    p = jnp.zeros((1, 8))
    p_start = p.at[0, 2].set(0.5).at[0, 3].set(0.5)  # boundary halfway between windows 2 and 3
    p_end = p.at[0, 5].set(1.0)
    window = metrics.spans_to_seconds(spans, p_start, p_end, duration, n, refine=False)
    np.testing.assert_allclose(window[0, 0], [10.0, 30.0])
    refined = metrics.spans_to_seconds(spans, p_start, p_end, duration, n, refine=True)
    np.testing.assert_allclose(refined[0, 0], [(2.5 + 0.5) * 5, (5 + 0.5) * 5])


def test_refined_boundary_at_the_first_window_counts_it_once():
    spans = jnp.array([[[0, 0]]])
    p = jnp.zeros((1, 4)).at[0, 0].set(0.8).at[0, 1].set(0.2)
    out = metrics.spans_to_seconds(spans, p, p, jnp.array([4.0]), jnp.array([4.0]), refine=True)
    np.testing.assert_allclose(out[0, 0], [0.2 + 0.5, 0.2 + 0.5], rtol=1e-6)
