"""Configs of AnKGE (Yao, Zhang et al., AAAI 2023): a base KGE model, then analogical inference.

    python -m experiments.ankge --config=experiments/configs/ankge.py:<preset> --workdir=DIR

Presets:
  tiny                 seconds: synthetic KG with planted analogies, RotatE dim 16, for tests.
  wn18rr_rotate_small  CPU, <= 30 min: RotatE on WN18RR (`--config.data_dir`), dim 200, batch
                       1024, 256 negatives shared by 4 groups per batch, lr 2e-3, 1,600 steps;
                       then AnKGE with the official WN18RR RotatE settings (1,000 steps),
                       lambdas chosen on validation (`ankge.lambda_grid`).
  small                alias of wn18rr_rotate_small.
  wn18rr_rotate        official: dim 500, gamma 6, 1024 negatives, batch 512, lr 5e-5,
                       alpha_adv 0.5, 80,000 steps (GPU; `paper` is an alias).
  wn18rr_transe        official: dim 500, gamma 6, 256 negatives, batch 2048, lr 5e-4, alpha 1.
  wn18rr_hake / wn18rr_pairre   as wn18rr_rotate with the HAKE / PairRE scorer.
  fb15k237_transe / fb15k237_rotate / fb15k237_hake / fb15k237_pairre
                       official FB15k-237 settings (dim 500, gamma 9, 256 negatives, batch 1024).

Stage 1 trains the base model in DIR/base/, stage 2 AnKGE in DIR/ankge/ (retrieval cached in
DIR/ankge/retrieval.npz); re-running resumes either stage. `c.base` holds the fields of
`research.ankge.train_base.BaseRecipe`, `c.ankge` those of `research.ankge.analogy.AnKGEOptions`
(their defaults are the official WN18RR RotatE settings; the presets below change some).
Override anything, e.g. `--config.base.num_steps=2000 --config.ankge.enabled=False`.
"""

from __future__ import annotations

import ml_collections

from experiments.configs.common import options_config, select_preset
from research.ankge.analogy import AnKGEOptions
from research.ankge.train_base import BaseRecipe


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data_dir = "../shared/data/kg/WN18RR"  # "" = synthetic KG (see c.synthetic)
    c.steps_per_call = 50  # optimizer steps per host round-trip (lax.scan)
    c.checkpoint_every = 5000
    c.log_every = 500

    c.synthetic = ml_collections.ConfigDict()
    c.synthetic.num_groups = 40
    c.synthetic.group_size = 4
    c.synthetic.num_relations = 4

    c.model = ml_collections.ConfigDict()
    c.model.name = "rotate"
    c.model.dim = 500
    c.model.gamma = 6.0

    c.base = options_config(BaseRecipe)  # stage 1; defaults: the official WN18RR RotatE

    c.eval = ml_collections.ConfigDict()
    c.eval.query_chunk = 256
    c.eval.entity_chunk = 4096
    c.eval.valid_queries = 2000  # queries of valid (with reverses) used for the curve; 0: all

    c.ankge = options_config(AnKGEOptions)  # stage 2; defaults: official WN18RR RotatE
    return c


def _wn(name: str) -> ml_collections.ConfigDict:
    c = base()
    c.model.name = name
    if name == "transe":
        c.base.num_negatives, c.base.batch_size, c.base.lr, c.base.alpha_adv = 256, 2048, 5e-4, 1.0
    return c


def _fb(name: str) -> ml_collections.ConfigDict:
    c = base()
    c.data_dir = "../shared/data/kg/FB15k-237"
    c.model.name, c.model.gamma = name, 9.0
    c.base.num_negatives, c.base.batch_size, c.base.alpha_adv = 256, 1024, 1.0
    c.base.lr = 5e-4 if name == "transe" else 1e-4
    c.base.num_steps = 100_000
    c.ankge.beta = 1.0
    c.ankge.triple_rel_knn = 40
    c.ankge.ent_lambda, c.ankge.rel_lambda, c.ankge.triple_lambda = 0.01, 0.2, 0.05
    return c


def tiny() -> ml_collections.ConfigDict:
    c = base()
    c.data_dir = ""
    c.model.dim, c.model.gamma = 16, 6.0
    c.base.batch_size, c.base.num_negatives, c.base.negative_groups = 128, 32, 0
    c.base.lr, c.base.num_steps, c.base.eval_every = 1e-2, 300, 150
    c.steps_per_call, c.checkpoint_every, c.log_every = 50, 150, 50
    c.eval.query_chunk, c.eval.entity_chunk, c.eval.valid_queries = 64, 64, 0
    c.ankge.triple_ent_knn, c.ankge.triple_rel_knn = 20, 3
    c.ankge.batch_size, c.ankge.num_steps, c.ankge.steps_per_call = 256, 100, 25
    c.ankge.log_every, c.ankge.retrieval_chunk = 25, 64
    return c


def wn18rr_rotate_small() -> ml_collections.ConfigDict:
    c = base()
    c.model.dim = 200
    c.base.batch_size, c.base.num_negatives, c.base.negative_groups = 1024, 256, 4
    c.base.lr, c.base.num_steps, c.base.eval_every = 2e-3, 1600, 400
    c.steps_per_call, c.checkpoint_every, c.log_every = 50, 400, 100
    c.eval.valid_queries = 1000
    c.ankge.num_steps = 1000
    c.ankge.lambda_grid = "0,0.01,0.03,0.1,0.3,1"  # 217 triples on all 6,068 valid queries
    return c


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    builders = {
        "tiny": tiny,
        "small": wn18rr_rotate_small,
        "wn18rr_rotate_small": wn18rr_rotate_small,
        "paper": lambda: _wn("rotate"),
    }
    for name in ("transe", "rotate", "hake", "pairre"):
        builders[f"wn18rr_{name}"] = lambda n=name: _wn(n)
        builders[f"fb15k237_{name}"] = lambda n=name: _fb(n)
    return select_preset("ankge", preset, builders)
