"""research/datasets/images.py: digits, an ImageFolder written by the test, long-tailed subsets,
augmentations, epoch order."""

import os
import re

import numpy as np
import pytest
from PIL import Image

from research.datasets import images as img


def _write_folder(root, split, counts, size=(10, 14)):
    rng = np.random.default_rng(0)
    for name, n in counts.items():
        os.makedirs(os.path.join(root, split, name))
        for i in range(n):
            pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(root, split, name, f"{i}.png"))
    open(os.path.join(root, split, next(iter(counts)), "notes.txt"), "w").close()  # ignored


def test_image_folder_reads_the_layout_and_loads_batches(tmp_path):
    root = str(tmp_path)
    _write_folder(root, "train", {"cat": 3, "ant": 2, "dog": 4})
    _write_folder(root, "val", {"cat": 1, "ant": 1, "dog": 1})
    train = img.ImageFolder(root, "train")
    assert train.classes == ["ant", "cat", "dog"] and train.num_classes == 3
    assert len(train) == 9
    np.testing.assert_array_equal(train.labels, [0, 0, 1, 1, 1, 2, 2, 2, 2])
    assert all(p.endswith(".png") for p in train.paths)
    rng = np.random.default_rng(0)
    x = train.load(np.arange(9), image_size=8, train=True, rng=rng)
    assert x.shape == (9, 8, 8, 3) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    again = train.load(np.arange(9), image_size=8, train=True, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(x, again)  # seeded
    val = img.ImageFolder(root, "val", classes=train.classes)
    e = val.load(np.arange(3), image_size=8, train=False)
    assert e.shape == (3, 8, 8, 3)
    np.testing.assert_array_equal(val.load(np.arange(3), image_size=8, train=False), e)
    full = val.load_all(6)
    first = np.asarray(Image.open(val.paths[0]).convert("RGB").resize((6, 6), Image.BILINEAR))
    np.testing.assert_allclose(full[0], first / 255.0, atol=1e-6)


def test_image_folder_errors_name_the_problem(tmp_path):
    root = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="train"):
        img.ImageFolder(root, "train")
    _write_folder(root, "train", {"a": 1, "b": 1})
    _write_folder(root, "val", {"a": 1, "c": 1})
    with pytest.raises(ValueError, match="missing \\['b'\\].*unexpected \\['c'\\]"):
        img.ImageFolder(root, "val", classes=["a", "b"])
    with pytest.raises(ValueError, match="needs an rng"):
        img.ImageFolder(root, "train").load(np.arange(1), image_size=4, train=True)


def test_digits_are_upsampled_and_split_by_class():
    d = img.load_digits(image_size=16, test_fraction=0.25, seed=0)
    assert d.train_x.shape[1:] == (16, 16, 1) and d.num_classes == 10
    assert len(d.train_y) + len(d.test_y) == 1797
    assert 0.0 <= d.train_x.min() and d.train_x.max() <= 1.0
    frac = np.bincount(d.test_y) / (np.bincount(d.test_y) + np.bincount(d.train_y))
    np.testing.assert_allclose(frac, 0.25, atol=0.01)
    same = img.load_digits(image_size=16, test_fraction=0.25, seed=0)
    np.testing.assert_array_equal(same.test_y, d.test_y)


def test_long_tailed_subset_follows_the_imbalance_factor():
    labels = np.repeat(np.arange(5), 100)
    keep = img.long_tailed_indices(labels, 10.0, seed=0)
    counts = np.bincount(labels[keep])
    assert counts[0] == 100 and counts[-1] == 10
    assert (np.diff(counts) <= 0).all()
    assert len(np.unique(keep)) == len(keep)
    with pytest.raises(ValueError, match="imbalance_factor"):
        img.long_tailed_indices(labels, 0.5)


def test_augmentations_are_seeded_and_shape_preserving():
    rng = np.random.default_rng(0)
    x = rng.random((16, 12, 12, 3)).astype(np.float32)
    crop = img.pad_and_crop(x, 2, np.random.default_rng(1))
    assert crop.shape == x.shape
    for i in range(16):  # each crop is a shifted copy: some 8 x 8 block equals the original's
        found = any(
            np.array_equal(crop[i, 2:10, 2:10], x[i, 2 + dy : 10 + dy, 2 + dx : 10 + dx])
            for dy in range(-2, 3)
            for dx in range(-2, 3)
        )
        assert found
    flipped = img.random_flip(x, np.random.default_rng(1))
    assert all(
        np.array_equal(f, o) or np.array_equal(f, o[:, ::-1])
        for f, o in zip(flipped, x, strict=True)
    )
    a = img.rand_augment(x, np.random.default_rng(3), num_ops=2, magnitude=9, prob=1.0)
    b = img.rand_augment(x, np.random.default_rng(3), num_ops=2, magnitude=9, prob=1.0)
    np.testing.assert_array_equal(a, b)
    assert a.shape == x.shape and 0.0 <= a.min() and a.max() <= 1.0
    assert not np.allclose(a, x)
    for name in img.RAND_AUGMENT_OPS:
        out = img.rand_augment(x[:, :, :, :1], rng, num_ops=1, ops=(name,), prob=1.0)
        assert out.shape == (16, 12, 12, 1) and np.isfinite(out).all(), name
    with pytest.raises(ValueError, match="unknown RandAugment ops"):
        img.rand_augment(x, rng, ops=("blur",))


def _jpeg_folder(root, n=3):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        os.makedirs(os.path.join(root, "train", name))
        for i in range(n):
            pixels = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(root, "train", name, f"{i}.jpg"))
    return img.ImageFolder(root, "train")


def test_a_truncated_or_corrupt_image_names_the_file(tmp_path):
    folder = _jpeg_folder(str(tmp_path))
    bad = folder.paths[4]
    data = open(bad, "rb").read()
    open(bad, "wb").write(data[: len(data) // 2])  # truncated JPEG
    for load in (
        lambda: folder.load_all(8),
        lambda: folder.load(np.arange(6), image_size=8, train=False),
        lambda: folder.load(np.arange(6), image_size=8, train=True, rng=np.random.default_rng()),
    ):
        with pytest.raises(
            ValueError, match=f"{re.escape(bad)}: cannot decode the image .*[Tt]runcated"
        ):
            load()
    open(bad, "wb").write(b"not an image")
    with pytest.raises(ValueError, match=f"{re.escape(bad)}: cannot decode the image"):
        folder.load_all(8)
    os.remove(bad)
    with pytest.raises(FileNotFoundError, match=re.escape(bad)):
        folder.load_all(8)


def test_a_float_image_with_nan_pixels_names_the_file(tmp_path):
    folder = _jpeg_folder(str(tmp_path), n=1)
    pixels = np.full((6, 6), 0.5, np.float32)
    pixels[0, 0], pixels[1, 1] = np.nan, np.inf
    bad = os.path.join(str(tmp_path), "train", "b", "float.tif")
    Image.fromarray(pixels, mode="F").save(bad)
    folder = img.ImageFolder(str(tmp_path), "train")
    with pytest.raises(ValueError, match=f"{re.escape(bad)}: 2 NaN or infinite pixel values"):
        folder.load_all(8)
    with pytest.raises(ValueError, match="float.tif: 2 NaN"):
        folder.load(np.arange(len(folder)), image_size=8, train=False)
