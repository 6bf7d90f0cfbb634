"""JKO-iFlow binary.

python -m experiments.jko_iflow --config=experiments/configs/jko_iflow.py:tiny --workdir=DIR

Several processes (research/jko_iflow/README.md, "Several processes"):
python -m experiments.launch --num_processes=2 -- \
    python -m experiments.jko_iflow --config=experiments/configs/jko_iflow.py:tiny --workdir=DIR
"""

from experiments.app import run
from research.jko_iflow.config_rules import validate_config
from research.jko_iflow.train import train_and_evaluate

if __name__ == "__main__":
    run(train_and_evaluate, validate_config, multi_process=True)
