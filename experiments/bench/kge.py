"""KGE benchmark: training throughput and filtered evaluation time, ours vs PyKEEN, side by side.

    python -m experiments.bench.kge --out=DIR [--data_dir=../shared/data/kg/WN18RR] [--quick]
        [--pykeen_venv=build/venv-pykeen] [--pykeen_seconds=60]

On WN18RR, for TransE and RotatE at dim 500 with 256 negatives per positive (batch 512; the
settings of the PyKEEN reference measured on this machine), it measures positive triples per
second of training (the jitted step, `steps_per_call` steps per call, per-positive negatives as
PyKEEN; plus our shared-negative variant), the official RotatE recipe step (batch 512, 1,024
negatives), and the full filtered test evaluation (2 x 3,134 queries x 40,943 entities, ties by
mean rank). PyKEEN 1.11.1 (CPU torch) runs in its own virtualenv, created on demand:

    python3 -m venv build/venv-pykeen && build/venv-pykeen/bin/pip install torch==2.13.0 \
        pykeen==1.11.1

and is timed in the same run on the same settings (a short timed training epoch over a subset
of the training triples, all 40,943 entities; its triples mapped through entities.dict, with a
check that no valid / test triple is dropped). If the venv cannot be built the table says
"pykeen: not installed". PyKEEN's evaluation (~27 min here) is not re-run: its row is the
reference number measured on this machine, labelled as such. Writes DIR/kge_bench.json.

`gpu_check()` (for experiments/bench/gpu_check.py) checks the fast step impls against the
reference (`step_check`), times the official WN18RR RotatE step with each (compile seconds, ms
per step; targets on an H100/H200: <= 9 ms per step, compilation < 30 s) and the full filtered
test evaluation (< 5 s) on whatever device is present, on WN18RR or synthetic data of the same
sizes. `train_recipe()` trains the official recipe for a wall-clock budget from / to a
checkpoint folder and evaluates what it reached:

    python -m experiments.bench.kge --gpu_check --out=$OUT [--impls=fused,checkpoint]
        [--time_reference] [--data_dir=WN18RR] [--quick]
    python -m experiments.bench.kge --train_recipe --budget_s=300 --ckpt_dir=/tmp/rotate_ckpt
        --out=$OUT [--impl=auto] [--data_dir=WN18RR] [--quick]

`device_run()` does both in one call: the check, then the recipe with the time left of
`--total_s` (and the check's fastest passing impl unless `--impl` is given):

    python -m experiments.bench.kge --device_run --total_s=540 --ckpt_dir=/tmp/rotate_ckpt
        --out=$OUT [--impls=fused,checkpoint] [--impl=fused] [--data_dir=WN18RR]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments.bench.timing import format_table, median_seconds, record, write_json
from experiments.configs.ankge import get_config
from models.kge import MODELS, KGEModel
from research.ankge import config_rules, evaluate, retriever, train_base
from research.ankge.train import eval_chunks, load_data, make_model, train_base_for
from research.datasets.kg import KG, add_reverse, load_kg
from research.datasets.paths import REPO_ROOT, resolve_data_dir
from research.training import identity, results
from research.training.metrics import read_metrics
from research.training.parallel import data_mesh, replicate, shard_batch
from research.training.train_state import TrainState

WN18RR = "../shared/data/kg/WN18RR"
WN18RR_SIZES = dict(entities=40943, relations=11, train=86835, valid=3034, test=3134)
# PyKEEN 1.11 (CPU torch, 2 threads) on the 2-core development machine, quiet (reference):
PYKEEN_REFERENCE = {"rotate_train_pos_per_s": 120.0, "transe_train_pos_per_s": 468.0}
PYKEEN_REFERENCE_EVAL_S = 27 * 60.0


def synthetic_like_wn18rr(seed: int = 0, scale: float = 1.0) -> KG:
    """Random triples with WN18RR's sizes (entities, relations, splits), scaled by `scale`."""
    rng = np.random.default_rng(seed)
    s = {k: max(4, int(v * scale)) for k, v in WN18RR_SIZES.items()}
    s["relations"] = WN18RR_SIZES["relations"]

    def triples(n):
        return np.stack(
            [
                rng.integers(0, s["entities"], n),
                rng.integers(0, s["relations"], n),
                rng.integers(0, s["entities"], n),
            ],
            1,
        ).astype(np.int32)

    return KG(
        "synthetic-wn18rr",
        [f"e{i}" for i in range(s["entities"])],
        [f"r{i}" for i in range(s["relations"])],
        triples(s["train"]),
        triples(s["valid"]),
        triples(s["test"]),
    )


def load_or_synthetic(data_dir: str | None, *, quick: bool = False) -> KG:
    """WN18RR from `data_dir` when it exists, else random triples of the same sizes."""
    path = resolve_data_dir(data_dir) if data_dir else ""
    if path and os.path.isdir(path) and not quick:
        return load_kg(path)
    return synthetic_like_wn18rr(scale=0.05 if quick else 1.0)


def train_throughput(
    kg: KG,
    name: str,
    *,
    dim: int,
    batch: int,
    negatives: int,
    groups: int = 0,
    steps_per_call: int = 10,
    calls: int = 3,
    gamma: float = 6.0,
    step_impl: str = "auto",
    lr: float = 1e-4,
    num_steps: int = 10**6,
) -> dict[str, Any]:
    """Seconds per optimizer step (median over `calls` calls after one warm-up call) of
    `train_base.make_base_step` with `step_impl`; also `compile_seconds` (lowering and
    compiling the call of `steps_per_call` steps, ahead of time) and `first_call_seconds`."""
    model = KGEModel(name, kg.num_entities, 2 * kg.num_relations, dim, gamma)
    recipe = train_base.BaseRecipe(
        batch_size=batch,
        num_negatives=negatives,
        lr=lr,
        alpha_adv=0.5,
        num_steps=num_steps,  # (the default: no lr decay within the timed steps)
        negative_groups=groups,
        step_impl=step_impl,
    )
    mesh = data_mesh()
    step = train_base.make_base_step(model, recipe, mesh, steps_per_call)
    train = add_reverse(kg.train, kg.num_relations)
    weights = train_base.subsampling_weights(train, model.num_relations)
    batches = train_base.base_batches(train, weights, batch, seed=0, steps_per_call=steps_per_call)
    key = jax.random.PRNGKey(0)
    state = TrainState.create(model.init(key), train_base.make_optimizer(recipe), key)
    state = replicate(state, mesh)  # as train_loop
    first = shard_batch(batches(0), mesh, steps_per_call=steps_per_call)
    start = time.perf_counter()
    compiled = step.lower(state, first).compile()
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    state, metrics = compiled(state, first)
    loss0 = float(metrics["loss"])
    first_call = time.perf_counter() - start
    times = []
    for c in range(1, calls + 1):
        b = shard_batch(batches(c * steps_per_call), mesh, steps_per_call=steps_per_call)
        start = time.perf_counter()
        state, metrics = compiled(state, b)
        jax.block_until_ready(metrics)
        times.append((time.perf_counter() - start) / steps_per_call)
    sec = float(np.median(times))
    return {
        "seconds_per_step": sec,
        "pos_per_s": batch / sec,
        "loss": float(metrics["loss"]),
        "first_loss": loss0,
        "compile_seconds": compile_seconds,
        "first_call_seconds": first_call,
        "step_impl": train_base.resolve_step_impl(step_impl),
    }


def eval_time(kg: KG, name: str, *, dim: int, gamma: float = 6.0, warm: bool = True):
    """Full filtered evaluation of the test split (both directions) with untrained parameters
    (the time does not depend on the values). `warm`: a first untimed call compiles; otherwise
    the one timed call includes compilation (a few seconds; used on the CPU where one call is
    long)."""
    model = KGEModel(name, kg.num_entities, 2 * kg.num_relations, dim, gamma)
    params = jax.device_put(model.init(jax.random.PRNGKey(0)))
    es = evaluate.make_eval_set(kg, "test")
    if warm:
        evaluate.evaluate_base(model, params, es)
    m = evaluate.evaluate_base(model, params, es)
    return {"seconds": m["eval_seconds"], "queries": len(es.queries), "mrr": m["mrr"]}


def retrieval_block_time(
    kg: KG,
    *,
    dim: int = 200,
    gamma: float = 6.0,
    rows: int = 64,
    pairs: int = 128,
    triple_ent_knn: int = 1000,
    triple_rel_knn: int = 5,
    triple_knn: int = 3,
) -> dict[str, float]:
    """Seconds per block of AnKGE's retrieval levels (RotatE, random embeddings: the time does
    not depend on the values), each the median of three calls after a compiling one:
    `entity_s` for `pairs` (r, t) pairs ranked against all entities (top `triple_ent_knn`),
    `triple_s` for `rows` triples x `triple_ent_knn` entities x `triple_rel_knn` relations.
    Also the totals for `kg`'s reverse-augmented training triples and their distinct (r, t)."""
    model = KGEModel("rotate", kg.num_entities, 2 * kg.num_relations, dim, gamma)
    params = jax.device_put(model.init(jax.random.PRNGKey(0)))
    rng = np.random.default_rng(0)
    ids = lambda high, *shape: jnp.asarray(rng.integers(0, high, shape), jnp.int32)
    ec = min(4096, kg.num_entities)
    columns = retriever.entity_columns(model, params, ec)
    r, t = ids(model.num_relations, pairs), ids(model.num_entities, pairs)
    entity_s = median_seconds(
        lambda: retriever.entity_topk(model, triple_ent_knn, ec, params, columns, r, t), repeats=3
    )
    e = ids(model.num_entities, rows, triple_ent_knn)
    rel, tail = ids(model.num_relations, rows, triple_rel_knn), ids(model.num_entities, rows)
    triple_s = median_seconds(
        lambda: retriever.triple_topk(model, triple_knn, params, e, rel, tail), repeats=3
    )
    train = add_reverse(kg.train, kg.num_relations)
    distinct = len(np.unique(train[:, 1:3], axis=0))
    return {
        "entity_s": entity_s,
        "triple_s": triple_s,
        "total_entity_s": entity_s * distinct / pairs,
        "total_triple_s": triple_s * len(train) / rows,
    }


_PYKEEN_SCRIPT = r"""
import json, os, sys, time
import torch
torch.set_num_threads(int(os.environ.get("PYKEEN_THREADS", "2")))
from pykeen.triples import TriplesFactory
from pykeen.models import RotatE, TransE
from pykeen.training import SLCWATrainingLoop
from pykeen.sampling import BasicNegativeSampler
from pykeen.losses import NSSALoss
import numpy as np
data_dir, name, dim, batch, negs, seconds = sys.argv[1:7]
dim, batch, negs, seconds = int(dim), int(batch), int(negs), float(seconds)
def read_dict(p):
    with open(p) as f:
        return {n: int(i) for i, n in (l.rstrip("\n").split("\t") for l in f if l.strip())}
ent2id = read_dict(os.path.join(data_dir, "entities.dict"))
rel2id = read_dict(os.path.join(data_dir, "relations.dict"))
splits, dropped = {}, {}
for s in ("train", "valid", "test"):
    with open(os.path.join(data_dir, s + ".txt")) as f:
        lab = np.array([l.rstrip("\n").split("\t") for l in f if l.strip()], dtype=str)
    tf = TriplesFactory.from_labeled_triples(lab, entity_to_id=ent2id, relation_to_id=rel2id,
                                             create_inverse_triples=False)
    splits[s], dropped[s] = tf, len(lab) - tf.num_triples
train = splits["train"]
perm = torch.randperm(train.num_triples, generator=torch.Generator().manual_seed(0))
tf = TriplesFactory(train.mapped_triples[perm[: batch * 8]], entity_to_id=ent2id,
                    relation_to_id=rel2id)  # 8 batches, all entities
torch.manual_seed(0)
cls = {"rotate": RotatE, "transe": TransE}[name]
kw = {"scoring_fct_norm": 1} if name == "transe" else {}
loss = NSSALoss(margin=6.0, adversarial_temperature=0.5)
model = cls(triples_factory=tf, embedding_dim=dim, loss=loss, random_seed=0, **kw)
loop = SLCWATrainingLoop(model=model, triples_factory=tf,
                         optimizer=torch.optim.Adam(model.parameters(), lr=1e-4),
                         negative_sampler=BasicNegativeSampler,
                         negative_sampler_kwargs={"num_negs_per_pos": negs})
run = dict(triples_factory=tf, batch_size=batch, use_tqdm=False)
start = time.perf_counter()
loop.train(num_epochs=1, **run)  # warm-up epoch, also sizes the timed run
epochs = max(1, int(round(seconds / (time.perf_counter() - start))))
before, start = len(loop.losses_per_epochs), time.perf_counter()
loop.train(num_epochs=1 + epochs, continue_training=True, **run)  # num_epochs: the new total
el = time.perf_counter() - start
done = (len(loop.losses_per_epochs) - before) * tf.num_triples
print(json.dumps({"pos_per_s": done / el, "seconds": el, "triples": done, "dropped": dropped,
                  "threads": torch.get_num_threads()}))
"""


def pykeen_python(venv: str, *, create: bool) -> str | None:
    """The venv's python if PyKEEN imports there (creating the venv when asked), else None."""
    venv = venv if os.path.isabs(venv) else os.path.join(REPO_ROOT, venv)
    py = os.path.join(venv, "bin", "python")
    ok = lambda: (
        os.path.exists(py)
        and subprocess.run([py, "-c", "import pykeen, torch"], capture_output=True).returncode == 0
    )
    if ok() or not create:
        return py if ok() else None
    print(f"creating {venv} (torch==2.13.0, pykeen==1.11.1) ...", flush=True)
    steps = [
        [sys.executable, "-m", "venv", venv],
        [os.path.join(venv, "bin", "pip"), "install", "-q", "torch==2.13.0", "pykeen==1.11.1"],
    ]
    for cmd in steps:
        if subprocess.run(cmd).returncode != 0:
            print(f"pykeen: venv step failed: {' '.join(cmd)}", flush=True)
            return None
    return py if ok() else None


def run_pykeen(
    py: str, data_dir: str, name: str, *, dim: int, batch: int, negatives: int, seconds: float
) -> dict[str, Any]:
    out = subprocess.run(
        [
            py,
            "-c",
            _PYKEEN_SCRIPT,
            data_dir,
            name,
            str(dim),
            str(batch),
            str(negatives),
            str(seconds),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYKEEN_THREADS": str(os.cpu_count() or 2)},
    )
    if out.returncode != 0:
        raise RuntimeError(f"pykeen run failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_benchmark(
    data_dir: str, *, quick: bool, venv: str, pykeen_seconds: float, create_venv: bool
) -> list[dict[str, Any]]:
    kg = load_or_synthetic(data_dir, quick=quick)
    print(f"data: {kg.summary()}", flush=True)
    dim, batch, negs = (32, 64, 32) if quick else (500, 512, 256)
    rows = []
    py = None if quick else pykeen_python(venv, create=create_venv)
    for name in ("transe", "rotate"):
        shape = (batch, negs, dim)
        ours = train_throughput(kg, name, dim=dim, batch=batch, negatives=negs)
        base = None
        if py is not None:
            pk = run_pykeen(
                py,
                resolve_data_dir(data_dir),
                name,
                dim=dim,
                batch=batch,
                negatives=negs,
                seconds=pykeen_seconds,
            )
            base = batch / pk["pos_per_s"]
            rows.append(
                record(
                    "kge_train",
                    f"pykeen-{name}",
                    shape,
                    "float32",
                    base,
                    pos_per_s=pk["pos_per_s"],
                    dropped=json.dumps(pk["dropped"]),
                    threads=pk["threads"],
                    baseline_seconds=base,
                )
            )
        else:
            rows.append(
                record(
                    "kge_train",
                    f"pykeen-{name}",
                    shape,
                    "float32",
                    float("nan"),
                    note="pykeen: not installed",
                )
            )
        ref = batch / PYKEEN_REFERENCE[f"{name}_train_pos_per_s"]
        rows.append(
            record(
                "kge_train",
                f"ours-{name}",
                shape,
                "float32",
                ours["seconds_per_step"],
                baseline_seconds=base,
                pos_per_s=ours["pos_per_s"],
                ratio_vs_reference=ref / ours["seconds_per_step"],
            )
        )
        shared = train_throughput(kg, name, dim=dim, batch=batch, negatives=negs, groups=4)
        rows.append(
            record(
                "kge_train",
                f"ours-{name}-shared4",
                shape,
                "float32",
                shared["seconds_per_step"],
                baseline_seconds=base,
                pos_per_s=shared["pos_per_s"],
                ratio_vs_reference=ref / shared["seconds_per_step"],
            )
        )
        print(format_table(rows[-3:]), flush=True)
    official = train_throughput(
        kg, "rotate", dim=dim, batch=batch, negatives=4 * negs, steps_per_call=2, calls=2
    )
    rows.append(
        record(
            "kge_train",
            "ours-rotate-official",
            (batch, 4 * negs, dim),
            "float32",
            official["seconds_per_step"],
            pos_per_s=official["pos_per_s"],
        )
    )
    for name in ("transe", "rotate"):
        ev = eval_time(kg, name, dim=dim, warm=False)
        rows.append(
            record(
                "kge_eval",
                f"ours-{name} (incl. compile)",
                (ev["queries"], kg.num_entities, dim),
                "float32",
                ev["seconds"],
                baseline_seconds=PYKEEN_REFERENCE_EVAL_S,
            )
        )
        print(format_table(rows[-1:]), flush=True)
    rows.append(
        record(
            "kge_eval",
            "pykeen (reference, not re-run)",
            "2x3134x40943x500",
            "float32",
            PYKEEN_REFERENCE_EVAL_S,
        )
    )
    return rows


FAST_IMPLS = ("fused", "checkpoint")  # the impls gpu_check times by default


def _relative_error(got: Any, want: Any) -> float:
    """max |got - want| / max |want| over the leaves of two pytrees (0 when want is all 0)."""
    errs = [
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(np.max(np.abs(b)), 1e-30))
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True)
    ]
    return max(errs, default=0.0)


def step_check(
    impls: tuple[str, ...] = FAST_IMPLS,
    *,
    models: tuple[str, ...] = MODELS,
    groups: tuple[int, ...] = (0,),
    tolerance: float = 1e-4,
) -> list[dict[str, Any]]:
    """Loss and gradients of stage 1's loss (`train_base.make_loss_fn`) with each of `impls`
    against `step_impl="reference"`, on the default device, float32, small sizes (60 entities,
    dim 8, batch 16, 32 negatives per positive, or shared by g of `groups` groups when g > 0),
    for each of `models`: one row per (scorer, groups, impl) with the relative errors and ok = both
    <= `tolerance`. Each row compiles one small program (about a second on a GPU): the default
    checks the official per-positive negatives only (tests/research/ankge cover both)."""
    rows = []
    rng, key = np.random.default_rng(0), jax.random.PRNGKey(0)
    for name in models:
        model = KGEModel(name, num_entities=60, num_relations=6, dim=8, gamma=6.0)
        params = jax.tree.map(
            lambda x: x + 0.2 * jax.random.normal(jax.random.fold_in(key, x.size), x.shape),
            model.init(key),
        )
        batch = {
            "triples": jnp.asarray(
                np.stack([rng.integers(0, 60, 16), np.arange(16) % 6, rng.integers(0, 60, 16)], 1),
                jnp.int32,
            ),
            "weight": jnp.asarray(rng.uniform(0.2, 1.0, 16), jnp.float32),
        }
        for g in groups:
            got = {}
            for impl in ("reference", *impls):
                recipe = train_base.BaseRecipe(
                    batch_size=16, num_negatives=32, negative_groups=g, step_impl=impl
                )
                fn = jax.value_and_grad(train_base.make_loss_fn(model, recipe), has_aux=True)
                (loss, _), grads = jax.jit(fn)(params, batch, jax.random.PRNGKey(1))
                got[impl] = (loss, grads)
            ref = got.pop("reference")
            for impl, (loss, grads) in got.items():
                loss_err, grad_err = _relative_error(loss, ref[0]), _relative_error(grads, ref[1])
                rows.append(
                    record(
                        "kge_step_check",
                        f"{name}-{impl}" + (f"-groups{g}" if g else ""),
                        (16, 32, 8),
                        "float32",
                        float("nan"),
                        loss_rel_err=loss_err,
                        grad_rel_err=grad_err,
                        ok=bool(loss_err <= tolerance and grad_err <= tolerance),
                    )
                )
    return rows


def gpu_check(
    data_dir: str | None = WN18RR,
    *,
    quick: bool = False,
    impls: tuple[str, ...] = FAST_IMPLS,
    time_reference: bool = False,
) -> list[dict[str, Any]]:
    """On the default device: `step_check` of `impls` against the reference (every scorer); the
    official WN18RR RotatE step (batch 512, 1,024 negatives, dim 500, alpha_adv 0.5, 50 steps
    per call) with each of `impls` (and the reference when `time_reference`: its compilation
    took 2.5 min on an H100): compile seconds (ahead of time), first call, ms per step and
    steps/s of the steady calls; and the full filtered test evaluation at dim 500. `quick`:
    small sizes (a CPU smoke test in seconds)."""
    kg = load_or_synthetic(data_dir, quick=quick)
    on_gpu = jax.default_backend() == "gpu"
    rows = step_check(impls)
    print(format_table(rows), flush=True)
    dim, batch, negs, k = (16, 32, 32, 5) if quick else (500, 512, 1024, 50)
    official = train_base.BaseRecipe()
    for impl in (*impls, "reference") if time_reference else impls:
        # the official recipe's lr and schedule (its decay at step 40,000 is far beyond the
        # timed steps): the program `train_recipe` then compiles is this one, which the
        # binary's persistent compilation cache (main, with --ckpt_dir) serves again
        res = train_throughput(
            kg,
            "rotate",
            dim=dim,
            batch=batch,
            negatives=negs,
            steps_per_call=k,
            calls=3,
            step_impl=impl,
            lr=official.lr,
            num_steps=official.num_steps,
        )
        rows.append(
            record(
                "kge_train_step",
                f"rotate-wn18rr-official-{impl}",
                (batch, negs, dim),
                "float32",
                res["seconds_per_step"],
                ms_per_step=1e3 * res["seconds_per_step"],
                steps_per_s=1.0 / res["seconds_per_step"],
                compile_s=res["compile_seconds"],
                first_call_s=res["first_call_seconds"],
                steps_per_call=k,
                step_impl=impl,
                target_ms=9.0,
                meets_target=on_gpu and res["seconds_per_step"] <= 9e-3,
                data=kg.name,
                ok=bool(np.isfinite(res["loss"])),
            )
        )
        print(format_table(rows[-1:]), flush=True)
    ev = eval_time(kg, "rotate", dim=dim)
    rows.append(
        record(
            "kge_eval",
            "rotate-filtered-test",
            (ev["queries"], kg.num_entities, dim),
            "float32",
            ev["seconds"],
            target_s=5.0,
            meets_target=on_gpu and ev["seconds"] < 5.0,
            data=kg.name,
            ok=bool(np.isfinite(ev["mrr"])),
        )
    )
    return rows


def recipe_config(data_dir: str, *, impl: str = "auto", quick: bool = False) -> Any:
    """The official `wn18rr_rotate` preset's stage 1 (AnKGE stage 2 off) on `data_dir`, with
    `base.step_impl = impl`; `quick`: the `tiny` preset's synthetic graph and model, 40 steps of
    10 per call (a CPU smoke test)."""
    config = get_config("tiny" if quick else "wn18rr_rotate")
    config.ankge.enabled = False
    config.base.step_impl = impl
    if quick:
        config.base.num_steps, config.steps_per_call, config.base.eval_every = 40, 10, 20
        config.checkpoint_every, config.log_every = 20, 10
    else:
        config.data_dir = data_dir
        # the budget stop saves the state reached anyway; fewer ~0.5 GB saves on the way
        config.checkpoint_every = 20_000
    config_rules.validate_config(config)
    return config


def train_recipe(
    data_dir: str,
    out_dir: str,
    ckpt_dir: str,
    budget_s: float,
    *,
    impl: str = "auto",
    quick: bool = False,
) -> dict[str, Any]:
    """Trains the official WN18RR RotatE recipe's stage 1 (`recipe_config`) for at most
    `budget_s` seconds of training (compilation included; it stops at the first call boundary
    after the budget: `research.ankge.train.train_base_for`), with its checkpoints (params and
    Adam state: 432 MB on disk at dim 500) and metrics.jsonl in `ckpt_dir`; a later call with
    the same `ckpt_dir` resumes there, up to the recipe's 80,000 steps. Then evaluates the
    filtered test MRR / MR / Hits@1,3,10 of the parameters reached (both directions, all
    40,943 entities).

    Writes `out_dir/train_recipe.json` (steps reached, whether finished, training seconds of
    this call, compile and steady step times, steps/s, the loss and validation curves, the test
    metrics) and `out_dir/train_recipe_metrics.jsonl` (the loop's log: step, loss, steps/s,
    validation MRR every 10,000 steps); prints a table. Returns the JSON's content."""
    config = recipe_config(data_dir, impl=impl, quick=quick)
    kg = load_data(config)
    model = make_model(config, kg)
    print(f"train_recipe: {kg.summary()}, budget {budget_s:.0f} s, ckpt_dir {ckpt_dir}", flush=True)
    with identity.running(config), identity.without("ankge."):
        state, info = train_base_for(config, kg, model, ckpt_dir, budget_s=budget_s)
    params = jax.device_get(state.params)
    test = evaluate.evaluate_base(
        model, params, evaluate.make_eval_set(kg, "test"), eval_chunks(config)
    )
    records = read_metrics(ckpt_dir)
    this_call = [r for r in records if info["start_step"] < r["step"] <= info["step"]]
    rates = [r["steps_per_s"] for r in this_call if "steps_per_s" in r]
    steady = float(np.median(rates[1:])) if len(rates) > 1 else None
    summary = {
        "preset": "tiny (quick)" if quick else "wn18rr_rotate (stage 1)",
        "data": kg.name,
        "step_impl": train_base.resolve_step_impl(config.base.step_impl),
        "budget_s": budget_s,
        **info,
        "first_interval_steps_per_s": rates[0] if rates else None,
        "steady_steps_per_s": steady,
        "steady_ms_per_step": 1e3 / steady if steady else None,
        "test": test,
        "loss_curve": [[r["step"], r["loss"]] for r in records if "loss" in r],
        "valid_mrr_curve": [
            [r["step"], r["eval/valid_mrr"]] for r in records if "eval/valid_mrr" in r
        ],
        "ckpt_dir": os.path.abspath(ckpt_dir),
    }
    os.makedirs(out_dir, exist_ok=True)
    results.write_json(os.path.join(out_dir, "train_recipe.json"), summary)
    if os.path.exists(os.path.join(ckpt_dir, "metrics.jsonl")):
        shutil.copy(
            os.path.join(ckpt_dir, "metrics.jsonl"),
            os.path.join(out_dir, "train_recipe_metrics.jsonl"),
        )
    row = record(
        "kge_train_recipe",
        summary["step_impl"],
        f"steps {info['start_step']}->{info['step']}/{info['num_steps']}",
        "float32",
        info["seconds"],
        ms_per_step=summary["steady_ms_per_step"],
        finished=info["finished"],
        test_mrr=test["mrr"],
        **{k: test[k] for k in ("hits@1", "hits@3", "hits@10")},
        ok=bool(np.isfinite(test["mrr"])),
    )
    print("\n" + format_table([row]), flush=True)
    return summary


def fastest_impl(rows: list[dict[str, Any]]) -> str:
    """The `step_impl` of gpu_check's fastest passing official-step row whose impl also passed
    every `step_check` row ("auto" when there is none)."""
    failed = {r["impl"].split("-")[1] for r in rows if r["op"] == "kge_step_check" and not r["ok"]}
    steps = [
        r for r in rows if r["op"] == "kge_train_step" and r["ok"] and r["step_impl"] not in failed
    ]
    return min(steps, key=lambda r: r["seconds"])["step_impl"] if steps else "auto"


def read_check_rows(path: str) -> list[dict[str, Any]]:
    """The rows of a `gpu_check` JSON written by `device_run` (a clear error when absent)."""
    if not os.path.exists(path):
        raise app.UsageError(f"--impl=fastest needs {path}, written by --device_run's check")
    with open(path) as f:
        return json.load(f)["records"]


def device_run(
    data_dir: str,
    out_dir: str,
    ckpt_dir: str,
    total_s: float,
    *,
    impls: tuple[str, ...] = FAST_IMPLS,
    time_reference: bool = False,
    impl: str = "fastest",
    reserve_s: float = 60.0,
    quick: bool = False,
) -> dict[str, Any]:
    """One device call: `gpu_check` (written to out_dir/kge_bench.json as soon as it ends), then
    `train_recipe` with the time left, `total_s` minus what the check took minus `reserve_s`
    (the final checkpoint save and the test evaluation), with `impl` ("fastest": the check's
    fastest passing impl, `fastest_impl`). A failing part is reported and the other still
    runs. Returns {"gpu_check": rows or the error, "train_recipe": its summary or the error}."""
    start = time.perf_counter()
    out: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    try:
        rows = gpu_check(data_dir, quick=quick, impls=impls, time_reference=time_reference)
        print("\n" + format_table(rows), flush=True)
        for folder in (out_dir, ckpt_dir):  # ckpt_dir's copy: `--impl=fastest` of a later call
            write_json(os.path.join(folder, "kge_bench.json"), rows, quick=quick)
        out["gpu_check"] = rows
    except Exception as err:  # noqa: BLE001 - report it and still train
        traceback.print_exc()
        out["gpu_check"] = f"{type(err).__name__}: {err}"
    chosen = fastest_impl(rows) if impl == "fastest" else impl
    budget = total_s - (time.perf_counter() - start) - reserve_s
    print(f"device_run: training budget {budget:.0f} s with step_impl={chosen}", flush=True)
    if budget <= 0:
        out["train_recipe"] = f"no time left for training ({budget:.0f} s)"
        return out
    try:
        out["train_recipe"] = train_recipe(
            data_dir, out_dir, ckpt_dir, budget, impl=chosen, quick=quick
        )
    except Exception as err:  # noqa: BLE001 - report it
        traceback.print_exc()
        out["train_recipe"] = f"{type(err).__name__}: {err}"
    return out


def _define_flags() -> None:
    """Flags of this binary only: defined at run time so gpu_check.py can import this module."""
    flags.DEFINE_string("out", "bench_out", "Output folder for kge_bench.json.")
    flags.DEFINE_string("data_dir", WN18RR, "WN18RR folder (synthetic if missing).")
    flags.DEFINE_bool("quick", False, "Small sizes, no PyKEEN (a smoke test).")
    flags.DEFINE_string("pykeen_venv", "build/venv-pykeen", "PyKEEN virtualenv.")
    flags.DEFINE_bool("create_venv", True, "Create the PyKEEN venv when missing.")
    flags.DEFINE_float("pykeen_seconds", 60.0, "Timed PyKEEN training per model.")
    flags.DEFINE_bool("gpu_check", False, "Run gpu_check() instead.")
    flags.DEFINE_list("impls", list(FAST_IMPLS), "gpu_check: step impls to check and time.")
    flags.DEFINE_bool("time_reference", False, "gpu_check: also time the reference step.")
    flags.DEFINE_bool("train_recipe", False, "Run train_recipe() (official WN18RR RotatE).")
    flags.DEFINE_float("budget_s", 300.0, "train_recipe: seconds of training in this call.")
    flags.DEFINE_string("ckpt_dir", "", "train_recipe: checkpoint folder (resumed if present).")
    flags.DEFINE_string(
        "impl",
        "auto",
        "base.step_impl, or fastest: the check's choice (device_run's, or the "
        "one device_run saved in --ckpt_dir).",
    )
    flags.DEFINE_bool("device_run", False, "gpu_check, then train_recipe with the time left.")
    flags.DEFINE_float("total_s", 540.0, "device_run: seconds for the whole call.")
    flags.DEFINE_float("reserve_s", 60.0, "device_run: seconds kept for the save and test eval.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    print(
        f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"{os.cpu_count()} CPUs, jax {jax.__version__}",
        flush=True,
    )
    f = flags.FLAGS
    if f.ckpt_dir:
        # JAX's persistent compilation cache beside the checkpoints: the official step that
        # --device_run's check compiles is not compiled again for its training, nor by a later
        # call with the same --ckpt_dir while the machine is held
        jax.config.update("jax_compilation_cache_dir", os.path.join(f.ckpt_dir, "jax_cache"))
    if f.device_run:
        if not f.ckpt_dir:
            raise app.UsageError("--device_run needs --ckpt_dir (a local folder)")
        impl = "fastest" if f["impl"].using_default_value else f.impl
        got = device_run(
            f.data_dir,
            f.out,
            f.ckpt_dir,
            f.total_s,
            impls=tuple(f.impls),
            time_reference=f.time_reference,
            impl=impl,
            reserve_s=f.reserve_s,
            quick=f.quick,
        )
        failed = [k for k, v in got.items() if isinstance(v, str)]
        print(f"device_run: wrote {f.out}; failed parts: {failed or 'none'}")
        if failed:
            sys.exit(1)
        return
    if f.train_recipe:
        if not f.ckpt_dir:
            raise app.UsageError("--train_recipe needs --ckpt_dir (a local folder)")
        impl = f.impl
        if impl == "fastest":  # the impl that --device_run's check chose, on this machine
            impl = fastest_impl(read_check_rows(os.path.join(f.ckpt_dir, "kge_bench.json")))
        train_recipe(f.data_dir, f.out, f.ckpt_dir, f.budget_s, impl=impl, quick=f.quick)
        print(f"wrote {os.path.join(f.out, 'train_recipe.json')}")
        return
    if f.gpu_check:
        rows = gpu_check(
            f.data_dir, quick=f.quick, impls=tuple(f.impls), time_reference=f.time_reference
        )
    else:
        rows = run_benchmark(
            f.data_dir,
            quick=f.quick,
            venv=f.pykeen_venv,
            pykeen_seconds=f.pykeen_seconds,
            create_venv=f.create_venv,
        )
    print("\n" + format_table(rows))
    path = os.path.join(f.out, "kge_bench.json")
    write_json(path, rows, quick=f.quick)
    print(f"wrote {path}")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
