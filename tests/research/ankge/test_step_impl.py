"""Stage 1's step with each `step_impl` against the reference, float32 on the CPU: loss and
gradients of `make_loss_fn`, and the parameters after 10 Adam steps of `make_base_step`, for all
four scorers, negatives per positive and shared by groups.

Only tails are corrupted in this codebase: head-batch negatives are the tail negatives of the
reversed triples (relation ids R..2R-1 from `add_reverse`), so the batches hold both halves."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs.ankge import get_config
from models.kge import MODELS, KGEModel
from research.ankge import config_rules, train_base
from research.ankge.train_base import BaseRecipe
from research.training import identity
from research.training.parallel import data_mesh, replicate, shard_batch
from research.training.train_state import TrainState

B, N, STEPS = 8, 6, 10


def _setup(name, groups):
    model = KGEModel(name, num_entities=31, num_relations=6, dim=4, gamma=6.0)
    key = jax.random.PRNGKey(1)
    params = model.init(key)
    params = jax.tree.map(
        lambda x: x + 0.2 * jax.random.normal(jax.random.fold_in(key, x.size), x.shape), params
    )
    rng = np.random.default_rng(0)
    triples = np.stack(
        [
            rng.integers(0, 31, (STEPS, B)),
            np.tile(np.arange(B) % 6, (STEPS, 1)),  # forward (0..2) and reversed (3..5) relations
            rng.integers(0, 31, (STEPS, B)),
        ],
        -1,
    ).astype(np.int32)
    weight = rng.uniform(0.2, 1.0, (STEPS, B)).astype(np.float32)
    recipe = BaseRecipe(batch_size=B, num_negatives=N, lr=1e-2, negative_groups=groups)
    return model, params, {"triples": triples, "weight": weight}, recipe


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("groups", [0, 2])
def test_fused_steps_equal_the_reference(name, groups):
    model, params, batches, recipe = _setup(name, groups)
    first = jax.tree.map(lambda x: x[0], batches)
    rng = jax.random.PRNGKey(5)
    mesh = data_mesh()
    results = {}
    for impl in ("reference", "fused", "checkpoint"):
        r = dataclasses.replace(recipe, step_impl=impl)
        loss_fn = train_base.make_loss_fn(model, r)
        (loss, aux), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params, first, rng)
        step = train_base.make_base_step(model, r, mesh, STEPS)
        own = jax.tree.map(jnp.copy, params)  # the step donates its input buffers
        state = TrainState.create(own, train_base.make_optimizer(r), jnp.copy(rng))
        state, metrics = step(
            replicate(state, mesh), shard_batch(batches, mesh, steps_per_call=STEPS)
        )
        results[impl] = (loss, aux, grads, jax.device_get(state.params), metrics["loss"])
    ref = results.pop("reference")
    assert np.isfinite(ref[0]) and ref[4] != ref[0]  # the loss moved over the 10 steps
    for impl, got in results.items():
        np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, err_msg=impl)
        for k in ref[1]:
            np.testing.assert_allclose(got[1][k], ref[1][k], rtol=1e-5, err_msg=f"{impl} {k}")
        for k in ref[2]:
            np.testing.assert_allclose(
                got[2][k], ref[2][k], rtol=1e-5, atol=1e-7, err_msg=f"{impl} grad {k}"
            )
        for k in ref[3]:  # Adam normalises the steps: compare with an absolute tolerance
            np.testing.assert_allclose(
                got[3][k], ref[3][k], rtol=1e-5, atol=1e-5, err_msg=f"{impl} params {k}"
            )
        np.testing.assert_allclose(got[4], ref[4], rtol=1e-5, err_msg=f"{impl} loss at 10")


def test_auto_is_the_reference_on_a_cpu_and_fused_elsewhere():
    assert train_base.resolve_step_impl("auto", "cpu") == "reference"
    assert train_base.resolve_step_impl("auto", "gpu") == "checkpoint"
    assert train_base.resolve_step_impl("checkpoint", "gpu") == "checkpoint"
    with pytest.raises(ValueError, match="unknown step_impl 'pallas'"):
        train_base.resolve_step_impl("pallas")


def test_step_impl_is_validated_and_not_part_of_the_identity():
    config = get_config("tiny")
    config.base.step_impl = "fast"
    with pytest.raises(ValueError, match="config.base.step_impl = 'fast'.*must be one of"):
        config_rules.validate_config(config, num_devices=1)
    config.base.step_impl = "fused"
    config_rules.validate_config(config, num_devices=1)
    other = get_config("tiny")
    assert "base.step_impl" in identity.flatten(config.to_dict())
    assert identity.result_fields(config) == identity.result_fields(other)
    other.base.lr = 0.5  # a result field still counts
    assert identity.result_fields(config) != identity.result_fields(other)
