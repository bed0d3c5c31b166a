"""The output contract and the result identity for train, demo, reproduce and synth
(issue 16, items 1, 2 and 5): a command writes only into a path that is new, empty or holds
its own earlier run; it never deletes or replaces a name it did not create; a lock keeps a
second run out; reuse and resume compare one identity record and name what differs.

Where a defect was seen through the CLI, the test runs the real CLI in a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_wav

from humanclap.errors import ConfigError, UsageError
from humanclap.outputs import LOCK, MARKER, claim_folder, read_marker
from humanclap.training.config import TrainConfig
from humanclap.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = [
    "a dog barks while a man talks",
    "rain falls on a roof followed by thunder",
    "a car horn honks then an engine revs",
    "birds chirp in the distance as wind blows",
]


def humanclap(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "humanclap.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (dot files included), by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def rated_manifest(root: Path) -> Path:
    """Tones whose pitch sets the score; clip 2 of each level validates (16 train pairs)."""
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    rows = []
    for level in range(4):
        for k in range(3):
            x = 0.3 * np.sin(2 * np.pi * 200 * 2 ** (level / 2) * t) + 0.02 * rng.standard_normal(t.size)
            path = write_wav(root / "wav" / f"l{level}_{k}.wav", x.astype(np.float32))
            for j in (level, (level + 1 + k) % 4):
                rows.append(
                    {
                        "audio": str(path),
                        "text": TEXTS[j],
                        "score": round(0.1 + 0.2 * level, 3),
                        "split": "validation" if k == 2 else "train",
                    }
                )
    path = root / "rated.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture
def rated(tmp_path) -> Path:
    return rated_manifest(tmp_path / "rated")


def train_args(model: Path, data: Path, out: Path, *extra) -> list:
    return [
        "train",
        "--model",
        model,
        "--data",
        data,
        "--output-dir",
        out,
        "--device",
        "cpu",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--train-params",
        "projections",
        "--patience",
        "0",
        "--no-progress",
        *extra,
    ]


def config(model: Path, data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        model=str(model),
        data=str(data),
        output_dir=str(out),
        device="cpu",
        batch_size=8,
        lr=1e-3,
        epochs=2,
        warmup_ratio=0.0,
        patience=0,
        train_params="projections",
        progress=False,
    )
    return TrainConfig(**{**base, **kw})


# -- train -----------------------------------------------------------------------------------
def test_train_refuses_a_folder_it_did_not_write_and_touches_nothing(tiny_unfused, rated, tmp_path):
    out = tmp_path / "H"
    for name in (
        "checkpoints/best/model.safetensors",
        "checkpoints/.best.tmp-1/x",
        "checkpoints/best.old/y",
        "metrics.json",
        "metrics.jsonl",
        "tokenizer.json",
        "training_config.json",
        "vocab.json",
    ):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(f"the user's {name}")
    before = snapshot(out)
    for extra in ([], ["--resume"]):
        res = humanclap(*train_args(tiny_unfused, rated, out, *extra))
        assert res.returncode == 2, res.stderr
        assert "not empty and holds no humanclap train run" in res.stderr and "checkpoints" in res.stderr
        assert snapshot(out) == before  # not a file deleted, replaced or added (not even a lock)


def test_train_writes_a_marker_with_its_files_and_identity(tiny_unfused, rated, tmp_path):
    out = tmp_path / "run"
    train(config(tiny_unfused, rated, out, epochs=1))
    marker = read_marker(out)
    assert marker["command"] == "train" and not (out / LOCK).exists()
    assert {
        "checkpoints",
        "metrics.jsonl",
        "metrics.json",
        "training_config.json",
        "model.safetensors",
        "config.json",
    } <= set(marker["files"])
    identity = marker["identity"]
    assert identity["model"]["revision"].startswith("sha256:")
    assert identity["model"]["spec"] == str(tiny_unfused.resolve())
    assert set(identity["model"]["preprocessing"])
    assert identity["data"]["spec"] == str(rated.resolve())
    assert identity["data"]["pairs"] == {"train": 16, "validation": 8}
    assert set(identity["data"]["sha256"]) == {"train", "validation"}
    assert identity["settings"]["lr"] == 1e-3 and "output_dir" not in identity["settings"]
    state = json.loads((out / "checkpoints/last/trainer_state.json").read_text())
    assert state["identity"] == identity
    # a file the user adds later is never part of the run: a rerun with --resume keeps it
    (out / "notes.txt").write_text("mine")
    train(config(tiny_unfused, rated, out, epochs=1, resume=True))
    assert (out / "notes.txt").read_text() == "mine" and "notes.txt" not in read_marker(out)["files"]


def test_resume_after_the_training_data_changed_is_refused_naming_it(tiny_unfused, rated, tmp_path):
    out = tmp_path / "run"

    def killed_after_epoch_1(line: str) -> None:
        if line.startswith("epoch 1/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config(tiny_unfused, rated, out), printer=killed_after_epoch_1)
    assert not (out / LOCK).exists()  # an interrupted run releases its lock
    df = pd.read_csv(rated)
    df.loc[0, "score"] = 0.9  # same path, other content
    df.to_csv(rated, index=False)
    state = (out / "checkpoints/last/trainer_state.json").read_bytes()
    res = humanclap(
        *train_args(
            tiny_unfused,
            rated,
            out,
            "--epochs",
            "2",
            "--resume",
            "--lr",
            "0.001",
            "--warmup-ratio",
            "0",
            "--loss",
            "wsce+mae",
        )
    )
    assert res.returncode == 2, res.stderr
    assert "data.sha256.train" in res.stderr and " then, " in res.stderr and " now" in res.stderr
    assert "Traceback" not in res.stderr
    assert (out / "checkpoints/last/trainer_state.json").read_bytes() == state


def test_a_second_train_run_into_the_same_folder_is_refused(tiny_unfused, rated, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        [sys.executable, "-m", "humanclap.cli", *map(str, train_args(tiny_unfused, rated, out, "--epochs", "500"))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.time() + 120
        while not (out / "metrics.jsonl").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert first.poll() is None and (out / LOCK).exists(), first.stderr.read() if first.poll() else ""
        lines = (out / "metrics.jsonl").read_text().count("\n")
        second = humanclap(*train_args(tiny_unfused, rated, out, "--resume"))
        assert second.returncode == 2, second.stderr
        assert "being written by another humanclap run" in second.stderr
        assert first.poll() is None  # the first run goes on, its files untouched by the second
        assert (out / "metrics.jsonl").read_text().count("\n") >= lines
    finally:
        first.kill()
        first.wait()
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == list(range(1, len(lines) + 1))  # one run's epochs only


def test_a_folder_of_an_older_humanclap_is_resumed_only_with_resume(tiny_unfused, rated, tmp_path):
    out = tmp_path / "old"
    train(config(tiny_unfused, rated, out, epochs=1))
    (out / MARKER).unlink()  # as written before the output contract
    state = out / "checkpoints/last/trainer_state.json"
    legacy = json.loads(state.read_text())
    del legacy["identity"]
    state.write_text(json.dumps(legacy))
    with pytest.raises(ConfigError, match="written by an older humanclap .* pass --resume"):
        train(config(tiny_unfused, rated, out, epochs=1))
    assert read_marker(out) is None
    lines: list[str] = []
    result = train(config(tiny_unfused, rated, out, epochs=1, resume=True), printer=lines.append)
    assert result.epochs_run == 1 and any("adopting" in line for line in lines)
    assert read_marker(out)["command"] == "train" and read_marker(out)["identity"] is not None


# -- synth -----------------------------------------------------------------------------------
def test_synth_overwrite_never_deletes_a_folder_it_did_not_write(tmp_path):
    out = tmp_path / "S"
    for name in ("scores/REL.csv", "RELATE_wave/x.wav", "listener_attributes/REL.csv", "notes.txt"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("the user's")
    before = snapshot(out)
    for extra in ([], ["--overwrite"]):
        res = humanclap("synth", "-o", out, "--size", "small", *extra)
        assert res.returncode == 2, res.stderr
        assert "not empty and holds no humanclap synth run" in res.stderr and "scores" in res.stderr
        assert snapshot(out) == before


def test_synth_overwrite_replaces_its_own_run_only(tmp_path, monkeypatch):
    from humanclap.synth import dataset

    monkeypatch.setitem(dataset.SIZES, "tiny", (24, 10))
    out = tmp_path / "S"
    dataset.generate(out, seed=0, size="tiny")
    (out / "notes.txt").write_text("added by the user")
    with pytest.raises(UsageError, match=r"earlier synth run \(data.seed: 0 then, 1 now\).*--overwrite"):
        dataset.generate(out, seed=1, size="tiny")
    stale = out / "RELATE_wave" / "stale.wav"
    stale.write_bytes(b"x")  # inside a folder the run wrote: goes with it
    dataset.generate(out, seed=1, size="tiny", overwrite=True)
    assert (out / "notes.txt").read_text() == "added by the user" and not stale.exists()
    assert read_marker(out)["identity"]["data"]["seed"] == 1
    assert dataset.is_complete(out, 1, "tiny") and not dataset.is_complete(out, 0, "tiny")


# -- demo ------------------------------------------------------------------------------------
def test_demo_never_touches_a_users_data_folder(tmp_path):
    project = tmp_path / "project"
    for name in (
        "data/scores/REL.csv",
        "data/RELATE_wave/a.wav",
        "data/listener_attributes/REL.csv",
        "data/pretrain/manifest.csv",
    ):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text("the user's")
    before = snapshot(project)
    res = humanclap("demo", "-o", project, "--size", "small", timeout=120)
    assert res.returncode == 2, res.stderr
    assert "not empty and holds no humanclap demo run" in res.stderr and "data" in res.stderr
    res = humanclap("demo", "-o", project, "--size", "small", "--overwrite", timeout=120)
    assert res.returncode == 2 and "holds no humanclap demo run" in res.stderr
    res = humanclap("demo", "--rebuild-base", project, timeout=120)
    assert res.returncode == 2 and "holds no humanclap demo --rebuild-base run" in res.stderr
    assert snapshot(project) == before


def test_demo_refuses_another_seed_in_the_folder_of_a_run(tmp_path):
    from humanclap.recipes.demo import OWN_NAMES, demo_identity
    from humanclap.recipes.demo_base import shipped_base

    folder = tmp_path / "Q"
    with claim_folder(folder, "demo") as run:  # what a seed-0 demo run leaves (its marker)
        run.set_identity(demo_identity(0, "small", shipped_base()))
        run.record(*OWN_NAMES)
        (folder / "models" / "mae").mkdir(parents=True)
    before = snapshot(folder)
    res = humanclap("demo", "-o", folder, "--size", "small", "--seed", "1", timeout=120)
    assert res.returncode == 2, res.stderr
    assert "data.seed: 0 then, 1 now" in res.stderr and "humanclap_demo_seed1" in res.stderr
    assert "--overwrite" in res.stderr and "Traceback" not in res.stderr
    assert snapshot(folder) == before


def test_demo_refuses_a_users_files_in_one_of_its_model_folders(tmp_path):
    """A file the user put into the demo's models/mae: refused as the demo's folder (not as an
    --output-dir the user never gave), the file untouched."""
    from humanclap.recipes.demo import OWN_NAMES, demo_identity
    from humanclap.recipes.demo_base import shipped_base

    folder = tmp_path / "Q"
    with claim_folder(folder, "demo") as run:
        run.set_identity(demo_identity(0, "small", shipped_base()))
        run.record(*OWN_NAMES)
    (folder / "models" / "mae").mkdir(parents=True)
    (folder / "models" / "mae" / "notes.txt").write_text("the user's")
    res = humanclap("demo", "-o", folder, "--size", "small", "--n-boot", "0", timeout=300)
    assert res.returncode == 2, res.stderr
    assert "the demo's model folder" in res.stderr and "notes.txt" in res.stderr and "another -o" in res.stderr
    assert (folder / "models" / "mae" / "notes.txt").read_text() == "the user's"
    assert "Traceback" not in res.stderr


# -- reproduce -------------------------------------------------------------------------------
def test_reproduce_never_replaces_a_report_it_did_not_write(tmp_path):
    relate = tmp_path / "relate"
    (relate / "scores").mkdir(parents=True)
    (relate / "scores" / "REL.csv").write_text("wavname,text,score\n")
    out = tmp_path / "D"
    out.mkdir()
    for name in ("report.md", "metrics.json", "scatter_old.png"):
        (out / name).write_text("the user's")
    before = snapshot(out)
    res = humanclap("reproduce", "--relate", relate, "-o", out, "--device", "cpu", timeout=120)
    assert res.returncode == 2, res.stderr
    assert "not empty and holds no humanclap reproduce run" in res.stderr and "report.md" in res.stderr
    assert snapshot(out) == before


def test_help_states_the_contract():
    for command in ("train", "demo", "reproduce", "synth"):
        res = humanclap(command, "--help", timeout=120)
        assert res.returncode == 0 and ".humanclap-run.json" in res.stdout, command
        assert "locked" in res.stdout, command
