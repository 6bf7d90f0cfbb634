"""SMMix: `python -m experiments.smmix --config=experiments/configs/smmix.py:tiny --workdir=DIR`.

The logic is in research/smmix/train.py.
"""

from experiments.app import run
from research.smmix.train import train_and_evaluate

if __name__ == "__main__":
    run(train_and_evaluate)
