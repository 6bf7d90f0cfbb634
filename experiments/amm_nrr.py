"""AMM-NRR.

    python -m experiments.amm_nrr --config=experiments/configs/amm_nrr.py:tiny --workdir=DIR

or, like the authors' binary, `--source=S --target=T --out=DIR [--radius --alpha --beta --use_aa]`
(--source/--target set `config.source/target`, --radius/--alpha/--beta/--use_aa the solver
options `config.solver.*`; --out is --workdir; without --config the `paper` preset is used).
The logic is in research/amm_nrr/train.py; research/amm_nrr/config_rules.py checks the config
first (a bad value ends the run with one line naming the field, exit status 1).

Several processes split the pairs and the robustness levels (research/amm_nrr/README.md,
"Several processes"):
python -m experiments.launch --num_processes=2 -- \
    python -m experiments.amm_nrr --config=experiments/configs/amm_nrr.py:small --workdir=DIR
"""

import os
import sys

from experiments.app import run
from research.amm_nrr.config_rules import validate_config
from research.amm_nrr.train import train_and_evaluate

_ALIASES = {
    "out": "workdir",
    **{k: f"config.{k}" for k in ("source", "target")},
    **{k: f"config.solver.{k}" for k in ("radius", "alpha", "beta", "use_aa")},
}
_PAPER = os.path.join(os.path.dirname(__file__), "configs", "amm_nrr.py") + ":paper"


def _rewrite(argv: list[str]) -> list[str]:
    """Maps the authors' flags onto --config.* / --workdir; --config (default: the paper
    preset) goes first, since absl parses --config.* overrides only after it."""
    config, rest = [], []
    for arg in argv[1:]:
        name, sep, value = arg.partition("=")
        key = name[2:] if name.startswith("--") else None
        if name == "--config":
            config.append(arg)
        else:
            rest.append(f"--{_ALIASES[key]}{sep}{value}" if key in _ALIASES else arg)
    return [argv[0], *(config or [f"--config={_PAPER}"]), *rest]


if __name__ == "__main__":
    sys.argv = _rewrite(sys.argv)
    run(train_and_evaluate, validate_config, multi_process=True)
