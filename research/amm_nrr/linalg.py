"""The 4r x 4r SPD solve, as a block-tridiagonal Cholesky after a bandwidth-reducing node order.

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
    """Where H's node blocks go in the block-tridiagonal buffers (int32 arrays).

    position: [r] node -> its row in the permuted order (padded to K * bsn nodes).
    block_index: [nb * 16] flat index of each entry of each node block into the buffer
      concat(diag [K, Bs, Bs], sub [K - 1, Bs, Bs]) (sub[k] = H[k + 1, k]), or -1 when the block
      lies above the diagonal (it is the transpose of a stored one) -> dropped.
    pad_diag: [K, Bs] 1 on padded rows (identity there), else 0; its shape gives K and Bs.
    """

    position: jax.Array
    block_index: jax.Array
    pad_diag: jax.Array


def make_layout(
    block_row: np.ndarray, block_col: np.ndarray, num_nodes: int
) -> tuple[Layout, int, int]:
    """The layout for the distinct node blocks (block_row, block_col) [nb] of H.

    Returns (layout, K super-blocks, bsn nodes per super-block).
    """
    r = num_nodes
    off = block_row != block_col
    adj = sp.csr_matrix((np.ones(off.sum()), (block_row[off], block_col[off])), shape=(r, r))
    perm = reverse_cuthill_mckee(adj, symmetric_mode=True)
    pos = np.empty(r, np.int64)
    pos[perm] = np.arange(r)
    pj, pk = pos[block_row], pos[block_col]
    bsn = int(max(np.abs(pj - pk).max(initial=0), 1))
    k = -(-r // bsn)
    bs = 4 * bsn
    sj, sk = pj // bsn, pk // bsn
    if np.any(np.abs(sj - sk) > 1):
        raise AssertionError("make_layout: a block outside the three block diagonals")
    a = np.arange(4)
    row = (pj % bsn)[:, None, None] * 4 + a[None, :, None]  # [nb, 4, 1]
    col = (pk % bsn)[:, None, None] * 4 + a[None, None, :]  # [nb, 1, 4]
    diag_idx = (sj[:, None, None] * bs + row) * bs + col
    sub_idx = k * bs * bs + (sk[:, None, None] * bs + row) * bs + col
    idx = np.where(
        (sj == sk)[:, None, None], diag_idx, np.where((sj == sk + 1)[:, None, None], sub_idx, -1)
    )
    pad = np.zeros(k * bs)
    pad[4 * r :] = 1.0
    pad = pad.reshape(k, bs)
    layout = Layout(
        position=jnp.asarray(pos, jnp.int32),
        block_index=jnp.asarray(idx.reshape(-1), jnp.int32),
        pad_diag=jnp.asarray(pad, np.float32),
    )
    return layout, k, bsn


def banded_solve(layout: Layout, blocks: jax.Array, rhs: jax.Array) -> jax.Array:
    """Solves H X = b for H given by its node blocks [nb, 4, 4] and b: [r, 4, 3] -> X [r, 4, 3].

    Symmetric Jacobi scaling first (the affine rows of H are ~R^2 smaller than the translation
    rows; the scaling keeps a float32 Cholesky accurate).
    """
    dtype = blocks.dtype
    nk, bs = layout.pad_diag.shape
    size = nk * bs * bs + (nk - 1) * bs * bs
    keep = layout.block_index >= 0
    buf = (
        jnp.zeros((size,), dtype)
        .at[jnp.where(keep, layout.block_index, size)]
        .set(blocks.reshape(-1), mode="drop")
    )
    diag = buf[: nk * bs * bs].reshape(nk, bs, bs)
    sub = buf[nk * bs * bs :].reshape(nk - 1, bs, bs)
    pad = layout.pad_diag.astype(dtype)
    diag = diag + pad[:, :, None] * jnp.eye(bs, dtype=dtype)
    b = jnp.zeros((nk * bs // 4, 4, 3), dtype).at[layout.position].set(rhs).reshape(nk, bs, 3)

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
    return x.reshape(-1, 4, 3)[layout.position]
