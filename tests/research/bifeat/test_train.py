"""research/bifeat/train.py end to end: the `tiny` preset (learns, writes results, resumes), the
edge-drop experiment with sampled evaluation, and config errors."""

import json
import os

import pytest

from experiments.configs.bifeat import get_config
from research.bifeat import train
from research.training.errors import NonFiniteError


def test_tiny_preset_learns_writes_results_and_resumes(tmp_path):
    config = get_config("tiny")
    metrics = train.train_and_evaluate(config, str(tmp_path))
    schemes = config.schemes.split(",")
    for scheme in schemes:  # 4 classes: chance is 0.25
        assert metrics[f"{scheme}/test_acc_mean"] > 0.7, (scheme, metrics)
    assert metrics["sq1/compression_ratio"] > 25
    saved = json.load(open(tmp_path / "results.json"))
    assert saved["float32/store_bytes"] == 2000 * 64 * 4 + 64 * 4  # table + centring shift
    md = open(tmp_path / "results.md").read()
    assert "Test accuracy per feature store" in md and "sq1" in md
    assert os.path.exists(tmp_path / "accuracy_vs_compression.png")
    run_dir = tmp_path / "runs" / "sq1" / "seed0"
    assert os.path.exists(run_dir / "result.json") and not os.path.exists(run_dir / "checkpoints")
    again = train.train_and_evaluate(config, str(tmp_path))  # finished runs are read back
    assert again["sq1/test_acc_mean"] == metrics["sq1/test_acc_mean"]


def test_device_sampler_trains_like_the_host_sampler(tmp_path):
    """The tiny preset with the float32-device store, sampled on the host and on the device
    (train and sampled evaluation): both learn (4 classes: chance 0.25) to the same accuracy
    within 5 points on its 400 test nodes."""
    acc = {}
    for sampler in ("host", "device"):
        config = get_config("tiny")
        config.schemes = "float32-device"
        config.data.sampler = sampler
        config.eval.mode = "sampled"
        config.eval.batch_size = 128
        metrics = train.train_and_evaluate(config, str(tmp_path / sampler))
        acc[sampler] = metrics["float32-device/test_acc_mean"]
        assert isinstance(metrics["float32-device/dropped_nodes"], int)  # summed on the device
    assert acc["device"] > 0.7 and acc["host"] > 0.7, acc
    assert abs(acc["device"] - acc["host"]) < 0.05, acc


@pytest.mark.slow
def test_edge_drop_with_sampled_eval(tmp_path):
    config = get_config("tiny")
    config.experiment = "edge_drop"
    config.schemes = "float32,sq2"
    config.edge_drop.modes = "random,degree"
    config.edge_drop.fractions = (0.8,)  # + the shared undropped graph
    config.train.epochs = 2
    config.eval.mode = "sampled"
    config.eval.batch_size = 128
    metrics = train.train_and_evaluate(config, str(tmp_path))
    for tag in ("none-0", "random-0.8", "degree-0.8"):
        assert metrics[f"{tag}/float32/test_acc_mean"] > 0.4
    assert os.path.exists(tmp_path / "edge_drop_accuracy_loss.png")
    assert "Accuracy as edges are dropped" in open(tmp_path / "results.md").read()


def test_config_errors(tmp_path):
    config = get_config("small")
    config.data_dir = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="missing.*set --config.data_dir"):
        train.load_data(config)
    config = get_config("tiny")
    config.train.batch_size = 66  # not divisible by the 4 test devices
    with pytest.raises(ValueError, match="divisible by the 4 devices"):
        train.Runner(config, train.load_data(config))
    config = get_config("tiny")
    config.train.fanouts = (4, 4, 4)
    with pytest.raises(ValueError, match="one entry per layer"):
        train.Runner(config, train.load_data(config))
    assert train.resolve_data_dir("../shared/data/planetoid").endswith(
        os.path.join("shared", "data", "planetoid")
    )
    with pytest.raises(ValueError, match="unknown preset"):
        get_config("huge")


def test_a_diverging_learning_rate_stops_the_run(tmp_path):
    """lr 1e30: Adam's first steps move every weight by ~1e30, the logits overflow float32 and the
    loss is NaN at the first logging step; the loop stops instead of reporting an accuracy."""
    config = get_config("tiny")
    config.schemes = "float32"
    config.train.lr = 1e30
    config.train.epochs = 2
    with pytest.raises(NonFiniteError, match="float32 seed 0: the loss is nan"):
        train.train_and_evaluate(config, str(tmp_path))
    assert not os.path.exists(tmp_path / "results.json")
