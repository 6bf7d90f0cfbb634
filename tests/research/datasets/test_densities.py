"""Tests of the density loaders and samplers (research/datasets/densities.py)."""

import os

import numpy as np
import pytest
import scipy.stats
from PIL import Image

from research.datasets import densities


def test_image_density_maps_dark_pixels_upright(tmp_path):
    img = np.full((20, 40), 255, np.uint8)
    img[0, 0] = 0  # top-left: x = -4, y = +4
    img[19, 39] = 128  # bottom-right, half as heavy: x = +4, y = -4
    path = tmp_path / "shape.png"
    Image.fromarray(img).save(path)
    sampler = densities.load_image_density(str(tmp_path), "shape")
    x = sampler(30000, np.random.default_rng(0))
    assert x.shape == (30000, 2) and x.dtype == np.float32
    top_left = np.linalg.norm(x - [-4, 4], axis=1) < 1.0
    bottom_right = np.linalg.norm(x - [4, -4], axis=1) < 1.0
    assert np.all(top_left | bottom_right)
    np.testing.assert_allclose(top_left.mean(), 255 / (255 + 127), atol=0.01)
    # Jitter: std 8 / (2 w) in x and 8 / (2 h) in y.
    np.testing.assert_allclose(x[top_left].std(0), [8 / 80, 8 / 40], rtol=0.05)


def test_image_density_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        densities.load_image_density(str(tmp_path), "missing")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png"):
        densities.load_image_density(str(tmp_path), "bad")


@pytest.mark.parametrize("name", densities.TOY_DENSITIES)
def test_toy_samplers(name):
    x = densities.get_sampler(name)(2000, np.random.default_rng(0))
    assert x.shape == (2000, 2) and x.dtype == np.float32 and np.all(np.isfinite(x))
    assert 0.5 < x.std() < 4.0


def test_gaussian_logpdf_and_entropy():
    x = densities.correlated_gaussian(5, np.random.default_rng(0))
    ref = scipy.stats.multivariate_normal(np.zeros(2), densities.GAUSSIAN_COV).logpdf(x)
    np.testing.assert_allclose(densities.gaussian_logpdf(x), ref, rtol=1e-10)
    np.testing.assert_allclose(densities.gaussian_entropy(), 4.4269, atol=1e-4)


def _write_splits(folder, d=6, n=(40, 10, 12)):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, size in zip(("train", "val", "test"), n, strict=True):
        np.save(os.path.join(folder, f"{split}.npy"), rng.normal(size=(size, d)))


def test_tabular_loader(tmp_path):
    _write_splits(tmp_path / "power", d=6)
    splits = densities.load_tabular(str(tmp_path), "power")
    assert {k: v.shape for k, v in splits.items()} == {
        "train": (40, 6),
        "val": (10, 6),
        "test": (12, 6),
    }
    assert splits["train"].dtype == np.float32


def test_tabular_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"gas/train\.npy"):
        densities.load_tabular(str(tmp_path), "gas")
    _write_splits(tmp_path / "gas", d=5)  # GAS has 8 columns
    with pytest.raises(ValueError, match=r"train\.npy: expected shape \[N > 0, 8\]"):
        densities.load_tabular(str(tmp_path), "gas")
    _write_splits(tmp_path / "power", d=6)
    (tmp_path / "power" / "val.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"val\.npy is not a readable \.npy"):
        densities.load_tabular(str(tmp_path), "power")
    bad = np.zeros((4, 6))
    bad[1, 2] = np.nan
    np.save(tmp_path / "power" / "val.npy", bad)
    with pytest.raises(ValueError, match="NaN"):
        densities.load_tabular(str(tmp_path), "power")


def test_image_density_with_nan_pixels_or_uniform_grey_names_the_file(tmp_path):
    grey = np.full((20, 30), 200.0, np.float32)
    grey[3, 4], grey[5, 6] = np.nan, np.inf
    # A float image under the density's name: converting it to grey would turn NaN into black.
    Image.fromarray(grey, mode="F").save(tmp_path / "rose.png", format="TIFF")
    with pytest.raises(ValueError, match=r"rose\.png: 1 NaN and 1 infinite pixel values"):
        densities.load_image_density(str(tmp_path), "rose")
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(tmp_path / "tree.png")
    with pytest.raises(ValueError, match=r"tree\.png: image density: the image is uniform"):
        densities.load_image_density(str(tmp_path), "tree")


def test_truncated_image_and_non_finite_tabular_values_name_the_file(tmp_path):
    img = (np.random.default_rng(0).random((60, 80)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "rose.png")
    data = (tmp_path / "rose.png").read_bytes()
    (tmp_path / "rose.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"rose\.png as an image: image file is truncated"):
        densities.load_image_density(str(tmp_path), "rose")
    _write_splits(tmp_path / "power", d=6)
    bad = np.ones((12, 6))
    bad[7, 2] = -np.inf
    np.save(tmp_path / "power" / "test.npy", bad)
    with pytest.raises(
        ValueError,
        match=r"power/test\.npy: 0 NaN and 1 infinite values \(first at index \(7, 2\)\)",
    ):
        densities.load_tabular(str(tmp_path), "power")
