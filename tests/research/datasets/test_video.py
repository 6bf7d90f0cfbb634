"""research/datasets/video.py: Charades-STA, caption JSON (ActivityNet / TACoS, seconds and
frames) and duration files written here, good and broken; feature stores (npy folder, HDF5 flat
and grouped); tokenizer, vocabulary, GloVe-style word vectors, padding."""

from __future__ import annotations

import json
import os
import re

import h5py
import numpy as np
import pytest

from research.datasets.video import (
    FeatureStore,
    LoadReport,
    Moment,
    Vocabulary,
    load_caption_json,
    load_charades_sta,
    load_durations,
    load_word_vectors,
    pad_tokens,
    tokenize,
)

DURATIONS = {"3MSZA": 31.0, "AO8RW": 20.5}
STA = "3MSZA 24.3 30.4##person turn a light on.\n\nAO8RW 0.0 6.9##a person is putting a book.\n"


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text if isinstance(text, str) else json.dumps(text))
    return str(path)


# --------------------------------------------------------------------------------- durations


def test_durations_from_both_json_styles_and_the_csv(tmp_path):
    nested = {"3MSZA": {"duration": 31.0, "actions": []}, "AO8RW": {"duration": 20.5}}
    assert load_durations(_write(tmp_path, "charades.json", nested)) == DURATIONS
    assert load_durations(_write(tmp_path, "flat.json", DURATIONS)) == DURATIONS
    csv_text = (
        "id,subject,scene,script,length\n"
        '3MSZA,HR43,Kitchen,"A person turns on a light, then\nleaves.",31.0\n'
        "AO8RW,X,Bedroom,reads,20.5\n"
    )
    assert load_durations(_write(tmp_path, "Charades_v1_train.csv", csv_text)) == DURATIONS


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("d.json", {"A": {"length": 3.0}}, r"d\.json: video 'A': no 'duration'"),
        ("d.json", {"A": "3.0"}, r"d\.json: video 'A': duration '3.0'"),
        ("d.json", {"A": {"duration": 0}}, r"d\.json: video 'A': duration 0"),
        ("d.json", [1, 2], r"d\.json: expected a JSON object"),
        ("d.csv", "id,scene\nA,x\n", r"d\.csv:1: header has no column 'length'"),
        ("d.csv", "id,length\nA,3\nB,abc\n", r"d\.csv:3: video 'B': length 'abc'"),
        ("d.csv", "id,length\nA,-1\n", r"d\.csv:2: video 'A': length '-1'"),
        ("d.csv", "id,length\nA,nan\n", r"d\.csv:2: video 'A'"),
    ],
)
def test_bad_durations_name_the_file_and_video(tmp_path, name, content, match):
    with pytest.raises(ValueError, match=match):
        load_durations(_write(tmp_path, name, content))


# ------------------------------------------------------------------------------ charades-sta


def test_charades_sta_reads_moments_and_clips(tmp_path):
    text = STA + "AO8RW 18.0 22.75##the person closes the door\n"
    moments, report = load_charades_sta(_write(tmp_path, "sta.txt", text), DURATIONS)
    assert moments[0] == Moment("3MSZA", 24.3, 30.4, 31.0, "person turn a light on.")
    assert moments[1].vid == "AO8RW" and moments[1].start == 0.0
    assert moments[2].end == 20.5 and moments[2].start == 18.0
    assert report.clipped == 1
    assert str(report) == "sta.txt: 1 moment clipped to the video's duration"
    assert str(LoadReport("x/a.txt", 3)) == "a.txt: 3 moments clipped to the video's duration"


@pytest.mark.parametrize(
    "line, match",
    [
        ("3MSZA 24.3 30.4 person turn", r"sta\.txt:2: video '3MSZA': no '##'"),
        ("3MSZA 24.3##person", r"sta\.txt:2: video '3MSZA': 2 fields before '##'"),
        ("3MSZA 24.3 abc##person", r"sta\.txt:2: video '3MSZA': times '24\.3' 'abc'"),
        ("3MSZA -1 3##person", r"sta\.txt:2: video '3MSZA': start -1\.0 < 0"),
        ("3MSZA 5 3##person", r"sta\.txt:2: video '3MSZA': start 5\.0 > end 3\.0"),
        ("3MSZA 1 3##   ", r"sta\.txt:2: video '3MSZA': empty sentence"),
        ("ZZZZZ 1 3##person", r"sta\.txt:2: video 'ZZZZZ' has no duration"),
        ("3MSZA 31.0 40##person", r"sta\.txt:2: video '3MSZA': start 31\.0 is not before"),
    ],
)
def test_bad_charades_sta_lines_name_file_line_and_video(tmp_path, line, match):
    path = _write(tmp_path, "sta.txt", "AO8RW 0.0 6.9##fine\n" + line + "\n")
    with pytest.raises(ValueError, match=match):
        load_charades_sta(path, DURATIONS)


# ------------------------------------------------------------------------------ caption json


def test_caption_json_in_seconds_with_clipping(tmp_path):
    data = {
        "v_a": {"duration": 10.0, "timestamps": [[0, 4.5], [3, 12]], "sentences": [" A man ", "b"]},
        "v_b": {"duration": 5, "timestamps": [[1, 2]], "sentences": ["c."]},
    }
    moments, report = load_caption_json(_write(tmp_path, "train.json", data))
    assert moments == [
        Moment("v_a", 0.0, 4.5, 10.0, "A man"),
        Moment("v_a", 3.0, 10.0, 10.0, "b"),
        Moment("v_b", 1.0, 2.0, 5.0, "c."),
    ]
    assert report.clipped == 1 and report.path.endswith("train.json")


def test_caption_json_tacos_frames(tmp_path):
    data = {"s13-d21.avi": {"num_frames": 300, "fps": 30.0, "timestamps": [[30, 330]],
                            "sentences": ["He cuts."]}}  # fmt: skip
    moments, report = load_caption_json(_write(tmp_path, "tacos.json", data))
    assert moments == [Moment("s13-d21.avi", 1.0, 10.0, 10.0, "He cuts.")]
    assert report.clipped == 1


GOOD = {"duration": 10.0, "timestamps": [[1, 2]], "sentences": ["s"]}


@pytest.mark.parametrize(
    "change, match",
    [
        ({"duration": None}, r"'v_x': missing 'duration'"),
        ({"sentences": None}, r"'v_x': missing 'sentences'"),
        ({"timestamps": [[1, 2], [3, 4]]}, r"'v_x': 2 timestamps but 1 sentences"),
        ({"timestamps": [[1, 2, 3]]}, r"'v_x': timestamp 0 is \[1, 2, 3\]"),
        ({"timestamps": [["1", 2]]}, r"'v_x': timestamp 0 is \['1', 2\]"),
        ({"timestamps": [[5, 2]]}, r"'v_x', moment 0: start 5\.0 > end 2\.0"),
        ({"timestamps": [[-1, 2]]}, r"'v_x', moment 0: start -1\.0 < 0"),
        ({"sentences": ["  "]}, r"'v_x': sentence 0 is empty"),
        ({"duration": 0}, r"'v_x': duration 0"),
        ({"duration": None, "num_frames": 10, "fps": 0}, r"'v_x': num_frames 10, fps 0"),
    ],
)
def test_bad_caption_json_names_the_file_and_video(tmp_path, change, match):
    entry = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    path = _write(tmp_path, "cap.json", {"v_ok": GOOD, "v_x": entry})
    with pytest.raises(ValueError, match=r"cap\.json: video " + match):
        load_caption_json(path)


# --------------------------------------------------------------------------------- features


def test_feature_store_npy_folder(tmp_path):
    folder = tmp_path / "feats"
    folder.mkdir()
    a = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.save(folder / "vidA.npy", a)
    np.save(folder / "vidB.npy", np.zeros((2, 3, 1), np.float32))
    bad = np.ones((2, 3), np.float32)
    bad[1, 2] = np.nan
    np.save(folder / "vidC.npy", bad)
    store = FeatureStore(str(folder))
    assert "vidA" in store and "vidZ" not in store and store.dim == 3
    x = store.get("vidA")
    assert x.dtype == np.float32 and x.shape == (4, 3)
    np.testing.assert_array_equal(x, a)
    with pytest.raises(ValueError, match=r"feats: no features for video 'vidZ'"):
        store.get("vidZ")
    with pytest.raises(ValueError, match=r"feats: video 'vidB': features of shape \(2, 3, 1\)"):
        store.get("vidB")
    with pytest.raises(ValueError, match=r"feats: video 'vidC': features contain NaN"):
        store.get("vidC")
    store.close()


def test_feature_store_hdf5_flat_and_grouped(tmp_path):
    path = str(tmp_path / "f.h5")
    with h5py.File(path, "w") as f:
        f["v_a"] = np.ones((5, 4), np.float16)
        f.create_group("v_b")["c3d_features"] = np.full((3, 4), 2.0)
        f["v_c"] = np.ones(4)
        f["v_d"] = np.zeros((0, 4))
        f["v_e"] = np.array([[1.0, np.inf]])
    with FeatureStore(path) as store:
        assert store.dim == 4 and "v_b" in store and "v_z" not in store
        assert store.get("v_a").dtype == np.float32 and store.get("v_a").shape == (5, 4)
        np.testing.assert_array_equal(store.get("v_b"), np.full((3, 4), 2.0))
        with pytest.raises(ValueError, match=r"f\.h5: no features for video 'v_z'"):
            store.get("v_z")
        with pytest.raises(ValueError, match=r"f\.h5: video 'v_c': features of shape \(4,\)"):
            store.get("v_c")
        with pytest.raises(ValueError, match=r"f\.h5: video 'v_d': features of shape \(0, 4\)"):
            store.get("v_d")
        with pytest.raises(ValueError, match=r"f\.h5: video 'v_e': features contain NaN or inf"):
            store.get("v_e")
    assert store._h5 is None
    with pytest.raises(ValueError, match=r"feats\.pkl: expected a folder"):
        FeatureStore(str(tmp_path / "feats.pkl"))


# -------------------------------------------------------------------------------------- text


def test_tokenize():
    assert tokenize("The person's  CUP-holder, 2nd time.") == [
        "the", "person", "s", "cup", "holder", "2nd", "time",
    ]  # fmt: skip
    assert tokenize(" ... ") == []


def test_vocabulary_build_encode_and_unk():
    vocab = Vocabulary.build(["a person opens a door.", "the person sits", "a b"], min_count=1)
    assert [vocab.token(i) for i in range(len(vocab))] == [
        "<pad>", "<unk>", "a", "person", "b", "door", "opens", "sits", "the",
    ]  # fmt: skip
    assert len(Vocabulary.build(["a person opens a door.", "the person sits"], min_count=2)) == 4
    np.testing.assert_array_equal(vocab.encode("A person eats."), [2, 3, Vocabulary.UNK])
    enc = vocab.encode("a person opens a door", max_len=3)
    assert enc.dtype == np.int32 and enc.tolist() == [2, 3, 6]
    with pytest.raises(ValueError, match=r"sentence '\?!' has no words"):
        vocab.encode("?!")
    with pytest.raises(ValueError, match="duplicate"):
        Vocabulary(["a", "a"])


def test_load_word_vectors(tmp_path):
    vocab = Vocabulary(["person", "door", "missing", ". ."])
    text = (
        "the 0.1 0.2 0.3\n"
        "person 1 2 3\n"
        ". . 7 8 9\n"  # a GloVe 840B word with a space: the last 3 fields are the vector
        "person 9 9 9\n"  # a later duplicate is ignored
        "door -1 -2 -3.5\n"
    )
    vectors, found = load_word_vectors(_write(tmp_path, "glove.txt", text), vocab, seed=0)
    assert vectors.shape == (6, 3) and vectors.dtype == np.float32 and found == 3
    np.testing.assert_array_equal(vectors[Vocabulary.PAD], 0.0)
    np.testing.assert_array_equal(vectors[2:4], [[1, 2, 3], [-1, -2, -3.5]])
    np.testing.assert_array_equal(vectors[5], [7, 8, 9])
    assert np.abs(vectors[[1, 4]]).max() < 1.0 and np.abs(vectors[4]).sum() > 0
    again, _ = load_word_vectors(_write(tmp_path, "glove.txt", text), vocab, seed=0)
    np.testing.assert_array_equal(again, vectors)

    with pytest.raises(ValueError, match=r"none\.txt: none of the 4 vocabulary words"):
        load_word_vectors(_write(tmp_path, "none.txt", "the 1 2 3\nof 4 5 6\n"), vocab)
    with pytest.raises(ValueError, match=re.escape("short.txt:2: 3 fields")):
        load_word_vectors(_write(tmp_path, "short.txt", "the 1 2 3\ndoor 1 2\n"), vocab)


def test_pad_tokens():
    ids, mask = pad_tokens([np.array([5, 6, 7], np.int32), np.array([8])], max_len=2)
    assert ids.dtype == np.int32 and mask.dtype == bool
    np.testing.assert_array_equal(ids, [[5, 6], [8, 0]])
    np.testing.assert_array_equal(mask, [[True, True], [True, False]])
    ids, mask = pad_tokens([np.array([1])], max_len=3)
    np.testing.assert_array_equal(ids, [[1, 0, 0]])
    assert pad_tokens([], max_len=4)[0].shape == (0, 4)


def test_moment_is_frozen():
    m = Moment("v", 0.0, 1.0, 2.0, "s")
    with pytest.raises(AttributeError):
        m.start = 1.0  # type: ignore[misc]
    assert os.path.basename(LoadReport("a/b.txt").path) == "b.txt"
