"""research/datasets/images.py: digits, IDX / MNIST files written by the test (and the real
MNIST when ../shared has it), CIFAR-10 python batches (folder and tar.gz) written by the test, an
ImageFolder written by the test, long-tailed and balanced subsets, augmentations, epoch order."""

import gzip
import os
import pickle
import re
import struct
import tarfile

import numpy as np
import pytest
from PIL import Image

from research.datasets import images as img
from tests.conftest import SHARED_DATA

MNIST = os.path.join(SHARED_DATA, "images", "mnist")


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
    some = train.load_all(6, np.array([7, 2, 7]))  # a subset decodes only its images
    np.testing.assert_array_equal(some, train.load_all(6)[[7, 2, 7]])
    assert train.load_all(6, np.array([], int)).shape == (0, 6, 6, 3)
    with pytest.raises(ValueError, match=r"indices in 0\.\.9, expected 0\.\.8"):
        train.load_all(6, np.array([0, 9]))
    with pytest.raises(ValueError, match="indices must be integers"):
        train.load_all(6, np.array([0.0, 1.0]))


def test_load_all_cached_writes_reads_back_and_misses_a_changed_folder(tmp_path):
    root, cache = str(tmp_path / "data"), str(tmp_path / "cache")
    _write_folder(root, "train", {"cat": 3, "ant": 2})
    folder = img.ImageFolder(root, "train")
    first, hit = folder.load_all_cached(6, cache)
    assert not hit and first.dtype == np.uint8 and first.shape == (5, 6, 6, 3)
    np.testing.assert_array_equal(first, folder.load_all_uint8(6))
    np.testing.assert_allclose(img.to_unit(first), folder.load_all(6))  # float32 = uint8 / 255
    np.testing.assert_array_equal(folder.load_all_uint8(6, workers=3), first)  # threads: same
    (written,) = os.listdir(cache)
    assert written.startswith("train_6px_") and written.endswith(".npy")
    again, hit = img.ImageFolder(root, "train").load_all_cached(6, cache)
    assert hit
    np.testing.assert_array_equal(again, first)
    other, hit = folder.load_all_cached(4, cache)  # another size: its own file
    assert not hit and other.shape == (5, 4, 4, 3) and len(os.listdir(cache)) == 2
    # Rewriting one image (new content, size and time) changes the key: decoded again, and the
    # stale file of that split and size is replaced.
    path, key = folder.paths[0], folder.fingerprint()
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(path)
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    changed = img.ImageFolder(root, "train")
    assert changed.fingerprint() != key
    fresh, hit = changed.load_all_cached(6, cache)
    assert not hit and fresh[0].max() == 0 and fresh[0].shape == (6, 6, 3)
    np.testing.assert_array_equal(fresh[1:], first[1:])
    names = sorted(os.listdir(cache))
    assert len(names) == 2 and written not in names
    # An added image changes the key too; a truncated cache file is decoded again.
    key = changed.fingerprint()
    _write_folder(root, "train", {"bee": 1})
    grown = img.ImageFolder(root, "train")
    assert grown.fingerprint() != key
    x, hit = grown.load_all_cached(6, cache)
    assert not hit and len(x) == 6
    (current,) = [n for n in os.listdir(cache) if n.startswith("train_6px_")]
    with open(os.path.join(cache, current), "r+b") as f:
        f.truncate(100)
    y, hit = grown.load_all_cached(6, cache)
    assert not hit
    np.testing.assert_array_equal(y, x)


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


_IDX_CODES = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}


def _write_idx(path, array, *, code=None, extra=b""):
    """Writes `array` as an IDX file (gzipped when path ends in .gz); `code` overrides the type
    byte and `extra` bytes are appended after the data. Returns path."""
    array = np.asarray(array)
    code = _IDX_CODES[array.dtype.str[1:]] if code is None else code
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes() + extra
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(data)
    return path


def test_read_idx_round_trips_every_type_raw_and_gzipped(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [
        rng.integers(0, 256, (5, 4, 3)).astype(np.uint8),
        rng.integers(-128, 128, (7,)).astype(np.int8),
        rng.integers(-(2**15), 2**15, (2, 3)).astype(np.int16),
        rng.integers(-(2**31), 2**31, (3, 2)).astype(np.int32),
        rng.normal(size=(4, 2, 2)).astype(np.float32),
        rng.normal(size=(6,)),
    ]
    for k, a in enumerate(arrays):
        for suffix in ("", ".gz"):
            path = _write_idx(str(tmp_path / f"a{k}.idx{suffix}"), a)
            back = img.read_idx(path)
            assert back.dtype == a.dtype and back.dtype.isnative and back.flags.writeable
            np.testing.assert_array_equal(back, a)
    empty = img.read_idx(_write_idx(str(tmp_path / "e.idx"), np.zeros((0, 28, 28), np.uint8)))
    assert empty.shape == (0, 28, 28)


def test_read_idx_errors_name_the_file(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    short = _write_idx(str(tmp_path / "short.gz"), a[:1])
    with gzip.open(short, "rb") as f:
        data = f.read()
    with gzip.open(short, "wb") as f:  # header says 2 x 3 x 4: patch the first size to 2
        f.write(data[:4] + np.asarray([2], ">u4").tobytes() + data[8:])
    with pytest.raises(
        ValueError,
        match=re.escape(f"{short}: expected 24 bytes for shape (2, 3, 4) of uint8, found 12"),
    ):
        img.read_idx(short)
    long = _write_idx(str(tmp_path / "long"), a, extra=b"\x00")
    with pytest.raises(ValueError, match=re.escape(f"{long}: expected 24 bytes") + ".*found 25"):
        img.read_idx(long)
    bad = str(tmp_path / "bad")
    with open(bad, "wb") as f:
        f.write(b"\x01\x00\x08\x01" + np.asarray([1], ">u4").tobytes() + b"\x05")
    with pytest.raises(ValueError, match=re.escape(bad) + ": bad IDX magic 01000801"):
        img.read_idx(bad)
    code = _write_idx(str(tmp_path / "code"), a, code=0x0A)
    with pytest.raises(ValueError, match=re.escape(code) + ": unknown IDX type code 0x0A"):
        img.read_idx(code)
    header = str(tmp_path / "header")
    with open(header, "wb") as f:
        f.write(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(ValueError, match=re.escape(header) + ": header declares 3 dimensions"):
        img.read_idx(header)
    corrupt = str(tmp_path / "corrupt.gz")
    with open(corrupt, "wb") as f:
        f.write(gzip.compress(b"\x00" * 100)[:20])  # truncated gzip stream
    with pytest.raises(ValueError, match=re.escape(corrupt) + ": cannot decompress"):
        img.read_idx(corrupt)
    missing = str(tmp_path / "nothing-idx1-ubyte")
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        img.read_idx(missing)


def _fake_mnist(root, n_train=20, n_test=10, gz=(True, False, False, True)):
    rng = np.random.default_rng(0)
    arrays = [
        rng.integers(0, 256, (n_train, 28, 28)).astype(np.uint8),
        np.arange(n_train, dtype=np.uint8) % 10,
        rng.integers(0, 256, (n_test, 28, 28)).astype(np.uint8),
        (np.arange(n_test, dtype=np.uint8) * 3) % 10,
    ]
    for name, a, z in zip(img.MNIST_FILES, arrays, gz, strict=True):
        _write_idx(os.path.join(root, name + (".gz" if z else "")), a)
    return arrays


def test_load_mnist_reads_the_four_files_raw_or_gzipped(tmp_path):
    root = str(tmp_path)
    train_x, train_y, test_x, test_y = _fake_mnist(root)
    d = img.load_mnist(root)
    assert d.train_x.shape == (20, 28, 28, 1) and d.test_x.shape == (10, 28, 28, 1)
    assert d.train_x.dtype == np.float32 and d.train_y.dtype == np.int32
    assert d.num_classes == 10
    np.testing.assert_array_equal(d.train_x[..., 0], train_x / np.float32(255))
    np.testing.assert_array_equal(d.test_x[..., 0], test_x / np.float32(255))
    np.testing.assert_array_equal(d.train_y, train_y)
    np.testing.assert_array_equal(d.test_y, test_y)
    np.testing.assert_allclose(d.mean, (train_x.mean() / 255,), rtol=1e-12)
    np.testing.assert_allclose(d.std, ((train_x / 255).std(),), rtol=1e-12)


def test_load_mnist_errors_name_the_files(tmp_path):
    root = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere does not exist.*t10k-labels-idx1-ubyte"):
        img.load_mnist(os.path.join(root, "nowhere"))
    _fake_mnist(root)
    os.remove(os.path.join(root, "t10k-labels-idx1-ubyte.gz"))
    with pytest.raises(
        FileNotFoundError,
        match=re.escape(f"{root}: no t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte.gz"),
    ):
        img.load_mnist(root)
    labels = os.path.join(root, "t10k-labels-idx1-ubyte")
    _write_idx(labels, np.zeros(9, np.uint8))
    with pytest.raises(
        ValueError, match=r"t10k-images-idx3-ubyte has 10 images but .*t10k-labels-idx1-ubyte has 9"
    ):
        img.load_mnist(root)
    _write_idx(labels, np.full(10, 10, np.uint8))
    with pytest.raises(
        ValueError, match=r"t10k-labels-idx1-ubyte: labels in 10\.\.10 \(expected 0\.\.9\)"
    ):
        img.load_mnist(root)
    _write_idx(labels, np.zeros((10, 1), np.uint8))
    with pytest.raises(ValueError, match=r"labels of shape \(10, 1\) \(expected \[N\]\)"):
        img.load_mnist(root)
    _write_idx(labels, np.zeros(10, np.uint8))
    _write_idx(os.path.join(root, "t10k-images-idx3-ubyte"), np.zeros((10, 784), np.uint8))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte: images of shape \(10, 784\)"):
        img.load_mnist(root)


@pytest.mark.skipif(not os.path.isdir(MNIST), reason=f"no MNIST at {MNIST}")
def test_real_mnist():
    d = img.load_mnist(MNIST)
    assert d.train_x.shape == (60000, 28, 28, 1) and d.test_x.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(d.train_y[:10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])
    np.testing.assert_array_equal(d.test_y[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
    assert abs(d.mean[0] * 255 - 33.32) < 0.01
    assert abs(d.std[0] - 0.3081) < 1e-4
    assert 0.0 == d.train_x.min() and d.train_x.max() == 1.0
    counts = img.class_counts(d.train_y, 10)
    np.testing.assert_array_equal(
        counts, [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    )


CIFAR_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship")
CIFAR_NAMES = (*CIFAR_NAMES, "truck")


def _py2_pickle(obj):
    """What Python 2's cPickle.dump(obj, f, 2) with numpy 1.x writes (as the real CIFAR-10
    files are) for dicts, lists, str (here bytes), ints and uint8 [N, 3072] arrays."""

    def s(b):  # SHORT_BINSTRING / BINSTRING: Python 2 str, bytes under encoding="bytes"
        return (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<i", len(b))) + b

    def i(v):  # BININT
        return b"J" + struct.pack("<i", v)

    def ops(o):
        if isinstance(o, dict):
            return b"}(" + b"".join(ops(k) + ops(v) for k, v in o.items()) + b"u"
        if isinstance(o, list):
            return b"](" + b"".join(ops(v) for v in o) + b"e"
        if isinstance(o, bytes):
            return s(o)
        if isinstance(o, int):
            return i(o)
        assert isinstance(o, np.ndarray) and o.dtype == np.uint8 and o.ndim == 2
        return (  # _reconstruct(ndarray, (0,), "b"), then its state (1, shape, dtype, F, raw)
            b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + i(0) + b"\x85"
            + s(b"b") + b"\x87R(" + i(1) + i(o.shape[0]) + i(o.shape[1]) + b"\x86"
            + b"cnumpy\ndtype\n" + s(b"u1") + i(0) + i(1) + b"\x87R"
            + b"(" + i(3) + s(b"|") + b"NNN" + i(-1) + i(-1) + i(0) + b"tb"
            + b"\x89" + s(o.tobytes()) + b"tb"
        )  # fmt: skip

    return b"\x80\x02" + ops(obj) + b"."


def _pickle_to(path, obj, protocol=2):
    with open(path, "wb") as f:
        if protocol == "py2":
            f.write(_py2_pickle(obj))
        else:
            pickle.dump(obj, f, protocol=protocol)


def _fake_cifar(folder, n=3, n_test=2, protocol=2):
    """The six batches and batches.meta in `folder`, n images per training batch; returns the
    batch dicts by file name."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(1)
    batches = {}
    for i, name in enumerate((*img.CIFAR10_TRAIN, "test_batch")):
        k = n_test if name == "test_batch" else n
        batches[name] = {
            b"batch_label": f"batch {i}".encode(),
            b"labels": [int(v) for v in (np.arange(k) * 3 + i) % 10],
            b"data": rng.integers(0, 256, (k, 3072), dtype=np.uint8),
            b"filenames": [f"{i}_{j}.png".encode() for j in range(k)],
        }
        _pickle_to(os.path.join(folder, name), batches[name], protocol)
    meta = {b"label_names": [c.encode() for c in CIFAR_NAMES], b"num_vis": 3072}
    _pickle_to(os.path.join(folder, "batches.meta"), meta, protocol)
    return batches


def _planes_to_hwc(data):
    """Independent of the loader: rows of 1024 R, G, B values -> [N, 32, 32, 3], by loops."""
    out = np.zeros((len(data), 32, 32, 3), np.uint8)
    for c in range(3):
        for y in range(32):
            out[:, y, :, c] = data[:, c * 1024 + y * 32 : c * 1024 + (y + 1) * 32]
    return out


@pytest.mark.parametrize("protocol", ["py2", 2, 4, 5])
def test_load_cifar10_batches_pixel_layout_labels_and_statistics(tmp_path, protocol):
    folder = str(tmp_path)
    batches = _fake_cifar(folder, protocol=protocol)
    # An image whose planes differ: R counts along the row-major pixel index, G is constant,
    # B is set at one pixel only.
    first = batches["data_batch_2"]
    r = (np.arange(1024) % 251).astype(np.uint8)
    g = np.full(1024, 200, np.uint8)
    b = np.zeros(1024, np.uint8)
    b[1 * 32 + 5] = 77  # y = 1, x = 5
    first[b"data"][0] = np.concatenate([r, g, b])
    _pickle_to(os.path.join(folder, "data_batch_2"), first, protocol)

    d = img.load_cifar10_batches(folder)
    assert d.train_x.shape == (15, 32, 32, 3) and d.test_x.shape == (2, 32, 32, 3)
    assert d.train_x.dtype == np.float32 and d.test_x.dtype == np.float32
    assert d.train_y.dtype == np.int32 and d.test_y.dtype == np.int32
    assert d.num_classes == 10 and d.class_names == CIFAR_NAMES
    x = d.train_x[3]  # data_batch_2's first image
    np.testing.assert_array_equal(x[0, 0], np.float32([0, 200, 0]) / np.float32(255))
    np.testing.assert_array_equal(x[0, 1], np.float32([1, 200, 0]) / np.float32(255))
    np.testing.assert_array_equal(x[1, 0], np.float32([32, 200, 0]) / np.float32(255))
    np.testing.assert_array_equal(x[1, 5], np.float32([37, 200, 77]) / np.float32(255))
    np.testing.assert_array_equal(x[31, 31], np.float32([1023 % 251, 200, 0]) / np.float32(255))
    raw = np.concatenate([batches[n][b"data"] for n in img.CIFAR10_TRAIN])
    train = _planes_to_hwc(raw)
    np.testing.assert_array_equal(d.train_x, train / np.float32(255))
    np.testing.assert_array_equal(
        d.test_x, _planes_to_hwc(batches["test_batch"][b"data"]) / np.float32(255)
    )
    labels = np.concatenate([batches[n][b"labels"] for n in img.CIFAR10_TRAIN])
    np.testing.assert_array_equal(d.train_y, labels)
    np.testing.assert_array_equal(d.test_y, batches["test_batch"][b"labels"])
    pixels = train.reshape(-1, 3) / 255.0
    assert len(d.mean) == 3 and len(d.std) == 3
    np.testing.assert_allclose(d.mean, pixels.mean(0), rtol=1e-12)
    np.testing.assert_allclose(d.std, pixels.std(0), rtol=1e-12)


def test_load_cifar10_batches_from_the_parent_folder_and_the_tar_gz(tmp_path):
    folder = str(tmp_path / "cifar-10-batches-py")
    _fake_cifar(folder)
    direct = img.load_cifar10_batches(folder)
    archive = str(tmp_path / "cifar-10-python.tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    before = sorted(os.listdir(tmp_path))
    for root in (str(tmp_path), archive):
        d = img.load_cifar10_batches(root)
        for field in ("train_x", "train_y", "test_x", "test_y"):
            np.testing.assert_array_equal(getattr(d, field), getattr(direct, field))
        assert (d.mean, d.std, d.class_names) == (direct.mean, direct.std, direct.class_names)
    assert sorted(os.listdir(tmp_path)) == before  # the archive was not extracted
    flat = str(tmp_path / "flat.tar")  # the members at the top level of a plain tar
    with tarfile.open(flat, "w") as tar:
        for name in img.CIFAR10_FILES:
            tar.add(os.path.join(folder, name), arcname=name)
    np.testing.assert_array_equal(img.load_cifar10_batches(flat).train_y, direct.train_y)


def test_load_cifar10_batches_missing_files_name_the_path(tmp_path):
    nowhere = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=re.escape(nowhere) + " does not exist.*test_batch"):
        img.load_cifar10_batches(nowhere)
    folder = str(tmp_path / "cifar-10-batches-py")
    _fake_cifar(folder)
    archive = str(tmp_path / "partial.tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        for name in img.CIFAR10_FILES[:-2]:
            tar.add(os.path.join(folder, name), arcname=f"cifar-10-batches-py/{name}")
    with pytest.raises(
        FileNotFoundError,
        match=re.escape(
            f"{archive}: no cifar-10-batches-py/test_batch, cifar-10-batches-py/batches.meta "
            "in the archive"
        ),
    ):
        img.load_cifar10_batches(archive)
    os.remove(os.path.join(folder, "test_batch"))
    os.remove(os.path.join(folder, "batches.meta"))
    for root in (folder, str(tmp_path)):  # the folder itself, or its parent
        with pytest.raises(
            FileNotFoundError,
            match=re.escape(f"{folder}: no test_batch, batches.meta (expected the CIFAR-10")
            + ".*data_batch_1, data_batch_2",
        ):
            img.load_cifar10_batches(root)


def _read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def _write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


def test_load_cifar10_batches_bad_files_raise_value_error_naming_them(tmp_path):
    folder = str(tmp_path)
    batches = _fake_cifar(folder)
    path = os.path.join(folder, "data_batch_3")
    good = _read_bytes(path)

    def fails(pattern, root=folder, where=path):
        with pytest.raises(ValueError, match=re.escape(f"{where}: ") + pattern):
            img.load_cifar10_batches(root)

    _write_bytes(path, good[: len(good) // 2])
    fails("not a valid or a truncated pickle")
    _write_bytes(path, good[:-1])  # only the final STOP opcode missing
    fails("not a valid or a truncated pickle")
    _write_bytes(path, b"")
    fails("not a valid or a truncated pickle")
    _write_bytes(path, b"\x89PNG\r\n\x1a\n not a pickle")
    fails("not a valid")
    # A pickle that would call something other than numpy's array constructors is refused.
    _write_bytes(path, b"cos\nsystem\n(S'echo hacked'\ntR.")
    fails(r"not a valid or a truncated pickle \(global os\.system is not allowed")
    _pickle_to(path, [1, 2, 3])
    fails(r"the pickle holds a list \(expected a dict\)")
    batch = batches["data_batch_3"]
    _pickle_to(path, {b"labels": batch[b"labels"]})
    fails(r"the dict has no \[b'data'\]")
    _pickle_to(path, {"data": batch[b"data"], "labels": batch[b"labels"]})  # str keys
    fails(r"the dict has no \[b'data', b'labels'\]")
    for data in (
        batch[b"data"].reshape(-1, 3, 32, 32),
        batch[b"data"][:, :3071],
        batch[b"data"].astype(np.float32),
        batch[b"data"].tolist(),
    ):
        _pickle_to(path, {**batch, b"data": data})
        fails(r"b'data' is .* \(expected uint8 \[N, 3072\]")
    _pickle_to(path, {**batch, b"labels": batch[b"labels"][:-1]})
    fails("3 images in b'data' but 2 labels")
    _pickle_to(path, {**batch, b"labels": [0, 10, 1]})
    fails(r"labels in 0\.\.10 \(expected 0\.\.9\)")
    _pickle_to(path, {**batch, b"labels": [0, -1, 1]})
    fails(r"labels in -1\.\.1 \(expected 0\.\.9\)")
    _pickle_to(path, {**batch, b"labels": [0.0, 1.5, 1.0]})
    fails(r"b'labels' is an array of shape \(3,\) and type float64 \(expected N ints\)")
    _pickle_to(path, batch)
    meta = os.path.join(folder, "batches.meta")
    _pickle_to(meta, {b"label_names": [b"a", b"b"]})
    fails(r"b'label_names' is a list \(expected 10 names\)", where=meta)
    _pickle_to(meta, {b"num_vis": 3072})
    fails(r"the dict has no \[b'label_names'\]", where=meta)
    _pickle_to(meta, {b"label_names": list(CIFAR_NAMES)})  # str names load too
    assert img.load_cifar10_batches(folder).class_names == CIFAR_NAMES

    # In the archive: a bad member is named <archive>/<member>; a broken archive by its path.
    _write_bytes(path, good[:100])
    archive = str(tmp_path / "cifar.tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        for name in img.CIFAR10_FILES:
            tar.add(os.path.join(folder, name), arcname=f"cifar-10-batches-py/{name}")
    member = os.path.join(archive, "cifar-10-batches-py/data_batch_3")
    fails("not a valid or a truncated pickle", root=archive, where=member)
    blob = _read_bytes(archive)
    _write_bytes(archive, blob[: len(blob) // 2])
    fails("cannot read the tar archive", root=archive, where=archive)
    _write_bytes(archive, b"not a tar archive at all")
    fails("cannot read the tar archive", root=archive, where=archive)


def test_long_tailed_subset_follows_the_imbalance_factor():
    labels = np.repeat(np.arange(5), 100)
    keep = img.long_tailed_indices(labels, 10.0, seed=0)
    counts = np.bincount(labels[keep])
    assert counts[0] == 100 and counts[-1] == 10
    assert (np.diff(counts) <= 0).all()
    assert len(np.unique(keep)) == len(keep)
    with pytest.raises(ValueError, match="imbalance_factor"):
        img.long_tailed_indices(labels, 0.5)


def test_long_tailed_subset_with_n_max_and_first_order():
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(10), [120, 130, 140] * 3 + [125]))
    profile = [int(100 * 100.0 ** (-c / 9)) for c in range(10)]  # CIFAR-10-LT, factor 100
    assert profile == [100, 59, 35, 21, 12, 7, 4, 2, 1, 1]
    first = img.long_tailed_indices(labels, 100.0, n_max=100, order="first")
    np.testing.assert_array_equal(img.class_counts(labels[first], 10), profile)
    expected = np.sort(
        np.concatenate([np.flatnonzero(labels == c)[:n] for c, n in enumerate(profile)])
    )
    np.testing.assert_array_equal(first, expected)  # the first n_c of each class
    np.testing.assert_array_equal(
        first, img.long_tailed_indices(labels, 100.0, n_max=100, order="first", seed=5)
    )
    seeded = img.long_tailed_indices(labels, 100.0, n_max=100, seed=1)
    np.testing.assert_array_equal(img.class_counts(labels[seeded], 10), profile)
    assert not np.array_equal(seeded, first)
    np.testing.assert_array_equal(seeded, img.long_tailed_indices(labels, 100.0, n_max=100, seed=1))
    default = img.long_tailed_indices(labels, 10.0, order="first")  # n_max = 120, the smallest
    assert img.class_counts(labels[default], 10)[0] == 120
    for n_max in (0, 121):
        with pytest.raises(ValueError, match=rf"n_max={n_max} must be in 1\.\.120"):
            img.long_tailed_indices(labels, 10.0, n_max=n_max)
    with pytest.raises(ValueError, match="order must be 'seeded' or 'first', got 'last'"):
        img.long_tailed_indices(labels, 10.0, order="last")


def test_balanced_subset_and_class_counts():
    labels = np.repeat(np.arange(4), [7, 3, 5, 9])[::-1].copy()
    np.testing.assert_array_equal(img.class_counts(labels, 4), [7, 3, 5, 9])
    assert img.class_counts(labels, 6).dtype == np.int64
    np.testing.assert_array_equal(img.class_counts(labels, 6), [7, 3, 5, 9, 0, 0])
    with pytest.raises(ValueError, match=r"labels in 0\.\.3, expected 0\.\.2"):
        img.class_counts(labels, 3)
    with pytest.raises(ValueError, match=r"labels in -1\.\.0"):
        img.class_counts(np.array([0, -1]), 3)
    keep = img.balanced_indices(labels, seed=0)
    np.testing.assert_array_equal(img.class_counts(labels[keep], 4), [3, 3, 3, 3])
    assert (np.diff(keep) > 0).all()
    two = img.balanced_indices(labels, 2, seed=1)
    np.testing.assert_array_equal(img.class_counts(labels[two], 4), [2, 2, 2, 2])
    np.testing.assert_array_equal(two, img.balanced_indices(labels, 2, seed=1))
    assert any(
        not np.array_equal(two, img.balanced_indices(labels, 2, seed=s)) for s in range(2, 6)
    )
    for bad in (0, 4):
        with pytest.raises(ValueError, match=rf"per_class={bad} must be in 1\.\.3 .*class 1"):
            img.balanced_indices(labels, bad)


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
