"""ascend binary.

python -m experiments.ascend --config=experiments/configs/ascend.py:tiny --workdir=DIR

Several processes (research/ascend/README.md, "Several processes"):
python -m experiments.launch --num_processes=2 -- \
    python -m experiments.ascend --config=experiments/configs/ascend.py:tiny --workdir=DIR
"""

from experiments.app import run
from research.ascend.config_rules import validate_config
from research.ascend.train import train_and_evaluate

if __name__ == "__main__":
    run(train_and_evaluate, validate_config, multi_process=True)
