"""The ViT denoisers: shapes, skip pairing, conditioning, zero-init of adaLN-Zero (that they learn
under the diffusion loss: tests/research/ascend/test_method.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.diffusion_vit import DIFFUSION_VITS, DiffusionViT, skip_sources, unpatchify
from models.params import count_params


def _model(design="iu_vit", **kw):
    size = dict(patch_size=2, hidden_dim=32, encoder_depth=2, decoder_depth=2, num_heads=4)
    return DiffusionViT(**{**DIFFUSION_VITS[design], **size, **kw})


def _inputs(b=3, side=8, c=1):
    x = jax.random.normal(jax.random.PRNGKey(0), (b, side, side, c))
    return x, jnp.arange(b) * 100, jnp.arange(b) % 2


@pytest.mark.parametrize("design", list(DIFFUSION_VITS))
@pytest.mark.parametrize("conditioning", ["tokens", "adaln"])
def test_every_design_maps_images_to_epsilon_of_the_same_shape(design, conditioning):
    model = _model(design, conditioning=conditioning, num_classes=2, encoder_depth=3)
    x, t, y = _inputs(c=3)
    params = model.init(jax.random.PRNGKey(1), x, t, y, train=False)
    out = model.apply(params, x, t, y, train=False)
    assert out.shape == x.shape and out.dtype == jnp.float32


def test_skip_sources_pair_like_u_vit_and_spread_for_a_shallow_decoder():
    assert skip_sources(3, 3) == [2, 1, 0]
    assert skip_sources(8, 4) == [7, 5, 3, 1]
    assert skip_sources(4, 2) == [3, 1]
    with pytest.raises(ValueError):
        skip_sources(3, 0)


def test_unpatchify_inverts_row_major_patching():
    images = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 4, 3))
    p = 2
    patches = images.reshape(2, 3, p, 2, p, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, 6, -1)
    np.testing.assert_array_equal(unpatchify(patches, p, 6, 3), images)


def test_designs_differ_only_by_skip_linears_and_conv():
    x, t, y = _inputs()
    counts = {}
    for design in DIFFUSION_VITS:
        p = _model(design).init(jax.random.PRNGKey(0), x, t, y, train=False)
        counts[design] = count_params(p)
    d = 32
    skip_linears = 2 * (2 * d * d + d)
    conv = 9 * 1 * 1 + 1
    assert counts["iu_vit"] - counts["vanilla"] == skip_linears + conv
    ascend = count_params(
        _model("ascend", encoder_depth=3, decoder_depth=1).init(
            jax.random.PRNGKey(0), x, t, y, train=False
        )
    )
    assert counts["iu_vit"] - ascend == 2 * d * d + d  # one skip Linear fewer


def test_adaln_zero_starts_at_zero_and_tokens_depend_on_time_and_class():
    x, t, y = _inputs()
    adaln = _model(conditioning="adaln", num_classes=2)
    params = adaln.init(jax.random.PRNGKey(1), x, t, y, train=False)
    np.testing.assert_array_equal(adaln.apply(params, x, t, y, train=False), 0.0)
    model = _model(num_classes=2)
    params = model.init(jax.random.PRNGKey(1), x, t, y, train=False)
    base = model.apply(params, x, t, y, train=False)
    assert not np.allclose(base, model.apply(params, x, t + 7, y, train=False))
    assert not np.allclose(base, model.apply(params, x, t, 1 - y, train=False))
    null = model.apply(params, x, t, jnp.full_like(y, 2), train=False)  # the null label
    assert np.all(np.isfinite(null))


def test_bad_inputs_raise():
    x, t, y = _inputs(side=7)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        _model().init(jax.random.PRNGKey(0), x, t, y, train=False)
    x, t, _ = _inputs()
    with pytest.raises(ValueError, match="needs labels"):
        _model(num_classes=3).init(jax.random.PRNGKey(0), x, t, None, train=False)
