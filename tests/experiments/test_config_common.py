"""experiments/configs/common.py: presets and the options-dataclass config convention."""

import dataclasses

import pytest

from experiments.configs.common import options_config, select_preset


@dataclasses.dataclass(frozen=True)
class _Options:
    lr: float = 0.1
    sizes: tuple[int, ...] = (2, 3)
    name: str = "x"


def test_options_config_round_trips_through_the_dataclass():
    config = options_config(_Options, lr=0.5)
    assert dict(config) == {"lr": 0.5, "sizes": (2, 3), "name": "x"}
    config.name = "y"  # as a --config.<name>.name=y flag would
    assert _Options(**config) == _Options(lr=0.5, name="y")


def test_options_config_rejects_unknown_fields_and_non_dataclasses():
    with pytest.raises(TypeError):
        options_config(_Options, momentum=0.9)
    with pytest.raises(TypeError, match="options dataclass"):
        options_config({"lr": 0.1})


def test_unknown_preset_names_the_available_ones():
    with pytest.raises(ValueError, match="available presets: tiny"):
        select_preset("p", "huge", {"tiny": lambda: None})
