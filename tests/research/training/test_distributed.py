"""research.training.distributed: the rows each process holds, the global batch, initialize's
arguments, and a real run of two processes (2 CPU devices each, gloo collectives)."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from research.training import distributed, workdir
from research.training.parallel import data_mesh, shard_batch
from tests.conftest import REPO_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_layout(monkeypatch, index, count, local):
    monkeypatch.setattr(jax, "process_index", lambda: index)
    monkeypatch.setattr(jax, "process_count", lambda: count)
    monkeypatch.setattr(jax, "local_device_count", lambda: local)


def test_process_rows_in_one_process_are_the_whole_batch():
    assert distributed.process_rows(8) == slice(0, 8)
    with pytest.raises(ValueError, match=r"batch size 6 is not divisible by 4 devices"):
        distributed.process_rows(6)


@pytest.mark.parametrize("index, expected", [(0, slice(0, 4)), (1, slice(4, 8))])
def test_process_rows_split_the_batch_in_process_order(monkeypatch, index, expected):
    fake_layout(monkeypatch, index, count=2, local=2)
    assert distributed.process_rows(8) == expected


def test_process_rows_error_names_processes_and_devices(monkeypatch):
    fake_layout(monkeypatch, 0, count=2, local=4)
    with pytest.raises(ValueError, match=r"12 is not divisible by 8 .*\(2 processes x 4 devices"):
        distributed.process_rows(12)


def host_batch(b=8):
    return {"x": np.arange(b * 3, dtype=np.float32).reshape(b, 3), "y": np.arange(b)}


@pytest.mark.parametrize("steps_per_call", [1, 2])
def test_assemble_batch_in_one_process_equals_shard_batch(steps_per_call):
    batch = host_batch()
    if steps_per_call > 1:
        batch = jax.tree.map(lambda a: np.stack([a, a + 1]), batch)
    mesh = data_mesh()
    got = distributed.assemble_batch(batch, mesh, steps_per_call=steps_per_call)
    want = shard_batch(batch, mesh, steps_per_call=steps_per_call)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
        assert g.sharding == w.sharding
        assert [s.index for s in g.addressable_shards] == [s.index for s in w.addressable_shards]


def test_assemble_batch_rejects_a_batch_the_mesh_cannot_split():
    with pytest.raises(ValueError, match="divisible"):
        distributed.assemble_batch(host_batch(6), data_mesh())


def test_replicate_and_all_rows_in_one_process_are_the_single_process_operations():
    mesh = data_mesh()
    placed = distributed.replicate({"w": np.arange(3.0)}, mesh)["w"]
    assert placed.sharding.is_fully_replicated and len(placed.addressable_shards) == 4
    np.testing.assert_array_equal(distributed.all_rows(placed), np.arange(3.0))
    assert distributed.process_sum(5) == 5


def test_global_mesh_in_one_process_is_the_local_data_mesh():
    assert list(distributed.global_mesh().devices) == list(data_mesh().devices)
    assert not distributed.is_multi_process()
    assert workdir.is_writer() and distributed.process_index() == 0
    assert distributed.process_count() == 1
    assert distributed.describe_layout() == (
        "process 0 of 1: 4 local devices (cpu ids 0, 1, 2, 3), 4 devices in all"
    )


@pytest.fixture
def calls(monkeypatch):
    """Records jax.distributed.initialize's calls instead of starting the runtime; a clean
    environment (no SLURM, no JAX_* process variables)."""
    for name in (*distributed.ENV_VARS, *distributed.SLURM_VARS, "SLURM_LOCALID"):
        monkeypatch.delenv(name, raising=False)
    recorded = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: recorded.append(kw))
    return recorded


@pytest.mark.parametrize(
    "kwargs, missing",
    [
        ({"num_processes": 2}, "missing: --coordinator_address, --process_id"),
        ({"coordinator_address": "127.0.0.1:1", "process_id": 0}, "missing: --num_processes"),
        ({"process_id": 1}, "missing: --coordinator_address, --num_processes"),
    ],
)
def test_initialize_with_some_arguments_names_the_missing_ones(calls, kwargs, missing):
    with pytest.raises(ValueError, match=missing):
        distributed.initialize(**kwargs)
    assert calls == []


def test_initialize_rejects_a_process_id_beyond_the_processes(calls):
    with pytest.raises(ValueError, match="process id 2 must be below the number of processes 2"):
        distributed.initialize("127.0.0.1:1", 2, 2)


def test_initialize_without_arguments_or_cluster_does_nothing(calls):
    distributed.initialize()
    assert calls == [] and not jax.distributed.is_initialized()


def test_initialize_passes_its_arguments(calls):
    distributed.initialize("127.0.0.1:1234", 2, 1)
    assert calls == [dict(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=1)]


def test_initialize_reads_the_jax_process_variables(calls, monkeypatch):
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    with pytest.raises(ValueError, match="missing: JAX_COORDINATOR_ADDRESS, JAX_PROCESS_ID"):
        distributed.initialize()
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:99")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    distributed.initialize()
    assert calls == [dict(coordinator_address="10.0.0.1:99", num_processes=2, process_id=1)]


@pytest.mark.parametrize("ntasks, joins", [("4", True), ("1", False)])
def test_initialize_in_a_slurm_step_lets_jax_detect_it(calls, monkeypatch, ntasks, joins):
    slurm = {"SLURM_JOB_ID": "77", "SLURM_STEP_NODELIST": "node[01-02]", "SLURM_NTASKS": ntasks}
    for name, value in {**slurm, "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}.items():
        monkeypatch.setenv(name, value)
    distributed.initialize()
    assert calls == ([{}] if joins else [])


WORKER = """
import json, sys
import numpy as np
from research.training import distributed

distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

mesh = distributed.global_mesh()
host = {"x": np.arange(8 * 3, dtype=np.float32).reshape(8, 3)}
rows = distributed.process_rows(8)
batch = distributed.assemble_batch({"x": host["x"][rows]}, mesh)  # this process's rows only
local = {str(s.device.id): np.asarray(s.data).tolist() for s in batch["x"].addressable_shards}
index = {str(s.device.id): s.index[0].start for s in batch["x"].addressable_shards}
total = jax.jit(lambda b: b["x"].sum())(batch)
# weighted by the row's position: equals numpy only if the rows keep their global order
weighted = jax.jit(lambda b: (b["x"].sum(1) * jnp.arange(8)).sum())(batch)
per_row = jax.jit(
    lambda b: (b["x"] ** 2).sum(1), out_shardings=NamedSharding(mesh, PartitionSpec())
)(batch)
params = distributed.replicate({"w": np.full(3, 2.0, np.float32)}, mesh)
scaled = jax.jit(lambda p, b: b["x"] * p["w"])(params, batch)  # sharded [8, 3]
with open(sys.argv[3], "w") as f:
    json.dump(
        {
            "process": jax.process_index(),
            "devices": jax.device_count(),
            "local_devices": jax.local_device_count(),
            "rows": [rows.start, rows.stop],
            "local": local,
            "index": index,
            "total": float(total),
            "weighted": float(weighted),
            "per_row": np.asarray(per_row).tolist(),
            "layout": distributed.describe_layout(),
            "all_rows": distributed.all_rows(scaled).tolist(),
            "local_rows": distributed.all_rows(host["x"][rows][:, 0]).tolist(),
            "process_sum": distributed.process_sum(jax.process_index() + 1),
        },
        f,
    )
"""


def test_two_processes_build_one_global_batch_and_agree(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "2", "JAX_PLATFORMS": "cpu"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), address, str(i), str(tmp_path / f"out{i}.json")],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    try:
        logs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(logs)[-4000:]
    x = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    for i in range(2):
        out = json.loads((tmp_path / f"out{i}.json").read_text())
        assert out["process"] == i and out["devices"] == 4 and out["local_devices"] == 2
        assert out["rows"] == [4 * i, 4 * i + 4]
        for device, start in out["index"].items():  # each local shard holds its global rows
            assert start // 2 in (2 * i, 2 * i + 1)
            np.testing.assert_array_equal(out["local"][device], x[start : start + 2])
        assert out["total"] == float(x.sum())
        assert out["weighted"] == float((x.sum(1) * np.arange(8)).sum())
        np.testing.assert_array_equal(out["per_row"], (x**2).sum(1))
        assert out["layout"].startswith(f"process {i} of 2: 2 local devices")
        assert out["layout"].endswith("4 devices in all")
        np.testing.assert_array_equal(out["all_rows"], 2 * x)
        np.testing.assert_array_equal(out["local_rows"], x[:, 0])
        assert out["process_sum"] == 3
