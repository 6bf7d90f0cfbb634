"""The train state every experiment carries: parameters, optimizer state, step, RNG key and the
model's own state (BatchNorm statistics, a feature pool), if it has one."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """Everything a training run needs to continue exactly where it stopped.

    Attributes:
      step: int32 scalar, number of optimizer updates applied so far.
      params: parameter pytree.
      opt_state: optax state for `params`.
      rng: uint32 [2] raw PRNG key; per-step keys are `jax.random.fold_in(rng, step)`, so a
        resumed run draws the same randomness as an uninterrupted one.
      model_state: a pytree the step updates without gradients (BatchNorm statistics, a feature
        pool; `parallel.make_train_step(..., with_model_state=True)`), or None.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    model_state: Any = None

    @classmethod
    def create(
        cls,
        params: Any,
        optimizer: optax.GradientTransformation,
        rng: jax.Array,
        model_state: Any = None,
    ):
        """A fresh state at step 0. `rng` is a raw key (`jax.random.PRNGKey(seed)`)."""
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=optimizer.init(params),
            rng=jnp.asarray(rng, jnp.uint32),
            model_state=model_state,
        )

    def step_rng(self) -> jax.Array:
        """The key for the current step (deterministic in `step`)."""
        return jax.random.fold_in(self.rng, self.step)
