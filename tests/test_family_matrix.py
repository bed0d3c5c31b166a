"""Every model family through every command: ``score``, ``evaluate``, ``train`` (one tiny
epoch) and the Python API, each on a tiny model (the family table,
:mod:`humanclap.scoring.families`, is what every command looks a family up in).

Families: LAION unfused and fused folders, a LAION ``.pt`` converted by ``humanclap
convert``, MS CLAP 2022 and 2023 as an msclap ``.pth`` and as a folder, PE-Audio, and the
fine-tuned output of each trainable family (LAION, MS CLAP, PE-Audio), projections-tuned
(``tuned-*``) and with a frozen-feature score head (``head-*``, ``--train-params head``, each
with other loss terms: the ranking terms train the head too). Models are built
once per module and only when a cell needs them; the manifest has 8 rows of 0.4 s clips.
``evaluate --model X.pth`` was refused before the table ("has no config.json"): the
``evaluate`` cells of the ``.pth`` specs are the regression test.
"""

from __future__ import annotations

import io
import json
import math
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import write_manifest

from humanclap.cli import main
from humanclap.errors import ModelLoadError
from humanclap.scoring.families import FAMILIES, OPTION_REFUSALS, family_of_scorer, family_of_spec, precheck
from humanclap.scoring.pe_audio import pe_audio_available

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["a dog barks", "rain on a roof", "a bell rings", "birds sing"]
# spec name -> (family, how it is made)
SPECS = {
    "laion-unfused": "laion",
    "laion-fused": "laion",
    "laion-converted": "laion",
    "msclap-2022-pth": "msclap",
    "msclap-2023-pth": "msclap",
    "msclap-2022-dir": "msclap",
    "msclap-2023-dir": "msclap",
    "pe-audio": "pe_audio",
    "tuned-laion": "laion",
    "tuned-msclap": "msclap",
    "tuned-pe-audio": "pe_audio",
    "head-laion": "laion",
    "head-msclap": "msclap",
    "head-pe-audio": "pe_audio",
}
# the base each fine-tuned spec is trained from (by that base's train cell, run once)
TUNED_FROM = {"tuned-laion": "laion-unfused", "tuned-msclap": "msclap-2023-pth", "tuned-pe-audio": "pe-audio"}
# head-* specs: a score head trained on the base (the loss of each: every term a head takes)
HEAD_FROM = {
    "head-laion": ("laion-unfused", "mae"),
    "head-msclap": ("msclap-2023-pth", "mse+0.5*pairwise"),
    "head-pe-audio": ("pe-audio", "mae+listnet+clipped-mse"),
}
NO_PE_AUDIO = "PE-Audio needs transformers.models.pe_audio (transformers >= 5.0), which this environment lacks"


def humanclap(*args) -> SimpleNamespace:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([*map(str, args)])
    return SimpleNamespace(code=code, out=out.getvalue(), err=err.getvalue())


class Models:
    """Tiny models, built on first use and kept for the module."""

    def __init__(self, root: Path, rated: Path):
        self.root, self.rated, self.built, self.trained = root, rated, {}, {}

    def get(self, name: str) -> Path:
        if SPECS[name] == "pe_audio" and not pe_audio_available():
            pytest.skip(NO_PE_AUDIO)
        if name not in self.built:
            self.built[name] = self._build(name)
        return self.built[name]

    def _build(self, name: str) -> Path:
        folder = self.root / name
        if name in ("laion-unfused", "laion-fused"):
            from humanclap.recipes.tiny import build_tiny_clap

            return build_tiny_clap(folder, fused=name == "laion-fused", seed=0)
        if name == "laion-converted":
            return self._converted(folder)
        if name.startswith("msclap-"):
            from humanclap.recipes.tiny_msclap import build_tiny_msclap

            version = name.split("-")[1]
            return build_tiny_msclap(folder, version, seed=1, pth=name.endswith("pth"))
        if name == "pe-audio":
            from humanclap.recipes.tiny_pe_audio import build_tiny_pe_audio

            return build_tiny_pe_audio(folder, seed=0, corpus=TEXTS)
        if name in HEAD_FROM:
            return self.train(*HEAD_FROM[name], head=True).out
        return self.train(TUNED_FROM[name]).out  # tuned-*

    def _converted(self, folder: Path) -> Path:
        """A LAION ``.pt`` (as laion_clap writes it) of the tiny unfused model, converted."""
        from test_convert import TEST_ARCH, laion_checkpoint, tiny_text
        from transformers import AutoTokenizer

        from humanclap.scoring.clap import laion_convert as lc

        base = self.get("laion-unfused")
        with pytest.MonkeyPatch.context() as mp:
            mp.setitem(lc.ARCHS, TEST_ARCH.name, TEST_ARCH)
            mp.setitem(lc.TEXTS, "roberta-test", tiny_text(len(AutoTokenizer.from_pretrained(base))))
            laion_checkpoint(base, self.root / "laion.pt")
            r = humanclap("convert", self.root / "laion.pt", folder, "--text", "roberta-test", "--tokenizer", base)
        assert r.code == 0, r.err
        return folder

    def train(self, name: str, loss: str = "wsce+mae", head: bool = False) -> SimpleNamespace:
        """One tiny epoch of ``humanclap train`` from ``name`` (run once per spec): the
        projections, or a score head (``head``)."""
        key = (name, head)
        if key not in self.trained:
            out = self.root / f"{'head' if head else 'trained'}-{name}"
            r = humanclap(
                "train",
                "--model",
                self.get(name),
                "--data",
                self.rated,
                "--output-dir",
                out,
                "--device",
                "cpu",
                "--batch-size",
                "2",
                "--epochs",
                "1",
                "--train-params",
                "head" if head else "projections",
                "--loss",
                loss,
                "--patience",
                "0",
                "--head-hidden",
                "16",
                "--no-progress",
            )
            self.trained[key] = SimpleNamespace(out=out, code=r.code, err=r.err)
        return self.trained[key]


@pytest.fixture(scope="module")
def rated(tmp_path_factory) -> Path:
    rows = [
        {
            "audio": f"wav/c{i}.wav",
            "text": TEXTS[i % 4],
            "score": round(0.1 + 0.1 * i, 2),
            "split": "validation" if i >= 6 else "train",
        }
        for i in range(8)
    ]
    path = write_manifest(tmp_path_factory.mktemp("rated"), rows, name="rated.csv", seed=lambda i, r: i)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory, rated) -> Models:
    return Models(tmp_path_factory.mktemp("models"), rated)


def cells():
    for name in SPECS:
        for command in ("score", "evaluate", "train", "api"):
            yield pytest.param(name, command, id=f"{name}-{command}")


@pytest.mark.parametrize("name, command", list(cells()))
def test_family_command(name, command, models, rated, tmp_path):
    spec = models.get(name)
    family = SPECS[name]
    assert family_of_spec(spec).name == family
    if command == "score":
        out = tmp_path / "scores.jsonl"
        r = humanclap("score", rated, "--model", spec, "-o", out, "--device", "cpu")
        assert r.code == 0, r.err
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(rows) == 8 and all(math.isfinite(row["clapscore"]) for row in rows), rows
        if name in HEAD_FROM:  # the head's score; the cosine stays the base model's
            base = tmp_path / "base.jsonl"
            assert (
                humanclap("score", rated, "--model", models.get(HEAD_FROM[name][0]), "-o", base, "--device", "cpu").code
                == 0
            )
            cos = [json.loads(line)["cosine"] for line in base.read_text().splitlines()]
            np.testing.assert_allclose([row["cosine"] for row in rows], cos, atol=1e-6)
            assert all(0 <= row["clapscore"] <= 1 for row in rows)
            assert [row["clapscore"] for row in rows] != [max(c, 0.0) for c in cos]
    elif command == "evaluate":
        out = tmp_path / "eval"
        r = humanclap(
            "evaluate",
            "--model",
            spec,
            "--data",
            rated,
            "-o",
            out,
            "--device",
            "cpu",
            "--n-boot",
            "0",
            "--split",
            "all",
        )
        assert r.code == 0, r.err
        assert any(out.iterdir())
    elif command == "train":
        run = models.train(*HEAD_FROM[name], head=True) if name in HEAD_FROM else models.train(name)
        assert run.code == 0, run.err
        assert "epoch: 1 of 1" in run.err  # "best" or "kept" (a tiny validation split)
        # the export is a model of the same family, recognised as such by the table
        entry = family_of_spec(run.out)
        assert entry.name == family
        assert json.loads((run.out / "config.json").read_text())["model_type"] == entry.export_model_type
        if name in HEAD_FROM:
            assert json.loads((run.out / "score_head.json").read_text())["family"] == family
    else:  # the Python API
        import soundfile as sf

        from humanclap import clap_score, load_scorer
        from humanclap.scoring.decode import featurizer_of

        scorer = load_scorer(str(spec), device="cpu")
        entry = family_of_scorer(scorer)
        assert entry is not None and entry.name == family
        waves = [sf.read(str(rated.parent / "wav" / f"c{i}.wav"), dtype="float32")[0] for i in range(2)]
        scores = clap_score(waves, TEXTS[:2], 16000, model=str(spec), device="cpu").numpy()
        assert scores.shape == (2,) and np.isfinite(scores).all() and (scores >= 0).all()
        emb = scorer.embed_text(TEXTS[:2])
        assert emb.shape == (2, scorer.embedding_dim)
        assert (featurizer_of(scorer) is not None) == (entry.featurizer is not None)


# -- the table itself ----------------------------------------------------------------
def test_every_family_entry_resolves():
    from humanclap.training.towers import Towers

    assert sum(f.fallback for f in FAMILIES) == 1
    for family in FAMILIES:
        assert family.export_model_type in family.model_types, family.name
        assert set(family.options) <= set(OPTION_REFUSALS), family.name
        assert issubclass(family.towers_class(), Towers), family.name
        if family.name != "pe_audio" or pe_audio_available():
            assert callable(family.scorer_class().from_pretrained), family.name


@pytest.mark.parametrize("spec", ["nowhere/CLAP_weights_2023.pth", "nowhere", "no_such_folder/model"])
def test_a_mistyped_path_fails_fast(spec, tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        precheck(str(tmp_path / spec))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="has no config.json"):
        precheck(str(tmp_path / "empty"))


def test_names_and_hub_ids_pass_the_precheck():
    for spec, family in [
        ("msclap-2022", "msclap"),
        ("msclap-2023", "msclap"),
        ("laion/clap-htsat-unfused", "laion"),
        ("facebook/pe-av-large", "pe_audio"),
    ]:
        assert precheck(spec).name == family
