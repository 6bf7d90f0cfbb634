"""No silent wrong results: config rules (`config_rules.validate_config`), the data folder, landmark
files, the presets listed for --help, and a non-finite solve that must not become a result."""

import os
import re

import numpy as np
import pytest

from experiments.configs.amm_nrr import get_config
from research.amm_nrr import robustness, solver, train
from research.amm_nrr.config_rules import DEFAULT_DATA_DIR, validate_config
from research.datasets.meshes import grid_surface, save_mesh
from research.training.errors import NonFiniteError
from tests.binaries import assert_one_error_line, run_binary


def explicit_pair(tmp_path):
    """The paper preset (the authors' CLI) with an explicit --source/--target pair."""
    config = get_config("paper")
    config.source = save_mesh(str(tmp_path / "s.obj"), grid_surface(3))
    config.target = save_mesh(str(tmp_path / "t.obj"), grid_surface(3))
    return config


@pytest.mark.parametrize("preset", ["tiny", "small", "paper"])
def test_presets_are_valid(preset):
    validate_config(get_config(preset))


def test_the_authors_cli_defaults_are_valid(tmp_path):
    validate_config(explicit_pair(tmp_path))


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("solver.radius", -1.0, "config.solver.radius = -1.0: must be >= 0"),
        ("solver.nu_start", "mean", "config.solver.nu_start = 'mean': must be one of"),
        ("solver.max_iter", 0, "config.solver.max_iter = 0: must be > 0"),
        ("solver.history", 0, "config.solver.history = 0: must be > 0"),
        ("solver.tol", 0.0, "config.solver.tol = 0.0: must be > 0"),
        ("solver.alpha", -100.0, "config.solver.alpha = -100.0: must be >= 0"),
        ("solver.beta", float("nan"), "config.solver.beta = nan: must be >= 0"),
        ("solver.landmark_weight", -1.0, "config.solver.landmark_weight = -1.0: must be >= 0"),
        ("solver.plane_point_weight", -0.1, "config.solver.plane_point_weight = -0.1"),
        ("solver.alignment", "normal", "config.solver.alignment = 'normal': must be one of"),
        ("solver.coverage", "exact", "config.solver.coverage = 'exact': must be one of"),
        ("solver.sampling", "vtp", "config.solver.sampling = 'vtp': must be one of"),
        ("solver.dtype", "float16", "config.solver.dtype = 'float16': must be one of"),
        ("seed", -1, "config.seed = -1: must be >= 0"),
        ("synthetic.grid", 1, "config.synthetic.grid = 1: must be >= 2"),
        ("synthetic.density", 0, "config.synthetic.density = 0: must be > 0"),
        ("synthetic.radius", 0.0, "config.synthetic.radius = 0.0: must be > 0"),
        ("synthetic.noise", -0.1, "config.synthetic.noise = -0.1: must be >= 0"),
        ("synthetic.amplitude", -0.1, "config.synthetic.amplitude = -0.1: must be >= 0"),
        ("robustness.grid", 0, "config.robustness.grid = 0: must be > 0"),
        ("robustness.density", 0, "config.robustness.density = 0: must be > 0"),
        ("robustness.radius", -3.0, "config.robustness.radius = -3.0: must be > 0"),
        ("robustness.outliers", -0.3, "config.robustness.outliers = -0.3: must be >= 0"),
        ("robustness.cut", 1.5, "config.robustness.cut = 1.5: must be in [0, 1]"),
        ("robustness.cut", 1.0, "config.robustness.cut = 1.0: cuts away the whole target"),
        ("robustness.levels", (0.0, 2.0), "config.robustness.levels = (0.0, 2.0): must be"),
        ("robustness.levels", (), "config.robustness.levels = (): must be"),
    ],
)
def test_bad_values_name_the_field(field, value, message):
    config = get_config("small")
    parent, _, name = field.rpartition(".")
    (config[parent] if parent else config)[name] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_config(config)


def test_float64_is_valid_without_x64_and_other_dtypes_are_not():
    config = get_config("tiny")
    config.solver.dtype = "float64"  # the solver switches jax's x64 mode on for its call
    validate_config(config)
    config.solver.dtype = "float16"
    with pytest.raises(ValueError, match=r"config.solver.dtype = 'float16'"):
        validate_config(config)


def test_reject_boundary_is_refused_with_the_point_cloud_sweep():
    config = get_config("small")
    config.solver.reject_boundary, config.robustness.enabled = True, False
    validate_config(config)  # the shared pairs are meshes
    config.robustness.enabled = True
    with pytest.raises(ValueError, match=r"config.solver.reject_boundary = True: the robustness"):
        validate_config(config)


def test_pairs_must_be_name_colon_radius():
    for pairs in ("d1", "d1:0", "d1:-8", ":8", "d1:8,d2:x", "d1:inf"):
        config = get_config("small")
        config.pairs = pairs
        with pytest.raises(ValueError, match=re.escape(f"config.pairs = {pairs!r}: entry")):
            validate_config(config)
    config = get_config("tiny")
    config.synthetic.enabled, config.data_dir = False, DEFAULT_DATA_DIR
    config.pairs = ""  # nothing to register and no sweep
    with pytest.raises(ValueError, match=r"config.pairs = '': nothing to register"):
        validate_config(config)


def test_data_dir_only_where_a_data_set_reads_it(tmp_path):
    tiny = get_config("tiny")
    assert tiny.data_dir == ""
    tiny.data_dir = str(tmp_path)  # the synthetic pair reads no folder
    with pytest.raises(ValueError, match=r"config.data_dir = .*synthetic or bundled"):
        validate_config(tiny)
    small = get_config("small")
    small.data_dir = str(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"config.data_dir = .*missing': no such folder"):
        validate_config(small)
    small.data_dir = ""  # the shared pairs are read from it
    with pytest.raises(ValueError, match=r"config.data_dir = '': the shared pairs"):
        validate_config(small)
    # An explicit pair reads its two files as given: the preset's folder is inert, another
    # folder (or another pair list) given with it would be silently ignored.
    pair = explicit_pair(tmp_path)
    pair.data_dir = ""
    validate_config(pair)
    pair.data_dir = str(tmp_path)
    with pytest.raises(ValueError, match=r"config.data_dir = .*explicit --source/--target"):
        validate_config(pair)
    pair = explicit_pair(tmp_path)
    pair.pairs = "d1:8"
    with pytest.raises(ValueError, match=r"config.pairs = 'd1:8': .*explicit --source/--target"):
        validate_config(pair)


def test_explicit_pair_conflicts(tmp_path):
    config = explicit_pair(tmp_path)
    config.target = ""
    with pytest.raises(
        ValueError, match=r"config.target = '': --source and --target (.*) must be given together"
    ):
        validate_config(config)
    config = get_config("tiny")  # the synthetic pair and an explicit pair: which one?
    config.source, config.target = "s.obj", "t.obj"
    with pytest.raises(ValueError, match=r"config.synthetic.enabled = True: an explicit"):
        validate_config(config)
    config = get_config("small")  # landmarks belong to an explicit pair only
    config.landmarks = "lm.txt"
    with pytest.raises(ValueError, match=r"config.landmarks = 'lm.txt': .*explicit"):
        validate_config(config)


@pytest.mark.parametrize(
    "text,line",
    [
        ("0 1\n2 x\n", "line 2"),  # not an integer
        ("0 1 2\n", "line 1"),  # three numbers
        ("0\n", "line 1"),  # one number
        ("0 1\n\n# a comment\n9 0\n", "line 4"),  # source index out of range
        ("0 -1\n", "line 1"),  # negative
        ("1.5 2\n", "line 1"),
    ],
)
def test_landmark_file_errors_name_the_file_and_line(tmp_path, text, line):
    path = tmp_path / "lm.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"lm\.txt, {line}: expected 'source_index target_index'"):
        train.load_landmarks(str(path), 9, 5)


def test_landmark_file_reads_pairs_and_rejects_an_empty_one(tmp_path):
    path = tmp_path / "lm.txt"
    path.write_text("# source target\n0 4\n\n8 0\n")
    np.testing.assert_array_equal(train.load_landmarks(str(path), 9, 5), [[0, 4], [8, 0]])
    path.write_text("\n")
    with pytest.raises(ValueError, match=r"lm\.txt: no landmark pairs"):
        train.load_landmarks(str(path), 9, 5)


def _fake_register(stage_energy, deformed_value=0.0):
    """solver.register stand-in: a result with the given last-stage energy / vertex value."""

    def register(source, target, options, landmarks=None, label="registration"):
        n = len(source.vertices)
        stages = [
            dict(stage=0, nu_a=0.1, nu_r=0.1, iterations=3, energy=1.0),
            dict(stage=1, nu_a=0.05, nu_r=0.05, iterations=2, energy=stage_energy),
        ]
        deformed = source.vertices.copy()
        deformed[n // 2] = deformed_value
        return solver.Result(
            deformed, np.zeros((1, 4, 3)), 5, 0.1, 0.1, 0.1, 0.1, 1, 5.0, stages, []
        )

    return register


@pytest.mark.parametrize(
    "energy,value,message",
    [
        (float("nan"), 0.0, r"synthetic \(AA\): the registration's energy is nan in stage 1"),
        (1.0, float("inf"), r"synthetic \(AA\): 1 of \d+ deformed vertices are NaN or infinite"),
    ],
)
def test_a_non_finite_solve_is_not_written(tmp_path, monkeypatch, energy, value, message):
    monkeypatch.setattr(solver, "register", _fake_register(energy, value))
    workdir = str(tmp_path / "w")
    with pytest.raises(NonFiniteError, match=message):
        train.train_and_evaluate(get_config("tiny"), workdir)
    assert not os.path.exists(os.path.join(workdir, "synthetic_aa", "deformed.obj"))
    assert not os.path.exists(os.path.join(workdir, "results.json"))


def test_a_non_finite_robustness_solve_raises(monkeypatch):
    monkeypatch.setattr(solver, "register", _fake_register(float("inf")))
    kw = dict(seed=0, grid=4, density=1, amplitude=0.01, noise=0.0, outliers=0.0, cut=0.0)
    with pytest.raises(NonFiniteError, match=r"robustness level 0.5 \(welsch\): .* stage 1"):
        robustness.sweep([0.5], solver.Options(), **kw)


def test_binary_reports_a_bad_value_in_one_line(tmp_path):
    """The authors' CLI (paper preset) with a negative --radius: exit status 1, one line."""
    source = save_mesh(str(tmp_path / "s.obj"), grid_surface(3))
    proc = run_binary(
        "experiments.amm_nrr", f"--source={source}", f"--target={source}",
        f"--out={tmp_path / 'w'}", "--radius=-1",
    )  # fmt: skip
    assert_one_error_line(proc, "config.solver.radius = -1.0: must be >= 0")
    assert not os.path.exists(tmp_path / "w" / "pair_aa")
