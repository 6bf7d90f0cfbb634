"""`experiments/bench/kge.py`: the device check at quick sizes (synthetic WN18RR-shaped data),
the retrieval timing, and the PyKEEN side: its triples mapped through entities.dict drop no
valid / test triple."""

import os

import numpy as np
import pytest

from experiments.bench import kge
from tests.conftest import SHARED_DATA


def test_gpu_check_quick_runs_on_cpu():
    rows = kge.gpu_check(data_dir=None, quick=True)
    assert [r["op"] for r in rows] == ["kge_train_step", "kge_eval"]
    assert all(r["ok"] for r in rows)
    assert rows[0]["ms_per_step"] > 0 and rows[1]["seconds"] > 0


def test_synthetic_fallback_has_wn18rr_sizes():
    kg = kge.synthetic_like_wn18rr()
    assert kg.summary() == {
        "name": "synthetic-wn18rr",
        "entities": 40943,
        "relations": 11,
        "train": 86835,
        "valid": 3034,
        "test": 3134,
    }


WN18RR = os.path.join(SHARED_DATA, "kg", "WN18RR")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(WN18RR), reason="shared WN18RR not present")
def test_pykeen_mapping_drops_no_triple():
    py = kge.pykeen_python("build/venv-pykeen", create=False)
    if py is None:
        pytest.skip("pykeen: not installed (build/venv-pykeen)")
    out = kge.run_pykeen(py, WN18RR, "transe", dim=8, batch=64, negatives=2, seconds=0.1)
    assert out["dropped"] == {"train": 0, "valid": 0, "test": 0}
    assert out["pos_per_s"] > 0


def test_retrieval_block_time_runs_on_a_small_graph():
    kg = kge.synthetic_like_wn18rr(scale=0.01)
    got = kge.retrieval_block_time(kg, dim=8, rows=4, pairs=8, triple_ent_knn=20, triple_rel_knn=3)
    assert all(np.isfinite(v) and v > 0 for v in got.values()), got
    assert got["total_triple_s"] == got["triple_s"] * 2 * len(kg.train) / 4
