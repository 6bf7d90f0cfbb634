"""The data of a run (`config.data`): the synthetic benchmark, Charades-STA, ActivityNet Captions
or TACoS, as training and test query sets with one vocabulary.

Real data (`source` charades / activitynet / tacos) is read from `data_dir`: the annotation files
`train_file` / `test_file` (and `durations_file` for Charades-STA), the features `features` (a
folder of `{vid}.npy` or one HDF5 file; every video is read once and kept in memory, as VSLNet
does) and optionally GloVe-style `word_vectors`. Which features a run used (path and width) is
recorded in its results: reproductions of the published numbers differ mostly by feature version.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import ml_collections
import numpy as np

from research.datasets import video
from research.datasets.paths import resolve_data_dir
from research.datasets.video_synthetic import synthetic_grounding
from research.ssrn.data import QuerySet


@dataclasses.dataclass(frozen=True)
class GroundingData:
    train: QuerySet
    test: QuerySet
    vocab: video.Vocabulary
    word_vectors: np.ndarray | None
    features: str  # what the features are: the path (real data) or the generator's settings
    notes: tuple[str, ...] = ()  # what the loaders clipped, how many word vectors were found

    def describe(self) -> str:
        text = (
            f"{len(self.train)} training and {len(self.test)} test queries, vocabulary of "
            f"{len(self.vocab)}, features {self.features} (width {self.train.dim})"
        )
        return "; ".join([text, *self.notes])


def _query_sets(
    config, train_moments, test_moments, features
) -> tuple[QuerySet, QuerySet, video.Vocabulary]:
    vocab = video.Vocabulary.build(x.sentence for x in train_moments)
    build = functools.partial(
        QuerySet.build,
        features=features,
        vocab=vocab,
        max_words=config.model.max_words,
    )
    return build(train_moments), build(test_moments), vocab


def load_data(config: ml_collections.ConfigDict) -> GroundingData:
    d = config.data
    if d.source == "synthetic":
        videos, moments = synthetic_grounding(
            d.num_videos,
            seed=d.seed,
            dim=d.dim,
            min_frames=d.min_frames,
            max_frames=d.max_frames,
            noise=d.noise,
        )
        num_test = max(1, round(d.test_fraction * len(videos)))
        test_vids = set(sorted(videos)[-num_test:])
        train = [x for x in moments if x.vid not in test_vids]
        test = [x for x in moments if x.vid in test_vids]
        train_set, test_set, vocab = _query_sets(config, train, test, videos.__getitem__)
        features = (
            f"synthetic (dim {d.dim}, {d.min_frames}-{d.max_frames} frames, noise {d.noise}, "
            f"seed {d.seed})"
        )
        return GroundingData(train_set, test_set, vocab, None, features)

    root = resolve_data_dir(d.data_dir)
    path = functools.partial(os.path.join, root)
    if d.source == "charades":
        durations = video.load_durations(path(d.durations_file))
        train, train_report = video.load_charades_sta(path(d.train_file), durations)
        test, test_report = video.load_charades_sta(path(d.test_file), durations)
    else:
        train, train_report = video.load_caption_json(path(d.train_file))
        test, test_report = video.load_caption_json(path(d.test_file))
    store = video.FeatureStore(path(d.features))
    features = functools.lru_cache(maxsize=None)(store.get)
    train_set, test_set, vocab = _query_sets(config, train, test, features)
    notes = [str(r) for r in (train_report, test_report) if r.clipped]
    vectors = None
    if d.word_vectors:
        vectors, found = video.load_word_vectors(path(d.word_vectors), vocab, seed=d.seed)
        notes.append(f"{found} of {len(vocab) - 2} words have vectors in {d.word_vectors}")
    return GroundingData(train_set, test_set, vocab, vectors, path(d.features), tuple(notes))
