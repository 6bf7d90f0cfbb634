#!/usr/bin/env bash
# One device call of a GPU session: the device checks and timings, then the budgeted trainings.
#
#   bash experiments/bench/gpu_run.sh [STAGE ...]   (stages: kge kge_more ankge_full bifeat jko
#                                                     jko_rose smmix ascend ops; default: kge
#                                                     bifeat smmix)
#
# What it needs in the repository root (both ignored by git, sent with the call's `carry`):
#   .whl/      the wheels the device image lacks (ml_collections, jraph, tensorboardX, trimesh)
#   .devdata/  the data the runs read, in ../shared/data's layout: kg/WN18RR, planetoid,
#              densities2d, images/cifar10.tar.gz (the ImageFolder, unpacked here)
# Where `../shared/data` does not exist (the device) it is linked to .devdata, so every default
# data path works as on the development machine. Results go to $OUT (at most 8 files come back): run.log (everything
# printed) and one JSON per stage. Each stage has its own time limit (seconds, below) so that a
# stage that hangs or fails leaves the others their time; BUDGET_* override them.
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
LOG="$OUT/run.log"
export PYTHONUNBUFFERED=1

if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
if [ -d .devdata ]; then
  if [ -f .devdata/images/cifar10.tar.gz ] && [ ! -d .devdata/images/cifar10 ]; then
    tar xzf .devdata/images/cifar10.tar.gz -C .devdata/images || exit 1
  fi
  [ -e ../shared/data ] || { mkdir -p ../shared && ln -s "$PWD/.devdata" ../shared/data; }
fi

# QUICK=1: small sizes where a stage has them (a smoke test of this script on a CPU)
Q=${QUICK:+--quick}
SMMIX_PRESET=${QUICK:+cifar10_cpu}
SMMIX_PRESET=${SMMIX_PRESET:-cifar10}
ANKGE_PRESET=${QUICK:+tiny}
ANKGE_PRESET=${ANKGE_PRESET:-wn18rr_rotate}

stage() {  # stage NAME SECONDS COMMAND...: one stage under its time limit, output to the log
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  echo "=== $name (limit ${limit}s) $(date -u +%T)" | tee -a "$LOG"
  timeout --signal=INT --kill-after=20 "$limit" "$@" 2>&1 | tee -a "$LOG"
  echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0))s" | tee -a "$LOG"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"
# The session's first call runs the default stages; `rest` is meant for a second call on the
# same, still held machine (it resumes the recipe from /tmp/ankge_recipe and reuses the
# compilation cache there).
STAGES=${*:-kge bifeat smmix}
for s in $STAGES; do
  case $s in
    kge)  # the fused-step check and timings, then the official recipe for the time left
      stage kge $((${BUDGET_KGE:-200} + 40)) python3 -m experiments.bench.kge --device_run \
        --total_s="${BUDGET_KGE:-200}" --reserve_s=30 --ckpt_dir=/tmp/ankge_recipe --out="$OUT" $Q ;;
    kge_more)  # the recipe on from its checkpoint, with the impl the check chose
      stage kge_more $((${BUDGET_KGE_MORE:-60} + 60)) python3 -m experiments.bench.kge \
        --train_recipe --impl=fastest --budget_s="${BUDGET_KGE_MORE:-60}" \
        --ckpt_dir=/tmp/ankge_recipe --out="$OUT" $Q ;;
    ankge_full)  # the official RotatE recipe to its end, then AnKGE on it (lambdas on validation)
      stage ankge_full "${BUDGET_ANKGE_FULL:-580}" python3 -m experiments.ankge \
        --config=experiments/configs/ankge.py:"$ANKGE_PRESET" --workdir=/tmp/ankge_full
      cp /tmp/ankge_full/results.json /tmp/ankge_full/results.md "$OUT/" 2>/dev/null ;;
    bifeat)
      stage bifeat $((${BUDGET_BIFEAT:-150} + 40)) python3 -m experiments.bench.bifeat \
        --gpu_check --budget_s="${BUDGET_BIFEAT:-150}" --out="$OUT" $Q ;;
    jko)
      stage jko 120 python3 -m experiments.bench.jko_iflow --gpu_check \
        --out="$OUT/jko_iflow_gpu.json" $Q ;;
    jko_rose)  # the run folder stays on the machine; its JSON comes back
      stage jko_rose $((${BUDGET_JKO_ROSE:-60} + 60)) python3 -m experiments.bench.jko_iflow \
        --rose_budget_s="${BUDGET_JKO_ROSE:-60}" --rose_out=/tmp/jko_rose
      cp /tmp/jko_rose/jko_rose.json "$OUT/" 2>/dev/null ;;
    smmix)  # 3 methods x 2 seeds: what a few minutes of the card can train (the preset: 6 x 3)
      stage smmix $((${BUDGET_SMMIX:-170} + 40)) python3 -c "
from experiments.bench.smmix_cifar10 import run_cifar10
run_cifar10('../shared/data/images/cifar10', '/tmp/smmix', budget_s=${BUDGET_SMMIX:-170},
            methods='none,cutmix,smmix', seeds=[0, 1], preset='$SMMIX_PRESET')"
      cp /tmp/smmix/cifar10_budget.json /tmp/smmix/results.md "$OUT/" 2>/dev/null ;;
    ascend)  # step time at U-ViT-S/2 / DDPM U-Net size, then a short IU-ViT run on CIFAR-10
      ASCEND_PRESET=${QUICK:+tiny}
      stage ascend_bench 240 python3 -m experiments.bench.ascend \
        --preset="${ASCEND_PRESET:-cifar10}" --out="$OUT/ascend_bench.json"
      stage ascend_cifar10 "${BUDGET_ASCEND:-300}" python3 -m experiments.ascend \
        --config=experiments/configs/ascend.py:"${ASCEND_PRESET:-cifar10}" --workdir=/tmp/ascend \
        --config.backbones=iu_vit --config.train.steps="${ASCEND_STEPS:-2000}" \
        --config.eval.num_samples=5000 --config.checkpoint_every=1000
      cp /tmp/ascend/results.md /tmp/ascend/samples.png "$OUT/" 2>/dev/null ;;
    ops)
      stage ops "${BUDGET_OPS:-90}" python3 -m experiments.bench.gpu_check --out="$OUT/ops" \
        --only=gather,nearest,anderson ;;
    *) echo "unknown stage $s" | tee -a "$LOG"; exit 2 ;;
  esac
done
echo "stages done: $STAGES $(date -u +%T)" | tee -a "$LOG"
