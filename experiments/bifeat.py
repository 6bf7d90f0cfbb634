"""BiFeat: `python -m experiments.bifeat --config=experiments/configs/bifeat.py:tiny --workdir=DIR`.

Runs as several processes too (`python -m experiments.launch --num_processes=2 -- python -m
experiments.bifeat ...`; research/bifeat/README.md).

The logic is in research/bifeat/train.py; the config's rules in research/bifeat/config_rules.py.
"""

from experiments.app import run
from research.bifeat.config_rules import validate_config
from research.bifeat.train import train_and_evaluate

if __name__ == "__main__":
    run(train_and_evaluate, validate_config, multi_process=True)
