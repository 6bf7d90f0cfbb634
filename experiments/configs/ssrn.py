"""Configs of SSRN (arXiv 2301.00514): a VSLNet-style span predictor for temporal sentence
grounding, trained on the anchor sampling alone ("base") or with siamese sampling and soft
boundary reasoning ("ssrn"), at each number of sampled positions in `sampled_positions`.

    python -m experiments.ssrn --config=experiments/configs/ssrn.py:<preset> --workdir=DIR

Presets (`PRESETS` below: what each runs, its time on the 2-core CPU, what it needs):
  tiny         seconds: the synthetic benchmark, base and ssrn at 16 positions; for tests.
  small        the synthetic benchmark at 8 / 16 / 32 positions, base and ssrn, 3 seeds.
  charades     Charades-STA with I3D features (VSLNet's recipe: 128 positions, width 128).
  activitynet  ActivityNet Captions with C3D features (VSLNet's recipe).

`sampled_positions` is VSLNet's `max_pos_len`: a video of T feature frames is sampled at
min(T, N) positions. Override anything, e.g. `--config.siamese.num_siamese=4`.
`config.model` holds `research.ssrn.method.ModelOptions` but its `max_positions` (set per run
from `sampled_positions`), `config.train` `TrainOptions`, `config.siamese` `SiameseOptions`.
"""

from __future__ import annotations

import ml_collections

from experiments.configs.common import options_config, select_preset
from research.ssrn.method import ModelOptions, SiameseOptions, TrainOptions


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_seeds = 3
    c.methods = "base,ssrn"
    c.sampled_positions = "128"
    c.data = ml_collections.ConfigDict(
        dict(
            source="synthetic",  # or "charades", "activitynet", "tacos"
            data_dir="",
            train_file="",  # relative to data_dir
            test_file="",
            durations_file="",  # charades: charades.json or Charades_v1_*.csv
            features="",  # a folder of {vid}.npy or one .h5 / .hdf5 file
            word_vectors="",  # optional GloVe-style text file
            seed=0,  # synthetic: the videos, events and split
            num_videos=600,
            test_fraction=0.25,
            dim=32,
            min_frames=96,
            max_frames=256,
            noise=0.5,
        )
    )
    c.model = options_config(ModelOptions)
    del c.model["max_positions"]  # each run's comes from c.sampled_positions
    c.train = options_config(TrainOptions)
    c.siamese = options_config(SiameseOptions)
    c.decode = ml_collections.ConfigDict(
        dict(top_k=5, max_span_positions=0, batch_size=64)  # 0: spans up to the whole video
    )
    c.checkpoint_every = 1000
    c.log_every = 100
    c.prefetch = 2
    return c


def _synthetic(c: ml_collections.ConfigDict) -> None:
    """The synthetic benchmark's model: width 64, and lr 1e-3 (at VSLNet's 5e-4 the base
    network's loss at step 1,500 of 3,000 was 5.5 against 3.8 at 1e-3, N = 8)."""
    c.model.update(dim=64, word_dim=64, num_heads=4, max_words=12)
    c.train.lr = 1e-3


def tiny() -> ml_collections.ConfigDict:
    c = base()
    c.num_seeds = 1
    c.sampled_positions = "16"
    c.data.update(num_videos=48, min_frames=48, max_frames=96)
    _synthetic(c)
    c.model.update(dim=32, word_dim=32)
    c.train.update(steps=300, batch_size=8)
    c.log_every = 50
    return c


def small() -> ml_collections.ConfigDict:
    c = base()
    c.sampled_positions = "8,16,32"
    _synthetic(c)
    c.train.update(steps=2500, batch_size=16)
    return c


def charades() -> ml_collections.ConfigDict:
    c = base()
    c.data.update(
        source="charades",
        train_file="charades_sta_train.txt",
        test_file="charades_sta_test.txt",
        durations_file="charades.json",
        features="i3d_features",
        word_vectors="glove.840B.300d.txt",
    )
    c.train.update(batch_size=16, steps=39_000)  # 100 epochs of the 12,408 training queries
    return c


def activitynet() -> ml_collections.ConfigDict:
    c = base()
    c.data.update(
        source="activitynet",
        train_file="train.json",
        test_file="val_2.json",
        features="sub_activitynet_v1-3.c3d.hdf5",
        word_vectors="glove.840B.300d.txt",
    )
    c.train.update(batch_size=16, steps=235_000)  # 100 epochs of the 37,421 training queries
    return c


PRESETS = {
    "tiny": "synthetic benchmark (48 videos), base and ssrn at 16 positions, 300 steps; 44 s "
    "on the 2-core CPU (2026-12-04); no GPU, no data files",
    "small": "synthetic benchmark (600 videos), base and ssrn at 8 / 16 / 32 positions, 3 seeds "
    "of 2,500 steps; 59 min on the 2-core CPU (2026-12-04, the first quarter shared with a "
    "test run); no GPU, no data files",
    "charades": "Charades-STA with I3D features, VSLNet's recipe (128 positions, 100 epochs); "
    "not run (no video features on this machine; a GPU is advised); needs "
    "--config.data.data_dir",
    "activitynet": "ActivityNet Captions with C3D features, VSLNet's recipe; not run (no video "
    "features on this machine; a GPU is advised); needs --config.data.data_dir",
}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    return select_preset(
        "ssrn",
        preset,
        {"tiny": tiny, "small": small, "charades": charades, "activitynet": activitynet},
    )
