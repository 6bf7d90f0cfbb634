"""Every paper's config lists its presets in `PRESETS` (shown by --help): exactly the presets of
`get_config`, in order, each one line saying its time on the 2-core CPU or that it needs a GPU;
the README's presets table is generated from them."""

import importlib

import pytest

from experiments.registry import available_papers
from tests.binaries import run_binary


def preset_names(module) -> list[str]:
    """The presets `get_config` knows (from its error for an unknown one)."""
    with pytest.raises(ValueError, match="available presets: ") as err:
        module.get_config("no_such_preset")
    return str(err.value).split("available presets: ")[1].split(", ")


@pytest.mark.parametrize("paper", available_papers())
def test_presets_describe_every_preset_of_get_config(paper):
    module = importlib.import_module(f"experiments.configs.{paper}")
    assert list(module.PRESETS) == preset_names(module)
    for name, text in module.PRESETS.items():
        assert module.get_config(name).preset == name
        assert text and "\n" not in text, name
        assert "TINY_TIME" not in text, name
        # its time on the 2-core CPU, or that it needs a GPU (an alias names its preset)
        assert "2-core CPU" in text or "GPU" in text or text.startswith("alias of"), (name, text)


def test_help_of_a_paper_binary_lists_its_presets():
    proc = run_binary("experiments.bifeat", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Presets (--config=experiments/configs/bifeat.py:<preset>):" in proc.stdout
    assert "  tiny " in proc.stdout and "  data_dir = ''" in proc.stdout


def test_the_readme_shows_the_presets_table():
    """README.md's table is `presets_markdown()` (regenerate it after changing a PRESETS)."""
    from experiments.registry import presets_markdown
    from tests.conftest import REPO_ROOT

    with open(f"{REPO_ROOT}/README.md") as f:
        assert presets_markdown() in f.read()
