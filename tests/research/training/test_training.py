"""Tests of the shared experiment machinery (research/training) on the toy regression model."""

import glob
import json
import logging
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research.training import results
from research.training.checkpoint import Checkpointer
from research.training.errors import TimeBudgetExceeded
from research.training.loop import train_loop
from research.training.metrics import MetricWriter, read_metrics
from research.training.parallel import (
    data_mesh,
    make_train_step,
    queued_calls_can_deadlock,
    shard_batch,
)
from research.training.train_state import TrainState
from tests.conftest import REPO_ROOT
from tests.research.training import toy_regression as toy

TOY_CONFIG = toy.CONFIG_FILE


def toy_command(workdir, *extra):
    return [
        sys.executable,
        "-m",
        toy.MODULE,
        f"--config={TOY_CONFIG}:tiny",
        f"--workdir={workdir}",
        *extra,
    ]


def load_params(workdir):
    with np.load(os.path.join(workdir, "final_params.npz")) as f:
        return {k: f[k] for k in f.files}


def toy_state(config, optimizer=None):
    model = toy.MLP(config.hidden)
    params = model.init(jax.random.PRNGKey(config.seed), jnp.zeros((1, toy.NUM_FEATURES)))
    optimizer = optimizer or optax.adam(config.learning_rate)
    return model, optimizer, TrainState.create(params, optimizer, jax.random.PRNGKey(0))


@pytest.mark.parametrize("steps_per_call, optimizer", [(1, "adam"), (3, "adam"), (1, "sgd")])
def test_data_parallel_step_matches_single_device(steps_per_call, optimizer):
    """SGD too: Adam's update is nearly invariant to the gradient's scale, so only a plain SGD
    step shows a gradient that is N times too large on N devices."""
    config = toy.get_config("tiny")
    config.batch_size = 32
    opt = optax.sgd(0.1) if optimizer == "sgd" else None
    model, optimizer, state = toy_state(config, opt)
    batches = [toy.make_batch(0, s, config.batch_size) for s in range(6)]
    final = {}
    for num_devices in (1, 4):
        mesh = data_mesh(jax.local_devices()[:num_devices])
        step = make_train_step(toy.loss_fn(model), optimizer, mesh, steps_per_call=steps_per_call)
        s = jax.tree.map(lambda x: jnp.array(x, copy=True), state)  # the step donates it
        for i in range(0, 6, steps_per_call):
            group = batches[i : i + steps_per_call]
            batch = jax.tree.map(lambda *b: np.stack(b), *group) if steps_per_call > 1 else group[0]
            s, metrics = step(s, shard_batch(batch, mesh, steps_per_call=steps_per_call))
        assert int(s.step) == 6
        final[num_devices] = jax.device_get(s.params)
    assert len(jax.local_devices()) == 4
    for a, b in zip(jax.tree.leaves(final[1]), jax.tree.leaves(final[4]), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    # And the update really moved the parameters (the comparison is not vacuous).
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(), final[4], state.params))
    assert max(moved) > 1e-3


@pytest.mark.parametrize("steps_per_call", [1, 3])
def test_model_state_is_updated_and_the_same_on_one_and_four_devices(steps_per_call):
    """`with_model_state`: the loss reads and returns a state without gradients (here a
    running mean of the targets, averaged over devices), carried through the scan."""
    config = toy.get_config("tiny")
    config.batch_size = 32
    model, optimizer, state = toy_state(config)
    state = state.replace(model_state={"mean_y": jnp.zeros(()), "seen": jnp.zeros((), jnp.int32)})
    plain = toy.loss_fn(model)

    def loss_fn(params, model_state, batch, rng):
        loss, metrics = plain(params, batch, rng)
        mean_y = jax.lax.pmean(batch["y"].mean(), "data")
        new = {
            "mean_y": 0.5 * model_state["mean_y"] + 0.5 * mean_y,
            "seen": model_state["seen"] + 1,
        }
        return loss, (metrics, new)

    batches = [toy.make_batch(0, s, config.batch_size) for s in range(6)]
    expected = 0.0
    for b in batches:
        expected = 0.5 * expected + 0.5 * b["y"].mean()
    final = {}
    for num_devices in (1, 4):
        mesh = data_mesh(jax.local_devices()[:num_devices])
        step = make_train_step(
            loss_fn, optimizer, mesh, steps_per_call=steps_per_call, with_model_state=True
        )
        s = jax.tree.map(lambda x: jnp.array(x, copy=True), state)
        for i in range(0, 6, steps_per_call):
            group = batches[i : i + steps_per_call]
            batch = jax.tree.map(lambda *b: np.stack(b), *group) if steps_per_call > 1 else group[0]
            s, _ = step(s, shard_batch(batch, mesh, steps_per_call=steps_per_call))
        final[num_devices] = jax.device_get(s)
        assert int(final[num_devices].model_state["seen"]) == 6
        np.testing.assert_allclose(final[num_devices].model_state["mean_y"], expected, rtol=1e-5)
    for a, b in zip(
        jax.tree.leaves(final[1].params), jax.tree.leaves(final[4].params), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def test_indivisible_batch_is_a_clear_error():
    mesh = data_mesh()
    with pytest.raises(ValueError, match=r"shape \(6, 8\).*divisible by the 4 devices"):
        shard_batch({"x": np.zeros((6, 8))}, mesh)


def test_sigkill_half_way_then_rerun_matches_uninterrupted(tmp_path):
    reference = tmp_path / "reference"
    subprocess.run(toy_command(reference), cwd=REPO_ROOT, check=True, capture_output=True)

    workdir = tmp_path / "killed"
    command = toy_command(workdir, "--config.step_sleep=0.05")
    proc = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while not (workdir / "checkpoints" / "20").exists():
        assert proc.poll() is None, "the run finished before it could be killed"
        assert time.time() < deadline, "no checkpoint appeared in time"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (workdir / "final_params.npz").exists()

    rerun = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert "resuming toy from step" in rerun.stderr
    ref, got = load_params(reference), load_params(workdir)
    assert ref.keys() == got.keys()
    for key in ref:
        np.testing.assert_array_equal(ref[key], got[key])
    # The resumed run's metric log reads like the uninterrupted one's.
    steps = [r["step"] for r in read_metrics(str(workdir))]
    assert steps == [r["step"] for r in read_metrics(str(reference))]


def _corrupt(step_dir):
    files = [f for f in glob.glob(os.path.join(step_dir, "**", "*"), recursive=True)]
    files = [f for f in files if os.path.isfile(f)]
    assert files
    for f in files:
        with open(f, "r+b") as fh:
            fh.truncate(max(0, os.path.getsize(f) // 3))
            fh.seek(0)
            fh.write(b"\x00garbage")


def test_corrupted_latest_checkpoint_is_reported_and_previous_used(tmp_path, caplog):
    config = toy.get_config("tiny")
    workdir = str(tmp_path / "run")
    toy.train_and_evaluate(config, workdir)
    uninterrupted = load_params(workdir)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    assert sorted(os.listdir(ckpt_dir)) == ["20", "30", "40"]
    _corrupt(os.path.join(ckpt_dir, "40"))
    # A partially written save (orbax's temporary folder) must be ignored too.
    os.makedirs(os.path.join(ckpt_dir, "50.orbax-checkpoint-tmp-1234"))

    _, _, template = toy_state(config)
    checkpointer = Checkpointer(ckpt_dir, save_every=10)
    with caplog.at_level(logging.WARNING):
        restored, step = checkpointer.restore_latest(template)
    checkpointer.close()
    assert step == 30
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "checkpoints/40 is unusable: unreadable" in messages
    assert int(restored.step) == 30

    # Re-running resumes from 30 and ends where the uninterrupted run ended.
    toy.train_and_evaluate(config, workdir)
    for key, value in load_params(workdir).items():
        np.testing.assert_array_equal(value, uninterrupted[key])


@pytest.mark.parametrize(
    "extra, expected",
    [
        ((f"--config={TOY_CONFIG}:huge", "--workdir=W"), "unknown preset 'huge'"),
        ((f"--config={TOY_CONFIG}:tiny", "--workdir=W", "--config.lrate=1"), "unknown config"),
        ((f"--config={TOY_CONFIG}:tiny", "--workdir=W", "--config.seed=x"), "--config.seed=x"),
        ((f"--config={TOY_CONFIG}:tiny",), "--workdir"),
        (("--config=nowhere/missing.py", "--workdir=W"), "missing.py"),
    ],
)
def test_binary_errors_are_one_line(tmp_path, extra, expected):
    args = [a.replace("=W", f"={tmp_path}") for a in extra]
    cmd = [sys.executable, "-m", toy.MODULE, *args]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert expected in lines[0]


def test_metric_writer_jsonl_and_tensorboard(tmp_path):
    writer = MetricWriter(str(tmp_path))
    for step in (1, 2, 3):
        writer.write(step, {"loss": np.float32(1.0 / step), "nan": float("nan")})
    writer.close()
    # Resuming from step 2 drops the record of step 3.
    writer = MetricWriter(str(tmp_path), resume_step=2)
    writer.write(3, {"loss": 0.25})
    writer.close()
    records = read_metrics(str(tmp_path))
    assert [r["step"] for r in records] == [1, 2, 3]
    assert records[-1]["loss"] == 0.25 and records[0]["nan"] == "nan"
    events = glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
    assert events
    scalars = read_tensorboard_scalars(events)
    assert scalars["loss"][:2] == [(1, pytest.approx(1.0)), (2, pytest.approx(0.5))]
    assert scalars["loss"][-1] == (3, pytest.approx(0.25))


def read_tensorboard_scalars(paths):
    """Parses TFRecord event files as TensorBoard does (length, crc, Event proto, crc)."""
    import struct

    from tensorboardX.proto import event_pb2

    scalars = {}
    for path in sorted(paths):
        data = open(path, "rb").read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_results_files_and_plots(tmp_path):
    rows = [{"method": "a", "acc": 0.91234}, {"method": "b", "acc": 0.5}]
    png = results.line_plot(
        str(tmp_path / "curve.png"), {"a": ([1, 2, 3], [3, 2, 1])}, xlabel="x", ylabel="y"
    )
    results.bar_plot(str(tmp_path / "bars.png"), {"a": 1.0, "b": 2.0}, ylabel="acc")
    results.write_results(
        str(tmp_path),
        {"acc": np.float32(0.5), "n": 3},
        title="T",
        tables={"Accuracy": rows},
        plots=["curve.png"],
    )
    assert json.loads((tmp_path / "results.json").read_text()) == {"acc": 0.5, "n": 3}
    md = (tmp_path / "results.md").read_text()
    assert "| a | 0.9123 |" in md and "![curve](curve.png)" in md
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_spent_deadline_stops_after_one_call_saves_and_resumes_to_the_same_params(tmp_path):
    """`train_loop(deadline=...)`: a deadline already past stops each invocation after its first
    call, with the state reached saved; resuming until the end gives the uninterrupted params."""
    config = toy.get_config("tiny")
    model, optimizer, _ = toy_state(config)
    mesh = data_mesh()
    step_fn = make_train_step(toy.loss_fn(model), optimizer, mesh, steps_per_call=2)

    def batches(step):  # [2, B, ...] per call, a function of the step
        calls = [toy.make_batch(0, step + i, 16) for i in range(2)]
        return jax.tree.map(lambda *xs: np.stack(xs), *calls)

    def run(workdir, deadline, min_calls=1):
        return train_loop(
            workdir=str(workdir), state=toy_state(config)[2], train_step=step_fn, batch_fn=batches,
            num_steps=6, mesh=mesh, checkpoint_every=100, steps_per_call=2, deadline=deadline,
            min_calls=min_calls,
        )  # fmt: skip

    with pytest.raises(TimeBudgetExceeded, match="spent at step 0;"):  # min_calls=0: no training
        run(tmp_path / "none", 0.0, min_calls=0)
    assert not os.listdir(tmp_path / "none/checkpoints")
    whole = run(tmp_path / "whole", None)
    for reached in (2, 4):
        with pytest.raises(TimeBudgetExceeded, match=f"spent at step {reached};") as err:
            run(tmp_path / "parts", 0.0)
        assert err.value.step == reached and int(jax.device_get(err.value.state.step)) == reached
        assert sorted(os.listdir(tmp_path / "parts/checkpoints"))[-1] == str(reached)
    last = run(tmp_path / "parts", 0.0)  # the last call finishes the run: no stop
    for a, b in zip(jax.tree.leaves(last.params), jax.tree.leaves(whole.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_queued_calls_on_a_cpu_mesh_finish(tmp_path):
    """XLA:CPU deadlocks when calls of a program with collectives queue behind each other on a
    multi-device CPU mesh (`parallel.queued_calls_can_deadlock`); train_loop waits for each call
    there, so 300 calls of the toy step with no host round-trip in between finish (without the
    wait this test hung: still running after 200 s, where it takes ~3 s)."""
    config = toy.get_config("tiny")
    model, optimizer, state = toy_state(config)
    mesh = data_mesh()
    assert queued_calls_can_deadlock(mesh)
    assert not queued_calls_can_deadlock(data_mesh(jax.devices()[:1]))
    step_fn = make_train_step(toy.loss_fn(model), optimizer, mesh)
    batch = toy.make_batch(0, 0, 16)
    final = train_loop(
        workdir=str(tmp_path), state=state, train_step=step_fn, batch_fn=lambda step: batch,
        num_steps=300, mesh=mesh, checkpoint_every=10**6, log_every=10**6,
    )  # fmt: skip
    assert int(jax.device_get(final.step)) == 300
