"""Stage 1: training a base KGE model with self-adversarial negative sampling.

The recipe of the RotatE / AnKGE code: every training triple also appears reversed
(`research.datasets.kg.add_reverse`), negatives are uniformly corrupted tails drawn on the device
(`num_negatives` per positive, not filtered against true triples: with tens of thousands of
entities a drawn negative is a true tail with probability ~1e-4), the loss is

    L = (sum_b w_b * -log sigmoid(s_b) + sum_b w_b * sum_n p_bn * -log sigmoid(-s_bn))
        / (2 sum_b w_b),   p_bn = softmax_n(alpha_adv * s_bn)  (no gradient through p)

with `w_b = 1 / sqrt(count(h, r) + count(t, r^-1))` (counts over the training triples, starting
at 4; the RotatE "subsampling weight") when `subsampling` is on, else 1. Adam, learning rate
x0.1 after half of the steps. `steps_per_call` steps run inside one jitted call (`lax.scan`)
with the state's buffers donated (`research.training.parallel.make_train_step`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from models.kge import NEGATIVE_IMPLS, KGEModel, negative_distances, small_params
from research.datasets.batching import EpochBatches
from research.datasets.kg import pair_counts, pair_key
from research.training import identity
from research.training.parallel import make_train_step


@dataclasses.dataclass(frozen=True)
class BaseRecipe:
    """Stage-1 settings (`--config.base.*`, names of the official scripts); the defaults are the
    official WN18RR RotatE recipe."""

    batch_size: int = 512
    num_negatives: int = 1024
    lr: float = 5e-5
    alpha_adv: float = 0.5
    num_steps: int = 80_000  # the loop rounds it up to whole calls of steps_per_call
    subsampling: bool = True
    # 0: every positive draws its own negatives (official). g > 0: each device's batch is split
    # into g groups whose positives share one draw of num_negatives tails (DGL-KE style "chunked"
    # negatives): each positive still sees num_negatives uniform negatives, but the gradient
    # scatters num_negatives rows per group instead of per positive, which is far cheaper.
    negative_groups: int = 0
    decay_at: float = 0.5  # fraction of num_steps after which lr is multiplied by decay
    decay: float = 0.1
    eval_every: int = 10_000  # validation MRR for the training curve (0: only at the end)
    # how the negatives' distances and gradients are computed (`models.kge.negative_distances`):
    # "auto" = "reference" on a CPU (its looped VJP is the fast one there), "checkpoint"
    # elsewhere (6.1 ms per official WN18RR RotatE step on an H200 against 9.2 ms for "fused":
    # research/ankge/README.md); or one of STEP_IMPLS by name. Equal results up to float
    # rounding: not part of the run's identity, so a run may resume under another impl.
    step_impl: str = "auto"


STEP_IMPLS = ("auto", *NEGATIVE_IMPLS)
# Performance only: every impl gives the same results up to float rounding, so the field is left
# out of the run identity (a checkpoint written with one impl resumes with another).
identity.reevaluated_by_the_code("base.step_impl")


def resolve_step_impl(impl: str, backend: str | None = None) -> str:
    """The `negative_distances` impl of `BaseRecipe.step_impl` on `backend` (default: JAX's)."""
    if impl not in STEP_IMPLS:
        raise ValueError(f"unknown step_impl {impl!r}; expected one of {STEP_IMPLS}")
    if impl != "auto":
        return impl
    return "reference" if (backend or jax.default_backend()) == "cpu" else "checkpoint"


def subsampling_weights(triples: np.ndarray, num_relations: int, start: int = 4) -> np.ndarray:
    """RotatE subsampling weights [N] float32 of reverse-augmented triples `triples` [N, 3]
    (relations 0..num_relations-1 with inverse `(r + R/2) mod R`): `1 / sqrt(cnt(h, r) +
    cnt(t, r^-1))`, counts over `triples` plus `start`."""
    half = num_relations // 2
    keys, counts = pair_counts(triples[:, 0], triples[:, 1], num_relations)
    inv = (triples[:, 1] + half) % num_relations

    def cnt(a, b):
        q = pair_key(a, b, num_relations)
        pos = np.clip(np.searchsorted(keys, q), 0, len(keys) - 1)
        return np.where(keys[pos] == q, counts[pos], 0) + start

    total = cnt(triples[:, 0], triples[:, 1]) + cnt(triples[:, 2], inv)
    return (1.0 / np.sqrt(total)).astype(np.float32)


def make_optimizer(recipe: BaseRecipe) -> optax.GradientTransformation:
    boundary = max(1, int(recipe.num_steps * recipe.decay_at))
    schedule = optax.piecewise_constant_schedule(recipe.lr, {boundary: recipe.decay})
    return optax.adam(schedule)


def self_adversarial_loss(
    pos_score: jax.Array, neg_score: jax.Array, weight: jax.Array, alpha_adv: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """pos_score [B], neg_score [B, N], weight [B] -> (loss, {positive_loss, negative_loss})."""
    adv = jax.lax.stop_gradient(jax.nn.softmax(alpha_adv * neg_score, axis=-1))
    neg = -jnp.sum(adv * jax.nn.log_sigmoid(-neg_score), axis=-1)
    pos = -jax.nn.log_sigmoid(pos_score)
    wsum = jnp.sum(weight)
    pos_loss, neg_loss = jnp.sum(weight * pos) / wsum, jnp.sum(weight * neg) / wsum
    return (pos_loss + neg_loss) / 2, {"positive_loss": pos_loss, "negative_loss": neg_loss}


def make_loss_fn(model: KGEModel, recipe: BaseRecipe):
    """`loss_fn(params, batch, rng)` for `make_train_step`; batch {"triples" [b, 3] int32,
    "weight" [b] float32}; negatives [g, num_negatives] drawn from `rng` on the device (g = b,
    or `negative_groups`), scored by `negative_distances` with `recipe.step_impl` (resolved
    for the default backend when the loss is built).

    Only tails are corrupted: head-batch negatives are the tail negatives of the reversed
    triples (h, r, t) -> (t, r^-1, h) that `add_reverse` adds to the training set."""
    impl = resolve_step_impl(recipe.step_impl)

    def loss_fn(params, batch, rng):
        triples, weight = batch["triples"], batch["weight"]
        b = triples.shape[0]
        g = recipe.negative_groups or b
        if b % g:
            raise ValueError(
                f"per-device batch {b} is not divisible by negative_groups={g} (batch_size / "
                "devices must be a multiple of negative_groups)"
            )
        ent, rel = params["entity"], params["relation"]
        neg = jax.random.randint(rng, (g, recipe.num_negatives), 0, model.num_entities, jnp.int32)
        q = model.query(params, ent[triples[:, 0]][:, None, :], rel[triples[:, 1]][:, None, :])
        pos_d = model.match(params, q, model.tail(ent[triples[:, 2]])[:, None, :])[:, 0]
        grouped = jax.tree.map(lambda x: x.reshape((g, b // g, x.shape[-1])), q)
        neg_d = negative_distances(
            model, small_params(params), grouped, ent, neg, impl=impl
        )  # [g, b/g, N]
        neg_d = neg_d.reshape(b, recipe.num_negatives)
        return self_adversarial_loss(
            model.gamma - pos_d, model.gamma - neg_d, weight, recipe.alpha_adv
        )

    return loss_fn


def make_base_step(
    model: KGEModel, recipe: BaseRecipe, mesh: jax.sharding.Mesh, steps_per_call: int
):
    """The jitted data-parallel step (`steps_per_call` optimizer steps per call)."""
    return make_train_step(
        make_loss_fn(model, recipe), make_optimizer(recipe), mesh, steps_per_call=steps_per_call
    )


def base_batches(
    triples: np.ndarray,
    weights: np.ndarray,
    batch_size: int,
    *,
    seed: int,
    steps_per_call: int,
    rows: slice = slice(None),
) -> EpochBatches:
    """`step -> {"triples": [K, B, 3] int32, "weight": [K, B] float32}` for the call starting at
    `step` (epoch-shuffled, last partial batch dropped; `rows` of each batch only; see
    research/datasets/batching.py)."""
    tables = {"triples": triples.astype(np.int32), "weight": weights.astype(np.float32)}
    return EpochBatches(tables, batch_size, seed=seed, steps_per_call=steps_per_call, rows=rows)
