"""AnKGE binary: a base KGE model (TransE / RotatE / HAKE / PairRE), then analogical inference.

python -m experiments.ankge --config=experiments/configs/ankge.py:tiny --workdir=DIR

Several processes (research/ankge/README.md, "Several processes"):
python -m experiments.launch --num_processes=2 -- \
    python -m experiments.ankge --config=experiments/configs/ankge.py:tiny --workdir=DIR
"""

from experiments.app import run
from research.ankge.config_rules import validate_config
from research.ankge.train import train_and_evaluate

if __name__ == "__main__":
    run(train_and_evaluate, validate_config, multi_process=True)
