"""The SMMix figure: a batch of mixtures with the chosen windows outlined."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from research.smmix import mixing  # noqa: E402
from research.smmix.model import SMMixViT  # noqa: E402
from research.training.results import save_figure  # noqa: E402

FIGURE = "smmix_mixtures.png"


def _show(ax, image: np.ndarray, title: str) -> None:
    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def _outline(ax, corner: np.ndarray, r: int, patch: int, color: str) -> None:
    y, x = corner * patch - 0.5
    ax.add_patch(Rectangle((x, y), r * patch, r * patch, fill=False, ec=color, lw=1.5))


def mixtures_figure(
    path: str,
    model: SMMixViT,
    params: Any,
    display: np.ndarray,
    labels: np.ndarray,
    normalized: np.ndarray,
    *,
    min_ratio: float,
    max_ratio: float,
) -> str:
    """Draws SMMix on a batch of B images (B even) with the middle window side.

    display: [B, H, W, C] images in [0, 1]; normalized: the same images as the model sees them;
    labels: [B]. Row 1: target image i with the attention it receives (overlay) and its argmin
    window (red); row 2: source image B-1-i with its argmax window (green); row 3: the mixture
    with the pasted window (green), lam = target share. Returns `path`.
    """
    b, patch = len(display), model.backbone.patch_size
    if b < 2 or b % 2:
        raise ValueError(f"the mixing figure needs an even number of images >= 2, got {b}")
    side = display.shape[1] // patch
    r = (int(side * min_ratio) + int(side * max_ratio)) // 2
    out, _ = jax.jit(lambda p, x: model.apply(p, x, train=False))(params, jnp.asarray(normalized))
    received = mixing.received_attention(out.attention)
    m = mixing.smmix(
        jnp.asarray(display), jnp.asarray(labels), received, jax.random.PRNGKey(0),
        patch=patch, num_classes=int(out.logits.shape[-1]), smoothing=0.0, side_r=r,
    )  # fmt: skip
    mixed, tc, sc = (np.asarray(v) for v in (m.images, m.target_corner, m.source_corner))
    heat = np.asarray(received).reshape(b, side, side)
    fig, axes = plt.subplots(3, b, figsize=(1.3 * b, 4.3), squeeze=False)
    for i in range(b):
        j = b - 1 - i
        _show(axes[0, i], display[i], f"target {i} (y={labels[i]})")
        big = np.kron(heat[i] / heat[i].max(), np.ones((patch, patch)))
        axes[0, i].imshow(big, cmap="magma", alpha=0.45)
        _outline(axes[0, i], tc[i], r, patch, "red")
        _show(axes[1, i], display[j], f"source {j} (y={labels[j]})")
        _outline(axes[1, i], sc[i], r, patch, "lime")
        _show(axes[2, i], mixed[i], f"mixed, lam={float(m.lam):.2f}")
        _outline(axes[2, i], tc[i], r, patch, "lime")
    fig.suptitle(
        f"SMMix, window {r}x{r} of {side}x{side} patches:\nattention-min window of the target "
        "(red) <- attention-max window of the source (green)",
        fontsize=8,
    )
    return save_figure(fig, path)
