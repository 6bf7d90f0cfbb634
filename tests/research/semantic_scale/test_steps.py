"""The training step of every method: class weights by rule (none / effective number / DRW /
DSB), the DSB pool and weights inside the data-parallel step, the LDAM-DRW schedule."""

import jax
import numpy as np
import pytest

from models.classifiers import make_classifier
from research.semantic_scale import losses, steps
from research.training.parallel import DATA_AXIS, data_mesh, make_train_step, shard_batch

COUNTS = np.array([40, 20, 10, 5])
DSB = steps.DSBOptions(pool_size=8, every=2)


def _setup(method, num_devices, reweight_step=2):
    model = make_classifier("small_cnn", 4, widths=(4,), feature_dim=8, bn_axis_name=DATA_AXIS,
                            normed_head=steps.METHODS[method].normed_head)  # fmt: skip
    optimizer = steps.make_optimizer(steps.TrainOptions(lr=0.05, warmup_epochs=1), 10)
    state = steps.init_state(model, method, (8, 8, 1), 4, optimizer, DSB, jax.random.PRNGKey(0))
    loss_fn = steps.make_loss_fn(model, method, COUNTS, steps.LossOptions(), DSB, reweight_step)
    mesh = data_mesh(jax.local_devices()[:num_devices])
    return state, make_train_step(loss_fn, optimizer, mesh, with_model_state=True), mesh


def _batches(n):
    rng = np.random.default_rng(0)
    return [
        {
            "images": rng.normal(size=(8, 8, 8, 1)).astype(np.float32),
            "labels": rng.integers(0, 4, 8).astype(np.int32),
        }  # fmt: skip
        for _ in range(n)
    ]


def test_dsb_step_keeps_one_pool_on_four_devices_equal_to_one_device():
    """With synchronised BatchNorm and the gathered features, 4 devices hold the pool and
    weights 1 device computes on the whole batch."""
    batches = _batches(5)
    final = {}
    for devices in (1, 4):
        state, step, mesh = _setup("dsb_ce", devices)
        ratios = []
        for b in batches:
            state, metrics = step(state, shard_batch(b, mesh))
            ratios.append(float(metrics["weight_ratio"]))
        final[devices] = jax.device_get(state)
        assert ratios[:2] == [1.0, 1.0] and ratios[2] > 1.0  # equal weights before step 2
    one, four = final[1].model_state, final[4].model_state
    labels = np.concatenate([b["labels"] for b in batches])
    np.testing.assert_array_equal(
        one["pool"].count, np.minimum(np.bincount(labels, minlength=4), 8)
    )
    np.testing.assert_array_equal(one["pool"].count, four["pool"].count)
    np.testing.assert_allclose(one["pool"].features, four["pool"].features, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(one["scale_weights"], four["scale_weights"], rtol=1e-4)
    assert float(np.mean(one["scale_weights"])) == pytest.approx(1.0, rel=1e-5)
    assert int(one["step"]) == 5 and "batch_stats" in one


@pytest.mark.parametrize(
    "method, before, after",
    [("ce", 1.0, 1.0), ("cb", "effective", "effective"), ("ldam_drw", 1.0, "effective")],
)
def test_class_weights_follow_each_methods_rule(method, before, after):
    effective = losses.effective_number_weights(COUNTS, 0.9999)
    expect = {1.0: 1.0, "effective": float(effective.max() / effective.min())}
    state, step, mesh = _setup(method, 1, reweight_step=1)
    ratios = []
    for b in _batches(2):
        state, metrics = step(state, shard_batch(b, mesh))
        ratios.append(float(metrics["weight_ratio"]))
    np.testing.assert_allclose(ratios, [expect[before], expect[after]], rtol=1e-5)


def test_every_method_takes_a_finite_step():
    for method in steps.METHODS:
        state, step, mesh = _setup(method, 1)
        state, metrics = step(state, shard_batch(_batches(1)[0], mesh))
        assert np.isfinite(float(metrics["loss"])), method


def test_ldam_drw_schedule():
    t = steps.TrainOptions(lr=0.1, warmup_epochs=5, decay_epochs=(160, 180))
    lr = steps.learning_rate(t, steps_per_epoch=10)
    got = [float(lr(s)) for s in (0, 24, 49, 50, 1599, 1600, 1799, 1800, 1999)]
    want = [0.002, 0.05, 0.1, 0.1, 0.1, 1e-3, 1e-3, 1e-5, 1e-5]
    np.testing.assert_allclose(got, want, rtol=1e-5)
