"""Vector quantization of feature rows (BiFeat's VQ), with k-means written in JAX.

The D feature columns are split into ceil(D / width) sub-vectors (the last zero-padded); each
sub-vector position gets its own k-means codebook of `length` entries, trained on a row
subsample with cosine-distance assignment and plain-mean centroids (batched over sub-vectors
with vmap, chunked over rows so millions of rows fit). Codes use the narrowest integer type.
`ops.quantize.quantize(x, method="vq", ...)` wraps this in a `QuantizedTable`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def vq_code_dtype(length: int) -> np.dtype:
    """The official code dtype: uint8 up to 256 entries, int16 up to 32768, else int32."""
    return np.dtype(np.uint8 if length <= 256 else np.int16 if length <= 32768 else np.int32)


def _split(x: jax.Array, width: int) -> jax.Array:
    """``[N, D] -> [S, N, width]`` sub-vectors, the last one zero-padded (S = ceil(D / width))."""
    n, d = x.shape
    s = -(-d // width)
    x = jnp.pad(x, ((0, 0), (0, s * width - d)))
    return x.reshape(n, s, width).transpose(1, 0, 2)


def _normalize(v: jax.Array) -> jax.Array:
    return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _assign(x: jax.Array, centroids: jax.Array, chunk_rows: int) -> jax.Array:
    """Cosine-nearest centroid of each row: ``x: [n, w], centroids: [L, w] -> int32 [n]``.

    ``argmin 1 - cos = argmax <x, c / |c|>`` (the row norm does not change the argmax); rows go in
    chunks of ``chunk_rows`` so the ``[chunk, L]`` similarity block stays small.
    """
    n = x.shape[0]
    cn = _normalize(centroids)
    chunk_rows = max(1, min(chunk_rows, n))
    pad = -n % chunk_rows
    xs = jnp.pad(x, ((0, pad), (0, 0))).reshape(-1, chunk_rows, x.shape[1])
    ids = jax.lax.map(lambda xc: jnp.argmax(xc @ cn.T, axis=1).astype(jnp.int32), xs)
    return ids.reshape(-1)[:n]


def _chunk_rows(length: int, num_sub: int) -> int:
    return int(max(256, min(16384, 2**22 // max(1, length * num_sub))))


@functools.partial(jax.jit, static_argnames=("length", "max_iters", "chunk_rows"))
def _kmeans(x, valid, key, tol, *, length, max_iters, chunk_rows):
    """Batched k-means: ``x: [S, n, w], valid: [S, n] -> centroids [S, length, w]``.

    Per sub-vector (vmap): k-means++ init over valid rows; cosine assignment; centroids are plain
    means of their valid members; empty clusters re-seeded from random valid rows; stop when
    ``(sum_j |c_j - c_j_old|)**2 < tol * 1.2**(it - 1)`` (the official schedule) or at max_iters.
    """

    def sample(key, weights):
        """One index drawn with probability proportional to ``weights`` (Gumbel-max)."""
        g = jax.random.gumbel(key, weights.shape, weights.dtype)
        return jnp.argmax(
            jnp.where(weights > 0, jnp.log(jnp.maximum(weights, 1e-30)) + g, -jnp.inf)
        )

    def init(x, w, key):
        # k-means++ seeding under the cosine distance 1 - cos (the official code seeds uniformly
        # at random, which leaves planted clusters split or merged far more often).
        xn = _normalize(x)
        key, k0 = jax.random.split(key)
        first = sample(k0, w)
        c = jnp.zeros((length, x.shape[1]), x.dtype).at[0].set(x[first])

        def body(i, state):
            c, dist, key = state
            key, k = jax.random.split(key)
            pr = jnp.square(jnp.maximum(dist, 0)) * w
            j = sample(k, jnp.where(pr.sum() > 0, pr, w))  # all covered: uniform over valid
            return c.at[i].set(x[j]), jnp.minimum(dist, 1 - xn @ xn[j]), key

        dist = 1 - xn @ xn[first]
        return jax.lax.fori_loop(1, length, body, (c, dist, key))[0]

    def one(x, valid, key):
        w = valid.astype(x.dtype)
        k0, k1 = jax.random.split(key)
        c0 = init(x, w, k0)
        # Valid rows first, in random order: re-seeds for empty clusters are read off in turn.
        order = jnp.argsort(jnp.where(valid, jax.random.uniform(k1, valid.shape), 2.0))
        num_valid = jnp.maximum(valid.sum(), 1)

        def body(state):
            it, c, _ = state
            a = _assign(x, c, chunk_rows)
            sums = jax.ops.segment_sum(x * w[:, None], a, length)
            counts = jax.ops.segment_sum(w, a, length)
            reseed = x[order[(it * length + jnp.arange(length)) % num_valid]]
            new = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1)[:, None], reseed)
            shift2 = jnp.sum(jnp.linalg.norm(new - c, axis=1)) ** 2
            return it + 1, new, shift2

        def cond(state):
            it, _, shift2 = state
            return (it < max_iters) & ((it == 0) | (shift2 >= tol * 1.2 ** (it - 1)))

        return jax.lax.while_loop(cond, body, (0, c0, jnp.float32(jnp.inf)))[1]

    keys = jax.random.split(key, x.shape[0])
    return jax.vmap(one)(x, valid, keys)


def fit_vq(
    x: Any,
    *,
    width: int = 16,
    length: int = 256,
    sample_rows: int = 50_000,
    seed: int = 0,
    max_iters: int = 50,
    tol: float | None = None,
) -> dict[str, jax.Array]:
    """Learns ``codebooks: [S = ceil(D / width), length, width] float32`` (last one zero-padded).

    Trained on ``sample_rows`` random rows. As in the official code, sub-vectors whose norm is below
    the ``0.3 / length`` quantile of the sample's norms do not take part in training (they carry no
    direction); ``tol`` defaults to the official ``3e-2 * length``.
    """
    x = np.asarray(x, np.float32)
    n = x.shape[0]
    if length > min(n, sample_rows):
        raise ValueError(f"vq length {length} exceeds the {min(n, sample_rows)} training rows")
    rng = np.random.default_rng(seed)
    sample = x[np.sort(rng.permutation(n)[:sample_rows])] if n > sample_rows else x
    sub = _split(jnp.asarray(sample), width)  # [S, n, w]
    norms = jnp.linalg.norm(sub, axis=-1)
    rim = jnp.quantile(norms, 0.3 / length, axis=1, keepdims=True)
    valid = (norms >= rim) & (norms > 0)
    valid = jnp.where(valid.sum(1, keepdims=True) >= length, valid, norms > 0)
    if int(valid.sum(1).min()) < length:
        raise ValueError(f"a sub-vector has fewer than length={length} nonzero sample rows")
    tol = 3e-2 * length if tol is None else tol
    cb = _kmeans(
        sub,
        valid,
        jax.random.key(seed),
        jnp.float32(tol),
        length=length,
        max_iters=max_iters,
        chunk_rows=_chunk_rows(length, sub.shape[0]),
    )
    return dict(codebooks=cb)


@functools.partial(jax.jit, static_argnames=("width", "chunk_rows", "dtype"))
def _vq_encode(x, codebooks, *, width, chunk_rows, dtype):
    ids = jax.vmap(lambda xs, cb: _assign(xs, cb, chunk_rows))(_split(x, width), codebooks)
    return ids.T.astype(dtype)


def vq_encode(x: jax.Array, params: dict[str, Any]) -> jax.Array:
    """``x: [N, D] -> codes [N, S]`` (`vq_code_dtype`): cosine-nearest entry per sub-vector."""
    cb = params["codebooks"]
    s, length, width = cb.shape
    return _vq_encode(
        jnp.asarray(x, jnp.float32),
        cb,
        width=width,
        chunk_rows=_chunk_rows(length, s),
        dtype=vq_code_dtype(length),
    )


def vq_decode(codes: jax.Array, params: dict[str, Any], num_cols: int) -> jax.Array:
    """``codes: [N, S] -> float32 [N, num_cols]``: concatenated codebook entries."""
    cb = params["codebooks"]
    s, length, width = cb.shape
    flat = cb.reshape(s * length, width)
    idx = jnp.asarray(codes).astype(jnp.int32) + jnp.arange(s, dtype=jnp.int32) * length
    return flat[idx].reshape(idx.shape[0], s * width)[:, :num_cols]
