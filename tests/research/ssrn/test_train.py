"""The `tiny` preset end to end, the training batches, and the config rules."""

import json
import os

import numpy as np
import pytest

from experiments.configs.ssrn import get_config
from research.ssrn import method
from research.ssrn.config_rules import validate_config
from research.ssrn.sources import load_data
from research.ssrn.train import make_batch_fn, train_and_evaluate
from research.training.results import read_results


@pytest.mark.slow
def test_tiny_preset_end_to_end(tmp_path):
    workdir = str(tmp_path)
    config = get_config("tiny")
    validate_config(config)
    metrics = train_and_evaluate(config, workdir)
    for name in ("base", "ssrn"):
        for key in ("refined_r1_iou0.5", "refined_r5_iou0.7", "window_miou"):
            assert 0.0 <= metrics[f"N16/{name}/{key}"] <= 100.0
        assert metrics[f"N16/{name}/test_videos_per_s"] > 0
        assert metrics[f"N16/{name}/train_videos_per_s"] > 0
        # the model learns: the last two logged losses (one batch each) below the first two
        with open(os.path.join(workdir, "runs", "N16", name, "seed0", "metrics.jsonl")) as f:
            losses = [json.loads(line)["loss"] for line in f if '"loss"' in line]
        assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses
    # the same network at test time: SSRN adds no parameters to the predictor
    assert metrics["N16/ssrn/num_params"] == metrics["N16/base/num_params"]
    assert "N16/gain/r1_iou0.7" in metrics
    assert read_results(workdir) == pytest.approx(metrics, nan_ok=True)
    for name in ("results.md", "gain.png", "runs/N16/ssrn/seed0/result.json"):
        assert os.path.exists(os.path.join(workdir, name)), name
    assert train_and_evaluate(config, workdir) == pytest.approx(metrics, nan_ok=True)


def test_training_batches_are_pure_in_the_step_and_hold_the_siamese_sequences():
    config = get_config("tiny")
    data = load_data(config)
    siamese = method.SiameseOptions(num_siamese=3)
    fn = make_batch_fn(data.train, 4, siamese, seed=0, max_positions=16)
    a, b = fn(7), fn(7)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert a["video"].shape[:2] == (4, 4) and a["start_index"].shape == (4, 4)
    # the anchor (sequence 0) is the unshifted sampling; siamese sequences differ from it
    assert not np.allclose(a["video"][:, 0], a["video"][:, 1])
    assert np.all(a["start_index"] <= a["end_index"])
    n = a["num_positions"]
    assert np.all(a["end_index"] < n[:, None])


def test_test_queries_come_from_videos_not_seen_in_training():
    data = load_data(get_config("tiny"))
    train = {m.vid for m in data.train.moments}
    assert train.isdisjoint(m.vid for m in data.test.moments)


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("sampled_positions", "8,x", "comma-separated integers"),
        ("methods", "base,vslnet", "comma-separated names"),
        ("siamese.num_siamese", 1, "need >= 2 siamese sequences"),
        ("siamese.offset_spread", 0.6, "(0, 0.5]"),
        ("model.encoder", "lstm", "must be one of conv, transformer"),
        ("model.dim", 30, "divisible by model.num_heads"),
        ("decode.top_k", 3, "R@5"),
        ("data.data_dir", "/tmp", "synthetic or bundled"),
    ],
)
def test_config_rules_name_the_field(field, value, message):
    config = get_config("tiny")
    config.update_from_flattened_dict({field: value})  # as --config.<field>=<value> would
    with pytest.raises(ValueError, match=f"config.{field}") as err:
        validate_config(config)
    assert message in str(err.value)


def test_real_sources_need_their_files(tmp_path):
    config = get_config("charades")
    config.data.data_dir = str(tmp_path)
    config.data.durations_file = ""
    with pytest.raises(ValueError, match="data.durations_file"):
        validate_config(config)


def test_charades_files_load_into_query_sets(tmp_path):
    """The charades preset's files (annotations, durations, {vid}.npy features, word vectors)
    load into batches; the clipped moment and the features used are reported."""
    rng = np.random.default_rng(0)
    (tmp_path / "i3d_features").mkdir()
    for vid, frames in (("AAAAA", 40), ("BBBBB", 200)):
        np.save(tmp_path / "i3d_features" / f"{vid}.npy", rng.normal(size=(frames, 6)))
    (tmp_path / "charades.json").write_text('{"AAAAA": {"duration": 20.0}, "BBBBB": 50.0}')
    (tmp_path / "charades_sta_train.txt").write_text(
        "AAAAA 2.0 9.5##person opens a door.\nBBBBB 10.0 55.0##person sits down.\n"
    )
    (tmp_path / "charades_sta_test.txt").write_text("BBBBB 1.0 4.0##a person opens the door.\n")
    (tmp_path / "glove.840B.300d.txt").write_text("person 0.1 0.2 0.3\ndoor 1 2 3\n")
    config = get_config("charades")
    config.data.data_dir = str(tmp_path)
    validate_config(config)
    data = load_data(config)
    text = data.describe()
    assert "i3d_features" in text and "width 6" in text
    assert "1 moment clipped" in text and "2 of" in text  # person, door of the vocabulary
    assert data.word_vectors.shape == (len(data.vocab), 3)
    batch = data.train.batch(np.array([0, 1]), np.zeros((2, 1)), max_positions=128)
    # 40 frames keep every frame; 200 are sampled at 128 positions
    np.testing.assert_array_equal(batch["num_positions"], [40, 128])
    assert batch["video_mask"].sum(1).tolist() == [40, 128]
    assert batch["end_index"][1, 0] == 127  # clipped to the duration: the last window
