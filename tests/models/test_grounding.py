"""The VSLNet-style grounding network: shapes, padding, word vectors, and learning a toy task."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from models.grounding import NEG_INF, GroundingNet


def _inputs(b=2, n=10, d=6, length=5, vocab=11):
    key = jax.random.PRNGKey(0)
    video = jax.random.normal(key, (b, n, d))
    video_mask = jnp.ones((b, n), bool).at[1, 7:].set(False)
    words = jax.random.randint(jax.random.fold_in(key, 1), (b, length), 2, vocab)
    word_mask = jnp.ones((b, length), bool).at[0, 3:].set(False)
    return video, video_mask, words, word_mask


def _net(encoder, **kw):
    return GroundingNet(
        vocab_size=11,
        dim=16,
        word_dim=8,
        num_heads=2,
        encoder=encoder,
        max_positions=10,
        max_words=5,
        **kw,
    )


@pytest.mark.parametrize("encoder", ["conv", "transformer"])
def test_shapes_and_padding(encoder):
    net = _net(encoder)
    video, video_mask, words, word_mask = _inputs()
    params = net.init(jax.random.PRNGKey(1), video, video_mask, words, word_mask, train=False)
    out = net.apply(params, video, video_mask, words, word_mask, train=False)
    assert out.start_logits.shape == out.end_logits.shape == out.highlight_logits.shape == (2, 10)
    assert out.features.shape == (2, 10, 16)
    assert np.all(np.asarray(out.start_logits[1, 7:]) == NEG_INF)
    assert np.all(np.asarray(out.end_logits[1, 7:]) == NEG_INF)
    # what padded positions and padded words hold does not change the real positions' outputs
    video2 = video.at[1, 7:].set(100.0)
    words2 = words.at[0, 3:].set(1)
    out2 = net.apply(params, video2, video_mask, words2, word_mask, train=False)
    np.testing.assert_allclose(out2.start_logits[1, :7], out.start_logits[1, :7], atol=1e-4)
    np.testing.assert_allclose(out2.end_logits[0], out.end_logits[0], atol=1e-4)


def test_word_vectors_initialise_the_embedding():
    table = np.arange(11 * 3, dtype=np.float32).reshape(11, 3)
    net = _net("conv", word_vectors=table)
    video, video_mask, words, word_mask = _inputs()
    params = net.init(jax.random.PRNGKey(1), video, video_mask, words, word_mask, train=False)
    np.testing.assert_array_equal(params["params"]["Embed_0"]["embedding"], table)


def test_rejects_more_positions_than_its_maximum():
    net = _net("conv")
    video, video_mask, words, word_mask = _inputs(n=12)
    with pytest.raises(ValueError, match="12 positions > max_len 10"):
        net.init(jax.random.PRNGKey(1), video, video_mask, words, word_mask, train=False)


@pytest.mark.parametrize("encoder", ["conv", "transformer"])
def test_learns_to_point_at_the_marked_position(encoder):
    """A toy task: the start is where feature 0 is largest, the end where feature 1 is."""
    rng = np.random.default_rng(0)
    b, n = 32, 8
    video = rng.normal(size=(b, n, 4)).astype(np.float32)
    start = rng.integers(0, n, b)
    video[np.arange(b), start, 0] += 4.0
    mask, words, word_mask = np.ones((b, n), bool), np.full((b, 3), 2), np.ones((b, 3), bool)
    net = _net("conv" if encoder == "conv" else "transformer", dropout=0.0)
    params = net.init(
        jax.random.PRNGKey(0), video[:1], mask[:1], words[:1], word_mask[:1], train=False
    )
    opt = optax.adam(3e-3)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        def loss(p):
            out = net.apply(p, video, mask, words, word_mask, train=False)
            return jnp.mean(
                optax.softmax_cross_entropy_with_integer_labels(out.start_logits, start)
            )

        value, grads = jax.value_and_grad(loss)(params)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state, value

    for _ in range(100):
        params, state, value = step(params, state)
    out = net.apply(params, video, mask, words, word_mask, train=False)
    assert float(value) < 0.3
    assert np.mean(np.argmax(out.start_logits, -1) == start) > 0.9
