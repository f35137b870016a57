"""``-o KEY=VALUE`` objective options are typed and bounded: a wrong type, a zero or negative width,
an out-of-range coefficient, a misspelt key (top level or inside ``solver_options``), a key given
twice, settings that do not fit the views, layers too large for memory: one line before a run
starts, never a traceback or an allocation that takes the machine down."""

from __future__ import annotations

import inspect

import pytest
from pretrain_helpers import config, write_images
from typer.testing import CliRunner

from lvmbench.cli.pretrain import parse_options
from lvmbench.encoders import create_encoder
from lvmbench.errors import UserError
from lvmbench.pretrain.objectives import OBJECTIVES, PretrainObjective, Width, options_model, validate_options
from lvmbench.pretrain.trainer import _build_objective


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_every_setting_is_typed_and_every_default_is_valid(name):
    cls = OBJECTIVES.get(name)
    params = {k: p for k, p in inspect.signature(cls.__init__).parameters.items() if k not in ("self", "encoder")}
    model = options_model(cls)
    assert set(model.model_fields) == set(params)
    untyped = [k for k, f in model.model_fields.items() if f.annotation is None or f.annotation is inspect.Parameter.empty or str(f.annotation) == "typing.Any"]
    assert not untyped, untyped
    model.model_validate({k: p.default for k, p in params.items()})  # the defaults pass their own bounds


BAD = [
    ("mlvicx", {"local_size": "abc"}, "-o local_size: Input should be a valid integer (got 'abc')"),
    ("mlvicx", {"proj_out": 0}, "-o proj_out: Input should be greater than or equal to 1 (got 0)"),
    ("mlvicx", {"proj_hidden": 99_999_999_999}, "-o proj_hidden: Input should be less than or equal to 32768"),
    ("mlvicx", {"proj_out": 2.5}, "-o proj_out: Input should be a valid integer (got 2.5)"),
    ("mlvicx", {"freeze_level_convs": 1}, "-o freeze_level_convs: Input should be a valid boolean (got 1)"),
    ("mlvicx", {"lambda_local": -1}, "-o lambda_local: Input should be greater than or equal to 0 (got -1)"),
    ("mlvicx", {"lamda_local": 1}, "objective 'mlvicx' has no option 'lamda_local'; did you mean 'lambda_local'?"),
    ("vicreg", {"eps": 0}, "-o eps: Input should be greater than 0 (got 0)"),
    ("simclr", {"temperature": 0}, "-o temperature: Input should be greater than 0 (got 0)"),
    ("simclr", {"proj_hidden": -1}, "-o proj_hidden: Input should be greater than or equal to 0 (got -1)"),
    ("graph-matching", {"graph_size": 1}, "-o graph_size: Input should be greater than or equal to 2 (got 1)"),
    ("graph-matching", {"alpha": 1.5}, "-o alpha: Input should be less than or equal to 1 (got 1.5)"),
    ("graph-matching", {"margin": "nan"}, "-o margin: Input should be a valid number (got 'nan')"),
    ("graph-matching", {"solver": "lop"}, "-o solver: Input should be 'batched' or 'loop'; did you mean 'loop'?"),
    ("graph-matching", {"proj_hidden": [0]}, "-o proj_hidden.0: Input should be greater than or equal to 1 (got 0)"),
    ("graph-matching", {"solver_options": {"restart": 2}}, "-o solver_options has no key 'restart'; did you mean 'restarts'?"),
    ("graph-matching", {"solver_options": {"beta_rate": 1}}, "-o solver_options.beta_rate: Input should be greater than 1 (got 1)"),  # 1: never ends
    ("graph-matching", {"solver_options": {"beta0": 500}}, "beta0 (500.0) must not exceed beta_max (200.0)"),
    ("graph-matching", {"solver_options": [1]}, "-o solver_options: Input should be a dictionary"),
]


@pytest.mark.parametrize("name, options, message", BAD, ids=[f"{n}-{next(iter(o))}-{i}" for i, (n, o, _) in enumerate(BAD)])
def test_a_bad_option_is_one_line_naming_it(name, options, message):
    with pytest.raises(UserError) as e:
        validate_options(name, options)
    assert message in str(e.value) and "\n" not in str(e.value) and e.value.fix


def test_good_options_pass_as_written():
    validate_options("graph-matching", {"lam": 70, "proj_hidden": [64], "solver_options": {"restarts": 2, "swap_iters": None}, "gumbel": False})
    validate_options("mlvicx", {"local_size": 16, "lambda_local": 0.5, "freeze_level_convs": True})


def test_a_key_given_twice_is_refused():
    with pytest.raises(UserError, match="-o lam is given twice"):
        parse_options(["lam=80", "second_order=false", "lam=70"])
    with pytest.raises(UserError, match="--view jitter_p is given twice"):
        parse_options(["jitter_p=0.3", "jitter_p=0"], "--view")


def test_settings_that_do_not_fit_the_views_or_memory(tmp_path, monkeypatch):
    from lvmbench.pretrain.objectives import mlvicx

    enc, _ = create_encoder("resnet18", seed=0)
    small = {"proj_hidden": 32, "proj_out": 32, "local_hidden": 32, "local_out": 32}
    cfg = config(tmp_path, tmp_path / "o", objective="mlvicx", objective_options=small)  # 32-px views
    with pytest.raises(UserError, match="local_size 64 is larger than the 32-px views; set -o local_size=N with N <= 32"):
        _build_objective(cfg, enc)
    cfg = config(tmp_path, tmp_path / "o", objective="mlvicx", objective_options={**small, "local_size": 8, "local_pool": 9})
    with pytest.raises(UserError, match=r"local_pool \(9\) must not exceed local_size \(8\)"):
        _build_objective(cfg, enc)
    cfg = config(tmp_path, tmp_path / "o", objective="mlvicx", objective_options={**small, "local_size": 8})
    assert _build_objective(cfg, enc).local_size == 8

    def no_memory(*a, **k):  # what torch raises when a layer's weights cannot be allocated
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to allocate 4294967296 bytes.")

    monkeypatch.setattr(mlvicx, "projector", no_memory)
    with pytest.raises(UserError, match=r"its layers do not fit in memory \(an allocation of 4.0 GiB failed\)"):
        _build_objective(cfg, enc)

    def other(*a, **k):
        raise RuntimeError("a bug, not the user's settings")

    monkeypatch.setattr(mlvicx, "projector", other)
    with pytest.raises(RuntimeError, match="a bug"):  # not dressed up as a user error
        _build_objective(cfg, enc)


def test_the_cli_refuses_before_the_run_starts(tmp_path):
    from lvmbench.cli import app

    images = write_images(tmp_path / "images", 16)
    base = ["pretrain", "--data", str(images), "--objective", "mlvicx", "--encoder", "resnet18", "--image-size", "32", "--batch-size", "16", "--steps", "1",
            "--out", str(tmp_path / "o"), "--workers", "0", "--no-progress"]
    for extra, message in [(["-o", "proj_out=0"], "-o proj_out: Input should be greater than or equal to 1"), (["-o", "local_size=8", "-o", "local_size=4"], "given twice")]:
        result = CliRunner().invoke(app, base + extra)
        assert isinstance(result.exception, UserError) and message in str(result.exception), (extra, result.output, result.exception)
        assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--lr", "-1"], "--lr must be a positive number, got -1.0"),
        (["--lr", "nan"], "--lr must be a positive number, got nan"),
        (["--lr", "0"], "--lr must be a positive number, got 0.0"),  # runs, learns nothing
        (["--seed", "-1"], "--seed must be in 0 .. 4000000"),
        (["--seed", "4000001"], "--seed must be in 0 .. 4000000"),  # numpy's seed * 1000 + rank overflows
        (["--workers", "-1"], "--workers and --cache-mb must be ≥ 0"),
        (["--cache-mb", "-5"], "--workers and --cache-mb must be ≥ 0"),
        (["--stop-at", "0"], "--stop-at ≥ 1"),
        (["--max-minutes", "nan"], "--max-minutes must be a positive number of minutes, got nan"),
        (["--device", "tpu"], "--device 'tpu' is not a device name"),
        (["--monitor-size", "5000"], "--monitor-size 16 .. 1024"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_pretrain_flags_out_of_range_are_one_line(extra, message, tmp_path):
    from lvmbench.cli import app

    base = ["pretrain", "--data", str(tmp_path), "--encoder", "resnet18", "--image-size", "32", "--batch-size", "16", "--steps", "1", "--out", str(tmp_path / "o"), "--no-progress"]
    result = CliRunner().invoke(app, base + extra)
    assert isinstance(result.exception, UserError) and message in str(result.exception), (result.output, result.exception)
    assert not (tmp_path / "o").exists()


def test_epochs_must_be_finite(tmp_path):
    from lvmbench.cli import app

    base = ["pretrain", "--data", str(tmp_path), "--encoder", "resnet18", "--out", str(tmp_path / "o"), "--no-progress"]
    result = CliRunner().invoke(app, base + ["--epochs", "inf"])
    assert isinstance(result.exception, UserError) and "--steps/--epochs must be positive" in str(result.exception), result.exception


def test_an_objective_that_takes_any_keyword_accepts_unknown_keys_but_types_its_own():
    class Loose(PretrainObjective):
        def __init__(self, encoder, width: Width = 8, **extra):
            super().__init__(encoder)

    OBJECTIVES.add("loose-test", Loose)
    try:
        validate_options("loose-test", {"anything": 1})
        with pytest.raises(UserError, match="-o width: Input should be greater than or equal to 1"):
            validate_options("loose-test", {"width": 0})
    finally:
        OBJECTIVES._items.pop("loose-test", None)
