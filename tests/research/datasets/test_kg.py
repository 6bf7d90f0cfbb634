"""KG loaders on small files written here (including broken ones), reverses, filter index, and
the synthetic generator; WN18RR read through entities.dict drops no triple."""

import os

import numpy as np
import pytest

from research.datasets.kg import (
    add_reverse,
    eval_queries,
    filter_index,
    load_kg,
    read_dict,
    synthetic_kg,
    write_kg,
)
from tests.conftest import SHARED_DATA

TRAIN = "a\tlikes\tb\nb\tlikes\tc\nc\tis\ta\n"


def _write(folder, files):
    os.makedirs(folder, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)
    return str(folder)


def test_dicts_built_from_triples_when_absent(tmp_path):
    d = _write(
        tmp_path, {"train.txt": TRAIN, "valid.txt": "a\tis\tc\n", "test.txt": "\nc\tlikes\ta\n"}
    )
    kg = load_kg(d)
    assert kg.entities == ["a", "b", "c"] and kg.relations == ["likes", "is"]
    np.testing.assert_array_equal(kg.train, [[0, 0, 1], [1, 0, 2], [2, 1, 0]])
    np.testing.assert_array_equal(kg.test, [[2, 0, 0]])
    assert kg.summary()["train"] == 3


def test_dicts_are_used_when_present(tmp_path):
    files = {
        "train.txt": TRAIN,
        "valid.txt": "",
        "test.txt": "d\tis\ta\n",
        "entities.dict": "0\tc\n1\tb\n2\ta\n3\td\n",
        "relations.dict": "0\tis\n1\tlikes\n",
    }
    kg = load_kg(_write(tmp_path, files))
    np.testing.assert_array_equal(kg.train[0], [2, 1, 1])
    np.testing.assert_array_equal(kg.test, [[3, 0, 2]])  # d only in test: kept via the dict
    assert kg.valid.shape == (0, 3)


@pytest.mark.parametrize(
    "files, match",
    [
        ({"train.txt": "a\tlikes\n"}, r"train.txt:1: expected 'head<TAB>relation<TAB>tail'"),
        ({"train.txt": TRAIN + "a likes b\n"}, r"train.txt:4: expected"),
        ({"test.txt": "a\tlikes\tzzz\n"}, r"test.txt:1: unknown entity 'zzz'"),
        ({"valid.txt": "a\tloves\tb\n"}, r"valid.txt:1: unknown relation 'loves'"),
        ({"entities.dict": "0\ta\n0\tb\n1\tc\n"}, r"entities.dict:2: duplicate id 0"),
        ({"entities.dict": "0\ta\n1\ta\n"}, r"entities.dict:2: duplicate name 'a'"),
        ({"entities.dict": "0\ta\n2\tb\n5\tc\n"}, r"entities.dict: ids must be 0..2"),
        ({"relations.dict": "x\tlikes\n"}, r"relations.dict:1: id 'x' is not an integer"),
    ],
)
def test_broken_files_name_file_and_line(tmp_path, files, match):
    base = {
        "train.txt": TRAIN,
        "valid.txt": "",
        "test.txt": "",
        "entities.dict": "0\ta\n1\tb\n2\tc\n",
        "relations.dict": "0\tlikes\n1\tis\n",
    }
    base.update(files)
    with pytest.raises(ValueError, match=match):
        load_kg(_write(tmp_path, base))


@pytest.mark.parametrize(
    "files, match",
    [
        ({"train.txt": TRAIN + "a\tlikes\tc \n"}, r"train.txt:4: name 'c ' padded with spaces"),
        ({"valid.txt": "a\t likes\tb\n"}, r"valid.txt:1: name ' likes' padded with spaces"),
        ({"entities.dict": "0\ta\n1\tb \n2\tc\n"}, r"entities.dict:2: name 'b ' padded"),
        ({"test.txt": "a\tlikes\tb\n\xff\tis\ta\n"}, r"test.txt:2: not UTF-8 text"),
        ({"train.txt": "\n\n"}, r"train.txt: no triples"),
    ],
)
def test_padded_names_bad_bytes_and_an_empty_train_name_the_file(tmp_path, files, match):
    base = {"train.txt": TRAIN, "valid.txt": "", "test.txt": ""}
    base.update(files)
    folder = _write(tmp_path, {k: v for k, v in base.items() if "\xff" not in v})
    for name, text in base.items():
        if "\xff" in text:  # bytes that are not UTF-8
            with open(os.path.join(folder, name), "wb") as f:
                f.write(text.encode("latin-1"))
    with pytest.raises(ValueError, match=match):
        load_kg(folder)


def test_a_file_given_as_the_folder(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text(TRAIN)
    with pytest.raises(NotADirectoryError, match="train.txt is not a folder"):
        load_kg(str(path))


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_kg(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="valid.txt is missing"):
        load_kg(_write(tmp_path, {"train.txt": TRAIN}))


def test_reverse_and_filter_index():
    kg = synthetic_kg(6, group_size=2, num_relations=2, seed=0)
    rev = add_reverse(kg.train, kg.num_relations)
    n = len(kg.train)
    np.testing.assert_array_equal(rev[n:, 0], kg.train[:, 2])
    np.testing.assert_array_equal(rev[n:, 1], kg.train[:, 1] + 2)
    queries = eval_queries(kg, "test")
    filt = filter_index(kg, queries)
    every = {tuple(t) for t in add_reverse(np.concatenate([kg.train, kg.valid, kg.test]), 2)}
    for q, row, c in zip(queries, filt.tails, filt.counts, strict=True):
        want = sorted(t for (h, r, t) in every if h == q[0] and r == q[1])
        assert sorted(row[:c].tolist()) == want and np.all(row[c:] == -1)
        assert q[2] in row[:c]


def test_synthetic_kg_structure_and_round_trip(tmp_path):
    kg = synthetic_kg(10, group_size=3, num_relations=3, seed=1)
    assert kg.num_entities == 30 and kg.num_relations == 3
    total = len(kg.train) + len(kg.valid) + len(kg.test)
    assert total == 10 * 3 * 3 and len(kg.test) > 0
    seen = set(kg.train[:, 0]) | set(kg.train[:, 2])
    assert set(kg.test[:, 0]) <= seen and set(kg.test[:, 2]) <= seen
    write_kg(kg, str(tmp_path))
    back = load_kg(str(tmp_path))
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(back.split(split), kg.split(split))
    assert read_dict(str(tmp_path / "relations.dict")) == kg.relations


WN18RR = os.path.join(SHARED_DATA, "kg", "WN18RR")


@pytest.mark.skipif(not os.path.isdir(WN18RR), reason="shared WN18RR not present")
def test_wn18rr_through_entities_dict_drops_nothing():
    kg = load_kg(WN18RR)
    assert kg.num_entities == 40943 and kg.num_relations == 11
    assert (len(kg.train), len(kg.valid), len(kg.test)) == (86835, 3034, 3134)
    # PyKEEN's map from train.txt alone drops valid/test triples with unseen entities; here
    # every line of every split is kept (counted from the files themselves).
    for split in ("train", "valid", "test"):
        with open(os.path.join(WN18RR, f"{split}.txt")) as f:
            assert len(kg.split(split)) == sum(1 for line in f if line.strip())
    for split in ("valid", "test"):  # the triples a train-only map drops: 210 in each split
        unseen = ~np.isin(kg.split(split)[:, [0, 2]], kg.train[:, [0, 2]])
        assert unseen.any(axis=1).sum() == 210
