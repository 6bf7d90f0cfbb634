"""Queries and their sampled batches: the anchor sampling, and the siamese sequences for SSRN.

    queries = QuerySet.build(moments, features.get, vocab, max_words=30)
    batch = queries.batch(indices, offsets, max_positions=128)
    # offsets [B, S] in strides, column 0 the anchor's 0

Every batch is computed on the host from the raw features (`sampling.window_means`), so the
siamese sequences of a step are drawn fresh at their offsets; all S sequences of a query share
its number of positions N = min(T, max_positions) and are padded to max_positions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from research.datasets.video import Moment, Vocabulary, pad_tokens
from research.ssrn import sampling


@dataclasses.dataclass(frozen=True)
class QuerySet:
    """Queries over videos: moments, token ids [Q, L] and mask, each video's frame count, and
    `features(vid) -> [T, D]` to read a video's raw features."""

    moments: tuple[Moment, ...]
    words: np.ndarray
    word_mask: np.ndarray
    num_frames: dict[str, int]
    features: Callable[[str], np.ndarray]
    dim: int

    @classmethod
    def build(
        cls,
        moments: Sequence[Moment],
        features: Callable[[str], np.ndarray],
        vocab: Vocabulary,
        *,
        max_words: int,
    ) -> QuerySet:
        """Encodes the sentences and reads every video once (its length and feature width,
        which must agree across videos)."""
        if not moments:
            raise ValueError("no queries to build a query set from")
        ids, mask = pad_tokens([vocab.encode(m.sentence, max_words) for m in moments], max_words)
        num_frames, dim = {}, None
        for m in moments:
            if m.vid in num_frames:
                continue
            x = features(m.vid)
            if dim is not None and x.shape[1] != dim:
                raise ValueError(f"video {m.vid}: features of width {x.shape[1]}, others {dim}")
            num_frames[m.vid], dim = x.shape[0], x.shape[1]
        return cls(tuple(moments), ids, mask, num_frames, features, dim)

    def __len__(self) -> int:
        return len(self.moments)

    def batch(
        self, indices: np.ndarray, offsets: np.ndarray, *, max_positions: int
    ) -> dict[str, np.ndarray]:
        """The batch of queries `indices` [B] sampled at `offsets` [B, S] (strides), each video
        at N = min(T, max_positions) positions.

        Returns video [B, S, max_positions, D] float32, video_mask [B, max_positions] bool,
        words [B, L] int32, word_mask [B, L], start_index / end_index [B, S] int32 (each
        sequence's own windows), duration [B] seconds, num_positions [B] int32.
        """
        b, s = offsets.shape
        video = np.zeros((b, s, max_positions, self.dim), np.float32)
        video_mask = np.zeros((b, max_positions), bool)
        n = np.array(
            [
                sampling.num_positions(self.num_frames[self.moments[q].vid], max_positions)
                for q in indices
            ],
            np.int32,
        )
        for row, q in enumerate(indices):
            raw = self.features(self.moments[q].vid)
            video[row, :, : n[row]] = sampling.window_means(raw, n[row], offsets[row])
            video_mask[row, : n[row]] = True
        times = np.array([[self.moments[q].start, self.moments[q].end] for q in indices])
        duration = np.array([self.moments[q].duration for q in indices])
        index = [
            sampling.time_to_index(times[:, e, None], duration[:, None], n[:, None], offsets)
            for e in (0, 1)
        ]
        return {
            "video": video,
            "video_mask": video_mask,
            "words": self.words[indices],
            "word_mask": self.word_mask[indices],
            "start_index": index[0],
            "end_index": index[1],
            "duration": duration.astype(np.float32),
            "num_positions": n,
        }
