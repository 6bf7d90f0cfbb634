"""MoM-GAN binary.

python -m experiments.mom_gan --config=experiments/configs/mom_gan.py:tiny --workdir=DIR

Several processes (research/mom_gan/README.md, "Several processes"):
python -m experiments.launch --num_processes=2 -- \
    python -m experiments.mom_gan --config=experiments/configs/mom_gan.py:tiny --workdir=DIR
"""

from experiments.app import run
from research.mom_gan.config_rules import validate_config
from research.mom_gan.train import train_and_evaluate

if __name__ == "__main__":
    run(train_and_evaluate, validate_config, multi_process=True)
