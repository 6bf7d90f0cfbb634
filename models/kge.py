"""Knowledge-graph embedding scorers (TransE, RotatE, HAKE, PairRE) as pure functions of tables.

Every model splits its distance `d(h, r, t)` (score = gamma - d, as in the RotatE / AnKGE code)
into a query part computed once per `(h, r)` and a cheap per-tail part, so a batch of queries is
scored against many tails by broadcasting without materialising more than the fused reduction:

    q = model.query(params, h_emb, r_emb)        # leaves [..., 1, D] (or [..., D])
    d = model.match(params, q, model.tail(t_emb))  # tails [..., N, D] -> [..., N]

`h_emb, r_emb, t_emb` are rows of the tables (`params["entity"]`, `params["relation"]`), possibly
already transformed (AnKGE feeds analogy-function outputs). Shapes broadcast like numpy.

Formulas (official code, `embedding_range = (gamma + 2) / dim`):
  TransE   d = ||h + r - t||_1
  RotatE   h, t in C^dim as [re | im]; r is a phase, theta = r / (range / pi);
           d = sum_k |h_k e^{i theta_k} - t_k|
  HAKE     h = [phase | modulus], r = [phase | modulus | bias], with |r_m| and bias clamped to
           <= 1 and >= -|r_m|; d = w_p sum_k |sin((h_p + r_p - t_p) / 2)|
           + w_m ||h_m (|r_m| + b) - t_m (1 - b)||_2 (phases scaled by pi / range, learnable w)
  PairRE   d = ||h/|h| * r_h - t/|t| * r_t||_1, r = [r_h | r_t]
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

MODELS = ("transe", "rotate", "hake", "pairre")
PI = 3.14159265358979323846
Params = dict[str, jax.Array]


@jax.custom_jvp
def safe_sqrt(x: jax.Array) -> jax.Array:
    """`sqrt(x)` for x >= 0 whose derivative at 0 is 0 instead of inf.

    Every modulus here is `safe_sqrt(sum of squares)`. At a zero difference (a self-loop
    triple (h, r, h) whose RotatE phase is 0 in some coordinate) the true derivative of the
    norm is undefined and autodiff of `jnp.sqrt` gives inf * 0 = NaN, which Adam then spreads
    to every entity row; 0 is a subgradient of the norm there. Values are `jnp.sqrt`'s.
    """
    return jnp.sqrt(x)


@safe_sqrt.defjvp
def _safe_sqrt_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    y = jnp.sqrt(x)
    positive = x > 0
    return y, jnp.where(positive, dx / (2 * jnp.where(positive, y, 1)), 0)


def _l2_norm(x: jax.Array) -> jax.Array:
    """`||x||_2` over the last axis (keepdims) with a zero gradient at x = 0."""
    return safe_sqrt(jnp.sum(x * x, axis=-1, keepdims=True))


def _l2_normalize(x: jax.Array) -> jax.Array:
    # torch.nn.functional.normalize: x / max(||x||_2, 1e-12)
    return x / jnp.maximum(_l2_norm(x), 1e-12)


def transe_distance(h: jax.Array, r: jax.Array, t: jax.Array) -> jax.Array:
    """`||h + r - t||_1` over the last axis. h, r, t: [..., dim] (broadcast)."""
    return jnp.sum(jnp.abs((h + r) - t), axis=-1)


def rotate_distance(h: jax.Array, r: jax.Array, t: jax.Array, embedding_range: float) -> jax.Array:
    """RotatE: h, t [..., 2 dim] as [re | im], r [..., dim] phases -> [...]."""
    return _rotate_match(_rotate_query(h, r, embedding_range), t)


def hake_distance(
    h: jax.Array,
    r: jax.Array,
    t: jax.Array,
    embedding_range: float,
    phase_weight: jax.Array | float,
    modulus_weight: jax.Array | float,
) -> jax.Array:
    """HAKE: h, t [..., 2 dim] as [phase | modulus]; r [..., 3 dim] as [phase | modulus | bias]."""
    q = _hake_query(h, r, embedding_range)
    return _hake_match(q, _hake_tail(t, embedding_range), phase_weight, modulus_weight)


def pairre_distance(h: jax.Array, r: jax.Array, t: jax.Array) -> jax.Array:
    """PairRE: h, t [..., dim] (L2-normalised here), r [..., 2 dim] as [r_h | r_t]."""
    return _pairre_match(_pairre_query(h, r), _l2_normalize(t))


def _rotate_query(h: jax.Array, r: jax.Array, embedding_range: float) -> dict[str, jax.Array]:
    re_h, im_h = jnp.split(h, 2, axis=-1)
    phase = r / (embedding_range / PI)
    re_r, im_r = jnp.cos(phase), jnp.sin(phase)
    return {"re": re_h * re_r - im_h * im_r, "im": re_h * im_r + im_h * re_r}


def _rotate_match(q: dict[str, jax.Array], t: jax.Array) -> jax.Array:
    re_t, im_t = jnp.split(t, 2, axis=-1)
    re, im = q["re"] - re_t, q["im"] - im_t
    return jnp.sum(safe_sqrt(re * re + im * im), axis=-1)


def _hake_query(h: jax.Array, r: jax.Array, embedding_range: float) -> dict[str, jax.Array]:
    phase_h, mod_h = jnp.split(h, 2, axis=-1)
    phase_r, mod_r, bias_r = jnp.split(r, 3, axis=-1)
    scale = embedding_range / PI
    mod_r = jnp.abs(mod_r)
    bias_r = jnp.minimum(bias_r, 1.0)
    bias_r = jnp.where(bias_r < -mod_r, -mod_r, bias_r)
    return {
        "phase": phase_h / scale + phase_r / scale,
        "mod": mod_h * (mod_r + bias_r),
        "tail_factor": 1.0 - bias_r,
    }


def _hake_tail(t: jax.Array, embedding_range: float) -> jax.Array:
    phase_t, mod_t = jnp.split(t, 2, axis=-1)
    return jnp.concatenate([phase_t / (embedding_range / PI), mod_t], axis=-1)


def _hake_match(q, t, phase_weight, modulus_weight) -> jax.Array:
    phase_t, mod_t = jnp.split(t, 2, axis=-1)
    phase = jnp.sum(jnp.abs(jnp.sin((q["phase"] - phase_t) / 2)), axis=-1) * phase_weight
    diff = q["mod"] - mod_t * q["tail_factor"]
    return phase + safe_sqrt(jnp.sum(diff * diff, axis=-1)) * modulus_weight


def _pairre_query(h: jax.Array, r: jax.Array) -> dict[str, jax.Array]:
    r_h, r_t = jnp.split(r, 2, axis=-1)
    return {"hr": _l2_normalize(h) * r_h, "r_t": r_t}


def _pairre_match(q: dict[str, jax.Array], t: jax.Array) -> jax.Array:
    return jnp.sum(jnp.abs(q["hr"] - t * q["r_t"]), axis=-1)


@dataclasses.dataclass(frozen=True)
class KGEModel:
    """One base model's sizes and hyperparameters; the parameters live in a separate pytree.

    Attributes:
      name: one of MODELS.
      num_entities: E.
      num_relations: relation embeddings (2R when reverse triples are used).
      dim: the `hidden_dim` of the official code (complex dimension for RotatE).
      gamma: the margin in `score = gamma - d`.
    """

    name: str
    num_entities: int
    num_relations: int
    dim: int
    gamma: float
    epsilon: float = 2.0

    def __post_init__(self):
        if self.name not in MODELS:
            raise ValueError(f"unknown KGE model {self.name!r}; expected one of {MODELS}")
        if self.dim < 1 or self.num_entities < 1 or self.num_relations < 1:
            raise ValueError(f"KGEModel sizes must be positive, got {self}")

    @property
    def embedding_range(self) -> float:
        return (self.gamma + self.epsilon) / self.dim

    @property
    def entity_dim(self) -> int:
        return {"transe": 1, "rotate": 2, "hake": 2, "pairre": 1}[self.name] * self.dim

    @property
    def relation_dim(self) -> int:
        return {"transe": 1, "rotate": 1, "hake": 3, "pairre": 2}[self.name] * self.dim

    def init(self, key: jax.Array) -> Params:
        """Official initialisation: uniform(-range, range); HAKE moduli 1, biases 0."""
        ke, kr = jax.random.split(key)
        a = self.embedding_range
        params = {
            "entity": jax.random.uniform(
                ke, (self.num_entities, self.entity_dim), jnp.float32, -a, a
            ),
            "relation": jax.random.uniform(
                kr, (self.num_relations, self.relation_dim), jnp.float32, -a, a
            ),
        }
        if self.name == "hake":
            d = self.dim
            rel = params["relation"]
            params["relation"] = rel.at[:, d : 2 * d].set(1.0).at[:, 2 * d :].set(0.0)
            params["phase_weight"] = jnp.full((), 0.5 * a, jnp.float32)
            params["modulus_weight"] = jnp.full((), 1.0, jnp.float32)
        return params

    def query(self, params: Params, h: jax.Array, r: jax.Array) -> Any:
        """The per-(h, r) part of the distance (a pytree broadcastable against `tail(t)`)."""
        if self.name == "transe":
            return {"hr": h + r}
        if self.name == "rotate":
            return _rotate_query(h, r, self.embedding_range)
        if self.name == "hake":
            return _hake_query(h, r, self.embedding_range)
        return _pairre_query(h, r)

    def tail(self, t: jax.Array) -> jax.Array:
        """Tail embeddings as `match` expects them (HAKE phases scaled, PairRE normalised)."""
        if self.name == "hake":
            return _hake_tail(t, self.embedding_range)
        if self.name == "pairre":
            return _l2_normalize(t)
        return t

    def match(self, params: Params, q: Any, t: jax.Array) -> jax.Array:
        """Distance between queries `q` and prepared tails `t` (broadcast), summed over the
        last axis."""
        if self.name == "transe":
            return jnp.sum(jnp.abs(q["hr"] - t), axis=-1)
        if self.name == "rotate":
            return _rotate_match(q, t)
        if self.name == "hake":
            return _hake_match(q, t, params["phase_weight"], params["modulus_weight"])
        return _pairre_match(q, t)

    def query_vector(self, params: Params, q: Any) -> jax.Array:
        """The query as one vector (the official `score_func(h, r)` without a tail; AnKGE's
        triple-level analogy target): TransE h + r, RotatE [re | im] of h o r, HAKE
        [w_p |sin(phase / 2)| | w_m modulus part], PairRE h/|h| * r_h."""
        if self.name == "rotate":
            return jnp.concatenate([q["re"], q["im"]], axis=-1)
        if self.name == "hake":
            phase = jnp.abs(jnp.sin(q["phase"] / 2)) * params["phase_weight"]
            return jnp.concatenate([phase, q["mod"] * params["modulus_weight"]], axis=-1)
        return q["hr"]

    def distance(self, params: Params, h: jax.Array, r: jax.Array, t: jax.Array) -> jax.Array:
        """`d(h, r, t)` for embedding rows (broadcast): [...]."""
        return self.match(params, self.query(params, h, r), self.tail(t))

    def score(self, params: Params, h: jax.Array, r: jax.Array, t: jax.Array) -> jax.Array:
        """`gamma - d(h, r, t)`."""
        return self.gamma - self.distance(params, h, r, t)

    def score_ids(self, params: Params, triples: jax.Array) -> jax.Array:
        """Scores of id triples [..., 3] -> [...]."""
        ent, rel = params["entity"], params["relation"]
        h, r, t = ent[triples[..., 0]], rel[triples[..., 1]], ent[triples[..., 2]]
        return self.score(params, h, r, t)

    def flops_per_pair(self) -> int:
        """Rough floating-point operations of one (query, tail) distance (for benchmarks)."""
        per = {"transe": 3, "rotate": 7, "hake": 9, "pairre": 4}[self.name]
        return per * self.dim * (2 if self.name == "rotate" else 1)


def small_params(params: Params) -> Params:
    """The parameters `match` reads besides the tables (HAKE's weights)."""
    return {k: v for k, v in params.items() if k not in ("entity", "relation")}


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def match_tails(model: KGEModel, small: Params, q: Any, tails: jax.Array) -> jax.Array:
    """Distances of G groups of M queries against N tails per group: q leaves [G, M, D'],
    prepared tails [G, N, D] -> [G, M, N]. `small` = the non-table parameters (HAKE weights).

    Same values as broadcasting `model.match(q[:, :, None], tails[:, None])`, but the gradient
    is a loop over the N tails (each step a [G, M, D] block) instead of autodiff of the
    broadcast: on a CPU, XLA's reductions of [G, M, N, D] gradients over the leading axes are
    10x slower than the loop, and the loop stores nothing of size G x M x N x D.
    """
    out = jax.lax.map(lambda tn: model.match(small, q, tn[:, None, :]), jnp.swapaxes(tails, 0, 1))
    return jnp.moveaxis(out, 0, -1)


def _match_tails_fwd(model, small, q, tails):
    out = jax.lax.map(lambda tn: model.match(small, q, tn[:, None, :]), jnp.swapaxes(tails, 0, 1))
    return jnp.moveaxis(out, 0, -1), (small, q, tails)


def _match_tails_bwd(model, res, g):
    small, q, tails = res

    def body(carry, x):
        tn, gn = x  # [G, D], [G, M]
        _, vjp = jax.vjp(lambda s, q, tn: model.match(s, q, tn[:, None, :]), small, q, tn)
        ds, dq, dtn = vjp(gn)
        return jax.tree.map(jnp.add, carry, (ds, dq)), dtn

    zeros = jax.tree.map(jnp.zeros_like, (small, q))
    (ds, dq), dt = jax.lax.scan(body, zeros, (jnp.swapaxes(tails, 0, 1), jnp.moveaxis(g, -1, 0)))
    return ds, dq, jnp.swapaxes(dt, 0, 1)


match_tails.defvjp(_match_tails_fwd, _match_tails_bwd)


NEGATIVE_IMPLS = ("reference", "fused", "checkpoint")


def _broadcast_negatives(model: KGEModel, small: Params, q: Any, entity: jax.Array, neg_ids):
    """q leaves [G, M, D'], entity [E, De], neg_ids [G, N] -> [G, M, N]: gather, tail
    preparation, broadcast distance and reduction in one expression (one XLA fusion forward)."""
    tails = model.tail(entity[neg_ids])  # [G, N, D]
    return model.match(small, jax.tree.map(lambda x: x[:, :, None, :], q), tails[:, None])


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused_negatives(model: KGEModel, small: Params, q: Any, entity: jax.Array, neg_ids):
    return _broadcast_negatives(model, small, q, entity, neg_ids)


def _fused_negatives_fwd(model, small, q, entity, neg_ids):
    # residuals: the inputs only (nothing of size [G, M, N, D] or [G, N, D] is kept)
    return _broadcast_negatives(model, small, q, entity, neg_ids), (small, q, entity, neg_ids)


def _fused_negatives_bwd(model, res, g):
    small, q, entity, neg_ids = res
    # the gather again, [G, N, D]; its VJP is the scatter-add of the row gradients into the
    # table (and, inside shard_map, the sum over the devices that a replicated table needs)
    tails, gather_vjp = jax.vjp(lambda e: model.tail(e[neg_ids]), entity)

    def match(s, q, t):
        return model.match(s, jax.tree.map(lambda x: x[:, :, None, :], q), t[:, None])

    _, match_vjp = jax.vjp(match, small, q, tails)
    ds, dq, dtails = match_vjp(g)  # dq: sum over the N tails; dtails: sum over the M queries
    (dentity,) = gather_vjp(dtails)  # dtails [G, N, D]: the one buffer of that size
    return ds, dq, dentity, None


_fused_negatives.defvjp(_fused_negatives_fwd, _fused_negatives_bwd)


def negative_distances(
    model: KGEModel,
    small: Params,
    q: Any,
    entity: jax.Array,
    neg_ids: jax.Array,
    *,
    impl: str = "reference",
) -> jax.Array:
    """Distances of G groups of M queries against N negative tails per group, gathered from the
    entity table inside: q leaves [G, M, D'] (`model.query`), entity [E, De] (the raw table),
    neg_ids [G, N] int -> [G, M, N]. `small` = `small_params` (HAKE's weights).

    The same values and gradients (with respect to small, q and the whole table) up to float
    rounding for every `impl` (NEGATIVE_IMPLS):
      reference   `match_tails` on the gathered tails: the gradient loops over the N tails
                  (fast on XLA:CPU, ~2,000 small sequential kernels per step on a GPU).
      fused       one broadcast expression (gather, tail preparation, distance, reduction: one
                  XLA fusion); a custom VJP keeps only the inputs and recomputes the gather
                  backward: dq reduced over N, the table gradient a scatter-add of the
                  [G, N, De] row gradients (the one buffer of that size).
      checkpoint  the broadcast expression under `jax.checkpoint`, differentiated by JAX (nothing
                  of size [G, M, N, D] is saved; the backward is XLA's own).
    """
    if impl == "reference":
        return match_tails(model, small, q, model.tail(entity[neg_ids]))
    if impl == "fused":
        return _fused_negatives(model, small, q, entity, neg_ids)
    if impl == "checkpoint":
        fn = jax.checkpoint(functools.partial(_broadcast_negatives, model))
        return fn(small, q, entity, neg_ids)
    raise ValueError(f"unknown negative_distances impl {impl!r}; expected one of {NEGATIVE_IMPLS}")


def _cols(x: jax.Array) -> jax.Array:
    return jnp.moveaxis(x, -1, 0)


def query_columns(model: KGEModel, q: Any) -> tuple:
    """Per-coordinate query parts, [K, ..., Q] each (K coordinates), of q leaves [..., Q, D']."""
    names = {"transe": ("hr",), "rotate": ("re", "im"), "hake": ("phase", "mod", "tail_factor")}
    return tuple(_cols(q[k]) for k in names.get(model.name, ("hr", "r_t")))


def tail_columns(model: KGEModel, t: jax.Array) -> tuple:
    """Per-coordinate tail parts, [K, ..., E] each, of prepared tails t [..., E, D]."""
    if model.name in ("rotate", "hake"):
        half = t.shape[-1] // 2
        return _cols(t[..., :half]), _cols(t[..., half:])
    return (_cols(t),)


def _coordinate_terms(model: KGEModel, qk: tuple, tk: tuple) -> tuple:
    """The summands of coordinate k (broadcast [Q, 1] x [1, E], or [Q] x [Q]): one per sum."""
    if model.name == "transe":
        return (jnp.abs(qk[0] - tk[0]),)
    if model.name == "rotate":
        re, im = qk[0] - tk[0], qk[1] - tk[1]
        return (safe_sqrt(re * re + im * im),)
    if model.name == "hake":
        diff = qk[1] - tk[1] * qk[2]
        return jnp.abs(jnp.sin((qk[0] - tk[0]) / 2)), diff * diff
    return (jnp.abs(qk[0] - tk[0] * qk[1]),)


def pairwise_match(
    model: KGEModel, small: Params, q: Any, tails: jax.Array, *, paired: bool = False
) -> jax.Array:
    """`model.match` of Q queries against E prepared tails, [..., Q, E], as a `lax.scan` over the
    embedding coordinates that adds one [..., Q, E] block of summands per coordinate.

    q: leaves [..., Q, D'] (`model.query` of [..., Q, .] rows); tails: [..., E, D]
    (`model.tail`), the same leading batch axes (none, or e.g. one block of candidates per row).
    paired=True: tails [Q, D], one per query -> [Q, 1], with the same additions in the same
    order (so a query's answer scored alone equals its entry in a block, bit for bit, which tie
    counting needs). XLA:CPU vectorises the broadcast [Q, E, D] reduction badly: the full
    filtered WN18RR evaluation at D = 500 became 2.3x (TransE) / 2.75x (RotatE) faster
    (research/ankge/README.md). Same values as `match` up to the summation order.
    """
    qcols, tcols = query_columns(model, q), tail_columns(model, tails)
    return match_columns(model, small, qcols, tcols, paired=paired)


def match_columns(
    model: KGEModel, small: Params, qcols: tuple, tcols: tuple, *, paired: bool = False
) -> jax.Array:
    """`pairwise_match` of `query_columns` [K, ..., Q] and `tail_columns` [K, ..., E] ->
    [..., Q, E] (paired: tail columns [K, Q] -> [Q, 1]). Callers that match many query blocks
    against one table transpose the table once and pass slices of its columns."""
    row = lambda x: x[..., :, None]  # [..., Q] -> [..., Q, 1]
    col = row if paired else (lambda x: x[..., None, :])  # [..., E] -> [..., 1, E]
    shape = (*qcols[0].shape[1:], 1 if paired else tcols[0].shape[-1])

    def body(sums, cols):
        qk, tk = cols
        terms = _coordinate_terms(model, tuple(map(row, qk)), tuple(map(col, tk)))
        return tuple(acc + term for acc, term in zip(sums, terms, strict=True)), None

    num_sums = 2 if model.name == "hake" else 1
    zeros = tuple(jnp.zeros(shape, tcols[0].dtype) for _ in range(num_sums))
    sums, _ = jax.lax.scan(body, zeros, (qcols, tcols))
    if model.name == "hake":
        return sums[0] * small["phase_weight"] + safe_sqrt(sums[1]) * small["modulus_weight"]
    return sums[0]
