"""Configs of AnKGE (Yao, Zhang et al., AAAI 2023): a base KGE model, then analogical inference.

    python -m experiments.ankge --config=experiments/configs/ankge.py:<preset> --workdir=DIR

Presets (`PRESETS` below says what each runs, its time and what it needs):
  tiny                  seconds: synthetic KG with planted analogies, RotatE dim 16, for tests.
  wn18rr_rotate_small   CPU, <= 30 min: RotatE on WN18RR (`--config.data_dir`), dim 200, batch
                        1024, 256 negatives shared by 4 groups per batch, lr 2e-3, 1,600 steps;
                        then AnKGE with the official WN18RR RotatE settings (1,000 steps),
                        lambdas chosen on validation (`ankge.lambda_grid`).
  small                 alias of wn18rr_rotate_small.
  fb15k237_rotate_small wn18rr_rotate_small's dim / batch / negatives / steps on FB15k-237 with
                        its official gamma 9 and alpha_adv 1; then AnKGE with the official
                        FB15k-237 RotatE settings (beta 1, 1000 x 40 triple candidates, 5 kept,
                        lambdas 0.01 / 0.2 / 0.05 and the same validation grid).
  wn18rr_rotate         official: dim 500, gamma 6, 1024 negatives, batch 512, lr 5e-5,
                        alpha_adv 0.5, 80,000 steps (GPU; `paper` is an alias).
  wn18rr_transe         official: dim 500, gamma 6, 256 negatives, batch 2048, lr 5e-4, alpha 1.
  wn18rr_hake / wn18rr_pairre   as wn18rr_rotate with the HAKE / PairRE scorer.
  fb15k237_rotate       the RotatE paper's FB15k-237 recipe (its best_config.sh): hidden dim
                        1000 (1000 complex coordinates per entity), gamma 9, 256 negatives,
                        batch 1024, lr 5e-5, alpha_adv 1, 100,000 steps; then AnKGE with the
                        official FB15k-237 RotatE settings (AnKnn_RotatE_FB.sh). GPU. The
                        AnKGE authors trained their FB15k-237 RotatE base with dim 500 and lr
                        1e-4 (RotatE_Rev_FB.sh): `--config.model.dim=500 --config.base.lr=1e-4`.
  fb15k237_transe / fb15k237_hake / fb15k237_pairre
                        the AnKGE code's FB15k-237 base settings (dim 500, gamma 9, 256
                        negatives, batch 1024, alpha_adv 1, lr 5e-4 TransE / 1e-4 others,
                        100,000 steps).

Stage 1 trains the base model in DIR/base/, stage 2 AnKGE in DIR/ankge/ (retrieval cached in
DIR/ankge/retrieval.npz); re-running resumes either stage. `c.data_dir` is the data folder
(`""` = the synthetic KG of `c.synthetic`). `c.base` holds the fields of
`research.ankge.train_base.BaseRecipe`, `c.ankge` those of `research.ankge.analogy.AnKGEOptions`
(their defaults are the official WN18RR RotatE settings; the presets below change some).
Override anything, e.g. `--config.base.num_steps=2000 --config.ankge.enabled=False`; the
rules every value must follow are in `research/ankge/config_rules.py`. `c.base.step_impl`
("auto": the looped reference on a CPU, the checkpointed broadcast step on a GPU / TPU; or
"reference", "fused", "checkpoint") changes the speed only, not the run identity
(research/ankge/README.md).
"""

from __future__ import annotations

from collections.abc import Callable

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


FB15K237 = "../shared/data/kg/FB15k-237"


def _fb(name: str) -> ml_collections.ConfigDict:
    """The AnKGE code's FB15k-237 base settings (PAPERS.md table) and AnKGE's FB15k-237 RotatE
    lambdas / triple-level relations, for every scorer."""
    c = base()
    c.data_dir = FB15K237
    c.model.name, c.model.gamma = name, 9.0
    c.base.num_negatives, c.base.batch_size, c.base.alpha_adv = 256, 1024, 1.0
    c.base.lr = 5e-4 if name == "transe" else 1e-4
    c.base.num_steps = 100_000
    c.ankge.beta = 1.0
    c.ankge.triple_rel_knn = 40
    c.ankge.ent_lambda, c.ankge.rel_lambda, c.ankge.triple_lambda = 0.01, 0.2, 0.05
    return c


def _ankge_fb_rotate(c: ml_collections.ConfigDict) -> None:
    """Stage 2 as the official AnKnn_RotatE_FB.sh: beta (trans_alpha) 1, 1 entity / 1 relation
    analogue, triple level 5 of 1000 entities x 40 relations, lambdas 0.01 / 0.2 / 0.05,
    regularization 1e-7 (batch 4096, Adam 1e-3, alpha 10: the defaults)."""
    c.ankge.beta = 1.0
    c.ankge.ent_knn, c.ankge.rel_knn, c.ankge.triple_knn = 1, 1, 5
    c.ankge.triple_ent_knn, c.ankge.triple_rel_knn = 1000, 40
    c.ankge.ent_lambda, c.ankge.rel_lambda, c.ankge.triple_lambda = 0.01, 0.2, 0.05
    c.ankge.regularization = 1e-7


def fb15k237_rotate() -> ml_collections.ConfigDict:
    """The RotatE paper's FB15k-237 recipe (best_config.sh: hidden dim 1000, gamma 9, 256
    negatives, batch 1024, lr 5e-5, alpha_adv 1, 100,000 steps), then official AnKGE."""
    c = _fb("rotate")
    c.model.dim = 1000
    c.base.lr = 5e-5
    _ankge_fb_rotate(c)
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


def fb15k237_rotate_small() -> ml_collections.ConfigDict:
    """wn18rr_rotate_small's CPU budget (dim 200, batch 1024, 256 negatives in 4 groups, lr
    2e-3, 1,600 steps; 1,000 AnKGE steps, the same lambda grid) on FB15k-237, with its official
    gamma 9 and alpha_adv 1 and the official FB15k-237 RotatE AnKGE settings."""
    c = wn18rr_rotate_small()
    c.data_dir = FB15K237
    c.model.gamma = 9.0
    c.base.alpha_adv = 1.0
    _ankge_fb_rotate(c)
    return c


def builders() -> dict[str, Callable[[], ml_collections.ConfigDict]]:
    """Every preset's builder, in the order of `PRESETS`."""
    out = {
        "tiny": tiny,
        "small": wn18rr_rotate_small,
        "wn18rr_rotate_small": wn18rr_rotate_small,
        "fb15k237_rotate_small": fb15k237_rotate_small,
        "paper": lambda: _wn("rotate"),
    }
    for name in ("transe", "rotate", "hake", "pairre"):
        out[f"wn18rr_{name}"] = lambda n=name: _wn(n)
    for name in ("transe", "rotate", "hake", "pairre"):
        out[f"fb15k237_{name}"] = fb15k237_rotate if name == "rotate" else (lambda n=name: _fb(n))
    return out


_GPU_WN = (
    "needs a GPU (the RotatE recipe's step measured 6.14 ms on an H200, 2026-12-04: ~8.2 min "
    "for 80,000 steps; 2.4-3.8 s on the 2-core CPU, 2-3.5 days); data shipped "
    "(../shared/data/kg/WN18RR)"
)
_GPU_FB = "needs a GPU; data shipped (../shared/data/kg/FB15k-237)"

PRESETS = {
    "tiny": "synthetic KG with planted analogies (160 entities), RotatE dim 16, 300 base + 100 "
    "AnKGE steps; about 18 s on the 2-core CPU (experiments.reproduce, 2026-12-03); no GPU, "
    "no data",
    "small": "alias of wn18rr_rotate_small",
    "wn18rr_rotate_small": "RotatE dim 200 on WN18RR, 1,600 steps, then AnKGE (official WN18RR "
    "settings, 1,000 steps, lambdas chosen on validation): test MRR 0.4534, AnKGE 0.4562; "
    "27 min on the idle 2-core CPU (base training 12 min, retrieval 8 min; 2026-12-03); CPU; "
    "data shipped (../shared/data/kg/WN18RR)",
    "fb15k237_rotate_small": "wn18rr_rotate_small's RotatE budget on FB15k-237 (gamma 9), then "
    "AnKGE with the official FB15k-237 settings (paper, at full size: RotatE 0.338, AnKGE "
    "0.385); not run to the end: stage 1 with wn18rr_rotate_small's own gamma 6 and alpha_adv "
    "0.5 took 8 min on the 2-core CPU (test MRR 0.2700, 2026-12-03); the whole preset is "
    "estimated at ~50 min (its 1000 x 40 triple-level retrieval ~30 min, from the kernel's "
    "rate; README); CPU; data shipped (../shared/data/kg/FB15k-237)",
    "paper": "alias of wn18rr_rotate",
    "wn18rr_transe": "official TransE WN18RR recipe (dim 500, 80,000 steps) + AnKGE; not "
    f"measured; {_GPU_WN}",
    "wn18rr_rotate": "official RotatE WN18RR recipe (dim 500, 1,024 negatives, 80,000 steps; "
    "paper MRR 0.476) + AnKGE (paper 0.500 with HAKE); stage 1 on an H200 reached test MRR "
    f"0.4776 after 20,500 steps and 0.4744 after 45,000 (README), not yet to the end; {_GPU_WN}",
    "wn18rr_hake": "official HAKE WN18RR recipe (paper MRR 0.496) + AnKGE; not measured; "
    f"{_GPU_WN}",
    "wn18rr_pairre": f"official PairRE WN18RR recipe + AnKGE; not measured; {_GPU_WN}",
    "fb15k237_transe": "AnKGE code's TransE FB15k-237 base (dim 500, 100,000 steps) + AnKGE; "
    f"not measured; {_GPU_FB}",
    "fb15k237_rotate": "RotatE paper's FB15k-237 recipe (dim 1000, lr 5e-5, 100,000 steps; "
    "paper MRR 0.338) + official AnKGE (paper 0.385); not measured (estimated ~10 min of "
    "training on an H200, from the WN18RR step's 6.14 ms at the same batch x negatives x dim); "
    f"{_GPU_FB}",
    "fb15k237_hake": "AnKGE code's HAKE FB15k-237 base (dim 500; paper MRR 0.346) + AnKGE; not "
    f"measured; {_GPU_FB}",
    "fb15k237_pairre": "AnKGE code's PairRE FB15k-237 base (dim 500) + AnKGE; not measured; "
    f"{_GPU_FB}",
}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    return select_preset("ankge", preset, builders())
