"""research/datasets/defects.py: Magnetic Tile and MVTec AD folders written by the test (and the
real Magnetic Tile folder when present), synthetic textures, the defect-free split, patches."""

import os
import re

import numpy as np
import pytest
from PIL import Image

from research.datasets import defects as dd
from research.datasets.paths import resolve_data_dir

H, W = 20, 30  # test images: 20 rows x 30 columns


def _save(path, pixels):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(pixels, np.uint8)).save(path)


def _mask(value=0, box=None):
    m = np.zeros((H, W), np.uint8)
    if box is not None:
        r0, r1, c0, c1 = box
        m[r0:r1, c0:c1] = value
    return m


def _write_magnetic_tile(root, counts):
    """MT_<Class>/Imgs/<i>.jpg constant grey 40 * (i + 1); mask: clear for Free, else a 255
    block in the top-left quarter."""
    for name, n in counts.items():
        for i in range(n):
            stem = os.path.join(root, f"MT_{name}", "Imgs", f"img{i}")
            _save(stem + ".jpg", np.full((H, W), 40 * (i + 1)))
            _save(stem + ".png", _mask() if name == "Free" else _mask(255, (0, 10, 0, 15)))


def test_magnetic_tile_loads_shapes_labels_order_and_masks(tmp_path):
    root = str(tmp_path)
    _write_magnetic_tile(root, {"Free": 3, "Crack": 2, "Break": 1, "Fray": 1})
    data = dd.load_magnetic_tile(root, image_size=8, classes=("Free", "Break", "Crack"))
    assert len(data) == 6 and data.classes == ("Free", "Break", "Crack")
    assert data.images.shape == (6, 8, 8, 1) and data.images.dtype == np.float32
    assert data.masks.shape == (6, 8, 8) and data.masks.dtype == bool
    assert data.labels.dtype == np.int32
    np.testing.assert_array_equal(data.labels, [0, 0, 0, 1, 2, 2])
    names = [os.path.relpath(p, root) for p in data.paths]
    assert names[0] == os.path.join("MT_Free", "Imgs", "img0.jpg")
    assert [n.split(os.sep)[0] for n in names] == ["MT_Free"] * 3 + ["MT_Break"] + ["MT_Crack"] * 2
    assert [n[-8:] for n in names] == ["img0.jpg", "img1.jpg", "img2.jpg", "img0.jpg"] + [
        "img0.jpg",
        "img1.jpg",
    ]
    np.testing.assert_allclose(
        data.images[:3].mean((1, 2, 3)), [40 / 255, 80 / 255, 120 / 255], atol=0.02
    )
    assert not data.masks[:3].any()
    expected = np.zeros((8, 8), bool)
    expected[:4, :4] = True  # rows 0..9 of 20, columns 0..14 of 30: exactly the top-left quarter
    for m in data.masks[3:]:
        np.testing.assert_array_equal(m, expected)
    rgb = dd.load_magnetic_tile(root, image_size=8, channels=3, classes=("Free",))
    assert rgb.images.shape == (3, 8, 8, 3) and rgb.classes == ("Free",)
    with pytest.raises(ValueError, match="channels"):
        dd.load_magnetic_tile(root, image_size=8, channels=2, classes=("Free",))
    with pytest.raises(ValueError, match="'Free'"):
        dd.load_magnetic_tile(root, image_size=8, classes=("Crack", "Free"))


def test_masks_are_binarised_at_the_threshold_and_thin_defects_survive(tmp_path):
    root = str(tmp_path)
    folder = os.path.join(root, "MT_Free", "Imgs")
    _save(os.path.join(folder, "a.jpg"), np.full((H, W), 128))
    _save(os.path.join(folder, "b.jpg"), np.full((H, W), 128))
    _save(os.path.join(folder, "c.jpg"), np.full((H, W), 128))
    _save(os.path.join(folder, "a.png"), _mask(dd.MASK_THRESHOLD - 1, (0, H, 0, W)))  # all 127
    _save(os.path.join(folder, "b.png"), _mask(dd.MASK_THRESHOLD, (0, H, 0, W)))  # all 128
    _save(os.path.join(folder, "c.png"), _mask(255, (7, 8, 0, W)))  # a 1-pixel-high crack
    data = dd.load_magnetic_tile(root, image_size=4, classes=("Free",))
    assert not data.masks[0].any() and data.masks[1].all()
    crack = data.masks[2]  # 1 of 20 rows shrunk to 4 rows: kept (any defect pixel in footprint)
    np.testing.assert_array_equal(crack.any(1), [False, True, False, False])
    assert crack[1].all()


def _bad_tile(root, jpg=None, png=None, png_size=(H, W)):
    folder = os.path.join(root, "MT_Free", "Imgs")
    _save(os.path.join(folder, "a.jpg"), np.full((H, W), 100))
    _save(os.path.join(folder, "a.png"), _mask())
    bad = os.path.join(folder, "b.jpg")
    if jpg is None:
        _save(bad, np.full((H, W), 100))
    else:
        with open(bad, "wb") as f:
            f.write(jpg)
    mask = os.path.join(folder, "b.png")
    if png == "missing":
        pass
    elif png is not None:
        with open(mask, "wb") as f:
            f.write(png)
    else:
        _save(mask, np.zeros(png_size))
    return bad, mask


@pytest.mark.parametrize(
    "case, error, name",
    [
        ("missing mask", FileNotFoundError, "both"),
        ("wrong-size mask", ValueError, "both"),
        ("garbage image", ValueError, "image"),
        ("garbage mask", ValueError, "mask"),
    ],
)
def test_magnetic_tile_bad_files_name_the_file(tmp_path, case, error, name):
    root = str(tmp_path)
    kwargs = {
        "missing mask": {"png": "missing"},
        "wrong-size mask": {"png_size": (H, W + 1)},
        "garbage image": {"jpg": b"this is not a jpeg"},
        "garbage mask": {"png": b"\x89PNG\r\n\x1a\n garbage"},
    }[case]
    image, mask = _bad_tile(root, **kwargs)
    with pytest.raises(error) as info:
        dd.load_magnetic_tile(root, image_size=8, classes=("Free",))
    message = str(info.value)
    for path in {"both": (image, mask), "image": (image,), "mask": (mask,)}[name]:
        assert path in message
    if case == "wrong-size mask":
        assert "31x20" in message and "30x20" in message


def test_magnetic_tile_missing_folders_and_empty_class(tmp_path):
    root = str(tmp_path)
    missing = os.path.join(root, "nowhere")
    with pytest.raises(FileNotFoundError, match=re.escape(missing) + ".*MT_<Class>/Imgs"):
        dd.load_magnetic_tile(missing, image_size=8)
    _write_magnetic_tile(root, {"Free": 1})
    crack = os.path.join(root, "MT_Crack", "Imgs")
    with pytest.raises(FileNotFoundError, match=re.escape(crack)):
        dd.load_magnetic_tile(root, image_size=8, classes=("Free", "Crack"))
    os.makedirs(crack)
    with pytest.raises(ValueError, match=re.escape(crack) + ".*no .jpg"):
        dd.load_magnetic_tile(root, image_size=8, classes=("Free", "Crack"))
    os.makedirs(os.path.join(crack, "d.jpg"))  # a folder named like an image: a file-system error
    _save(os.path.join(crack, "d.png"), _mask())
    with pytest.raises(OSError) as info:
        dd.load_magnetic_tile(root, image_size=8, classes=("Free", "Crack"))
    assert not isinstance(info.value, ValueError) and info.value.errno is not None


def _write_mvtec(root):
    base = os.path.join(root, "bottle")
    for i in range(3):
        _save(os.path.join(base, "train", "good", f"{i:03d}.png"), np.full((H, W, 3), 50))
    _save(os.path.join(base, "test", "good", "000.png"), np.full((H, W, 3), 60))
    for defect, n in (("scratch", 2), ("broken", 1)):
        for i in range(n):
            _save(os.path.join(base, "test", defect, f"{i:03d}.png"), np.full((H, W, 3), 70))
            mask = _mask(255, (10, 20, 15, 30))  # bottom-right quarter
            _save(os.path.join(base, "ground_truth", defect, f"{i:03d}_mask.png"), mask)
    return base


def test_mvtec_train_and_test_splits(tmp_path):
    root = str(tmp_path)
    base = _write_mvtec(root)
    train = dd.load_mvtec(root, "bottle", "train", image_size=8)
    assert train.images.shape == (3, 8, 8, 3) and not train.masks.any()
    np.testing.assert_array_equal(train.labels, [0, 0, 0])
    test = dd.load_mvtec(root, "bottle", "test", image_size=8)
    assert test.classes == ("good", "broken", "scratch") == train.classes
    assert test.images.shape == (4, 8, 8, 3)
    grey = dd.load_mvtec(root, "bottle", "test", image_size=8, channels=1)
    assert grey.images.shape == (4, 8, 8, 1)
    np.testing.assert_allclose(grey.images[0], 60 / 255, atol=1e-6)
    np.testing.assert_array_equal(test.labels, [0, 1, 2, 2])
    assert test.paths[1] == os.path.join(base, "test", "broken", "000.png")
    assert not test.masks[0].any()
    expected = np.zeros((8, 8), bool)
    expected[4:, 4:] = True
    for m in test.masks[1:]:
        np.testing.assert_array_equal(m, expected)
    both = dd.InspectionImages.concatenate([train, test])
    assert len(both) == 7 and both.paths == train.paths + test.paths
    sub = both.subset(np.array([6, 0]))
    np.testing.assert_array_equal(sub.labels, [2, 0])
    assert sub.paths == (both.paths[6], both.paths[0]) and sub.classes == both.classes
    np.testing.assert_array_equal(sub.masks[0], both.masks[6])


def _with_classes(data, classes):
    return dd.InspectionImages(data.images, data.masks, data.labels, classes, data.paths)


def test_concatenate_needs_the_same_classes(tmp_path):
    data = dd.synthetic_textures(2, 2, image_size=8, seed=0)
    with pytest.raises(ValueError, match="classes"):
        dd.InspectionImages.concatenate([data, _with_classes(data, ("good", "spot", "scratch"))])
    rgb = dd.synthetic_textures(2, 2, image_size=8, seed=0, channels=3)
    with pytest.raises(ValueError, match="image shape"):
        dd.InspectionImages.concatenate([data, rgb])


def test_mvtec_errors_name_the_file(tmp_path):
    root = str(tmp_path)
    with pytest.raises(ValueError, match="split"):
        dd.load_mvtec(root, "bottle", "validation", image_size=8)
    with pytest.raises(FileNotFoundError, match=re.escape(os.path.join(root, "bottle"))):
        dd.load_mvtec(root, "bottle", "test", image_size=8)
    base = _write_mvtec(root)
    image = os.path.join(base, "test", "scratch", "001.png")
    mask = os.path.join(base, "ground_truth", "scratch", "001_mask.png")
    os.remove(mask)
    with pytest.raises(FileNotFoundError, match=re.escape(image) + ".*" + re.escape(mask)):
        dd.load_mvtec(root, "bottle", "test", image_size=8)
    _save(mask, np.zeros((H + 1, W)))
    with pytest.raises(ValueError, match=re.escape(mask) + ".*30x21.*30x20"):
        dd.load_mvtec(root, "bottle", "test", image_size=8)
    with open(image, "wb") as f:
        f.write(b"garbage")
    with pytest.raises(ValueError, match=re.escape(image)):
        dd.load_mvtec(root, "bottle", "test", image_size=8)


def test_synthetic_textures_are_seeded_and_defects_are_exactly_the_masks():
    data = dd.synthetic_textures(3, 6, image_size=32, seed=1)
    assert data.images.shape == (9, 32, 32, 1) and data.images.dtype == np.float32
    assert data.masks.shape == (9, 32, 32) and data.masks.dtype == bool
    assert data.classes == ("Free", "spot", "scratch") and data.paths == ("",) * 9
    np.testing.assert_array_equal(data.labels, [0, 0, 0, 1, 2, 1, 2, 1, 2])
    np.testing.assert_array_equal(data.masks.any((1, 2)), data.labels > 0)
    again = dd.synthetic_textures(3, 6, image_size=32, seed=1)
    np.testing.assert_array_equal(data.images, again.images)
    np.testing.assert_array_equal(data.masks, again.masks)
    other = dd.synthetic_textures(3, 6, image_size=32, seed=2)
    assert not np.allclose(data.images, other.images)
    # Textures are drawn before the defects, so 9 defect-free images share the same textures.
    clean = dd.synthetic_textures(9, 0, image_size=32, seed=1).images[..., 0]
    assert 0.1 <= clean.min() and clean.max() <= 0.9
    diff = np.abs(data.images[..., 0] - clean)
    np.testing.assert_array_equal(diff > 0, data.masks)  # the mask is exactly the planted region
    assert diff[data.masks].min() >= 0.3 - 1e-6
    assert dd.synthetic_textures(1, 2, image_size=8, seed=0, channels=3).images.shape[-1] == 3


def test_split_defect_free():
    labels = np.array([0] * 20 + [1, 2, 1] + [0] * 10, np.int32)
    train, val, test = dd.split_defect_free(labels, val_fraction=0.2, test_fraction=0.1, seed=0)
    assert (len(train), len(val), len(test)) == (21, 6, 3 + 3)
    for a in (train, val, test):
        assert a.dtype == np.int64 and np.all(np.diff(a) > 0)
    assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
    free = set(np.flatnonzero(labels == 0))
    assert set(train) | set(val) | (set(test) & free) == free
    assert {20, 21, 22} <= set(test) and not {20, 21, 22} & (set(train) | set(val))
    again = dd.split_defect_free(labels, val_fraction=0.2, test_fraction=0.1, seed=0)
    for a, b in zip((train, val, test), again, strict=True):
        np.testing.assert_array_equal(a, b)
    other = dd.split_defect_free(labels, val_fraction=0.2, test_fraction=0.1, seed=1)
    assert not np.array_equal(val, other[1])
    with pytest.raises(ValueError, match="3 defect-free images"):
        dd.split_defect_free(np.array([0, 0, 0, 1]), val_fraction=0.1, test_fraction=0.4, seed=0)


def test_random_patches():
    rng = np.random.default_rng(0)
    images = rng.random((5, 12, 10, 2)).astype(np.float32)
    patches = dd.random_patches(images, 4, 64, np.random.default_rng(1))
    assert patches.shape == (64, 4, 4, 2) and patches.dtype == np.float32
    np.testing.assert_array_equal(
        patches, dd.random_patches(images, 4, 64, np.random.default_rng(1))
    )
    # Every patch is a (possibly flipped) window of one image.
    windows = np.lib.stride_tricks.sliding_window_view(images, (4, 4), axis=(1, 2))
    windows = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, 4, 4, 2)
    flips = [windows, windows[:, ::-1], windows[:, :, ::-1], windows[:, ::-1, ::-1]]
    candidates = np.concatenate(flips).reshape(len(flips) * len(windows), -1)
    for p in patches:
        assert (np.abs(candidates - p.ravel()).max(1) == 0).any()
    plain = dd.random_patches(images, 4, 64, np.random.default_rng(1), flip=False)
    windows = windows.reshape(len(windows), -1)
    assert all((np.abs(windows - p.ravel()).max(1) == 0).any() for p in plain)
    with pytest.raises(ValueError, match="patch_size 11"):
        dd.random_patches(images, 11, 4, rng)


def test_real_magnetic_tile_folder():
    root = resolve_data_dir("../shared/data/images/magnetic-tile-defect")
    if not os.path.isdir(root):
        pytest.skip(f"no Magnetic Tile data at {root}")
    data = dd.load_magnetic_tile(root, image_size=32)
    assert data.images.shape == (1209, 32, 32, 1)
    assert data.classes == ("Free", "Blowhole", "Break", "Crack")
    np.testing.assert_array_equal(np.bincount(data.labels), [952, 115, 85, 57])
    assert not data.masks[data.labels == 0].any()
    assert data.masks[data.labels > 0].any((1, 2)).all()
    assert 0.0 <= data.images.min() and data.images.max() <= 1.0
