"""Feature stores: where a mini-batch's input features come from, and in which form.

Schemes (names used by configs, results and the benchmark):
  float32         host memory; rows gathered on the host with numpy, transferred per batch (the
                  baseline: the uncompressed table does not fit on an accelerator at scale).
  float32-device  the float32 table resident on the device, gathered there (an upper bound when
                  it fits).
  sq<b>           BiFeat's log-uniform sign-magnitude scalar quantizer, b in 1, 2, 4, 8, 16.
  uniform<b>      per-column min-max uniform quantizer, b in 1, 2, 4, 8.
  vq<W>x<L>       vector quantizer: sub-vectors of W columns, codebooks of L entries.
  <scheme>+cache  any compressed scheme plus a float32 device cache of the highest-degree nodes.
Compressed tables (`ops.quantize.QuantizedTable`) live on the device, replicated over the data
mesh; each device gathers and dequantizes its own rows (`ops.quantized_gather`). On a mesh
spanning several processes (`distributed.global_mesh()`) every process builds the same store
(the same quantizer fit, from the same seed) and replicates it over the mesh from its host copy;
`rows` reads this process's copy.

Feature normalisation (`center=True`, a design choice for sparse bag-of-words features such as
Cora's; the official code feeds decoded features as they are): the quantizers are fit on
column-centred features `x - m` (`m`: float32 column means), and every store's output is mapped
to zero column means and the RMS of the centred float32 features by one affine map
`out = decoded * scale + shift` (`scale` scalar, `shift [D]`) fitted on a row sample and applied
on the device after dequantization; cached rows hold `x - m` exactly. Without it, BiFeat's 1-bit
code decodes a row-normalised bag of words to a dense `+-0.1` table (a large constant offset) and
the 2-bit code shrinks it tenfold, which stalls Adam at the recipe's learning rate.

A store splits feature loading into a host part and a device part so that the host part can
run in the prefetch thread: `prepare(input_nodes)` (numpy, host) returns the float32 rows
(host store) or the node ids (device stores); after the transfer, `features(prepared)` (device,
jitted) returns `[num_devices, n, D] float32`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from ops.quantize import SQ_BITS, UNIFORM_BITS, QuantizedTable, quantize
from ops.quantized_gather import quantized_gather
from research.training import distributed
from research.training.parallel import DATA_AXIS

_SCHEME = re.compile(r"^(float32|float32-device|sq(\d+)|uniform(\d+)|vq(\d+)x(\d+))(\+cache)?$")


@dataclasses.dataclass(frozen=True)
class Scheme:
    """A parsed scheme name. method: "float32" | "float32-device" | "sq" | "uniform" | "vq"."""

    name: str
    method: str
    bits: int = 32
    width: int = 0
    length: int = 0
    cache: bool = False

    @property
    def compressed(self) -> bool:
        return self.method in ("sq", "uniform", "vq")


def parse_scheme(name: str) -> Scheme:
    """Parses a scheme name (module docstring); ValueError naming the accepted forms otherwise."""
    name = name.strip()
    m = _SCHEME.match(name)
    if m is None:
        raise ValueError(
            f"unknown feature store scheme {name!r}; expected float32, float32-device, "
            f"sq<bits> (bits {SQ_BITS}), uniform<bits> (bits {UNIFORM_BITS}), vq<width>x<length>, "
            "optionally followed by +cache"
        )
    base, sq_bits, uni_bits, width, length, cache = m.groups()
    cache = bool(cache)
    if base.startswith("float32"):
        if cache:
            raise ValueError(f"scheme {name!r}: +cache applies to compressed schemes only")
        return Scheme(name, base)
    if sq_bits is not None:
        if int(sq_bits) not in SQ_BITS:
            raise ValueError(f"scheme {name!r}: sq bits must be one of {SQ_BITS}")
        return Scheme(name, "sq", bits=int(sq_bits), cache=cache)
    if uni_bits is not None:
        if int(uni_bits) not in UNIFORM_BITS:
            raise ValueError(f"scheme {name!r}: uniform bits must be one of {UNIFORM_BITS}")
        return Scheme(name, "uniform", bits=int(uni_bits), cache=cache)
    if int(width) < 1 or int(length) < 2:
        raise ValueError(f"scheme {name!r}: vq needs width >= 1 and length >= 2")
    return Scheme(name, "vq", width=int(width), length=int(length), cache=cache)


def parse_schemes(names: str) -> list[Scheme]:
    """Comma-separated scheme names -> list of `Scheme` (duplicates rejected)."""
    schemes = [parse_scheme(n) for n in names.split(",") if n.strip()]
    seen = [s.name for s in schemes]
    if len(set(seen)) != len(seen) or not schemes:
        raise ValueError(f"schemes must be a non-empty list without duplicates, got {names!r}")
    return schemes


class FeatureStore:
    """Base class. Attributes: `scheme`, `num_rows`, `num_cols`, `nbytes` (resident bytes of the
    feature data: codes, quantizer parameters, cache rows and slot map), `location`."""

    scheme: Scheme
    num_rows: int
    num_cols: int
    nbytes: int
    location: str

    @property
    def compression_ratio(self) -> float:
        """float32 bytes of the table / `nbytes`."""
        return self.num_rows * self.num_cols * 4 / self.nbytes

    def prepare(self, input_nodes: np.ndarray) -> np.ndarray:
        """Host part: `input_nodes [num_devices, n] int32` -> the array to transfer."""
        raise NotImplementedError

    def features(self, prepared: jax.Array) -> jax.Array:
        """Device part: the transferred array -> `[num_devices, n, D] float32` (sharded)."""
        raise NotImplementedError

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """`[len(ids), D] float32` decoded rows on the host (evaluation, analysis)."""
        raise NotImplementedError


class HostStore(FeatureStore):
    """The float32 baseline: numpy gather on the host; `features` adds the optional centring
    `shift [D]` on the device (the identity without it)."""

    location = "host"

    def __init__(self, features: np.ndarray, mesh: Mesh, *, shift: np.ndarray | None = None):
        self.scheme = parse_scheme("float32")
        self.table = np.ascontiguousarray(features, np.float32)
        self.num_rows, self.num_cols = self.table.shape
        self.shift = None if shift is None else np.asarray(shift, np.float32)
        self.nbytes = int(self.table.nbytes) + (0 if shift is None else self.shift.nbytes)
        if self.shift is not None:
            self._shift_dev = distributed.replicate(self.shift, mesh)
            self._add = jax.jit(lambda x, b: x + b)

    def prepare(self, input_nodes: np.ndarray) -> np.ndarray:
        return np.take(self.table, input_nodes, axis=0)

    def features(self, prepared: jax.Array) -> jax.Array:
        return prepared if self.shift is None else self._add(prepared, self._shift_dev)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        out = np.take(self.table, ids, axis=0)
        return out if self.shift is None else out + self.shift


class DeviceStore(FeatureStore):
    """A table resident on the device (float32 or quantized, optional float32 hot-node cache),
    replicated over `mesh`; each device gathers its shard of the node ids.

    tables: pytree with "table" (`QuantizedTable` or [N, D] float32); optionally "scale" ([]
    float32) and "shift" ([D] float32), the affine map applied to decoded rows; with a cache,
    "slot" ([N] int32, row in "cache" or -1) and "cache" ([C, D] float32, used as is).
    """

    location = "device"

    def __init__(self, scheme: Scheme, tables: dict[str, Any], mesh: Mesh, *, impl: str = "auto"):
        self.scheme, self.mesh, self.impl = scheme, mesh, impl
        table = tables["table"]
        if isinstance(table, QuantizedTable):
            self.num_rows, self.num_cols = table.num_rows, table.num_cols
        else:
            self.num_rows, self.num_cols = table.shape
        leaves = jax.tree.leaves(tables)
        self.nbytes = int(sum(leaf.nbytes for leaf in leaves))
        self.tables = distributed.replicate(tables, mesh)
        self._local_tables = distributed.process_local(self.tables)  # `rows` gathers from these

        def gather(tables, ids):  # ids: [n] -> [n, D]
            t = tables["table"]
            if isinstance(t, QuantizedTable):
                out = quantized_gather(t, ids, impl=impl, check=False)
            else:
                out = jnp.take(t, ids, axis=0, mode="clip")
            if "scale" in tables:
                out = out * tables["scale"] + tables["shift"]
            if "cache" in tables:
                slot = tables["slot"][ids]
                hot = jnp.take(tables["cache"], jnp.maximum(slot, 0), axis=0)
                out = jnp.where(slot[:, None] >= 0, hot, out)
            return out

        self._gather = jax.jit(gather)
        spec = PartitionSpec(DATA_AXIS)
        self._sharded = jax.jit(
            jax.shard_map(
                lambda tables, ids: gather(tables, ids[0])[None],
                mesh=mesh,
                in_specs=(PartitionSpec(), spec),
                out_specs=spec,
            )
        )

    def prepare(self, input_nodes: np.ndarray | jax.Array) -> np.ndarray | jax.Array:
        """The ids themselves (ids already on the device, from the device sampler, stay there)."""
        if isinstance(input_nodes, jax.Array):
            return input_nodes
        return np.asarray(input_nodes, np.int32)

    def features(self, prepared: jax.Array) -> jax.Array:
        return self._sharded(self.tables, prepared)

    def rows(self, ids: np.ndarray, *, chunk: int = 1 << 16) -> np.ndarray:
        ids = np.asarray(ids, np.int32)
        parts = [
            np.asarray(self._gather(self._local_tables, ids[i : i + chunk]))
            for i in range(0, len(ids), chunk)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.num_cols), np.float32)


def top_degree_nodes(degrees: np.ndarray, count: int) -> np.ndarray:
    """The `count` highest-degree node ids (ties by lower id), sorted by id."""
    order = np.lexsort((np.arange(len(degrees)), -np.asarray(degrees)))
    return np.sort(order[:count])


def build_store(
    scheme: Scheme | str,
    features: np.ndarray,
    mesh: Mesh,
    *,
    degrees: np.ndarray | None = None,
    cache_fraction: float = 0.0,
    center: bool = False,
    impl: str = "auto",
    seed: int = 0,
    sample_rows: int | None = None,
    vq_max_iters: int = 50,
    stats_rows: int = 100_000,
) -> FeatureStore:
    """Builds the store of `scheme` for `features: [N, D] float32` (quantizers fit here).

    degrees, cache_fraction: for `+cache` schemes, the `ceil(cache_fraction * N)` highest-degree
    nodes keep float32 rows on the device. center: the feature normalisation of the module
    docstring, its statistics from `stats_rows` random rows. seed: quantizer row sample / k-means
    seed (and the statistics sample).
    """
    scheme = parse_scheme(scheme) if isinstance(scheme, str) else scheme
    features = np.asarray(features, np.float32)
    n = len(features)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, stats_rows, replace=False)) if n > stats_rows else np.arange(n)
    mean = features[sample].mean(0, dtype=np.float64).astype(np.float32) if center else None
    if scheme.method == "float32":
        return HostStore(features, mesh, shift=None if mean is None else -mean)
    if scheme.method == "float32-device":
        table = jnp.asarray(features if mean is None else features - mean)
        return DeviceStore(scheme, {"table": table}, mesh, impl=impl)
    if scheme.method == "vq":
        kwargs: dict[str, Any] = dict(width=scheme.width, length=scheme.length)
        kwargs["max_iters"] = vq_max_iters
    else:
        kwargs = dict(bits=scheme.bits)
    source = features if mean is None else features - mean
    table = quantize(source, scheme.method, seed=seed, sample_rows=sample_rows, **kwargs)
    tables: dict[str, Any] = {"table": table}
    if center:  # decoded rows -> zero column means, RMS of the centred float32 features
        decoded = np.asarray(quantized_gather(table, sample, impl="xla"), np.float64)
        dec_mean = decoded.mean(0)
        dec_rms = np.sqrt(np.mean((decoded - dec_mean) ** 2))
        ref_rms = np.sqrt(np.mean((features[sample] - mean.astype(np.float64)) ** 2))
        scale = np.float32(ref_rms / dec_rms) if dec_rms > 0 else np.float32(1.0)
        tables["scale"] = jnp.asarray(scale)
        tables["shift"] = jnp.asarray((-dec_mean * scale).astype(np.float32))
    if scheme.cache:
        if degrees is None or not 0 < cache_fraction <= 1:
            raise ValueError(
                f"scheme {scheme.name!r} needs node degrees and 0 < cache_fraction <= 1 "
                f"(got cache_fraction={cache_fraction})"
            )
        hot = top_degree_nodes(degrees, int(np.ceil(cache_fraction * n)))
        slot = np.full(n, -1, np.int32)
        slot[hot] = np.arange(len(hot), dtype=np.int32)
        tables.update(slot=jnp.asarray(slot), cache=jnp.asarray(source[hot]))
    return DeviceStore(scheme, tables, mesh, impl=impl)
