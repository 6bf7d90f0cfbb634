import numpy as np
import pytest

from research.training.sample_distances import mmd2, sliced_wasserstein


def test_sliced_wasserstein_of_a_shift_and_of_identical_samples():
    x = np.random.default_rng(0).standard_normal((4000, 5))
    assert sliced_wasserstein(x, x) == 0.0
    shift = np.array([1.0, -2.0, 0.5, 0.0, 2.0])
    # Every projection moves by u . shift: sqrt(E[(u . a)^2]) = |a| / sqrt(d) for uniform u.
    expected = np.linalg.norm(shift) / np.sqrt(5)
    assert sliced_wasserstein(x, x + shift, num_projections=4000) == pytest.approx(
        expected, rel=0.05
    )
    with pytest.raises(ValueError, match="equal shape"):
        sliced_wasserstein(x, x[:10])


def test_mmd_is_zero_for_equal_samples_and_grows_with_a_shift():
    x = np.random.default_rng(1).standard_normal((500, 2))
    assert mmd2(x, x, 1.0) == pytest.approx(0.0, abs=1e-6)
    assert mmd2(x, x + 0.5, 1.0) < mmd2(x, x + 2.0, 1.0)
