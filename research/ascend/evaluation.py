"""Sample-quality metrics for the diffusion experiments: Frechet distance, improved precision and
recall, the feature extractor they are computed on, and image grids.

Images everywhere are float32 [N, H, W, C] in [-1, 1] (C = 1 for MNIST, 3 for CIFAR-10).

    extractor, acc = train_feature_classifier(x_train, y_train, 10, test_x=x_test, test_y=y_test)
    extractor.save(f"{workdir}/feature_classifier.msgpack")      # cache one per data set
    extractor = ClassifierFeatures.load(f"{workdir}/feature_classifier.msgpack")
    real = extract_features(extractor, x_test)                     # [N, d] float32
    fake = extract_features(extractor, samples)                    # [M, d]
    fd = frechet_distance_of(real, fake)                           # FID-style distance
    precision, recall = precision_recall(real, fake, k=3)          # fractions in [0, 1]
    save_image_grid(samples[:64], f"{workdir}/samples.png")       # 8 x 8 tiles

Feature space. The FID of Heusel et al. 2017 is the Frechet distance between Gaussians fitted
to Inception-v3 pool3 features (2048-d). The Inception weights cannot be downloaded here, so by
default the distance, and precision / recall, are computed on the penultimate features of a
small classifier (`models.classifiers.SmallCNN`, `feature_dim`-d) trained on the same data set
(`train_feature_classifier`). The numbers are comparable between runs that use the same cached
classifier, NOT with published FIDs; they are "FD in a SmallCNN feature space".

Pluggable extractor. Any callable `images [N, H, W, C] in [-1, 1] -> features [N, d]` can be
used instead; `load_feature_extractor("package.module:function")` imports `function`, calls it
with no arguments and returns what it returns. A user with an Inception-v3 port and its weights
writes, e.g. in `my_fid/inception.py`:

    def pool3_extractor():
        model, params = load_my_inception_v3("/path/to/pt_inception-2015-12-05.npz")
        @jax.jit
        def features(x):                      # x: [B, H, W, C] in [-1, 1]
            if x.shape[-1] == 1:
                x = jnp.repeat(x, 3, axis=-1)   # grayscale -> RGB
            x = jax.image.resize(x, (x.shape[0], 299, 299, 3), "bilinear")
            return model.apply(params, x)     # [B, 2048] pool3 features
        return lambda images: np.concatenate(
            [np.asarray(features(images[i:i + 200])) for i in range(0, len(images), 200)])

and passes the spec "my_fid.inception:pool3_extractor"; the Frechet distance on those features
is then the usual FID (the FID Inception network works on inputs in [-1, 1]: pytorch-fid maps
its [0, 1] inputs there first).

Frechet distance. `frechet_distance` is pytorch-fid's `calculate_frechet_distance`:

    d^2 = ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr(sqrtm(S1 S2))

with `scipy.linalg.sqrtm`; when the square root is not finite (a singular product) eps * I is
added to both covariances and it is taken again (scipy's singular-matrix warning alone does not
trigger this, as in pytorch-fid, and is silenced); an imaginary part is dropped when the
diagonal's is below 1e-3 in absolute value, else ValueError. `feature_statistics` gives the
mean and the unbiased covariance (`np.cov(rowvar=False)`) in float64, as pytorch-fid. The
estimate is biased upwards by O(d / N) (Chong & Forsyth 2020), so compare distances computed
from the same numbers of samples.

Precision and recall. The improved metrics of Kynkaanniemi et al. 2019: every real feature
gets a ball whose radius is the distance to its k-th nearest other real feature (k = 3 in the
paper); precision is the fraction of fake features inside at least one real ball (distance <=
radius), recall the fraction of real features inside at least one fake ball (radii from the fake
set). Pairwise distances are computed with jax in row batches of `batch_size`, so 10k x 10k
needs one [batch_size, 10k] float32 block at a time.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import os
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization
from jax import lax
from scipy import linalg

from models.classifiers import SmallCNN

Array = jax.Array
FeatureExtractor = Callable[[np.ndarray], Any]  # images [N, H, W, C] in [-1, 1] -> [N, d]


# ----------------------------------------------------------------------------- Frechet distance


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """features [N, d] -> (mean [d], covariance [d, d]), float64; the covariance is unbiased
    (`np.cov(rowvar=False)`, divides by N - 1) as pytorch-fid. Needs N >= 2."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be [N, d], got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"feature statistics need at least 2 samples, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or inf")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), as pytorch-fid's
    `calculate_frechet_distance`.

    Args:
      mu1, mu2: means [d].
      sigma1, sigma2: covariances [d, d].
      eps: added to the covariances' diagonals when sqrtm(sigma1 @ sigma2) is not finite.

    Returns:
      ||mu1 - mu2||^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr(sqrtm(sigma1 @ sigma2)), a float.

    Raises:
      ValueError: shapes that do not match, non-finite inputs, a square root with a large
        imaginary part (the covariances are not positive semi-definite), or one that is still
        not finite after adding eps (pytorch-fid would return NaN there).
    """
    mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"means must both be [d]; got shapes {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"covariances must both be [{d}, {d}] to match the means; got shapes "
            f"{sigma1.shape} and {sigma2.shape}"
        )
    for name, a in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or inf")

    diff = mu1 - mu2
    # The product may be (nearly) singular, e.g. with fewer samples than dimensions. Recent scipy
    # warns about that; pytorch-fid (with `disp=False`) only reacts to a non-finite result.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        warnings.warn(
            f"Frechet distance: sqrtm(sigma1 @ sigma2) is not finite (singular product); adding "
            f"{eps} to the diagonals of the covariances",
            RuntimeWarning,
            stacklevel=2,
        )
        offset = np.eye(d) * eps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", linalg.LinAlgWarning)
            covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
        if not np.isfinite(covmean).all():
            raise ValueError(
                f"Frechet distance: sqrtm(sigma1 @ sigma2) is not finite even with eps={eps} "
                "added to the covariances"
            )
    # Numerical error may leave a slight imaginary component.
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            m = np.max(np.abs(covmean.imag))
            raise ValueError(
                f"Frechet distance: sqrtm(sigma1 @ sigma2) has an imaginary component of up to "
                f"{m:.3g}; are the covariances positive semi-definite?"
            )
        covmean = covmean.real
    tr_covmean = np.trace(covmean)
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def frechet_distance_of(features_a: np.ndarray, features_b: np.ndarray, eps: float = 1e-6) -> float:
    """Frechet distance between Gaussians fitted to features_a [N, d] and features_b [M, d]."""
    a, b = np.asarray(features_a), np.asarray(features_b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be [N, d] and [M, d]; got {a.shape} and {b.shape}")
    return frechet_distance(*feature_statistics(a), *feature_statistics(b), eps=eps)


# ----------------------------------------------------------------------- precision and recall


def _squared_distances(rows: Array, ref: Array) -> Array:
    """rows [b, d], ref [M, d] -> squared Euclidean distances [b, M], clamped at 0."""
    # HIGHEST: full float32 products (GPUs would otherwise use TF32 for float32 matmuls).
    dots = jnp.dot(rows, ref.T, precision=lax.Precision.HIGHEST)
    sq = jnp.sum(rows * rows, axis=1)[:, None] + jnp.sum(ref * ref, axis=1)[None, :] - 2 * dots
    return jnp.maximum(sq, 0.0)


@functools.partial(jax.jit, static_argnames="k")
def _kth_neighbour_sq(rows: Array, ref: Array, k: int) -> Array:
    """[b] squared distance from each row to its (k + 1)-th nearest point of ref, i.e. its k-th
    nearest *other* point when the rows are themselves in ref (the row's own zero distance is
    the nearest one; a duplicate point counts as a neighbour at distance 0, as in the paper's
    code)."""
    neg_smallest, _ = lax.top_k(-_squared_distances(rows, ref), k + 1)  # [b, k + 1]
    # The largest of the k + 1 smallest, not `[:, k]`: XLA:CPU turns a top_k whose output is
    # sliced into a ~25x slower program (1.4 s against 0.06 s for a 1000 x 10000 block).
    return jnp.max(-neg_smallest, axis=1)


@jax.jit
def _inside_any_ball(queries: Array, centres: Array, radii_sq: Array) -> Array:
    """[b] bool: query i is within radius_j of some centre j (squared: monotone, the same)."""
    return jnp.any(_squared_distances(queries, centres) <= radii_sq[None, :], axis=1)


def _in_row_batches(fn: Callable[[Array], Array], rows: np.ndarray, batch_size: int) -> np.ndarray:
    """fn over row blocks of one fixed size (the last is zero-padded), so it compiles once."""
    n = rows.shape[0]
    b = min(batch_size, n)
    padded = np.concatenate([rows, np.zeros((-n % b, rows.shape[1]), rows.dtype)])
    out = [np.asarray(fn(jnp.asarray(padded[i : i + b]))) for i in range(0, len(padded), b)]
    return np.concatenate(out)[:n]


def _knn_radii_sq(features: np.ndarray, k: int, batch_size: int) -> np.ndarray:
    """features [N, d] float32 -> [N] squared distance of each to its k-th nearest other."""
    ref = jnp.asarray(features)
    return _in_row_batches(lambda r: _kth_neighbour_sq(r, ref, k), features, batch_size)


def _coverage(queries: np.ndarray, centres: np.ndarray, k: int, batch_size: int) -> float:
    """Fraction of queries [N, d] inside at least one k-NN ball of centres [M, d]."""
    radii_sq = jnp.asarray(_knn_radii_sq(centres, k, batch_size))
    ref = jnp.asarray(centres)
    inside = _in_row_batches(lambda q: _inside_any_ball(q, ref, radii_sq), queries, batch_size)
    return float(np.mean(inside))


def precision_recall(
    real: np.ndarray, fake: np.ndarray, k: int = 3, batch_size: int = 1000
) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of fake features against real.

    Args:
      real: [N, d] features of real images.
      fake: [M, d] features of generated images.
      k: the ball of a feature reaches its k-th nearest other feature of the same set (1 <= k <
        N and k < M).
      batch_size: rows of the pairwise-distance blocks ([batch_size, N or M] float32 each).

    Returns:
      (precision, recall): the fraction of fake features inside some real ball, and of real
      features inside some fake ball; distances <= radius count as inside.
    """
    real, fake = np.asarray(real), np.asarray(fake)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"features must be [N, d] and [M, d]; got {real.shape} and {fake.shape}")
    if not 1 <= k < min(len(real), len(fake)):
        raise ValueError(
            f"k must be in [1, min(N, M) - 1]; got k={k} with N={len(real)}, M={len(fake)}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not (np.isfinite(real).all() and np.isfinite(fake).all()):
        raise ValueError("features contain NaN or inf")
    # Distances do not change under a common shift; centring first reduces the cancellation in
    # ||a||^2 + ||b||^2 - 2 a.b in float32.
    centre = real.mean(axis=0, dtype=np.float64)
    real32 = (real - centre).astype(np.float32)
    fake32 = (fake - centre).astype(np.float32)
    precision = _coverage(fake32, real32, k, batch_size)
    recall = _coverage(real32, fake32, k, batch_size)
    return precision, recall


def sample_quality(reference: np.ndarray, fake: np.ndarray, k: int = 3) -> dict[str, float]:
    """{"fd", "precision", "recall"} of fake features [M, d] against reference features [N, d]
    (N >= M): the Frechet distance to all N, precision / recall against the first M (the k-NN
    radii depend on the sample size, so the two sets are of equal size, as Kynkaanniemi et al.
    compare them)."""
    precision, recall = precision_recall(reference[: len(fake)], fake, k=k)
    return {"fd": frechet_distance_of(reference, fake), "precision": precision, "recall": recall}


# --------------------------------------------------------------------------- feature extractors


def _check_images(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C], got shape {x.shape}")
    return x


def extract_features(
    extractor: FeatureExtractor, images: np.ndarray, batch_size: int = 1000
) -> np.ndarray:
    """Runs extractor on images [N, H, W, C] in [-1, 1] in chunks of batch_size -> [N, d]
    float32, checking that every chunk gives one finite feature row per image."""
    x = _check_images(images)
    out = []
    for i in range(0, len(x), batch_size):
        f = np.asarray(extractor(x[i : i + batch_size]), dtype=np.float32)
        if f.ndim != 2 or f.shape[0] != len(x[i : i + batch_size]):
            raise ValueError(
                f"the feature extractor must map [B, H, W, C] to [B, d]; got {f.shape} for "
                f"{x[i : i + batch_size].shape}"
            )
        if not np.isfinite(f).all():
            raise ValueError("the feature extractor returned NaN or inf")
        out.append(f)
    if not out:
        raise ValueError("no images to extract features from")
    return np.concatenate(out)


_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def load_feature_extractor(spec: str) -> FeatureExtractor:
    """The pluggable feature extractor: spec "package.module:function" -> function().

    `function` (an attribute path, so "pkg.mod:Class.factory" works too) is called with no
    arguments and must return a callable images [N, H, W, C] in [-1, 1] -> features [N, d]; see
    the module docstring for an Inception-v3 example.

    Raises:
      ValueError: spec is not of the form "package.module:function".
      ImportError: the module cannot be imported or has no such attribute.
      TypeError: the attribute, or what it returns, is not callable.
    """
    if not isinstance(spec, str) or not _SPEC.match(spec.strip()):
        raise ValueError(
            f"feature extractor spec {spec!r} is not of the form 'package.module:function'"
        )
    module_name, attr_path = spec.strip().split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(
            f"feature extractor spec {spec!r}: cannot import module {module_name!r}: {err}"
        ) from err
    factory: Any = module
    for attr in attr_path.split("."):
        try:
            factory = getattr(factory, attr)
        except AttributeError as err:
            raise ImportError(
                f"feature extractor spec {spec!r}: {module_name!r} has no attribute {attr_path!r}"
            ) from err
    if not callable(factory):
        raise TypeError(f"feature extractor spec {spec!r}: {attr_path!r} is not callable")
    extractor = factory()
    if not callable(extractor):
        raise TypeError(
            f"feature extractor spec {spec!r}: {attr_path}() returned a "
            f"{type(extractor).__name__}, not a callable images -> features"
        )
    return extractor


def _smallcnn_kwargs(module: nn.Module) -> dict[str, Any] | None:
    if type(module) is not SmallCNN:
        return None
    return {
        "num_classes": int(module.num_classes),
        "widths": [int(w) for w in module.widths],
        "feature_dim": int(module.feature_dim),
        "normed_head": bool(module.normed_head),
    }


@dataclasses.dataclass
class ClassifierFeatures:
    """A trained classifier as a feature extractor: `extractor(images)` maps images [N, H, W, C]
    in [-1, 1] to its penultimate features [N, feature_dim] (np.float32).

    `module.apply(variables, x, train=False)` must return (logits, features), as the models in
    `models.classifiers`. Images go through in blocks of `batch_size` (the last zero-padded), so
    the jitted forward pass compiles once per image shape. `image_shape` (H, W, C), when known,
    is checked on every call and stored by `save`.
    """

    module: nn.Module
    variables: Any
    image_shape: tuple[int, int, int] | None = None
    batch_size: int = 500
    _forward: Callable[..., tuple[Array, Array]] = dataclasses.field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.image_shape is not None:
            self.image_shape = tuple(int(s) for s in self.image_shape)
        module = self.module
        self._forward = jax.jit(lambda variables, x: module.apply(variables, x, train=False))

    def outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """images [N, H, W, C] -> (logits [N, num_classes], features [N, feature_dim])."""
        x = _check_images(images)
        if self.image_shape is not None and x.shape[1:] != self.image_shape:
            raise ValueError(
                f"images are {x.shape[1:]}, the classifier was trained on {self.image_shape}"
            )
        if len(x) == 0:
            raise ValueError("no images to extract features from")
        n, b = len(x), self.batch_size
        padded = np.concatenate([x, np.zeros((-n % b, *x.shape[1:]), np.float32)])
        logits, features = [], []
        for i in range(0, len(padded), b):
            lg, ft = self._forward(self.variables, jnp.asarray(padded[i : i + b]))
            logits.append(np.asarray(lg))
            features.append(np.asarray(ft))
        return np.concatenate(logits)[:n], np.concatenate(features)[:n]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """images [N, H, W, C] in [-1, 1] -> features [N, feature_dim] float32."""
        return self.outputs(images)[1]

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        """Top-1 accuracy on images [N, H, W, C] with int labels [N]."""
        logits, _ = self.outputs(images)
        return float(np.mean(np.argmax(logits, axis=-1) == np.asarray(labels)))

    def state_dict(self) -> dict[str, Any]:
        """{"variables": numpy tree, "module": SmallCNN kwargs (absent for another module),
        "image_shape": [H, W, C] (absent when unknown)}."""
        state: dict[str, Any] = {
            "variables": jax.tree_util.tree_map(
                np.asarray, serialization.to_state_dict(self.variables)
            )
        }
        kwargs = _smallcnn_kwargs(self.module)
        if kwargs is not None:
            state["module"] = kwargs
        if self.image_shape is not None:
            state["image_shape"] = list(self.image_shape)
        return state

    def save(self, path: str) -> str:
        """Writes state_dict() as msgpack to path (parent folders created); returns path."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp"
        with open(tmp, "wb") as f:
            f.write(serialization.msgpack_serialize(self.state_dict()))
        os.replace(tmp, path)  # a crash mid-write leaves no truncated cache behind
        return path

    @classmethod
    def load(
        cls,
        path: str,
        module_kwargs: dict[str, Any] | None = None,
        *,
        module: nn.Module | None = None,
        batch_size: int = 500,
    ) -> ClassifierFeatures:
        """Reads what `save` wrote. The module is `module` if given, else SmallCNN(**kwargs)
        with `module_kwargs`, else with the kwargs stored in the file. When the file stores the
        image shape, the variables must have the shapes that module.init gives for it, else
        ValueError."""
        with open(path, "rb") as f:
            state = serialization.msgpack_restore(f.read())
        if not isinstance(state, dict) or "variables" not in state:
            raise ValueError(f"{path} is not a saved ClassifierFeatures")
        if module is None:
            kwargs = module_kwargs if module_kwargs is not None else state.get("module")
            if kwargs is None:
                raise ValueError(f"{path} stores no module kwargs; pass module_kwargs or module")
            kwargs = dict(kwargs)
            if "widths" in kwargs:
                kwargs["widths"] = tuple(int(w) for w in kwargs["widths"])
            module = SmallCNN(**kwargs)
        image_shape = state.get("image_shape")
        variables = state["variables"]
        if image_shape is not None:
            image_shape = tuple(int(s) for s in image_shape)
            template = jax.eval_shape(
                lambda: module.init(jax.random.key(0), jnp.zeros((1, *image_shape)), train=False)
            )
            want = jax.tree_util.tree_map(lambda a: tuple(a.shape), template)
            got = jax.tree_util.tree_map(lambda a: tuple(np.shape(a)), variables)
            if jax.tree_util.tree_structure(want) != jax.tree_util.tree_structure(
                got
            ) or jax.tree_util.tree_leaves(want) != jax.tree_util.tree_leaves(got):
                raise ValueError(
                    f"the variables in {path} do not fit {module!r} on {image_shape} images"
                )
        variables = jax.tree_util.tree_map(jnp.asarray, variables)
        return cls(module, variables, image_shape=image_shape, batch_size=batch_size)


# ----------------------------------------------------------------------- the feature classifier


def _check_labels(labels: np.ndarray, n: int, num_classes: int, name: str) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must be int [{n}], got {y.dtype} {y.shape}")
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{name} must be in [0, {num_classes}), got [{y.min()}, {y.max()}]")
    return y.astype(np.int32)


def train_feature_classifier(
    train_x: np.ndarray,
    train_y: np.ndarray,
    num_classes: int,
    *,
    test_x: np.ndarray,
    test_y: np.ndarray,
    steps: int = 2000,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    widths: Sequence[int] = (32, 64),
    feature_dim: int = 64,
    steps_per_call: int | None = None,
) -> tuple[ClassifierFeatures, float]:
    """Trains a SmallCNN to classify train_x and returns it as a feature extractor.

    Adam on the mean softmax cross-entropy of batches of `batch_size` images drawn uniformly
    with replacement (jax.random) from a device-resident copy of the training set; each jitted
    call runs `steps_per_call` steps in a `lax.scan` (the remainder in one shorter call). The
    losses stay on the device until the end, so the host never waits on a step; it only
    dispatches one call per `steps_per_call` steps.

    `steps_per_call` defaults to 100 on an accelerator and to 1 (no scan) on the CPU: XLA:CPU
    runs these convolutions about 11x slower under `lax.scan` (0.74 s against 0.066 s per step
    of batch 128 on 16 x 16 digits, widths (32, 64), 2-core CPU, one-off timing), as
    research/defect_ae's README records for its autoencoder.

    Args:
      train_x: [N, H, W, C] float32 images in [-1, 1]; train_y: [N] int labels.
      num_classes: labels are in [0, num_classes).
      test_x, test_y: [M, H, W, C] and [M]: the returned accuracy is measured on them.
      widths, feature_dim: SmallCNN's conv widths and feature (penultimate) size.

    Returns:
      (extractor, test accuracy in [0, 1]); extractor(images) -> [N, feature_dim].

    Raises:
      ValueError: bad shapes, labels or settings. FloatingPointError: a non-finite loss.
    """
    x = _check_images(train_x)
    tx_images = _check_images(test_x)
    if x.shape[1:] != tx_images.shape[1:]:
        raise ValueError(f"train images are {x.shape[1:]}, test images {tx_images.shape[1:]}")
    if len(x) == 0:
        raise ValueError("no training images")
    y = _check_labels(train_y, len(x), num_classes, "train_y")
    ty = _check_labels(test_y, len(tx_images), num_classes, "test_y")
    settings = {"steps": steps, "batch_size": batch_size, "steps_per_call": steps_per_call}
    for name, v in settings.items():
        if v is not None and v < 1:
            raise ValueError(f"{name} must be positive, got {v}")

    module = SmallCNN(num_classes=num_classes, widths=tuple(widths), feature_dim=feature_dim)
    init_key, data_key = jax.random.split(jax.random.key(seed))
    variables = module.init(init_key, jnp.zeros((1, *x.shape[1:]), jnp.float32), train=False)
    optimizer = optax.adam(lr)
    carry = (variables["params"], variables["batch_stats"], optimizer.init(variables["params"]))
    data_x, data_y = jnp.asarray(x), jnp.asarray(y)

    def loss_fn(params, batch_stats, xb, yb):
        (logits, _), updates = module.apply(
            {"params": params, "batch_stats": batch_stats}, xb, train=True, mutable=["batch_stats"]
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
        return loss, updates["batch_stats"]

    def step(carry, key, data_x, data_y):
        params, batch_stats, opt_state = carry
        idx = jax.random.randint(key, (batch_size,), 0, data_x.shape[0])
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, batch_stats), grads = grad_fn(params, batch_stats, data_x[idx], data_y[idx])
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

    @jax.jit
    def run_steps(carry, keys, data_x, data_y):  # -> carry, losses [len(keys)]
        return lax.scan(lambda c, k: step(c, k, data_x, data_y), carry, keys)

    @jax.jit
    def run_one_step(carry, keys, data_x, data_y):  # keys [1] -> carry, losses [1]
        carry, loss = step(carry, keys[0], data_x, data_y)
        return carry, loss[None]

    if steps_per_call is None:
        steps_per_call = 1 if jax.default_backend() == "cpu" else 100
    run = run_one_step if steps_per_call == 1 else run_steps
    keys = jax.random.split(data_key, steps)
    losses = []  # device arrays: nothing waits for the device until the end
    for start in range(0, steps, steps_per_call):
        carry, chunk_losses = run(carry, keys[start : start + steps_per_call], data_x, data_y)
        losses.append(chunk_losses)
    losses = np.asarray(jnp.concatenate(losses))
    if not np.isfinite(losses).all():
        first = int(np.argmax(~np.isfinite(losses)))
        raise FloatingPointError(f"feature classifier: non-finite loss at step {first}")
    params, batch_stats, _ = carry
    extractor = ClassifierFeatures(
        module, {"params": params, "batch_stats": batch_stats}, image_shape=x.shape[1:]
    )
    return extractor, extractor.accuracy(tx_images, ty)


# -------------------------------------------------------------------------------- image grids


def save_image_grid(images: np.ndarray, path: str, nrow: int | None = None, pad: int = 2) -> str:
    """Tiles images [N, H, W, C] in [-1, 1] (C = 1 or 3) row-major into one PNG at path.

    nrow is the number of images per grid row (torchvision's `make_grid` convention; default
    ceil(sqrt(N))); the grid has ceil(N / nrow) rows, `pad` black pixels between tiles and
    around the border, so it is [rows * (H + pad) + pad, nrow * (W + pad) + pad]. A pixel is
    round((x + 1) * 127.5) clipped to 0..255 (round half up). Creates the parent folder and
    returns path.
    """
    from PIL import Image

    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or len(x) == 0:
        raise ValueError(f"images must be [N, H, W, 1 or 3] with N >= 1, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("images contain NaN or inf")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    n, h, w, c = x.shape
    ncol = min(n, nrow if nrow is not None else math.ceil(math.sqrt(n)))
    if ncol < 1:
        raise ValueError(f"nrow must be positive, got {nrow}")
    rows = math.ceil(n / ncol)
    pixels = np.floor(np.clip((x + 1.0) * 127.5, 0.0, 255.0) + 0.5).astype(np.uint8)
    grid = np.zeros((rows * (h + pad) + pad, ncol * (w + pad) + pad, c), np.uint8)
    for i in range(n):
        r, col = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top : top + h, left : left + w] = pixels[i]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(grid[..., 0] if c == 1 else grid).save(path, format="PNG")
    return path
