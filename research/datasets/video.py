"""Temporal sentence grounding data (Charades-STA, ActivityNet Captions, TACoS) in their released
formats, for VSLNet-style models: moments, per-video features, vocabulary and word vectors.

    durations = load_durations("charades.json")                    # or Charades_v1_train.csv
    moments, report = load_charades_sta("charades_sta_train.txt", durations)
    print(report)                        # charades_sta_train.txt: 3 moments clipped to the ...
    moments, report = load_caption_json("activitynet/train.json")  # or 2D-TAN's tacos/train.json
    with FeatureStore("features/charades_i3d") as feats:          # {vid}.npy, or one .h5 file
        x = feats.get(moments[0].vid)                              # [T, D] float32
    vocab = Vocabulary.build(m.sentence for m in moments)
    vectors, found = load_word_vectors("glove.840B.300d.txt", vocab)  # [len(vocab), 300]
    ids, mask = pad_tokens([vocab.encode(m.sentence) for m in moments], max_len=30)

Formats:
  - Charades-STA: one `VID start end##sentence` line per query, times in seconds; durations come
    from a separate file (`load_durations`: the VSLNet / 2D-TAN `charades.json` or the Charades
    CSV's `length` column).
  - ActivityNet Captions / TACoS: JSON `{vid: {"duration", "timestamps": [[s, e], ...],
    "sentences": [...]}}`; 2D-TAN's TACoS files give `"num_frames"` and `"fps"` instead of
    `"duration"`, with timestamps in frames.
A moment ending after its video (common in both releases) is clipped to the duration and counted
in the `LoadReport`, as the VSLNet / 2D-TAN loaders do; anything else malformed (missing fields,
non-numeric or negative times, start > end, an empty sentence, an unknown video) raises
ValueError naming the file, the line where there is one, and the video id.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import math
import os
import re
from collections.abc import Iterable

import numpy as np

PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"


@dataclasses.dataclass(frozen=True)
class Moment:
    """One annotated query: video id, moment [start, end] in seconds, the video's duration in
    seconds, the sentence."""

    vid: str
    start: float
    end: float
    duration: float
    sentence: str


@dataclasses.dataclass
class LoadReport:
    """What a loader fixed or dropped: clipped (end beyond duration, clipped to it, count), and
    the source file."""

    path: str
    clipped: int = 0

    def __str__(self) -> str:
        noun = "moment" if self.clipped == 1 else "moments"
        name = os.path.basename(self.path)
        return f"{name}: {self.clipped} {noun} clipped to the video's duration"


# ----------------------------------------------------------------------------------- helpers


def _number(value: object) -> float | None:
    """A JSON number as a finite float, or None when it is not one (strings and bools are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _parse(text: str) -> float | None:
    """A number written in text as a finite float, or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _read_json(path: str) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a valid UTF-8 JSON file ({err})") from None


def _moment(
    where: str, vid: str, start: float, end: float, duration: float, sentence: str, report
) -> Moment:
    """Checks one moment (`where` names the file, line or entry and the video), clipping an end
    beyond the video and counting it in `report`."""
    if start < 0:
        raise ValueError(f"{where}: start {start} < 0")
    if start > end:
        raise ValueError(f"{where}: start {start} > end {end}")
    if end > duration:
        end = duration
        report.clipped += 1
    if start >= duration:
        raise ValueError(f"{where}: start {start} is not before the video's end ({duration} s)")
    return Moment(vid, start, end, duration, sentence)


# --------------------------------------------------------------------------------- durations


def load_durations(path: str) -> dict[str, float]:
    """Video durations in seconds, `{vid: duration}`, from Charades metadata.

    Accepts `charades.json` as in the VSLNet / 2D-TAN repos (`{vid: {"duration": float, ...}}`,
    or `{vid: float}`) and the Charades CSV (`Charades_v1_train.csv` / `Charades_v1_test.csv`,
    a header with columns `id` and `length`). The format is chosen by the extension (`.json`,
    `.csv`), otherwise by whether the file starts with `{`. Durations must be finite and positive.
    """
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".json", ".csv"):
        with open(path, encoding="utf-8", errors="replace") as f:
            ext = ".json" if f.read(4096).lstrip().startswith("{") else ".csv"
    out = _durations_json(path) if ext == ".json" else _durations_csv(path)
    if not out:
        raise ValueError(f"{path}: no video durations")
    return out


def _durations_json(path: str) -> dict[str, float]:
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: expected a JSON object {{vid: {{'duration': seconds}}}} or "
            f"{{vid: seconds}}, got {type(data).__name__}"
        )
    out = {}
    for vid, entry in data.items():
        if isinstance(entry, dict):
            if "duration" not in entry:
                raise ValueError(f"{path}: video {vid!r}: no 'duration' key")
            entry = entry["duration"]
        seconds = _number(entry)
        if seconds is None or seconds <= 0:
            raise ValueError(
                f"{path}: video {vid!r}: duration {entry!r} (expected a positive number)"
            )
        out[vid] = seconds
    return out


def _durations_csv(path: str) -> dict[str, float]:
    out: dict[str, float] = {}
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        missing = [c for c in ("id", "length") if c not in fields]
        if missing:
            raise ValueError(
                f"{path}:1: header has no column {' or '.join(map(repr, missing))} "
                f"(expected a Charades CSV with columns 'id' and 'length', got {fields[:12]})"
            )
        for row in reader:
            line = reader.line_num
            vid = (row.get("id") or "").strip()
            raw = row.get("length")
            if not vid:
                raise ValueError(f"{path}:{line}: empty video id")
            seconds = _parse((raw or "").strip())
            if seconds is None or seconds <= 0:
                raise ValueError(
                    f"{path}:{line}: video {vid!r}: length {raw!r} (expected a positive number "
                    "of seconds)"
                )
            if vid in out:
                raise ValueError(f"{path}:{line}: video {vid!r} appears twice")
            out[vid] = seconds
    return out


# ---------------------------------------------------------------------------------- moments


def load_charades_sta(path: str, durations: dict[str, float]) -> tuple[list[Moment], LoadReport]:
    """Charades-STA moments from lines `VID start end##sentence` (times in seconds), e.g.
    `3MSZA 24.3 30.4##person turn a light on.`; blank lines are skipped.

    durations: `{vid: seconds}` (see `load_durations`). An end beyond the duration is clipped to
    it and counted in the report; every other defect raises ValueError naming `file:line` and
    the video.
    """
    report = LoadReport(path)
    moments = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not UTF-8 text ({err})") from None
            if not line:
                continue
            where = f"{path}:{lineno}"
            head, sep, sentence = line.partition("##")
            fields = head.split()
            vid = fields[0] if fields else ""
            if not sep:
                raise ValueError(
                    f"{where}: video {vid!r}: no '##' (expected 'VID start end##sentence')"
                )
            if len(fields) != 3:
                raise ValueError(
                    f"{where}: video {vid!r}: {len(fields)} fields before '##' (expected "
                    "'VID start end##sentence')"
                )
            start, end = _parse(fields[1]), _parse(fields[2])
            if start is None or end is None:
                raise ValueError(
                    f"{where}: video {vid!r}: times {fields[1]!r} {fields[2]!r} are not numbers"
                )
            sentence = sentence.strip()
            if not sentence:
                raise ValueError(f"{where}: video {vid!r}: empty sentence")
            if vid not in durations:
                raise ValueError(f"{where}: video {vid!r} has no duration")
            where = f"{where}: video {vid!r}"
            moments.append(_moment(where, vid, start, end, durations[vid], sentence, report))
    if not moments:
        raise ValueError(f"{path}: no moments")
    return moments, report


def load_caption_json(path: str) -> tuple[list[Moment], LoadReport]:
    """ActivityNet Captions / TACoS moments from `{vid: {"duration": seconds, "timestamps":
    [[start, end], ...], "sentences": [...]}}`, one Moment per (timestamp, sentence), in file
    order.

    2D-TAN's TACoS files give `"num_frames"` and `"fps"` instead of `"duration"`, with timestamps
    in frames: then duration = num_frames / fps and times = frames / fps (`"duration"` wins when
    both are present). Sentences are stripped. An end beyond the duration is clipped and counted;
    every other defect raises ValueError naming the file and the video.
    """
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: expected a JSON object {{vid: {{'duration', 'timestamps', 'sentences'}}}}, "
            f"got {type(data).__name__}"
        )
    report = LoadReport(path)
    moments = []
    for vid, entry in data.items():
        where = f"{path}: video {vid!r}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object, got {type(entry).__name__}")
        missing = [k for k in ("timestamps", "sentences") if k not in entry]
        if "duration" in entry:
            scale = 1.0
            duration = _number(entry["duration"])
            if duration is None or duration <= 0:
                raise ValueError(
                    f"{where}: duration {entry['duration']!r} (expected a positive number)"
                )
        elif "num_frames" in entry and "fps" in entry:
            frames, fps = _number(entry["num_frames"]), _number(entry["fps"])
            if frames is None or fps is None or frames <= 0 or fps <= 0:
                raise ValueError(
                    f"{where}: num_frames {entry['num_frames']!r}, fps {entry['fps']!r} "
                    "(expected positive numbers)"
                )
            scale, duration = 1.0 / fps, frames / fps
        else:
            missing.insert(0, "duration")
        if missing:
            raise ValueError(
                f"{where}: missing {', '.join(map(repr, missing))} (expected 'duration' or "
                "'num_frames' + 'fps', 'timestamps', 'sentences')"
            )
        stamps, sentences = entry["timestamps"], entry["sentences"]
        if not isinstance(stamps, list) or not isinstance(sentences, list):
            raise ValueError(f"{where}: 'timestamps' and 'sentences' must be lists")
        if len(stamps) != len(sentences):
            raise ValueError(f"{where}: {len(stamps)} timestamps but {len(sentences)} sentences")
        for k, (stamp, sentence) in enumerate(zip(stamps, sentences, strict=True)):
            pair = stamp if isinstance(stamp, list) and len(stamp) == 2 else [None]
            times = [_number(t) for t in pair]
            if None in times:
                raise ValueError(
                    f"{where}: timestamp {k} is {stamp!r} (expected a pair of numbers)"
                )
            if not isinstance(sentence, str) or not sentence.strip():
                raise ValueError(f"{where}: sentence {k} is empty or not text ({sentence!r})")
            start, end = times[0] * scale, times[1] * scale
            moments.append(
                _moment(f"{where}, moment {k}", vid, start, end, duration, sentence.strip(), report)
            )
    if not moments:
        raise ValueError(f"{path}: no moments")
    return moments, report


# --------------------------------------------------------------------------------- features


class FeatureStore:
    """Per-video features [T, D] float32: a folder of `{vid}.npy` or one HDF5 file keyed by video
    id.

    In an HDF5 file, `f[vid]` is either the [T, D] dataset itself (the flat layout) or a group
    holding it, as in ActivityNet's `sub_activitynet_v1-3.c3d.hdf5` (`f[vid]["c3d_features"]`):
    a group's only dataset is used, or else its `"c3d_features"` / `"features"` member.
    """

    def __init__(self, path: str):
        self.path = path
        self._h5 = None
        if os.path.isdir(path):
            return
        if not path.lower().endswith((".h5", ".hdf5")):
            raise ValueError(
                f"{path}: expected a folder of {{vid}}.npy files or an .h5 / .hdf5 file"
            )
        if not os.path.isfile(path):
            raise ValueError(f"{path}: no such HDF5 file")
        import h5py

        try:
            self._h5 = h5py.File(path, "r")
        except OSError as err:
            raise ValueError(f"{path}: cannot open as HDF5 ({err})") from None

    def _npy(self, vid: str) -> str:
        return os.path.join(self.path, f"{vid}.npy")

    def __contains__(self, vid: str) -> bool:
        if not vid or "/" in vid or vid in (".", ".."):
            return False
        if self._h5 is None:
            return os.path.isfile(self._npy(vid))
        return vid in self._h5

    def _source(self, vid: str):
        """The array-like for `vid` (a memory map or an h5py dataset), not yet read."""
        if vid not in self:
            raise ValueError(f"{self.path}: no features for video {vid!r}")
        if self._h5 is None:
            try:
                return np.load(self._npy(vid), mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError) as err:
                raise ValueError(f"{self._npy(vid)}: video {vid!r}: cannot read ({err})") from None
        import h5py

        item = self._h5[vid]
        if isinstance(item, h5py.Group):
            names = [k for k, v in item.items() if isinstance(v, h5py.Dataset)]
            if len(names) != 1:
                preferred = [k for k in ("c3d_features", "features") if k in names]
                if not preferred:
                    raise ValueError(
                        f"{self.path}: video {vid!r} is a group with datasets {names[:8]} "
                        "(expected one dataset, or 'c3d_features' / 'features')"
                    )
                names = preferred
            item = item[names[0]]
        return item

    def get(self, vid: str) -> np.ndarray:
        """Features of `vid`: [T, D] float32 with T >= 1 and finite values."""
        src = self._source(vid)
        if len(src.shape) != 2 or src.shape[0] == 0:
            raise ValueError(
                f"{self.path}: video {vid!r}: features of shape {tuple(src.shape)} "
                "(expected [T, D] with T >= 1)"
            )
        if not (np.issubdtype(src.dtype, np.integer) or np.issubdtype(src.dtype, np.floating)):
            raise ValueError(f"{self.path}: video {vid!r}: features of dtype {src.dtype}")
        x = np.asarray(src[()], dtype=np.float32)
        if not np.isfinite(x).all():
            raise ValueError(f"{self.path}: video {vid!r}: features contain NaN or inf")
        return x

    @property
    def dim(self) -> int:
        """D of the first video (by name), read from its shape only."""
        if self._h5 is None:
            names = sorted(f[:-4] for f in os.listdir(self.path) if f.endswith(".npy"))
        else:
            names = list(self._h5.keys())
        if not names:
            raise ValueError(f"{self.path}: no videos")
        shape = self._source(names[0]).shape
        if len(shape) != 2:
            raise ValueError(
                f"{self.path}: video {names[0]!r}: features of shape {tuple(shape)} "
                "(expected [T, D])"
            )
        return int(shape[1])

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------------------------- text

_WORD = re.compile(r"[^\W_]+")


def tokenize(sentence: str) -> list[str]:
    """Lowercased words: runs of letters / digits (`"person's"` -> `["person", "s"]`)."""
    return _WORD.findall(sentence.lower())


class Vocabulary:
    """Word ids: PAD = 0 (`<pad>`), UNK = 1 (`<unk>`), the given tokens from 2."""

    PAD = 0
    UNK = 1

    def __init__(self, tokens: list[str]) -> None:
        self._tokens = [PAD_TOKEN, UNK_TOKEN]
        self._ids: dict[str, int] = {PAD_TOKEN: self.PAD, UNK_TOKEN: self.UNK}
        for t in tokens:
            if not isinstance(t, str) or not t:
                raise ValueError(f"vocabulary tokens must be non-empty strings, got {t!r}")
            if t in self._ids:
                raise ValueError(f"vocabulary token {t!r} is duplicate or a special token")
            self._ids[t] = len(self._tokens)
            self._tokens.append(t)

    @classmethod
    def build(cls, sentences: Iterable[str], min_count: int = 1) -> Vocabulary:
        """From (training) sentences: tokens seen >= min_count times, by count descending then
        token."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        counts = collections.Counter(t for s in sentences for t in tokenize(s))
        kept = [t for t, c in counts.items() if c >= min_count]
        return cls(sorted(kept, key=lambda t: (-counts[t], t)))

    def encode(self, sentence: str, max_len: int | None = None) -> np.ndarray:
        """Token ids int32 [L], L <= max_len (truncated), UNK for unknown words."""
        if max_len is not None and max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        words = tokenize(sentence)
        if not words:
            raise ValueError(f"sentence {sentence!r} has no words")
        ids = [self._ids.get(w, self.UNK) for w in words[:max_len]]
        return np.asarray(ids, np.int32)

    def __len__(self) -> int:
        return len(self._tokens)

    def token(self, i: int) -> str:
        if not 0 <= i < len(self._tokens):
            raise ValueError(f"token id {i} out of range 0..{len(self._tokens) - 1}")
        return self._tokens[i]


def load_word_vectors(path: str, vocab: Vocabulary, seed: int = 0) -> tuple[np.ndarray, int]:
    """Word vectors for `vocab` from a GloVe-style text file (`word v1 ... vd` per line).

    d is fixed by the first line; a line with more fields has a word containing spaces (GloVe
    840B) and its last d fields are the vector; fewer fields is an error naming `file:line`.
    Only the vectors of vocabulary words are parsed (the first occurrence of a word wins).

    Returns (vectors float32 [len(vocab), d], num_found): rows of vocab words found in the file;
    the other rows and UNK drawn from N(0, 0.1^2) with `seed`; the PAD row zeros. num_found
    counts vocab words (not the specials) found; none found is an error.
    """
    vectors = None
    found = np.zeros(len(vocab), bool)
    found[: Vocabulary.UNK + 1] = True  # specials are never looked up
    ids = vocab._ids
    d = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n").rstrip(" ")
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not UTF-8 text ({err})") from None
            if not line:
                continue
            if vectors is None:
                d = line.count(" ")
                if d < 1:
                    raise ValueError(f"{path}:{lineno}: expected 'word v1 ... vd', got {line!r}")
                rng = np.random.default_rng(seed)
                vectors = rng.normal(0.0, 0.1, (len(vocab), d)).astype(np.float32)
                vectors[Vocabulary.PAD] = 0.0
            parts = line.rsplit(" ", d)
            if len(parts) != d + 1 or not parts[0]:
                raise ValueError(
                    f"{path}:{lineno}: {len(line.split(' '))} fields (expected a word and {d} "
                    "numbers, as on the first line)"
                )
            i = ids.get(parts[0])
            if i is None or found[i]:
                continue
            try:
                v = np.asarray(parts[1:], dtype=np.float32)
            except ValueError:
                raise ValueError(
                    f"{path}:{lineno}: word {parts[0]!r}: the vector has non-numeric fields"
                ) from None
            if not np.isfinite(v).all():
                raise ValueError(f"{path}:{lineno}: word {parts[0]!r}: non-finite values")
            vectors[i] = v
            found[i] = True
    if vectors is None:
        raise ValueError(f"{path}: no word vectors")
    num_found = int(found.sum()) - 2
    if num_found == 0:
        raise ValueError(f"{path}: none of the {len(vocab) - 2} vocabulary words has a vector")
    return vectors, num_found


def pad_tokens(seqs: list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Token id sequences -> (ids int32 [N, max_len] PAD-filled and truncated, mask bool
    [N, max_len], True on real tokens)."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    ids = np.full((len(seqs), max_len), Vocabulary.PAD, np.int32)
    mask = np.zeros((len(seqs), max_len), bool)
    for n, s in enumerate(seqs):
        s = np.asarray(s)
        if s.ndim != 1:
            raise ValueError(f"sequence {n} has shape {s.shape} (expected [L])")
        k = min(len(s), max_len)
        ids[n, :k] = s[:k]
        mask[n, :k] = True
    return ids, mask
