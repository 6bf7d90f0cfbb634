"""Image classification data: scikit-learn's bundled digits, MNIST's IDX files, CIFAR-10's
python batches, ImageFolder trees, long-tailed and class-balanced subsets, and seeded numpy
augmentations (pad-and-crop, random resized crop, flip, RandAugment).

Images are float32 [N, H, W, C] in [0, 1] until `normalize`; labels int32 [N].

    data = load_digits(image_size=16, test_fraction=0.25, seed=0)  # offline, 1,797 images
    mnist = load_mnist("../shared/data/images/mnist")               # 60,000 + 10,000, 28 x 28
    cifar = load_cifar10_batches("cifar-10-python.tar.gz")          # 50,000 + 10,000, 32 x 32 RGB
    folder = ImageFolder("/data/imagenet", "train")                  # <root>/<split>/<class>/*
    x = folder.load(indices, image_size=224, train=True, rng=rng)    # decode + crop + flip
    x = rand_augment(x, rng, num_ops=2, magnitude=9)                 # [B, H, W, C] in [0, 1]

Every random choice takes a `np.random.Generator`, so a batch is a pure function of its seed.
A part of a batch (one process's rows) is augmented as in the whole batch by passing its
`BatchRows`: the augmentations draw the whole batch's parameters and apply the part's.
An image that cannot be decoded (truncated, corrupt, not an image) or a float image with NaN /
inf pixels raises ValueError naming the file.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import os
import pickle
import posixpath
import tarfile
import zlib
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BatchRows(NamedTuple):
    """Rows `rows` (a slice [start, stop)) of a batch of `batch_size` images, e.g. one
    process's rows (`distributed.process_rows`). An augmentation given them draws the random
    parameters of the whole batch (the same draws, in the same order, as without them) and
    applies those of these rows, so the parts of a batch concatenate to the whole batch."""

    rows: slice
    batch_size: int


def _draw_count(images: np.ndarray, rows: BatchRows | None) -> int:
    """The images to draw random parameters for: `images` [B, ...], or the whole batch of
    `rows` (then `images` must be the rows' images)."""
    if rows is None:
        return len(images)
    if len(range(rows.batch_size)[rows.rows]) != len(images):
        raise ValueError(
            f"{len(images)} images for rows {rows.rows} of a batch of {rows.batch_size}"
        )
    return rows.batch_size


def _cut(drawn: np.ndarray, rows: BatchRows | None) -> np.ndarray:
    """The parameters [B, ...] drawn for a batch, cut to `rows` (all of them for None)."""
    return drawn if rows is None else drawn[rows.rows]


@dataclass
class ImageSplits:
    """train_x / test_x: [N, H, W, C] float32 in [0, 1]; train_y / test_y: [N] int32.
    class_names: the name of each label where the files carry them (CIFAR-10), else None."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] | None = None


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """[N, H, W, C] -> [N, size, size, C], bilinear with half-pixel centres (PIL / TF style)."""
    n, h, w, c = images.shape

    def axis(src: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(size) + 0.5) * src / size - 0.5, 0, src - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, src - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    y0, y1, fy = axis(h)
    x0, x1, fx = axis(w)
    rows = images[:, y0] * (1 - fy)[None, :, None, None] + images[:, y1] * fy[None, :, None, None]
    out = rows[:, :, x0] * (1 - fx)[None, None, :, None] + rows[:, :, x1] * fx[None, None, :, None]
    return out.astype(np.float32)


def load_digits(*, image_size: int = 16, test_fraction: float = 0.25, seed: int = 0) -> ImageSplits:
    """scikit-learn's bundled 8 x 8 digits (1,797 images, 10 classes, offline), upsampled to
    `image_size` and split into train / test stratified by class with `seed`.

    Returns [N, image_size, image_size, 1] images in [0, 1] (pixel values 0..16 / 16).
    """
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as err:  # the one optional dependency of this module
        raise ImportError(
            "the digits data needs scikit-learn (pip install scikit-learn==1.9.1)"
        ) from err
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    digits = sk_load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[..., None]
    if image_size != 8:
        x = resize_bilinear(x, image_size)
    y = digits.target.astype(np.int32)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for c in np.unique(y):  # stratified: the same test fraction of every class
        idx = rng.permutation(np.flatnonzero(y == c))
        test[idx[: int(round(test_fraction * len(idx)))]] = True
    train_idx = rng.permutation(np.flatnonzero(~test))
    test_idx = np.flatnonzero(test)
    mean, std = float(x[train_idx].mean()), float(x[train_idx].std())
    return ImageSplits(x[train_idx], y[train_idx], x[test_idx], y[test_idx], 10, (mean,), (std,))


# IDX type byte -> big-endian numpy type.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def read_idx(path: str) -> np.ndarray:
    """One IDX file (MNIST's format), gzipped or raw (told apart by the gzip magic bytes).

    Layout: two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), a byte with the number of dimensions D, D big-endian uint32
    sizes, then the values big-endian in C order. Returns an array of that shape and type
    (native byte order; MNIST: uint8 [N, 28, 28] images, uint8 [N] labels).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"IDX file {path} does not exist")
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path}: cannot decompress the gzip file ({err})") from err
    if len(data) < 4:
        raise ValueError(f"{path}: {len(data)} bytes, too short for an IDX header (4 bytes)")
    if data[:2] != b"\x00\x00":
        raise ValueError(
            f"{path}: bad IDX magic {data[:4].hex()} (expected two zero bytes, a type byte and "
            "a dimension count, e.g. 00000803 for MNIST images)"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_TYPES:
        known = ", ".join(f"0x{c:02X} {t}" for c, t in _IDX_TYPES.items())
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02X} (expected one of {known})")
    start = 4 + 4 * ndim
    if len(data) < start:
        raise ValueError(
            f"{path}: header declares {ndim} dimensions ({start} header bytes), "
            f"file has {len(data)} bytes"
        )
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    dtype = np.dtype(_IDX_TYPES[code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(data) - start
    if found != expected:
        raise ValueError(
            f"{path}: expected {expected} bytes for shape {shape} of {dtype.name}, found {found}"
        )
    values = np.frombuffer(data, dtype, offset=start).reshape(shape)
    return values.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


def load_mnist(root: str) -> ImageSplits:
    """MNIST from its four IDX files in `root` (each as `<name>` or `<name>.gz`; see
    MNIST_FILES). Other 28 x 28 uint8 sets in the same files (Fashion-MNIST, KMNIST) load too.

    Returns train [60000, 28, 28, 1] / test [10000, 28, 28, 1] float32 images (pixels / 255)
    and int32 labels 0..9, num_classes 10, and the mean / std of the training pixels as
    1-tuples (MNIST: 0.1307 / 0.3081).
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"MNIST folder {root} does not exist; expected it to hold "
            f"{', '.join(n + '[.gz]' for n in MNIST_FILES)}"
        )
    paths = [_find_idx(root, name) for name in MNIST_FILES]
    split = []
    for image_path, label_path in (paths[:2], paths[2:]):
        raw, labels = read_idx(image_path), read_idx(label_path)
        if raw.ndim != 3 or raw.dtype != np.uint8:
            raise ValueError(
                f"{image_path}: images of shape {raw.shape} and type {raw.dtype} "
                "(expected uint8 [N, H, W])"
            )
        if labels.ndim != 1:
            raise ValueError(f"{label_path}: labels of shape {labels.shape} (expected [N])")
        if len(raw) != len(labels):
            raise ValueError(
                f"{image_path} has {len(raw)} images but {label_path} has {len(labels)} labels"
            )
        if len(labels) and (labels.min() < 0 or labels.max() > 9):
            raise ValueError(
                f"{label_path}: labels in {labels.min()}..{labels.max()} (expected 0..9)"
            )
        split.append((raw, labels.astype(np.int32)))
    (train_raw, train_y), (test_raw, test_y) = split
    if train_raw.shape[1:] != test_raw.shape[1:]:
        raise ValueError(
            f"{paths[0]} has {train_raw.shape[1:]} images but {paths[2]} has "
            f"{test_raw.shape[1:]} (expected the same size)"
        )
    # Statistics from the uint8 histogram: exact, and no float64 copy of 47M pixels.
    hist = np.bincount(train_raw.ravel(), minlength=256).astype(np.float64)
    values = np.arange(256) / 255.0
    mean = float(hist @ values / max(hist.sum(), 1))
    std = float(np.sqrt(hist @ (values - mean) ** 2 / max(hist.sum(), 1)))
    return ImageSplits(
        _to_unit(train_raw), train_y, _to_unit(test_raw), test_y, 10, (mean,), (std,)
    )


def _find_idx(root: str, name: str) -> str:
    for candidate in (name, name + ".gz"):
        path = os.path.join(root, candidate)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"{root}: no {name} or {name}.gz (expected the MNIST files "
        f"{', '.join(n + '[.gz]' for n in MNIST_FILES)})"
    )


def _to_unit(raw: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W] -> float32 [N, H, W, 1] in [0, 1]."""
    return to_unit(raw)[..., None]


CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_FILES = (*CIFAR10_TRAIN, "test_batch", "batches.meta")
_CIFAR10_EXPECTED = (
    f"the CIFAR-10 python batches {', '.join(CIFAR10_FILES)} in <root> or "
    f"<root>/{CIFAR10_FOLDER}, or root = the cifar-10-python.tar.gz archive"
)


def load_cifar10_batches(root: str) -> ImageSplits:
    """CIFAR-10 from its "python version" pickles (cifar-10-python.tar.gz): `root` is the
    folder holding CIFAR10_FILES, its parent holding `cifar-10-batches-py/`, or the .tar.gz
    archive itself (read in memory, nothing extracted; a member is named `<archive>/<member>`
    in errors).

    Each batch is a pickled dict: b"data" uint8 [N, 3072] (per row the 1024 R, then G, then B
    values of a 32 x 32 image in row-major order) and b"labels" (N ints 0..9); batches.meta
    holds b"label_names". Unpickling allows only the globals a numpy array needs, so a batch
    that would run other code raises ValueError like a corrupt or truncated one.

    Returns train [50000, 32, 32, 3] (data_batch_1..5 in order) / test [10000, 32, 32, 3]
    float32 images (pixels / 255) and int32 labels, num_classes 10, the per-channel mean / std
    of the training pixels as 3-tuples (CIFAR-10: 0.4914, 0.4822, 0.4465 / 0.2470, 0.2435,
    0.2616) and class_names (airplane, automobile, ..., truck).
    """
    blobs = _read_cifar10_files(root)
    split = []
    for names in (CIFAR10_TRAIN, ("test_batch",)):
        batches = [_cifar10_batch(*blobs.pop(name)) for name in names]
        split.append(([b[0] for b in batches], np.concatenate([b[1] for b in batches])))
    class_names = _cifar10_meta(*blobs.pop("batches.meta"))
    (train_rows, train_y), (test_rows, test_y) = split
    # Per-channel statistics from exact integer sums of the uint8 pixels (no float64 copy).
    count, sums, squares = 0, [0, 0, 0], [0, 0, 0]
    for rows in train_rows:
        count += len(rows) * 1024
        for c in range(3):
            plane = rows[:, c * 1024 : (c + 1) * 1024].astype(np.int64).ravel()
            sums[c] += int(plane.sum())
            squares[c] += int(plane @ plane)
    count = max(count, 1)
    mean = tuple(s / (count * 255) for s in sums)
    std = tuple(
        float(np.sqrt((count * q - s * s) / (count * count * 255 * 255)))
        for s, q in zip(sums, squares, strict=True)
    )
    return ImageSplits(
        _cifar10_unit(train_rows),
        train_y,
        _cifar10_unit(test_rows),
        test_y,
        10,
        mean,
        std,
        class_names,
    )


def _cifar10_unit(batches: list[np.ndarray]) -> np.ndarray:
    """uint8 rows [N, 3072] (R, G, B planes) -> float32 [sum N, 32, 32, 3] in [0, 1], filled
    batch by batch (no intermediate uint8 [N, 32, 32, 3] copy)."""
    out = np.empty((sum(len(b) for b in batches), 32, 32, 3), np.float32)
    start = 0
    for rows in batches:
        out[start : start + len(rows)] = rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        start += len(rows)
    out /= 255.0  # as to_unit: float32 pixels / 255
    return out


def _read_cifar10_files(root: str) -> dict[str, tuple[str, bytes]]:
    """CIFAR10_FILES name -> (the path to name in errors, the file's bytes)."""
    if os.path.isfile(root):
        return _read_cifar10_archive(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"CIFAR-10 folder or archive {root} does not exist; expected {_CIFAR10_EXPECTED}"
        )
    folder, sub = root, os.path.join(root, CIFAR10_FOLDER)
    if not any(os.path.isfile(os.path.join(root, n)) for n in CIFAR10_FILES) and os.path.isdir(sub):
        folder = sub
    missing = [n for n in CIFAR10_FILES if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        raise FileNotFoundError(f"{folder}: no {', '.join(missing)} (expected {_CIFAR10_EXPECTED})")
    out = {}
    for name in CIFAR10_FILES:
        path = os.path.join(folder, name)
        with open(path, "rb") as f:
            out[name] = (path, f.read())
    return out


def _read_cifar10_archive(archive: str) -> dict[str, tuple[str, bytes]]:
    """The CIFAR10_FILES members (`cifar-10-batches-py/<name>` or `<name>`) of a tar archive,
    read in one forward pass (gzip, bz2, xz or plain)."""
    wanted = {n: n for n in CIFAR10_FILES} | {f"{CIFAR10_FOLDER}/{n}": n for n in CIFAR10_FILES}
    out: dict[str, tuple[str, bytes]] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = wanted.get(posixpath.normpath(member.name))
                if name is None or name in out or not member.isfile():
                    continue
                f = tar.extractfile(member)
                out[name] = (os.path.join(archive, member.name), f.read())
    except (tarfile.TarError, EOFError, zlib.error) as err:
        raise ValueError(f"{archive}: cannot read the tar archive ({err})") from err
    except OSError as err:
        if err.errno is not None:
            raise  # from the file system, with the file name
        raise ValueError(f"{archive}: cannot read the tar archive ({err})") from err
    missing = [n for n in CIFAR10_FILES if n not in out]
    if missing:
        raise FileNotFoundError(
            f"{archive}: no {', '.join(f'{CIFAR10_FOLDER}/{n}' for n in missing)} in the "
            f"archive (expected {_CIFAR10_EXPECTED})"
        )
    return out


class _ArrayUnpickler(pickle.Unpickler):
    """Resolves only the globals that pickled numpy arrays and Python 2 strings need."""

    _array = np.zeros(1, np.uint8)
    _allowed = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # bytes in protocol 2 written by Python 3
        ("__builtin__", "bytes"): bytes,
        ("builtins", "bytes"): bytes,
    }
    for _core in ("numpy.core", "numpy._core"):  # the name depends on the writer's numpy
        _allowed[(f"{_core}.multiarray", "_reconstruct")] = _array.__reduce__()[0]
        _allowed[(f"{_core}.multiarray", "scalar")] = np.int64(0).__reduce__()[0]
        _allowed[(f"{_core}.numeric", "_frombuffer")] = _array.__reduce_ex__(5)[0]
    del _core

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed (only numpy arrays and bytes)"
            ) from None


def _unpickle(path: str, blob: bytes):
    try:
        return _ArrayUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError) as err:
        raise ValueError(
            f"{path}: not a valid or a truncated pickle ({str(err) or 'ran out of input'})"
        ) from err
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as err:
        # Malformed opcodes or arguments (e.g. a truncated array buffer) surface as these.
        raise ValueError(f"{path}: not a valid pickle ({type(err).__name__}: {err})") from err


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and type {value.dtype}"
    return f"a {type(value).__name__}"


def _cifar10_dict(path: str, blob: bytes, keys: tuple[bytes, ...]) -> dict:
    obj = _unpickle(path, blob)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: the pickle holds {_describe(obj)} (expected a dict)")
    missing = [k for k in keys if k not in obj]
    if missing:
        found = sorted(obj, key=repr)[:8]
        raise ValueError(f"{path}: the dict has no {missing} (keys: {found})")
    return obj


def _cifar10_batch(path: str, blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> its checked uint8 [N, 3072] rows and int32 [N] labels."""
    obj = _cifar10_dict(path, blob, (b"data", b"labels"))
    data, raw_labels = obj[b"data"], obj[b"labels"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2) or (
        data.shape[1] != 3072
    ):
        raise ValueError(
            f"{path}: b'data' is {_describe(data)} (expected uint8 [N, 3072]: per row the 1024 "
            "R, then G, then B values of a 32 x 32 image)"
        )
    try:
        labels = np.asarray(raw_labels)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: b'labels' is not a list of ints ({err})") from err
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"{path}: b'labels' is {_describe(labels)} (expected N ints)")
    if len(labels) != len(data):
        raise ValueError(f"{path}: {len(data)} images in b'data' but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels in {labels.min()}..{labels.max()} (expected 0..9)")
    return data, labels.astype(np.int32)


def _cifar10_meta(path: str, blob: bytes) -> tuple[str, ...]:
    names = _cifar10_dict(path, blob, (b"label_names",))[b"label_names"]
    if (
        not isinstance(names, (list, tuple))
        or len(names) != 10
        or not all(isinstance(n, (bytes, str)) for n in names)
    ):
        raise ValueError(f"{path}: b'label_names' is {_describe(names)} (expected 10 names)")
    try:
        return tuple(n.decode("utf-8") if isinstance(n, bytes) else n for n in names)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: b'label_names' is not UTF-8 ({err})") from err


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Examples per class: int64 [num_classes]; labels: integer [N] in 0..num_classes-1."""
    labels = np.asarray(labels)
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    labels = labels.ravel().astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels in {labels.min()}..{labels.max()}, expected 0..{num_classes - 1} "
            f"(num_classes={num_classes})"
        )
    return np.bincount(labels, minlength=num_classes).astype(np.int64)


def _per_class(labels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The classes present (sorted) and, for each, its example indices in dataset order."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not len(labels):
        raise ValueError(f"labels must be a non-empty [N] array, got shape {labels.shape}")
    classes = np.unique(labels)
    return classes, [np.flatnonzero(labels == c) for c in classes]


def long_tailed_indices(
    labels: np.ndarray,
    imbalance_factor: float,
    *,
    seed: int = 0,
    n_max: int | None = None,
    order: str = "seeded",
) -> np.ndarray:
    """Indices of a long-tailed subset (CIFAR-LT style): class c (the c-th label in sorted
    order, of C) keeps `int(n_max * imbalance_factor ** (-c / (C - 1)))` examples (at least 1),
    so the first class keeps n_max and the last n_max / imbalance_factor. Sorted int64 [M].

    n_max: the head class's count, 1..the smallest class count (default: that count).
    order: "seeded" draws each class's examples with `seed`; "first" keeps the first n_c of
    each class in dataset order (deterministic; the shared CIFAR-10 README's file-name-order
    CIFAR-10-LT). The counts equal LDAM-DRW's `get_img_num_per_cls` for the usual factors;
    LDAM's own selection shuffles each class with `np.random.seed`, which neither order repeats.
    """
    if imbalance_factor < 1:
        raise ValueError(f"imbalance_factor must be >= 1, got {imbalance_factor}")
    if order not in ("seeded", "first"):
        raise ValueError(f"order must be 'seeded' or 'first', got {order!r}")
    classes, members = _per_class(labels)
    smallest = min(len(m) for m in members)
    if n_max is None:
        n_max = smallest
    elif not 1 <= n_max <= smallest:
        raise ValueError(
            f"n_max={n_max} must be in 1..{smallest} (the smallest class count, class "
            f"{classes[int(np.argmin([len(m) for m in members]))]})"
        )
    rng = np.random.default_rng(seed)
    keep = []
    for i, idx in enumerate(members):
        n = max(int(n_max * imbalance_factor ** (-i / max(len(classes) - 1, 1))), 1)
        keep.append(idx[:n] if order == "first" else rng.permutation(idx)[:n])
    return np.sort(np.concatenate(keep))


def balanced_indices(
    labels: np.ndarray, per_class: int | None = None, *, seed: int = 0
) -> np.ndarray:
    """Sorted int64 [C * per_class] indices of a class-balanced subset: `per_class` examples of
    every class present in labels [N] (default: the smallest class count), drawn with `seed`."""
    classes, members = _per_class(labels)
    counts = [len(m) for m in members]
    if per_class is None:
        per_class = min(counts)
    if per_class < 1 or per_class > min(counts):
        raise ValueError(
            f"per_class={per_class} must be in 1..{min(counts)} (the smallest class count, "
            f"class {classes[int(np.argmin(counts))]})"
        )
    rng = np.random.default_rng(seed)
    keep = [rng.choice(idx, per_class, replace=False) for idx in members]
    return np.sort(np.concatenate(keep)).astype(np.int64)


class ImageFolder:
    """The `<root>/<split>/<class>/<image>` layout (ImageNet, CIFAR-as-folders, ...).

    Classes are the sorted sub-folder names of `<root>/<split>`; `paths[i]` has label
    `labels[i]`. Images are decoded with Pillow when loaded, so large sets need no memory.
    """

    def __init__(self, root: str, split: str, *, classes: list[str] | None = None):
        self.folder = os.path.join(root, split)
        if not os.path.isdir(self.folder):
            raise FileNotFoundError(
                f"image folder {self.folder} does not exist; expected <root>/{split}/<class>/*"
            )
        found = sorted(e.name for e in os.scandir(self.folder) if e.is_dir())
        if not found:
            raise ValueError(f"{self.folder} has no class sub-folders (<class>/<image>)")
        if classes is not None and found != list(classes):
            missing = sorted(set(classes) - set(found))
            extra = sorted(set(found) - set(classes))
            raise ValueError(
                f"{self.folder}: class folders differ from the expected ones "
                f"(missing {missing[:5]}, unexpected {extra[:5]})"
            )
        self.classes = found
        paths, labels = [], []
        for label, name in enumerate(found):
            sub = os.path.join(self.folder, name)
            files = sorted(f for f in os.listdir(sub) if f.lower().endswith(IMAGE_EXTENSIONS))
            paths += [os.path.join(sub, f) for f in files]
            labels += [label] * len(files)
        if not paths:
            raise ValueError(f"{self.folder}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
        self.paths = paths
        self.labels = np.asarray(labels, np.int32)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.paths)

    def load(
        self,
        indices: np.ndarray,
        *,
        image_size: int,
        train: bool,
        rng: np.random.Generator | None = None,
        scale: tuple[float, float] = (0.08, 1.0),
        crop_fraction: float = 0.875,
        rows: BatchRows | None = None,
    ) -> np.ndarray:
        """Images `indices` as [B, image_size, image_size, 3] float32 in [0, 1].

        train: random resized crop (area fraction in `scale`, aspect ratio in [3/4, 4/3]) and
        a horizontal flip with probability 1/2, drawn from `rng`; eval: resize the shorter side
        to image_size / crop_fraction and take the centre crop (the DeiT evaluation).

        rows: `indices` are a whole batch's [B], and only these rows are decoded:
        [R, image_size, image_size, 3], cropped and flipped as in the whole batch (the other
        images' crops are drawn from their sizes, read from the file headers).
        """
        from PIL import Image

        if train and rng is None:
            raise ValueError("ImageFolder.load(train=True) needs an rng")
        indices = np.asarray(indices)
        if rows is not None and len(indices) != rows.batch_size:
            raise ValueError(
                f"{len(indices)} indices with rows {rows.rows} of a batch of {rows.batch_size}: "
                "pass the whole batch's indices"
            )
        kept = range(len(indices)) if rows is None else range(len(indices))[rows.rows]
        out = np.empty((len(kept), image_size, image_size, 3), np.float32)
        for k, i in enumerate(indices):
            path = self.paths[int(i)]
            if k not in kept:  # another part's image: only its draws
                if train:
                    with Image.open(path) as im:
                        _random_resized_box(*im.size, scale, rng)
                    rng.random()
                continue
            with open_image(path) as im:
                w, h = im.size
                if train:
                    box = _random_resized_box(w, h, scale, rng)
                    im = im.resize((image_size, image_size), Image.BICUBIC, box=box)
                    if rng.random() < 0.5:
                        im = im.transpose(Image.FLIP_LEFT_RIGHT)
                else:
                    short = int(image_size / crop_fraction)
                    s = short / min(w, h)
                    im = im.resize((max(short, round(w * s)), max(short, round(h * s))))
                    left = (im.size[0] - image_size) // 2
                    top = (im.size[1] - image_size) // 2
                    im = im.crop((left, top, left + image_size, top + image_size))
                out[kept.index(k)] = np.asarray(im, np.float32) / 255.0
        return out

    def load_all(self, image_size: int, indices: np.ndarray | None = None) -> np.ndarray:
        """Images `indices` (default: every image), each resized to image_size x image_size:
        [len(indices), image_size, image_size, 3] float32 in [0, 1]. For small sets such as
        CIFAR folders; pass a subset's indices (e.g. a long-tailed one) to decode only those.
        """
        return to_unit(self.load_all_uint8(image_size, indices))

    def load_all_uint8(
        self, image_size: int, indices: np.ndarray | None = None, *, workers: int = 1
    ) -> np.ndarray:
        """`load_all` as decoded: uint8 [len(indices), image_size, image_size, 3] (a quarter of
        the float32 memory). workers > 1 decodes in that many threads (Pillow releases the GIL
        while decoding)."""
        from PIL import Image

        if indices is None:
            paths = self.paths
        else:
            indices = np.asarray(indices)
            if indices.ndim != 1 or (indices.size and not np.issubdtype(indices.dtype, np.integer)):
                raise ValueError(
                    f"{self.folder}: indices must be integers [B], got {indices.dtype} "
                    f"{indices.shape}"
                )
            if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
                raise ValueError(
                    f"{self.folder}: indices in {indices.min()}..{indices.max()}, expected "
                    f"0..{len(self) - 1}"
                )
            paths = [self.paths[int(i)] for i in indices]
        out = np.empty((len(paths), image_size, image_size, 3), np.uint8)

        def decode(k: int) -> None:
            with open_image(paths[k]) as im:
                out[k] = np.asarray(im.resize((image_size, image_size), Image.BILINEAR))

        if workers > 1 and len(paths) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(decode, range(len(paths)), chunksize=256))
        else:
            for k in range(len(paths)):
                decode(k)
        return out

    def fingerprint(self) -> str:
        """A hex key of the split's contents: sha256 of every image's path relative to the
        split folder, size and modification time (ns), in listing order. Any added, removed,
        renamed, resized or rewritten file changes it."""
        h = hashlib.sha256()
        for path in self.paths:
            st = os.stat(path)
            rel = os.path.relpath(path, self.folder)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def load_all_cached(
        self, image_size: int, cache_dir: str, *, workers: int = 1
    ) -> tuple[np.ndarray, bool]:
        """Every image of the split as `load_all_uint8` gives it, read from (or written to)
        `cache_dir`: returns (uint8 [N, image_size, image_size, 3], whether it came from the
        cache).

        The cache file `<split>_<image_size>px_<key>.npy` is keyed by `fingerprint()`, so a
        changed folder misses; on a miss the split is decoded and written (atomically, through
        a temporary file), and older caches of the same split and size (a stale key) are
        removed. A cache file that cannot be read or has the wrong shape is decoded again.
        """
        key = self.fingerprint()[:20]
        split = os.path.basename(os.path.normpath(self.folder))
        prefix = f"{split}_{image_size}px_"
        path = os.path.join(cache_dir, f"{prefix}{key}.npy")
        shape = (len(self), image_size, image_size, 3)
        if os.path.exists(path):
            try:
                cached = np.load(path)
            except (OSError, ValueError):  # truncated or not an array: decode again
                cached = None
            if cached is not None and cached.shape == shape and cached.dtype == np.uint8:
                return cached, True
        images = self.load_all_uint8(image_size, workers=workers)
        os.makedirs(cache_dir, exist_ok=True)
        for name in os.listdir(cache_dir):  # stale keys of this split and size
            if name.startswith(prefix) and name.endswith(".npy") and name != os.path.basename(path):
                os.remove(os.path.join(cache_dir, name))
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            np.save(f, images)
        os.replace(tmp, path)
        return images, False


def to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 images (0..255) -> float32 in [0, 1]; float images pass through as float32."""
    if images.dtype == np.uint8:
        out = images.astype(np.float32)
        out /= 255.0
        return out
    return images.astype(np.float32, copy=False)


def open_image(path: str, mode: str = "RGB"):
    """The image at `path` decoded and converted to `mode` ("RGB", "L", ...; a PIL image; use
    it as a context manager). A file Pillow cannot decode (truncated, corrupt, not an image)
    raises ValueError naming `path`; a float image (mode F) with NaN or inf pixels too, as
    converting it would silently turn them into 0 / 255. A file-system error (missing file, no
    permission) stays the OSError that names the file."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode == "F":
                bad = int((~np.isfinite(np.asarray(im))).sum())
                if bad:
                    raise ValueError(
                        f"{path}: {bad} NaN or infinite pixel values (expected finite values)"
                    )
            return im.convert(mode)
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:
        if isinstance(err, OSError) and err.errno is not None:
            raise  # from the file system, with the file name
        # Pillow's decoding errors ("image file is truncated", UnidentifiedImageError, and
        # SyntaxError for some broken files) do not all name the file.
        raise ValueError(f"{path}: cannot decode the image ({err})") from err


def _random_resized_box(
    w: int, h: int, scale: tuple[float, float], rng: np.random.Generator
) -> tuple[float, float, float, float]:
    """torchvision RandomResizedCrop box (10 tries, then the centre crop of clipped ratio)."""
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(*scale)
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = np.sqrt(target * ratio), np.sqrt(target / ratio)
        if 0 < cw <= w and 0 < ch <= h:
            x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
            return (x0, y0, x0 + cw, y0 + ch)
    side = min(w, h)
    return ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)


def pad_and_crop(
    images: np.ndarray, pad: int, rng: np.random.Generator, *, rows: BatchRows | None = None
) -> np.ndarray:
    """Zero-pad by `pad` pixels and crop back at a random offset per image. [B, H, W, C]
    (with `rows`: the rows' images [R, H, W, C], cropped as in the whole batch)."""
    if pad == 0:
        return images
    b, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    drawn = _draw_count(images, rows)
    dy = _cut(rng.integers(0, 2 * pad + 1, drawn), rows)
    dx = _cut(rng.integers(0, 2 * pad + 1, drawn), rows)
    ys = dy[:, None] + np.arange(h)[None]  # [B, H]
    xs = dx[:, None] + np.arange(w)[None]  # [B, W]
    return padded[np.arange(b)[:, None, None], ys[:, :, None], xs[:, None, :]]


def random_flip(
    images: np.ndarray, rng: np.random.Generator, *, rows: BatchRows | None = None
) -> np.ndarray:
    """Horizontal flip of each image with probability 1/2. [B, H, W, C] (with `rows`: the
    rows' images [R, H, W, C], flipped as in the whole batch)."""
    flip = _cut(rng.random(_draw_count(images, rows)), rows) < 0.5
    return np.where(flip[:, None, None, None], images[:, :, ::-1], images)


def _affine(images: np.ndarray, matrices: np.ndarray, fill: float) -> np.ndarray:
    """Nearest-neighbour affine warp about the image centre: output pixel (y, x) reads input
    `matrices[b] @ (y - cy, x - cx, 1) + (cy, cx)`; outside pixels get `fill`. [B, H, W, C]."""
    b, h, w, c = images.shape
    yy, xx = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij")
    grid = np.stack([yy.ravel(), xx.ravel(), np.ones(h * w)])  # [3, HW]
    src = np.einsum("bij,jn->bin", matrices, grid)
    sy = np.rint(src[:, 0] + (h - 1) / 2).astype(int)
    sx = np.rint(src[:, 1] + (w - 1) / 2).astype(int)
    inside = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
    flat = images.reshape(b, h * w, c)
    idx = np.clip(sy, 0, h - 1) * w + np.clip(sx, 0, w - 1)
    out = np.take_along_axis(flat, idx[..., None], axis=1)
    return np.where(inside[..., None], out, fill).reshape(b, h, w, c).astype(images.dtype)


def _grey(x: np.ndarray) -> np.ndarray:
    if x.shape[-1] == 3:
        return (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    return x.mean(-1, keepdims=True)


def _blend(a: np.ndarray, b: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """PIL ImageEnhance: b + factor (a - b), clipped to [0, 1]; factor [B]."""
    return np.clip(b + factor[:, None, None, None] * (a - b), 0.0, 1.0)


def _smooth(x: np.ndarray) -> np.ndarray:
    """PIL's SMOOTH filter (3 x 3, centre 5, others 1, / 13), borders kept."""
    out = x.copy()
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = x.shape[1:3]
    acc = sum(p[:, i : i + h, j : j + w] for i in range(3) for j in range(3)) + 4 * x
    out[:, 1:-1, 1:-1] = (acc / 13.0)[:, 1:-1, 1:-1]
    return out


# RandAugment ops (timm's `rand` set without Equalize): name -> fn(images, level in [0, 1], signs).
def _op_auto_contrast(x, level, sign):
    lo = x.min(axis=(1, 2), keepdims=True)
    hi = x.max(axis=(1, 2), keepdims=True)
    return np.where(hi > lo, (x - lo) / np.maximum(hi - lo, 1e-6), x)


def _op_invert(x, level, sign):
    return 1.0 - x


def _op_posterize(x, level, sign):
    bits = np.rint(4 - 4 * level).astype(int)[:, None, None, None]  # 4 bits -> 0 bits
    step = 2.0 ** (8 - np.maximum(bits, 1))
    return np.floor(x * 255 / step) * step / 255


def _op_solarize(x, level, sign):
    t = (1.0 - level)[:, None, None, None]
    return np.where(x >= t, 1.0 - x, x)


def _op_solarize_add(x, level, sign):
    add = (110 / 255 * level)[:, None, None, None]
    return np.where(x < 128 / 255, np.clip(x + add, 0, 1), x)


def _op_color(x, level, sign):
    return _blend(x, np.broadcast_to(_grey(x), x.shape), 1 + 0.9 * level * sign)


def _op_contrast(x, level, sign):
    mean = _grey(x).mean(axis=(1, 2, 3), keepdims=True)
    return _blend(x, np.broadcast_to(mean, x.shape), 1 + 0.9 * level * sign)


def _op_brightness(x, level, sign):
    return _blend(x, np.zeros_like(x), 1 + 0.9 * level * sign)


def _op_sharpness(x, level, sign):
    return _blend(x, _smooth(x), 1 + 0.9 * level * sign)


def _geometric(kind: str):
    def op(x, level, sign):
        b, h = len(x), x.shape[1]
        m = np.tile(np.eye(3)[:2], (b, 1, 1))  # maps output coords to input coords
        v = level * sign
        if kind == "rotate":
            a = np.deg2rad(30 * v)
            m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = (
                np.cos(a),
                -np.sin(a),
                np.sin(a),
                np.cos(a),
            )
        elif kind == "shear_x":
            m[:, 1, 0] = 0.3 * v
        elif kind == "shear_y":
            m[:, 0, 1] = 0.3 * v
        elif kind == "translate_x":
            m[:, 1, 2] = 0.45 * h * v
        elif kind == "translate_y":
            m[:, 0, 2] = 0.45 * h * v
        return _affine(x, m, fill=0.5)

    return op


RAND_AUGMENT_OPS = {
    "auto_contrast": _op_auto_contrast,
    "invert": _op_invert,
    "rotate": _geometric("rotate"),
    "posterize": _op_posterize,
    "solarize": _op_solarize,
    "solarize_add": _op_solarize_add,
    "color": _op_color,
    "contrast": _op_contrast,
    "brightness": _op_brightness,
    "sharpness": _op_sharpness,
    "shear_x": _geometric("shear_x"),
    "shear_y": _geometric("shear_y"),
    "translate_x": _geometric("translate_x"),
    "translate_y": _geometric("translate_y"),
}


def rand_augment(
    images: np.ndarray,
    rng: np.random.Generator,
    *,
    num_ops: int = 2,
    magnitude: float = 9.0,
    magnitude_std: float = 0.5,
    ops: tuple[str, ...] | None = None,
    prob: float = 0.5,
    rows: BatchRows | None = None,
) -> np.ndarray:
    """RandAugment (timm `rand-m9-mstd0.5`): each image applies `num_ops` ops drawn uniformly
    from `ops` (default: all of RAND_AUGMENT_OPS), each with probability `prob`, at magnitude
    N(magnitude, magnitude_std) / 10 clipped to [0, 1] and a random sign. Vectorised per op
    (a numpy pass over the images that drew it). images: [B, H, W, C] in [0, 1] (with `rows`:
    the rows' images [R, H, W, C], augmented as in the whole batch)."""
    names = tuple(ops) if ops else tuple(RAND_AUGMENT_OPS)
    unknown = [n for n in names if n not in RAND_AUGMENT_OPS]
    if unknown:
        raise ValueError(f"unknown RandAugment ops {unknown}; choose from {list(RAND_AUGMENT_OPS)}")
    x = images.astype(np.float32, copy=True)
    b = _draw_count(x, rows)
    for _ in range(num_ops):
        choice = _cut(rng.integers(0, len(names), b), rows)
        apply = _cut(rng.random(b), rows) < prob
        level = np.clip(_cut(rng.normal(magnitude, magnitude_std, b), rows) / 10.0, 0.0, 1.0)
        sign = np.where(_cut(rng.random(b), rows) < 0.5, -1.0, 1.0)
        for k, name in enumerate(names):
            sel = np.flatnonzero(apply & (choice == k))
            if len(sel):
                x[sel] = RAND_AUGMENT_OPS[name](x[sel], level[sel], sign[sel])
    return x.astype(np.float32)


def normalize(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(images - mean) / std per channel; images [..., C] with C == len(mean)."""
    if images.shape[-1] != len(mean) or len(mean) != len(std):
        raise ValueError(
            f"images with {images.shape[-1]} channels need a mean/std per channel, got "
            f"{len(mean)} / {len(std)}"
        )
    return ((images - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).astype(
        np.float32
    )
