"""defect_ae binary.

python -m experiments.defect_ae --config=experiments/configs/defect_ae.py:tiny --workdir=DIR

Several processes (research/defect_ae/README.md, "Several processes"):
python -m experiments.launch --num_processes=2 -- \
    python -m experiments.defect_ae --config=experiments/configs/defect_ae.py:tiny --workdir=DIR
"""

from experiments.app import run
from research.defect_ae.config_rules import validate_config
from research.defect_ae.train import train_and_evaluate

if __name__ == "__main__":
    run(train_and_evaluate, validate_config, multi_process=True)
