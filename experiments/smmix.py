"""SMMix: `python -m experiments.smmix --config=experiments/configs/smmix.py:tiny --workdir=DIR`.

The logic is in research/smmix/train.py; the config's rules in research/smmix/config_rules.py
(checked before any work: a bad value ends the run with one line naming the field).
"""

from experiments.app import run
from research.smmix.config_rules import validate_config
from research.smmix.train import train_and_evaluate

if __name__ == "__main__":
    run(train_and_evaluate, validate_config, multi_process=True)
