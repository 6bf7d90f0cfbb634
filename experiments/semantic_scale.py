"""Semantic scale imbalance and DSB learning:

    python -m experiments.semantic_scale --config=experiments/configs/semantic_scale.py:tiny \
        --workdir=DIR

The logic is in research/semantic_scale/train.py; the config's rules in
research/semantic_scale/config_rules.py (checked before any work: a bad value ends the run with
one line naming the field).
"""

from experiments.app import run
from research.semantic_scale.config_rules import validate_config
from research.semantic_scale.train import train_and_evaluate

if __name__ == "__main__":
    run(train_and_evaluate, validate_config, multi_process=True)
