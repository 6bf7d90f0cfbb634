"""Stage 2: AnKGE's analogy functions, their training objective and the adaptive weights.

Analogy functions on the frozen base embeddings (official AnKnn):
    f_ent(h, r) = h * M_e[h] + beta * (r * M_r[r]) W        M_e, M_r ~ N(1, 0.1), W ~ N(0, 0.1)
    f_rel(r)    = r * M_r[r]
Per training triple and level l (entity, relation, triple), with the retrieved analogues
(`retriever.py`) averaged into a "virtual" target by softmax(-d):
    sim_l = ||f_l - virtual_l||_2,   dis_l = d(triple with f_l substituted),
    loss_l = -log sigmoid(-alpha * sim_l - dis_l)                        (alpha = 10)
    w_l = softmax(-[d_virtual_ent, d_virtual_rel, d_virtual_triple, d_base])_l   (no gradient)
    L = mean_b sum_l w_bl loss_bl
(`per_sample_level_weights=False` gives the official code's product of batch means,
mean_b(w_bl) * mean_b(loss_bl)). Score at test time, for a query (h, r) and candidate tail e:
    s = -d(h, r, e) + sum_l lambda_l * a_l(h, r, e) * (-d_l(e))
with the count-based adaptive weights of the training graph (official RevTestSampler)
    a_ent = min(1, #{h' : (h', r, e) in train} / ent_knn)
    a_rel = min(1, #{r' : (h, r', e) in train} / rel_knn)
    a_tri = min(1, #{(h', r') : (h', r', e) in train} / triple_knn).
The score, the ranking and the choice of the lambdas are in `scoring.py`; the stage-2 driver
(`train_ankge`) is in `train.py`. `AnKGEOptions` holds every stage-2 setting and its default.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from models.kge import KGEModel, Params, safe_sqrt
from research.ankge import retriever
from research.datasets.kg import pair_counts

LEVELS = ("ent", "rel", "triple")


@dataclasses.dataclass(frozen=True)
class AnKGEOptions:
    """Stage-2 settings (`--config.ankge.*`); the defaults are the official WN18RR RotatE ones."""

    enabled: bool = True  # False: stage 1 only
    # retrieval (`retriever.RetrievalSizes`): analogues per level, triple-level candidates
    ent_knn: int = 1
    rel_knn: int = 1
    triple_knn: int = 3
    triple_ent_knn: int = 1000
    triple_rel_knn: int = 5
    retrieval_chunk: int = 128  # training triples per retrieval block
    # analogy functions and their training
    beta: float = 0.0  # trans_alpha: 0 on WN18RR, 1 on FB15k-237
    alpha: float = 10.0
    per_sample_level_weights: bool = True  # False: the official batch-mean product
    regularization: float = 0.0  # weight of sum |x|^3 over the analogy parameters
    batch_size: int = 4096
    lr: float = 1e-3
    num_steps: int = 2000  # rounded up to whole calls of steps_per_call
    steps_per_call: int = 25
    log_every: int = 100
    # score lambdas (ent, rel, triple)
    ent_lambda: float = 0.1
    rel_lambda: float = 0.05
    triple_lambda: float = 0.1
    # lambdas chosen on validation: "v1,v2,..." (each level) or "e..;r..;t.." (per level); the
    # Cartesian product plus (0, 0, 0) (the base) and the lambdas above; "" = use those lambdas
    lambda_grid: str = ""
    lambda_valid_queries: int = 0  # valid queries (with reverses) for the grid; 0: all

    @property
    def retrieval_sizes(self) -> retriever.RetrievalSizes:
        return retriever.RetrievalSizes(
            self.ent_knn, self.rel_knn, self.triple_knn, self.triple_ent_knn, self.triple_rel_knn
        )

    @property
    def lambdas(self) -> tuple[float, float, float]:
        """The configured lambdas (ent, rel, triple)."""
        return (float(self.ent_lambda), float(self.rel_lambda), float(self.triple_lambda))


def init_analogy(model: KGEModel, key: jax.Array) -> Params:
    """M_e [E, De], M_r [num_rel, Dr] ~ N(1, 0.1); W [Dr, De] ~ N(0, 0.1)."""
    k1, k2, k3 = jax.random.split(key, 3)
    de, dr = model.entity_dim, model.relation_dim
    return {
        "ent_matrix": 1.0 + 0.1 * jax.random.normal(k1, (model.num_entities, de)),
        "rel_matrix": 1.0 + 0.1 * jax.random.normal(k2, (model.num_relations, dr)),
        "trans_matrix": 0.1 * jax.random.normal(k3, (dr, de)),
    }


def f_ent(base: Params, ank: Params, h: jax.Array, r: jax.Array, beta: float) -> jax.Array:
    """Entity-level analogy embedding of (h, r) ids [...] -> [..., De]."""
    out = base["entity"][h] * ank["ent_matrix"][h]
    if beta:
        out = out + beta * (f_rel(base, ank, r) @ ank["trans_matrix"])
    return out


def f_rel(base: Params, ank: Params, r: jax.Array) -> jax.Array:
    """Relation-level analogy embedding of r ids [...] -> [..., Dr]."""
    return base["relation"][r] * ank["rel_matrix"][r]


def _softmax_average(d: jax.Array, x: jax.Array) -> jax.Array:
    """sum_k softmax(-d)_k x_k: d [B, K], x [B, K, D] -> [B, D]."""
    return jnp.sum(jax.nn.softmax(-d, axis=-1)[..., None] * x, axis=1)


def analogy_loss(
    model: KGEModel,
    base: Params,
    ank: Params,
    batch: dict[str, jax.Array],
    *,
    alpha: float,
    beta: float,
    per_sample_level_weights: bool = True,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The AnKGE objective of one batch: triples [B, 3] and the retrieval ids of each triple
    (entity [B, ent_knn], relation [B, rel_knn], triple_entity / triple_relation [B, k3])."""
    base = jax.lax.stop_gradient(base)
    ent, rel = base["entity"], base["relation"]
    h, r, t = (batch["triples"][:, i] for i in range(3))
    he, re_, te = ent[h], rel[r], ent[t]
    dist = lambda a, b, c: model.distance(base, a, b, c)
    # virtual targets from the retrieved analogues (no gradient: base frozen)
    e_emb, r_emb = ent[batch["entity"]], rel[batch["relation"]]
    virt_ent = _softmax_average(dist(e_emb, re_[:, None], te[:, None]), e_emb)
    virt_rel = _softmax_average(dist(he[:, None], r_emb, te[:, None]), r_emb)
    te_emb, tr_emb = ent[batch["triple_entity"]], rel[batch["triple_relation"]]
    d_tri = dist(te_emb, tr_emb, te[:, None])
    virt_te, virt_tr = _softmax_average(d_tri, te_emb), _softmax_average(d_tri, tr_emb)
    virt_triple = model.query_vector(base, model.query(base, virt_te, virt_tr))
    # analogy outputs
    a_ent, a_rel = f_ent(base, ank, h, r, beta), f_rel(base, ank, r)
    a_triple = model.query_vector(base, model.query(base, a_ent, a_rel))
    norm = lambda x: safe_sqrt(jnp.sum(x * x, axis=-1))  # finite gradient at x = 0
    sim = (norm(a_ent - virt_ent), norm(a_rel - virt_rel), norm(a_triple - virt_triple))
    dis = (dist(a_ent, re_, te), dist(he, a_rel, te), dist(a_ent, a_rel, te))
    level = jnp.stack(
        [-jax.nn.log_sigmoid(-alpha * s - d) for s, d in zip(sim, dis, strict=True)], 1
    )
    w = jax.nn.softmax(
        -jnp.stack(
            [
                dist(virt_ent, re_, te),
                dist(he, virt_rel, te),
                dist(virt_te, virt_tr, te),
                dist(he, re_, te),
            ],
            axis=1,
        ),
        axis=1,
    )[:, :3]
    w = jax.lax.stop_gradient(w)
    if per_sample_level_weights:
        loss = jnp.mean(jnp.sum(w * level, axis=1))
    else:
        loss = jnp.sum(jnp.mean(w, axis=0) * jnp.mean(level, axis=0))
    aux = {f"{n}_loss": jnp.mean(level[:, i]) for i, n in enumerate(LEVELS)}
    aux.update({f"{n}_weight": jnp.mean(w[:, i]) for i, n in enumerate(LEVELS)})
    return loss, aux


@dataclasses.dataclass
class AdaptiveWeights:
    """Count-based weights from the (reverse-augmented) training triples.

    Attributes:
      ent: [num_rel, E] float32, a_ent(r, e).
      triple: [E] float32, a_tri(e).
      rel_keys, rel_counts: sorted int64 keys h * E + e and #{r'} of the (h, e) pairs.
    """

    ent: np.ndarray
    triple: np.ndarray
    rel_keys: np.ndarray
    rel_counts: np.ndarray


def adaptive_weights(
    train: np.ndarray, num_entities: int, num_relations: int, sizes: retriever.RetrievalSizes
) -> AdaptiveWeights:
    """`train` [N, 3]: reverse-augmented training triples (deduplicated here)."""
    train = np.unique(train, axis=0)
    ent = np.zeros((num_relations, num_entities), np.float32)
    np.add.at(ent, (train[:, 1], train[:, 2]), 1.0)
    triple = np.bincount(train[:, 2], minlength=num_entities).astype(np.float32)
    keys, counts = pair_counts(train[:, 0], train[:, 2], num_entities)
    return AdaptiveWeights(
        ent=np.minimum(1.0, ent / sizes.ent_knn),
        triple=np.minimum(1.0, triple / sizes.triple_knn),
        rel_keys=keys,
        rel_counts=np.minimum(1.0, counts / sizes.rel_knn).astype(np.float32),
    )


def relation_weight_lists(weights: AdaptiveWeights, heads: np.ndarray, num_entities: int):
    """Per query head: the entities e with a_rel(h, e) > 0 and the weights, padded ([Q, K]
    int32 with -1, [Q, K] float32)."""
    h_of_key = weights.rel_keys // num_entities
    lo = np.searchsorted(h_of_key, heads, side="left")
    hi = np.searchsorted(h_of_key, heads, side="right")
    width = max(int((hi - lo).max(initial=0)), 1)
    offs = np.arange(width)
    idx = np.minimum(lo[:, None] + offs, max(len(h_of_key) - 1, 0))
    valid = offs[None] < (hi - lo)[:, None]
    ids = np.where(valid, weights.rel_keys[idx] % num_entities, -1).astype(np.int32)
    vals = np.where(valid, weights.rel_counts[idx], 0.0).astype(np.float32)
    return ids, vals
