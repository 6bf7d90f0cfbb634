"""Configs of BiFeat (Ma, Gong et al., 2022): GNN training on quantized node features.

    python -m experiments.bifeat --config=experiments/configs/bifeat.py:<preset> --workdir=DIR

Presets:
  tiny      seconds: a synthetic 2,000-node graph, 2-layer GraphSAGE, float32 / sq1 / sq2+cache.
  small     CPU minutes: Cora (Planetoid split) from `--config.data_dir` (default: the
            shared/data/planetoid folder beside the repository), every scheme, 5 seeds. Cora
            setting (documented deviation from the large-graph recipe): 2 layers, fan-outs
            (10, 25), batch 32, weight decay 5e-4, 60 epochs, best-validation model selection,
            feature_norm "center" (see research/bifeat/README.md).
  edge_drop the sparsity analysis on Cora: drop 50/80/95% of the edges (random, or those with
            the largest degree product first) and compare float32 with 1/2-bit SQ and VQ, 5 seeds.
  paper     the official recipe (GPU): GraphSAGE mean, 3 layers, fan-outs (5, 10, 15), batch 1000,
            hidden 256, dropout 0.5, Adam lr 0.003 x0.98 per epoch, 50 epochs, eval every 10
            epochs, on ogbn-products in the OGB layout under `--config.data_dir` (override
            `--config.data.name=ogbn-papers100M`, or `mag240m` for a homogeneous MAG240M
            converted to the OGB npz layout).
  paper_gat the recipe's GAT variant: 3 layers, 8 heads, hidden 32, lr 0.005.

Override anything, e.g. `--config.schemes=float32,sq8 --config.num_seeds=1`,
`--config.train.fanouts="(5,10,15)"`. `data_dir` is "" for the synthetic graph and names the
data folder otherwise; relative paths are relative to the repository root.
`research/bifeat/config_rules.py` lists the rules every value must follow.
"""

from __future__ import annotations

import ml_collections

from experiments.configs.common import select_preset

# --help lists these: what each preset runs, its wall time on the 2-core CPU (measured; see
# research/bifeat/README.md), and what it needs beyond this repository and ../shared/data.
PRESETS = {
    "tiny": "synthetic 2,000-node graph, GraphSAGE, float32 / sq1 / sq2+cache, 1 seed; "
    "about 14 s on the 2-core CPU (experiments.reproduce, 2026-12-03); no GPU, no data files",
    "small": "Cora (../shared/data/planetoid), every feature-store scheme x 5 seeds; 8.5 min "
    "(512 s) on the idle 2-core CPU (2026-12-03); no GPU",
    "edge_drop": "Cora with 50/80/95% of the edges dropped (random, by degree), float32 / sq1 / "
    "sq2 / vq16x16 x 5 seeds; 14 min (841 s) on the 2-core CPU (2026-12-03); no GPU",
    "paper": "the official recipe (GraphSAGE 3 x 256, fan-outs 5/10/15, batch 1000, 50 epochs) "
    "on ogbn-products; not run on the 2-core CPU; needs a GPU and the OGB files (not in "
    "../shared/data) via --config.data_dir",
    "paper_gat": "the recipe's GAT variant (3 layers, 8 heads, hidden 32, lr 0.005) on "
    "ogbn-products; not run on the 2-core CPU; needs a GPU and the OGB files (not in "
    "../shared/data) via --config.data_dir",
}

# Every scheme of research/bifeat/stores.py (VQ settings that reach >= 30x on Cora's 1,433
# columns once the codebooks are counted).
ALL_SCHEMES = (
    "float32,float32-device,sq1,sq2,sq4,sq8,sq16,uniform1,uniform2,uniform4,uniform8,"
    "vq16x16,vq32x64,sq1+cache,sq2+cache"
)


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_seeds = 5
    c.experiment = "schemes"  # or "edge_drop"
    c.schemes = ALL_SCHEMES
    c.cache_fraction = 0.1  # "+cache" schemes: the 10% highest-degree nodes stay float32
    c.gather_impl = "auto"  # ops.quantized_gather impl: auto / xla / pallas
    # "center": fit quantizers on column-centred features and map every store's decoded output
    # to zero column means and the float32 RMS (research/bifeat/stores.py; a design choice for
    # sparse bag-of-words features); "none": decoded features as they are (the official code).
    c.feature_norm = "center"
    c.checkpoint_every_epochs = 10
    # False: delete a run's checkpoints once its result.json is written; True: keep them, and
    # the final parameters in runs/<scheme>/seed<k>/params.npz
    c.keep_checkpoints = False
    c.log_every = 50
    # The data folder of data.name ("" for the synthetic graph); relative to the repository root.
    c.data_dir = "../shared/data/planetoid"

    c.data = ml_collections.ConfigDict()
    c.data.name = "cora"  # cora / citeseer / pubmed, ogbn-* / mag240m*, or synthetic
    # "host": numpy sampling in the prefetch thread; "device": the JAX sampler, CSR resident on
    # the device, nothing per batch crosses the host (needs a device store: not "float32")
    c.data.sampler = "host"
    c.data.synthetic = ml_collections.ConfigDict(
        dict(
            num_nodes=2000,
            num_features=64,
            num_classes=4,
            avg_degree=10.0,
            power_law_exponent=2.5,
            homophily=0.8,
            feature_signal=0.3,
            split_fractions=(0.3, 0.2, 0.2),
            seed=0,
        )
    )

    c.model = ml_collections.ConfigDict()
    c.model.name = "sage"  # or "gat"
    c.model.hidden = 256
    c.model.num_layers = 2
    c.model.dropout = 0.5
    c.model.input_dropout = 0.0
    c.model.num_heads = 8  # gat

    c.train = ml_collections.ConfigDict()
    c.train.fanouts = (10, 25)  # input layer first (DGL order): the seeds sample the last one
    c.train.batch_size = 32
    c.train.epochs = 60
    c.train.lr = 0.003
    c.train.lr_decay = 0.98  # per epoch
    c.train.weight_decay = 5e-4
    c.train.calibrate_batches = 64  # > 0: measure node capacities (0: the worst case)
    c.train.capacity_margin = 1.25
    c.train.prefetch = 2

    c.eval = ml_collections.ConfigDict()
    c.eval.mode = "full"  # full-graph inference, or "sampled" with eval.fanouts
    c.eval.fanouts = ()  # sampled: () = the training fan-outs
    c.eval.batch_size = 1024
    c.eval.every_epochs = 1
    c.eval.select = "best_val"  # or "last"

    c.quant = ml_collections.ConfigDict()
    c.quant.sample_rows = 0  # 0: the official defaults (100k rows sq, 50k rows vq)
    c.quant.vq_max_iters = 50
    c.edge_drop = ml_collections.ConfigDict()
    c.edge_drop.modes = "random,degree"
    c.edge_drop.fractions = (0.5, 0.8, 0.95)  # the undropped graph always runs too
    return c


def tiny() -> ml_collections.ConfigDict:
    c = base()
    c.data.name = "synthetic"
    c.data_dir = ""
    c.num_seeds = 1
    c.schemes = "float32,sq1,sq2+cache"
    c.model.hidden = 32
    c.train.fanouts = (4, 6)
    c.train.batch_size = 64
    c.train.epochs = 4
    c.train.lr = 0.01
    c.eval.every_epochs = 2
    c.checkpoint_every_epochs = 2
    return c


def small() -> ml_collections.ConfigDict:
    return base()


def edge_drop() -> ml_collections.ConfigDict:
    c = base()
    c.experiment = "edge_drop"
    c.num_seeds = 5
    c.schemes = "float32,sq1,sq2,vq16x16"
    return c


def paper() -> ml_collections.ConfigDict:
    c = base()
    c.feature_norm = "none"  # the official code: dense features, decoded as they are
    c.data.name = "ogbn-products"
    c.data_dir = "../shared/data/ogb"
    c.num_seeds = 1
    c.schemes = "float32,sq1,sq2,sq4,sq8,sq16,vq16x2048,vq16x8192,vq12x1024"
    c.model.num_layers = 3
    c.model.hidden = 256
    c.model.dropout = 0.5
    c.train.fanouts = (5, 10, 15)
    c.train.batch_size = 1000
    c.train.epochs = 50
    c.train.lr = 0.003
    c.train.lr_decay = 0.98
    c.train.weight_decay = 0.0
    c.train.calibrate_batches = 16
    c.eval.mode = "sampled"  # full-graph activations of 2.4M+ nodes do not fit; same fan-outs
    c.eval.fanouts = ()
    c.eval.batch_size = 4000
    c.eval.every_epochs = 10
    c.eval.select = "best_val"
    c.checkpoint_every_epochs = 1
    c.keep_checkpoints = True
    c.log_every = 100
    return c


def paper_gat() -> ml_collections.ConfigDict:
    """The recipe's GAT variant: 3 layers, 8 heads, hidden 32, lr 0.005."""
    c = paper()
    c.model.name = "gat"
    c.model.hidden = 32
    c.model.num_heads = 8
    c.train.lr = 0.005
    return c


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    return select_preset(
        "bifeat",
        preset,
        {
            "tiny": tiny,
            "small": small,
            "edge_drop": edge_drop,
            "paper": paper,
            "paper_gat": paper_gat,
        },
    )
