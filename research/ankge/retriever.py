"""AnKGE's analogical-object retriever from the frozen base model (official GetNearNeighbor).

For every (reverse-augmented) training triple (h, r, t), with the base distance d:
  entity level    the `ent_knn` entities e with the smallest d(e, r, t); t itself excluded, h not.
  relation level  the `rel_knn` relations r' with the smallest d(h, r', t) (r itself included).
  triple level    the `triple_knn` pairs (e, r') with the smallest d(e, r', t) among the top
                  `triple_ent_knn` entities of the entity level x the top `triple_rel_knn`
                  relations of the relation level.

The entity level depends on (r, t) only, so it is computed once per distinct (r, t): distances
to every entity over entity chunks on the device, then one `lax.top_k`. For TransE and RotatE,
d(e, r, t) is a distance between e and one vector per (r, t) (t - r, or t rotated by -r since
|e^{i theta}| = 1), so entities are matched against that vector without a per-pair rotation
(`models.kge.match_columns`, a scan over the embedding coordinates of the entity table,
transposed once); the triple level matches each triple's candidate entities against one such
vector per candidate relation. The other models evaluate d(e, r, t) directly. Results are
cached in an .npz file.

In a run of several processes (`research.training.distributed`) each process computes a
contiguous share of the blocks of each level and every process gathers all of them
(`distributed.share_of`, `distributed.gather`): the same ids as one process, in every process.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from models.kge import (
    PI,
    KGEModel,
    Params,
    match_columns,
    query_columns,
    small_params,
    tail_columns,
)
from research.training import distributed, workdir


@dataclasses.dataclass(frozen=True)
class RetrievalSizes:
    """Analogues kept per level, and the triple level's candidates (entities x relations).
    The configured values and their defaults: `analogy.AnKGEOptions.retrieval_sizes`."""

    ent_knn: int
    rel_knn: int
    triple_knn: int
    triple_ent_knn: int
    triple_rel_knn: int


@dataclasses.dataclass
class Retrieval:
    """Per training triple: entity [N, ent_knn], relation [N, rel_knn], triple_entity and
    triple_relation [N, triple_knn] int32 ids."""

    entity: np.ndarray
    relation: np.ndarray
    triple_entity: np.ndarray
    triple_relation: np.ndarray

    def save(self, path: str) -> None:
        np.savez(path, **dataclasses.asdict(self))

    @classmethod
    def load(cls, path: str) -> Retrieval:
        with np.load(path) as f:
            return cls(
                **{k: f[k] for k in ("entity", "relation", "triple_entity", "triple_relation")}
            )


MATCHES_HEADS = ("transe", "rotate")  # d(e, r, t) is a distance between e and a (r, t) vector
TRIPLE_ROWS = 2  # triples per step of the triple level: their candidates' columns stay in cache


def _head_query(model: KGEModel, params: Params, r: jax.Array, t: jax.Array) -> dict:
    """For TransE / RotatE, the `model.query`-like vector q(r, t) (leaves [..., D']) with
    d(e, r, t) = match(q, e) for every head e: t - r, or t rotated by -r."""
    ent, rel = params["entity"], params["relation"]
    if model.name == "transe":
        return {"hr": ent[t] - rel[r]}
    re_t, im_t = jnp.split(ent[t], 2, axis=-1)
    phase = rel[r] / (model.embedding_range / PI)
    c, s = jnp.cos(phase), jnp.sin(phase)  # t * e^{-i theta}
    return {"re": re_t * c + im_t * s, "im": im_t * c - re_t * s}


def entity_columns(model: KGEModel, params: Params, ec: int) -> tuple | None:
    """For TransE / RotatE, the entity table as `tail_columns` [K, E'] each, E' the entities
    padded (with the last one) to a multiple of `ec`; transposed once for all `entity_topk`
    calls. None for the other models."""
    if model.name not in MATCHES_HEADS:
        return None
    ent = params["entity"]
    pad = -ent.shape[0] % ec
    return tail_columns(model, jnp.concatenate([ent, jnp.repeat(ent[-1:], pad, axis=0)]))


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def entity_topk(
    model: KGEModel, k: int, ec: int, params: Params, columns: tuple | None, r, t
) -> tuple[jax.Array, jax.Array]:
    """The k entities e != t with the smallest d(e, r, t), nearest first: ids [P, k] int32 and
    distances [P, k], for P (r, t) pairs; `columns` = `entity_columns(model, params, ec)`.
    The distances are computed over entity chunks of `ec` (the running sums stay in cache),
    then ranked with one `top_k` over all entities (a running top-k over the chunks spent most
    of its time in the repeated `top_k`)."""
    num = model.num_entities
    ent, rel = params["entity"], params["relation"]
    if columns is not None:
        qcols = query_columns(model, _head_query(model, params, r, t))
    starts = jnp.arange(-(-num // ec), dtype=jnp.int32) * ec

    def chunk(start):  # d(e, r, t) [P, ec] for the entities start .. start + ec - 1
        if columns is None:
            ids = jnp.minimum(start + jnp.arange(ec, dtype=jnp.int32), num - 1)
            return model.distance(params, ent[ids][None], rel[r][:, None], ent[t][:, None])
        tcols = tuple(jax.lax.dynamic_slice_in_dim(c, start, ec, axis=1) for c in columns)
        return match_columns(model, small_params(params), qcols, tcols)

    d = jax.lax.map(chunk, starts)  # [C, P, ec]
    d = jnp.moveaxis(d, 0, 1).reshape(r.shape[0], -1)[:, :num]  # [P, num]
    d = jnp.where(jnp.arange(num)[None] == t[:, None], jnp.inf, d)
    neg, ids = jax.lax.top_k(-d, k)
    return ids.astype(jnp.int32), -neg


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def relation_topk(model: KGEModel, k: int, unused: int, params: Params, h, t):
    """The k relations r' with the smallest d(h, r', t): ids [P, k] int32 (all relations)."""
    ent, rel = params["entity"], params["relation"]
    d = model.distance(params, ent[h][:, None], rel[None], ent[t][:, None])  # [P, num_rel]
    return jax.lax.top_k(-d, k)[1].astype(jnp.int32)


@functools.partial(jax.jit, static_argnums=(0, 1))
def triple_topk(model: KGEModel, k: int, params: Params, ent_cand, rel_cand, t):
    """The k (e, r') pairs with the smallest d(e, r', t), e from ent_cand [P, Ke], r' from
    rel_cand [P, Kr]: (entity ids [P, k], relation ids [P, k])."""
    ent, rel = params["entity"], params["relation"]
    if model.name in MATCHES_HEADS:  # one query per (row, r'), matched against the row's Ke

        def rows(x):  # [G, Ke], [G, Kr], [G] -> d [G, Kr, Ke]
            e, r, t = x
            q = _head_query(model, params, r, t[:, None])  # leaves [G, Kr, D']
            # the gathered candidates transposed before the scan: fused into it, the transpose
            # became strided reads at every step (3x slower)
            cols = jax.lax.optimization_barrier(
                (query_columns(model, q), tail_columns(model, ent[e]))
            )
            return match_columns(model, small_params(params), *cols)

        p, g = ent_cand.shape[0], TRIPLE_ROWS if ent_cand.shape[0] % TRIPLE_ROWS == 0 else 1
        groups = (x.reshape(p // g, g, *x.shape[1:]) for x in (ent_cand, rel_cand, t))
        d = jax.lax.map(rows, tuple(groups)).reshape(p, *rel_cand.shape[1:], -1)
        d = jnp.swapaxes(d, 1, 2)  # [P, Kr, Ke] -> [P, Ke, Kr]
    else:
        tail = ent[t][:, None]

        def per_relation(r_col):  # [P] -> d [P, Ke]
            return model.distance(params, ent[ent_cand], rel[r_col][:, None], tail)

        d = jnp.moveaxis(jax.lax.map(per_relation, rel_cand.T), 0, -1)  # [P, Ke, Kr]
    d = d.reshape(ent_cand.shape[0], -1)  # [P, Ke * Kr], e major
    pos = jax.lax.top_k(-d, k)[1]
    kr = rel_cand.shape[1]
    e = jnp.take_along_axis(ent_cand, pos // kr, axis=1)
    r = jnp.take_along_axis(rel_cand, pos % kr, axis=1)
    return e, r


def _blocks(n: int, size: int, first: int = 0):
    for start in range(first, n, size):
        yield start, min(n, start + size)


def _my_rows(n: int, block: int) -> tuple[slice, int]:
    """The rows of `n` this process computes, in whole blocks of `block`, and the share size
    (`distributed.share_of`); all of them in a single-process run."""
    if distributed.is_multi_process():
        return distributed.share_of(n, multiple=block)
    return slice(0, n), n


def _joined(parts: list, size: int, n: int, width: int):
    """This process's blocks `parts` ([rows, width] each) as one array; in a run of several
    processes every process's shares gathered (`distributed.gather`): all `n` rows."""
    if not distributed.is_multi_process():
        return jnp.concatenate(parts)
    local = np.concatenate([np.asarray(p) for p in parts]) if parts else np.zeros((0, width))
    return distributed.gather(local.astype(np.int32), size, n)


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    return np.concatenate([x, np.repeat(x[-1:], size - len(x), axis=0)]) if len(x) < size else x


def retrieve(
    model: KGEModel,
    params: Params,
    triples: np.ndarray,
    sizes: RetrievalSizes,
    *,
    chunk: int = 128,
    entity_chunk: int = 4096,
) -> Retrieval:
    """Runs the three retrieval levels for `triples` [N, 3] (see the module docstring)."""
    n_ent, n_rel = model.num_entities, model.num_relations
    ke = max(sizes.ent_knn, sizes.triple_ent_knn)
    kr = max(sizes.rel_knn, sizes.triple_rel_knn)
    if ke > n_ent - 1 or kr > n_rel:
        raise ValueError(
            f"retrieval sizes {sizes} need {ke} entities (< {n_ent}) and {kr} relations "
            f"(<= {n_rel}); lower ankge.triple_ent_knn / ankge.triple_rel_knn"
        )
    if sizes.triple_knn > sizes.triple_ent_knn * sizes.triple_rel_knn:
        raise ValueError(f"triple_knn {sizes.triple_knn} exceeds the candidate pairs of {sizes}")
    params = jax.device_put(distributed.process_local(params))
    start = time.perf_counter()
    rt, inverse = np.unique(triples[:, 1:3], axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    ec = min(entity_chunk, n_ent)
    columns = entity_columns(model, params, ec)
    # Several processes: each computes its share of the blocks (the blocks one process would
    # compute: the same rows, the same padding), then every process gathers all of them.
    mine, size = _my_rows(len(rt), chunk)
    ent_top = []
    for a, b in _blocks(mine.stop, chunk, mine.start):
        block = _pad(rt[a:b], chunk)
        ids, _ = entity_topk(
            model, ke, ec, params, columns, jnp.asarray(block[:, 0]), jnp.asarray(block[:, 1])
        )
        ent_top.append(ids[: b - a])
    ent_top = jnp.asarray(_joined(ent_top, size, len(rt), ke))  # [U, ke] on the device
    logging.info(
        "retrieval: entity level for %d distinct (r, t) in %.1f s",
        len(rt),
        time.perf_counter() - start,
    )
    out = {k: [] for k in ("entity", "relation", "triple_entity", "triple_relation")}
    tchunk = max(1, chunk // 2)
    mine, size = _my_rows(len(triples), tchunk)
    for a, b in _blocks(mine.stop, tchunk, mine.start):
        block = jnp.asarray(_pad(triples[a:b], tchunk))
        inv = jnp.asarray(_pad(inverse[a:b], tchunk))
        ents = ent_top[inv]
        rels = relation_topk(model, kr, 0, params, block[:, 0], block[:, 2])
        te, tr = triple_topk(
            model,
            sizes.triple_knn,
            params,
            ents[:, : sizes.triple_ent_knn],
            rels[:, : sizes.triple_rel_knn],
            block[:, 2],
        )
        m = b - a
        out["entity"].append(ents[:m, : sizes.ent_knn])
        out["relation"].append(rels[:m, : sizes.rel_knn])
        out["triple_entity"].append(te[:m])
        out["triple_relation"].append(tr[:m])
    widths = {
        "entity": sizes.ent_knn,
        "relation": sizes.rel_knn,
        "triple_entity": sizes.triple_knn,
        "triple_relation": sizes.triple_knn,
    }
    result = Retrieval(
        **{k: np.asarray(_joined(v, size, len(triples), widths[k])) for k, v in out.items()}
    )
    logging.info("retrieval: %d triples in %.1f s", len(triples), time.perf_counter() - start)
    return result


def cached_retrieve(
    path: str, model: KGEModel, params: Params, triples: np.ndarray, sizes: RetrievalSizes, **kw
) -> Retrieval:
    """`retrieve`, cached at `path` (.npz); a cache that cannot be read, whose shapes do not
    match or whose ids are outside the model's entities / relations is an error naming it.

    Several processes: every process looks for the cache before any writes it (`workdir.sync`),
    so all read it or all compute (`retrieve` splits the work); process 0 alone writes it."""
    cached = os.path.exists(path)
    workdir.sync("ankge: retrieval cache looked up")  # the same name in every process
    if cached:
        try:
            got = Retrieval.load(path)
        except OSError:
            raise
        except Exception as err:  # noqa: BLE001 - zipfile / format errors lack the path
            raise ValueError(
                f"{path}: cannot read the cached retrieval ({type(err).__name__}: {err}); "
                "delete the file to recompute"
            ) from err
        want = (len(triples), sizes.ent_knn, sizes.rel_knn, sizes.triple_knn)
        have = (
            len(got.entity),
            got.entity.shape[1],
            got.relation.shape[1],
            got.triple_entity.shape[1],
        )
        if have != want:
            raise ValueError(
                f"{path}: cached retrieval has (triples, ent_knn, rel_knn, triple_knn) = {have}, "
                f"the config wants {want}; delete the file to recompute"
            )
        for name, x in dataclasses.asdict(got).items():
            size = model.num_relations if name.endswith("relation") else model.num_entities
            if x.size and (x.min() < 0 or x.max() >= size):
                raise ValueError(
                    f"{path}: cached {name} ids span [{x.min()}, {x.max()}], the model has "
                    f"{size}; delete the file to recompute"
                )
        return got
    result = retrieve(model, params, triples, sizes, **kw)
    if workdir.is_writer():
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        result.save(path)
    return result
