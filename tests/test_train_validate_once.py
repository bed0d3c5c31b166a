"""One ``train`` call checks its config once and parses its loss string once: the layers
below the first check (fine_tune, Trainer, components, the loss) take the validated config
as it is. Counted with wrappers around the real functions in a real tiny run."""

from __future__ import annotations

import pytest
from test_train import config, make_rated_manifest

from humanclap.cli import main as cli_main
from humanclap.errors import ConfigError
from humanclap.training import losses
from humanclap.training.config import TrainConfig
from humanclap.training.trainer import fine_tune

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def rated(tmp_path_factory):
    return make_rated_manifest(tmp_path_factory.mktemp("rated"))


@pytest.fixture
def counts(monkeypatch) -> dict[str, int]:
    """Counting wrappers around the real TrainConfig.validate and parse_loss_spec."""
    seen = {"validate": 0, "parse_loss_spec": 0}
    real_validate, real_parse = TrainConfig.validate, losses.parse_loss_spec

    def validate(self):
        seen["validate"] += 1
        return real_validate(self)

    def parse(*args, **kw):
        seen["parse_loss_spec"] += 1
        return real_parse(*args, **kw)

    monkeypatch.setattr(TrainConfig, "validate", validate)
    monkeypatch.setattr(losses, "parse_loss_spec", parse)
    return seen


def test_a_cli_train_run_validates_once_and_parses_the_loss_once(tiny_unfused, rated, tmp_path, counts):
    args = [
        "train",
        "--model",
        str(tiny_unfused),
        "--data",
        str(rated),
        "--output-dir",
        str(tmp_path / "run"),
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--train-params",
        "projections",
        "--loss",
        "wsce+mae+0.5*pairwise",
        "--no-progress",
    ]
    assert cli_main(args) == 0
    assert counts == {"validate": 1, "parse_loss_spec": 1}


def test_fine_tune_of_an_unvalidated_config_validates_it_once(tiny_unfused, rated, tmp_path, counts):
    cfg = config(
        tiny_unfused,
        rated,
        tmp_path / "api",
        train_params="projections",
        epochs=1,
        val_split="",
        test_split="",
        progress=False,
    )
    fine_tune(cfg)
    assert counts == {"validate": 1, "parse_loss_spec": 1}


def test_a_config_changed_after_validate_is_checked_again(tiny_unfused, rated, tmp_path):
    cfg = config(tiny_unfused, rated, tmp_path / "changed").validate()
    assert cfg.loss_terms == {"wsce": 1.0, "mae": 1.0}
    cfg.lr = -1.0  # after validate: fine_tune must still refuse it, with the same message
    with pytest.raises(ConfigError, match="lr must be > 0"):
        fine_tune(cfg)
    cfg.lr, cfg.loss = 1e-3, "mae+foo"
    with pytest.raises(ConfigError, match="mae\\+foo"):
        _ = cfg.loss_terms
    assert not (tmp_path / "changed").exists()  # refused before the output folder is claimed


def test_the_private_copy_keeps_the_validation_and_is_independent():
    cfg = TrainConfig(data="d.csv", output_dir="out", loss="mae", loss_weights="2").validate()
    copy = cfg.validated_copy()
    assert copy == cfg and copy is not cfg and copy.loss_terms == {"mae": 2.0}
    copy.lora_targets.append("dense")
    assert cfg.lora_targets == ["query", "key", "value"]


def test_the_loss_takes_parsed_terms_checked_like_the_string():
    parsed = losses.parse_loss_spec("wsce+mae+0.5*pairwise")
    assert losses.HumanClapLoss(parsed).weights == parsed
    for bad, match in (({"wsce": 1.0, "foo": 1.0}, "foo"), ({}, "not understood"), ({"mae": float("nan")}, "finite")):
        with pytest.raises(ValueError, match=match):
            losses.HumanClapLoss(bad)
    with pytest.raises(ValueError, match="already carry"):
        losses.HumanClapLoss({"mae": 1.0}, "1")
