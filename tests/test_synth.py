"""Synthetic RELATE-style dataset: layout, conventions, determinism, score distribution.

The real RELATE metadata (../shared/data/relate) is the reference for the layout and
conventions; tests that need it skip when it is absent. Generation is tested at size
"small" (a few seconds); the TV-distance bound of 0.1 needs the default size (about
1,900 natural / 3,800 synthesized pairs; at 120 texts the sampling noise of an 11-bin
histogram alone is ~0.1), so that check is marked slow.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from humanclap.synth import dataset as synth
from humanclap.synth.listeners import AUDIO_TYPE, perceive, realise
from humanclap.synth.sounds import (
    CLIP_SAMPLES,
    EVENT_CLASSES,
    REF_DBFS,
    Artefacts,
    Clip,
    EventSpec,
    NoiseBank,
    PlacedEvent,
    Scene,
    render,
)

RELATE = Path(__file__).resolve().parents[2] / "shared" / "data" / "relate"
needs_real = pytest.mark.skipif(
    not (RELATE / "scores" / "REL.csv").is_file(), reason=f"real RELATE metadata not found at {RELATE}"
)
CSV_FILES = [
    "scores/REL.csv",
    "scores/IS.csv",
    "scores/OS.csv",
    "listener_attributes/REL.csv",
    "listener_attributes/IS_and_OS.csv",
]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, synth.SynthSummary]:
    out = tmp_path_factory.mktemp("synth") / "small"
    return out, synth.generate(out, seed=0, size="small")


@pytest.fixture
def tiny_size(monkeypatch):
    """A 24-text size for tests that only need *a* dataset (not a constant change of
    behaviour: SIZES is the table generate() reads)."""
    monkeypatch.setitem(synth.SIZES, "tiny", (24, 10))
    return "tiny"


def _digest(root: Path) -> dict[str, str]:
    """sha256 of every file except the summary (it records the wall time)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "synth_summary.json"
    }


def _rel(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "scores" / "REL.csv", dtype={"listener_id": str}, keep_default_na=False)


def test_deterministic_for_a_seed_and_independent_of_workers(small, tmp_path):
    out, _ = small
    synth.generate(tmp_path / "again", seed=0, size="small", workers=1)
    assert _digest(out) == _digest(tmp_path / "again")


def test_different_seed_differs(tiny_size, tmp_path):
    synth.generate(tmp_path / "a", seed=0, size=tiny_size)
    synth.generate(tmp_path / "b", seed=1, size=tiny_size)
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert a["scores/REL.csv"] != b["scores/REL.csv"]
    assert a["pretrain/manifest.csv"] != b["pretrain/manifest.csv"]
    assert a["pretrain/wav/00000.wav"] != b["pretrain/wav/00000.wav"]


@needs_real
def test_layout_columns_and_dtypes_match_real(small):
    out, _ = small
    for name in CSV_FILES:
        real_header = (RELATE / name).read_text().splitlines()[0]
        assert (out / name).read_text().splitlines()[0] == real_header, name
        # read the way people read the real files: the same pandas dtypes come back
        assert dict(pd.read_csv(out / name).dtypes) == dict(pd.read_csv(RELATE / name, nrows=2000).dtypes), name


def test_audio_files(small):
    out, summary = small
    rel = _rel(out)
    wavs = sorted(set(rel["wavname"]))
    assert all((out / "RELATE_wave" / w.lstrip("/")).is_file() for w in wavs)
    for w in wavs[:: max(len(wavs) // 15, 1)]:
        info = sf.info(str(out / "RELATE_wave" / w.lstrip("/")))
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (16000, 1, "PCM_16", CLIP_SAMPLES)
    systems = {p.name for p in (out / "RELATE_wave").iterdir()}
    assert systems == set(AUDIO_TYPE)
    manifest = pd.read_csv(out / "pretrain" / "manifest.csv")
    assert list(manifest.columns) == ["audio", "text"]
    assert len(manifest) == summary.pretrain_clips == 300
    assert all((out / "pretrain" / a).is_file() for a in manifest["audio"])
    assert set(manifest["text"]).isdisjoint(set(rel["text"]))  # a disjoint corpus


def test_conventions_mirror_real(small):
    out, summary = small
    rel = _rel(out)
    parts = rel["wavname"].str.split("/", expand=True)
    system, folder = parts[1], parts[2]
    assert set(rel["audio type"]) == {"natural", "audioldm", "tango"}
    assert (rel["audio type"] == system.map(AUDIO_TYPE)).all()  # audioldm2 -> audioldm, tango2 -> tango
    assert rel["anchor label"].dtype == bool and rel["anchor label"].nunique() == 2
    assert set(rel["in RELATE dataset"]) == {"train", "validation", "test", "excluded"}
    anchors = rel["anchor label"]
    assert (rel.loc[anchors, "in RELATE dataset"] == "excluded").all()
    assert (rel.loc[anchors, "in AudioCaps"] == "").all() and (system[anchors] == "audiocaps").all()
    assert (rel.loc[~anchors, "in AudioCaps"] == folder[~anchors]).all()
    kept = rel["in RELATE dataset"] != "excluded"
    # RELATE train pairs sit under train folders; validation and test pairs under test ones
    assert (folder[kept & (rel["in RELATE dataset"] == "train")] == "train").all()
    assert (folder[kept & (rel["in RELATE dataset"] != "train")] == "test").all()
    assert rel["listener_id"].str.fullmatch(r"\d{4}").all()
    per_listener = rel.groupby("listener_id")
    assert (per_listener["anchor label"].sum() == 3).all()
    assert per_listener.size().max() == 21
    excluded_share = per_listener["in RELATE dataset"].apply(lambda s: (s == "excluded").mean())
    screened = excluded_share[excluded_share == 1].index
    assert len(screened) == summary.screened_listeners > 0  # screening drops whole listeners
    # each text: its natural clip and either {audioldm, tango2} or {audioldm2, tango}, one id
    na = rel[~anchors].assign(system=system[~anchors], id=parts[3][~anchors])
    per_text = na.groupby("text").agg(systems=("system", lambda s: tuple(sorted(set(s)))), ids=("id", "nunique"))
    assert set(per_text["systems"]) == {("audiocaps", "audioldm", "tango2"), ("audiocaps", "audioldm2", "tango")}
    assert (per_text["ids"] == 1).all()
    iso = pd.read_csv(out / "scores" / "IS.csv", dtype={"listener_id": str}, keep_default_na=False)
    os_ = pd.read_csv(out / "scores" / "OS.csv", dtype={"listener_id": str}, keep_default_na=False)
    assert iso["listener_id"].astype(int).min() == 10000
    key = ["wavname", "text", "listener_id"]
    assert len(os_.merge(iso[key], on=key)) == len(os_) < len(iso)  # OS: multi-event captions only
    for df in (rel, iso, os_):
        assert df["score"].between(0, 10).all()
    attrs = pd.read_csv(out / "listener_attributes" / "REL.csv", dtype={"listener_id": str})
    assert set(attrs["listener_id"]) == set(rel["listener_id"])


def test_summary_and_small_score_distribution(small):
    out, s = small
    assert (out / "synth_summary.json").is_file()
    assert s.texts == 120 and s.size == "small" and s.seed == 0
    assert sum(s.pairs_per_split.values()) == sum(s.pairs_per_system.values())
    assert s.pairs_per_split["train"] > s.pairs_per_split["test"] > 0
    # 120 texts are too few for the 0.1 bound (see the module docstring); a loose bound
    # and the ordering of systems still catch a broken model
    assert s.tv_natural < 0.3 and s.tv_synthesized < 0.3
    means = s.mean_score_per_system
    assert means["audiocaps"] > means["tango"] > means["audioldm"]
    assert means["tango2"] > means["audioldm2"]


@needs_real
def test_stored_real_histograms_match_the_real_file():
    nat, syn, source = synth.real_histograms(RELATE / "scores" / "REL.csv")
    assert tuple(nat) == synth.REAL_HIST_NATURAL and tuple(syn) == synth.REAL_HIST_SYNTHESIZED
    assert source.endswith("REL.csv")


@pytest.mark.slow
def test_default_size_matches_relate_distribution(tmp_path):
    real = RELATE / "scores" / "REL.csv"
    s = synth.generate(tmp_path / "d", seed=0, size="default", real_rel_csv=real if real.is_file() else None)
    assert s.tv_natural <= 0.1 and s.tv_synthesized <= 0.1, (s.hist_natural, s.hist_synthesized)
    assert 5400 < sum(s.pairs_per_split.values()) <= 6000 and s.pretrain_clips == 3000  # RELATE: 5,460


def test_loads_through_the_relate_loader(small):
    from humanclap.data import load_rated

    out, s = small
    data = load_rated("relate:" + str(out))
    assert len(data) == sum(s.pairs_per_split.values())
    assert data.splits == ["train", "validation", "test"]
    assert {k: len(data.split(k)) for k in data.splits} == s.pairs_per_split
    assert data.pairs["audio_exists"].all()
    assert data.pairs.groupby("system").size().to_dict() == s.pairs_per_system
    assert data.pairs["is_score"].notna().all() and data.pairs["os_score"].isna().any()


def test_cli_run_and_errors(tiny_size, tmp_path, capsys):
    from humanclap.cli.main import run_command
    from humanclap.cli.synth import add_parser, run

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["synth", "--output-dir", str(tmp_path / "c"), "--seed", "3"])
    assert args.func is run and args.size == "default"
    args.size = tiny_size
    assert run_command(args) == 0
    assert "TV distance" in capsys.readouterr().out
    assert run_command(args) == 2  # not empty: refuses to mix two runs
    assert "not empty" in capsys.readouterr().err
    args.overwrite = True
    assert run_command(args) == 0
    args.real_rel_csv = str(tmp_path / "missing.csv")
    assert run_command(args) == 2
    assert "not found" in capsys.readouterr().err


def test_event_level_is_the_reference_level():
    clip = Clip((PlacedEvent("siren", 0.5, 2.0, 0.0, 1.0, 1.0),), "pink", -60.0, 0.0, Artefacts(), 1)
    x = render(clip, NoiseBank(0))[8000 : 8000 + 32000]
    frames = np.sort(np.mean(x[: len(x) // 160 * 160].reshape(-1, 160) ** 2, axis=1))
    level = 10 * np.log10(np.mean(frames[len(frames) // 2 :]))
    assert abs(level - REF_DBFS) < 1.0


def test_perceptual_model_follows_what_is_audible():
    scene = Scene((EventSpec("dog_bark", 0, (), None), EventSpec("car_horn", 0, (), "followed by")))
    assert scene.caption() == "A dog barks followed by a car horn honking"
    rng = np.random.default_rng(0)
    good = [perceive(scene, realise(scene, "tango2", rng, 0)) for _ in range(200)]
    bad = [perceive(scene, realise(scene, "audioldm", rng, 0)) for _ in range(200)]

    def mean(ps, f) -> float:
        return float(np.mean([f(p) for p in ps]))

    assert mean(good, lambda p: p.latents()[0]) > mean(bad, lambda p: p.latents()[0]) + 1
    assert mean(good, lambda p: p.artefacts) < mean(bad, lambda p: p.artefacts)
    assert mean(good, lambda p: p.order) > mean(bad, lambda p: p.order)
    assert len(EVENT_CLASSES) >= 20
    assert all(set(c.confusable) <= set(EVENT_CLASSES) and len(c.phrasings) >= 3 for c in EVENT_CLASSES.values())
