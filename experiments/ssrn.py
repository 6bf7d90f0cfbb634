"""ssrn binary.

python -m experiments.ssrn --config=experiments/configs/ssrn.py:tiny --workdir=DIR

Several processes (research/ssrn/README.md, "Several processes"):
python -m experiments.launch --num_processes=2 -- \
    python -m experiments.ssrn --config=experiments/configs/ssrn.py:tiny --workdir=DIR
"""

from experiments.app import run
from research.ssrn.config_rules import validate_config
from research.ssrn.train import train_and_evaluate

if __name__ == "__main__":
    run(train_and_evaluate, validate_config, multi_process=True)
