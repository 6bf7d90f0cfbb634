"""The 4r x 4r SPD solve (or the coupled 12r x 12r one of point-to-plane alignment), as a
block-tridiagonal Cholesky after a bandwidth-reducing node order.

H couples node j only with the nodes it shares a vertex with, so it is ~2-3% dense. A dense
Cholesky of 4r ~ 800-1000 costs 0.2-0.3 GFLOP per iteration (30-40 ms on this 2-core CPU, more
than the authors' whole C++ iteration). Ordering the nodes by reverse Cuthill-McKee gives a
bandwidth of ~20-25 nodes; cutting the order into super-blocks of `bandwidth` nodes makes H block
tridiagonal, and its Cholesky is a `lax.scan` over ~10 small dense steps (~15 MFLOP in all),
exact up to rounding (no approximation: every nonzero block of H lies on the three block
diagonals, which `make_layout` checks).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax import lax
from jax.scipy.linalg import solve_triangular
from scipy.sparse.csgraph import reverse_cuthill_mckee


class Layout(NamedTuple):
    """Where H's node blocks go in the block-tridiagonal buffers (int32 arrays), for any node
    block size s (4: one 4 x 4 block per node pair, the three coordinates solved together;
    12: the coupled point-to-plane system).

    position: [r] node -> its row in the permuted order (padded to K * bsn nodes).
    block_slot: [nb] the super-block holding each node block in concat(diag [K], sub [K - 1])
      (sub[k] = H[k + 1, k]), or -1 when the block lies above the diagonal (it is the transpose
      of a stored one) -> dropped.
    block_row, block_col: [nb] the block's node offsets within its super-block.
    pad_nodes: [K, bsn] 1 on padding nodes (identity there), else 0; its shape gives K and bsn.
    """

    position: jax.Array
    block_slot: jax.Array
    block_row: jax.Array
    block_col: jax.Array
    pad_nodes: jax.Array


def make_layout(block_row: np.ndarray, block_col: np.ndarray, num_nodes: int) -> Layout:
    """The layout for the distinct node blocks (block_row, block_col) [nb] of H (K super-blocks
    of bsn nodes: `layout.pad_nodes.shape`)."""
    r = num_nodes
    off = block_row != block_col
    adj = sp.csr_matrix((np.ones(off.sum()), (block_row[off], block_col[off])), shape=(r, r))
    perm = reverse_cuthill_mckee(adj, symmetric_mode=True)
    pos = np.empty(r, np.int64)
    pos[perm] = np.arange(r)
    pj, pk = pos[block_row], pos[block_col]
    bsn = int(max(np.abs(pj - pk).max(initial=0), 1))
    k = -(-r // bsn)
    sj, sk = pj // bsn, pk // bsn
    if np.any(np.abs(sj - sk) > 1):
        raise AssertionError("make_layout: a block outside the three block diagonals")
    slot = np.where(sj == sk, sj, np.where(sj == sk + 1, k + sk, -1))
    pad = np.zeros(k * bsn)
    pad[r:] = 1.0
    i32 = lambda x: jnp.asarray(x, jnp.int32)
    return Layout(
        position=i32(pos),
        block_slot=i32(slot),
        block_row=i32(pj % bsn),
        block_col=i32(pk % bsn),
        pad_nodes=jnp.asarray(pad.reshape(k, bsn), np.float32),
    )


def banded_solve(layout: Layout, blocks: jax.Array, rhs: jax.Array) -> jax.Array:
    """Solves H X = b for H given by its node blocks [nb, s, s] and b: [r, s, c] -> X [r, s, c].

    Symmetric Jacobi scaling first (the affine rows of H are ~R^2 smaller than the translation
    rows; the scaling keeps a float32 Cholesky accurate).
    """
    dtype = blocks.dtype
    s = blocks.shape[-1]
    nk, bsn = layout.pad_nodes.shape
    bs = bsn * s
    size = (2 * nk - 1) * bs * bs
    a = jnp.arange(s)
    row = (layout.block_row * s)[:, None, None] + a[None, :, None]  # [nb, s, 1]
    col = (layout.block_col * s)[:, None, None] + a[None, None, :]  # [nb, 1, s]
    index = (layout.block_slot[:, None, None] * bs + row) * bs + col
    index = jnp.where(layout.block_slot[:, None, None] >= 0, index, size)
    buf = jnp.zeros((size,), dtype).at[index.reshape(-1)].set(blocks.reshape(-1), mode="drop")
    diag = buf[: nk * bs * bs].reshape(nk, bs, bs)
    sub = buf[nk * bs * bs :].reshape(nk - 1, bs, bs)
    pad = jnp.repeat(layout.pad_nodes.astype(dtype), s, axis=1)  # [nk, bs]
    diag = diag + pad[:, :, None] * jnp.eye(bs, dtype=dtype)
    b = jnp.zeros((nk * bsn,) + rhs.shape[1:], dtype).at[layout.position].set(rhs)
    b = b.reshape(nk, bs, rhs.shape[-1])

    d = lax.rsqrt(jnp.diagonal(diag, axis1=1, axis2=2))  # [nk, bs]
    diag = diag * d[:, :, None] * d[:, None, :]
    sub = sub * d[1:, :, None] * d[:-1, None, :]
    b = b * d[:, :, None]

    # Factor: C_0 = chol(D_0); M_k = S_k C_k^-T; C_{k+1} = chol(D_{k+1} - M_k M_k^T).
    c0 = jnp.linalg.cholesky(diag[0])

    def factor(c, xs):
        dk1, sk = xs
        m = solve_triangular(c, sk.T, lower=True).T  # S_k C_k^-T
        c1 = jnp.linalg.cholesky(dk1 - m @ m.T)
        return c1, (c1, m)

    _, (cs, ms) = lax.scan(factor, c0, (diag[1:], sub))
    cs = jnp.concatenate([c0[None], cs])  # [nk, bs, bs]
    # Forward: y_0 = C_0^-1 b_0; y_{k+1} = C_{k+1}^-1 (b_{k+1} - M_k y_k).
    y0 = solve_triangular(cs[0], b[0], lower=True)

    def forward(y, xs):
        ck1, mk, bk1 = xs
        y1 = solve_triangular(ck1, bk1 - mk @ y, lower=True)
        return y1, y1

    _, ys = lax.scan(forward, y0, (cs[1:], ms, b[1:]))
    ys = jnp.concatenate([y0[None], ys])
    # Backward: x_K = C_K^-T y_K; x_k = C_k^-T (y_k - M_k^T x_{k+1}).
    xl = solve_triangular(cs[-1], ys[-1], lower=True, trans="T")

    def backward(x1, xs):
        ck, mk, yk = xs
        x0 = solve_triangular(ck, yk - mk.T @ x1, lower=True, trans="T")
        return x0, x0

    _, xs = lax.scan(backward, xl, (cs[:-1], ms, ys[:-1]), reverse=True)
    x = jnp.concatenate([xs, xl[None]]) * d[:, :, None]
    return x.reshape((nk * bsn,) + rhs.shape[1:])[layout.position]
