"""A synthetic temporal sentence grounding benchmark whose boundaries fall between sparse samples.

    videos, moments = synthetic_grounding(num_videos=400, seed=0)
    videos["v00012"]   # [T, D] float32 raw frame features, T in [min_frames, max_frames]
    moments[0]         # Moment(vid, start, end, duration, sentence) in seconds

Each video is T frames at `fps` (lengths vary) of smooth background noise on which 2 or 3
non-overlapping events are planted. An event has a type (verb, object): its frames carry the sum of
the verb's and the object's prototype vectors, so a sentence is grounded only by composing its two
content words (a video's other events may share one of them). Event boundaries are real numbers
of frames: a frame that an event covers in part carries that fraction of it, so the true boundary
lies between any two samples of a sparse sampling and is recoverable only from how much of the
event a window holds. Sentences read "person <verb> the <object>" with filler words; each query
asks for one event of its video.
"""

from __future__ import annotations

import numpy as np

from research.datasets.video import Moment

VERBS = ("opens", "closes", "holds", "throws", "washes", "takes", "puts", "fixes")
OBJECTS = ("door", "cup", "book", "phone", "towel", "box", "laptop", "shoe")
FILLERS = ("then", "slowly", "again", "in", "the", "room", "quickly", "a", "while")


def _event_spans(rng: np.random.Generator, t: int, count: int, lengths: tuple[float, float]):
    """`count` disjoint spans [a, b) in frames (real numbers) with b - a in lengths * t."""
    for _ in range(1000):
        size = rng.uniform(*lengths, size=count) * t
        gaps = rng.dirichlet(np.ones(count + 1)) * (t - size.sum())
        if t - size.sum() <= 0:
            continue
        starts = np.cumsum(np.concatenate([[gaps[0]], (size + gaps[1:])[:-1]]))
        order = rng.permutation(count)
        return [(float(starts[k]), float(starts[k] + size[k])) for k in order]
    raise ValueError(f"cannot place {count} events of lengths {lengths} in {t} frames")


def _coverage(t: int, a: float, b: float) -> np.ndarray:
    """Fraction of each frame [f, f + 1) covered by [a, b) -> [T]."""
    frames = np.arange(t)
    return np.clip(np.minimum(frames + 1, b) - np.maximum(frames, a), 0.0, 1.0)


def synthetic_grounding(
    num_videos: int,
    *,
    seed: int,
    dim: int = 32,
    min_frames: int = 96,
    max_frames: int = 256,
    fps: float = 4.0,
    events_per_video: tuple[int, int] = (2, 3),
    event_length: tuple[float, float] = (0.15, 0.35),
    queries_per_video: int = 2,
    noise: float = 0.5,
    prefix: str = "v",
) -> tuple[dict[str, np.ndarray], list[Moment]]:
    """`num_videos` videos {vid: [T, dim] float32} and their queries (module docstring).

    The event prototypes are drawn from `seed` too, so a training and a test split must come
    from one call (split its videos), not from two seeds.
    """
    rng = np.random.default_rng(seed)
    verb_proto = rng.normal(size=(len(VERBS), dim)) / np.sqrt(dim) * 2.0
    object_proto = rng.normal(size=(len(OBJECTS), dim)) / np.sqrt(dim) * 2.0
    videos: dict[str, np.ndarray] = {}
    moments: list[Moment] = []
    width = len(str(num_videos - 1))
    for v in range(num_videos):
        vid = f"{prefix}{v:0{width}d}"
        t = int(rng.integers(min_frames, max_frames + 1))
        count = int(rng.integers(events_per_video[0], events_per_video[1] + 1))
        background = np.cumsum(rng.normal(scale=0.3, size=(t, dim)), axis=0)
        background = background - background.mean(axis=0)
        feats = 0.3 * background / max(np.abs(background).max(), 1e-6)
        types = set()
        while len(types) < count:
            types.add((int(rng.integers(len(VERBS))), int(rng.integers(len(OBJECTS)))))
        types = sorted(types, key=lambda _: rng.random())
        spans = _event_spans(rng, t, count, event_length)
        for (verb, obj), (a, b) in zip(types, spans, strict=True):
            proto = verb_proto[verb] + object_proto[obj]
            feats = feats + _coverage(t, a, b)[:, None] * proto[None, :]
        feats = feats + rng.normal(scale=noise, size=(t, dim))
        videos[vid] = feats.astype(np.float32)
        duration = t / fps
        for q in rng.permutation(count)[: min(queries_per_video, count)]:
            (verb, obj), (a, b) = types[q], spans[q]
            words = ["person", VERBS[verb], "the", OBJECTS[obj]]
            words += list(rng.choice(FILLERS, size=int(rng.integers(0, 3))))
            moments.append(Moment(vid, a / fps, b / fps, duration, " ".join(words) + "."))
    return videos, moments
