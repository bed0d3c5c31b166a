"""The frozen-feature score head (``--train-params head``) on a tiny LAION model: trained
through the CLI, then ``score`` / ``evaluate`` / the API give ``clapscore`` = the head's
clipped output (checked against a direct computation from the base model's embeddings)
while ``cosine`` stays the base's; its refusals, identity and cache behaviour. MS CLAP and
PE-Audio heads run through every command in ``test_family_matrix.py`` (``head-*`` specs)."""

from __future__ import annotations

import io
import json
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_manifest
from safetensors.torch import load_file

from humanclap.cli import main
from humanclap.errors import ModelLoadError
from humanclap.scoring.head import HEAD_CONFIG, HEAD_WEIGHTS, HeadScorer, ScoreHead
from humanclap.scoring.loader import load_scorer
from humanclap.training.losses import HumanClapLoss

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["a dog barks", "rain on a roof", "a bell rings", "birds sing"]


def humanclap(*args) -> SimpleNamespace:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([*map(str, args)])
    return SimpleNamespace(code=code, out=out.getvalue(), err=err.getvalue())


@pytest.fixture(scope="module")
def rated(tmp_path_factory) -> Path:
    rows = [
        {
            "audio": f"wav/c{i}.wav",
            "text": TEXTS[i % 4],
            "score": round(0.05 + 0.1 * i, 2),
            "split": "validation" if i % 3 == 2 else "train",
        }
        for i in range(9)
    ]
    return write_manifest(tmp_path_factory.mktemp("rated"), rows, name="rated.csv", seed=lambda i, r: i)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, rated, tiny_unfused) -> Path:
    out = tmp_path_factory.mktemp("head") / "out"
    r = humanclap(
        "train",
        "--model",
        tiny_unfused,
        "--data",
        rated,
        "--output-dir",
        out,
        "--device",
        "cpu",
        "--train-params",
        "head",
        "--loss",
        "mae",
        "--batch-size",
        "3",
        "--epochs",
        "3",
        "--lr",
        "1e-2",
        "--patience",
        "0",
        "--head-hidden",
        "32",
        "--no-progress",
    )
    assert r.code == 0, r.err
    return out


def direct_scores(base: Path, head_dir: Path, audio: list[str], texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(clip(head(...), 0, 1), cosine) from the *base* model's embeddings and the head's tensors."""
    scorer = load_scorer(str(base), device="cpu")
    a = torch.from_numpy(scorer.embed_audio(audio))
    t = torch.from_numpy(scorer.embed_text(texts))
    meta = json.loads((head_dir / HEAD_CONFIG).read_text())
    head = ScoreHead(meta["embedding_dim"], meta["hidden"], dropout=0.0)
    head.load_state_dict(load_file(str(head_dir / HEAD_WEIGHTS)))
    with torch.no_grad():
        return head.eval()(a, t).clamp(0, 1).numpy(), (a * t).sum(-1).numpy()


def test_train_writes_the_model_unchanged_and_the_head(trained, tiny_unfused):
    meta = json.loads((trained / HEAD_CONFIG).read_text())
    assert meta["family"] == "laion" and meta["input_layout"] == ["e_a", "e_t", "e_a*e_t", "cos"]
    assert meta["hidden"] == 32 and meta["input_dim"] == 3 * meta["embedding_dim"] + 1
    base, tuned = load_file(str(tiny_unfused / "model.safetensors")), load_file(str(trained / "model.safetensors"))
    assert set(base) == set(tuned) and all(torch.equal(base[k], tuned[k]) for k in base)
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["cached_towers"] == ["text", "audio"]  # the frozen-tower cache: an epoch is seconds
    scorer = load_scorer(str(trained), device="cpu")
    assert isinstance(scorer, HeadScorer)
    assert scorer.info.revision.startswith(meta["base_revision"] + "+head:sha256:")


def test_score_evaluate_and_api_give_the_clipped_head(trained, tiny_unfused, rated, tmp_path):
    rows = pd.read_csv(rated)
    audio = [str(rated.parent / a) for a in rows["audio"]]
    want, cos = direct_scores(tiny_unfused, trained, audio, list(rows["text"]))
    assert not np.allclose(want, np.clip(cos, 0, None), atol=1e-3)  # the head is not the cosine

    out = tmp_path / "s.jsonl"
    r = humanclap("score", rated, "--model", trained, "-o", out, "--device", "cpu")
    assert r.code == 0, r.err
    got = [json.loads(line) for line in out.read_text().splitlines()]
    np.testing.assert_allclose([g["clapscore"] for g in got], want, atol=1e-5)
    np.testing.assert_allclose([g["cosine"] for g in got], cos, atol=1e-6)  # the raw cosine, as the base's
    meta = json.loads(Path(f"{out}.meta.json").read_text())
    assert meta["protocol"].startswith("clapscore = clip(score head") and "+head:" in meta["model"]["revision"]

    r = humanclap(
        "evaluate",
        "--model",
        trained,
        "--data",
        rated,
        "-o",
        tmp_path / "ev",
        "--device",
        "cpu",
        "--n-boot",
        "0",
        "--split",
        "all",
    )
    assert r.code == 0, r.err
    pred = pd.read_csv(tmp_path / "ev" / "predictions.csv")
    np.testing.assert_allclose(pred[trained.name].to_numpy(), want, atol=1e-5)

    import soundfile as sf

    from humanclap import clap_score

    waves = [sf.read(a, dtype="float32")[0] for a in audio[:3]]
    scores, cosines = clap_score(
        waves, list(rows["text"][:3]), 16000, model=str(trained), device="cpu", return_cosine=True
    )
    np.testing.assert_allclose(scores.numpy(), want[:3], atol=1e-5)
    np.testing.assert_allclose(cosines.numpy(), cos[:3], atol=1e-6)


def test_a_pairs_head_score_does_not_depend_on_its_batch(trained, rated):
    scorer = load_scorer(str(trained), device="cpu")
    rows = pd.read_csv(rated)
    audio, texts = [str(rated.parent / a) for a in rows["audio"]], list(rows["text"])
    together = scorer.score(audio, texts)
    alone = np.array([scorer.score([a], [t])[0] for a, t in zip(audio[:4], texts[:4])])
    assert together[:4].tobytes() == alone.tobytes()


def test_cache_shares_embeddings_never_scores_and_resume_covers_the_head(trained, rated, tmp_path):
    model = tmp_path / "m"
    shutil.copytree(trained, model, ignore=shutil.ignore_patterns("checkpoints"))
    cache, first = tmp_path / "cache", tmp_path / "a.jsonl"
    assert humanclap("score", rated, "--model", model, "-o", first, "--cache", cache, "--device", "cpu").code == 0
    for name in (HEAD_WEIGHTS, HEAD_CONFIG):
        (model / name).unlink()  # the same folder, now the plain model
    plain = tmp_path / "b.jsonl"
    r = humanclap("score", rated, "--model", model, "-o", plain, "--cache", cache, "--device", "cpu")
    assert r.code == 0 and "cache hits: 13" in r.err, r.err  # 4 texts + 9 clips, all from the head's run
    a = [json.loads(line) for line in first.read_text().splitlines()]
    b = [json.loads(line) for line in plain.read_text().splitlines()]
    assert [x["cosine"] for x in a] == [x["cosine"] for x in b]  # embeddings shared (cached)
    assert [x["clapscore"] for x in b] == [max(x["cosine"], 0.0) for x in b]  # no head score reused
    assert [x["clapscore"] for x in a] != [x["clapscore"] for x in b]
    r = humanclap("score", rated, "--model", model, "-o", first, "--resume", "--device", "cpu")
    assert r.code == 2 and "cannot resume" in r.err  # the head's output is not this model's


def test_wsce_with_a_head_is_refused(tiny_unfused, rated, tmp_path):
    out = tmp_path / "out"
    r = humanclap(
        "train",
        "--model",
        tiny_unfused,
        "--data",
        rated,
        "--output-dir",
        out,
        "--device",
        "cpu",
        "--train-params",
        "head",
        "--loss",
        "wsce+mae",
    )
    assert r.code == 2 and "wsce" in r.err and "--train-params head" in r.err
    assert not out.exists()  # refused before the output folder is claimed


def test_a_head_of_other_weights_is_refused(trained, rated, tmp_path):
    from humanclap.recipes.tiny import build_tiny_clap

    other = build_tiny_clap(tmp_path / "other", fused=False, seed=1)
    moved = tmp_path / "moved"
    shutil.copytree(other, moved)
    for name in (HEAD_WEIGHTS, HEAD_CONFIG):
        shutil.copy(trained / name, moved / name)
    with pytest.raises(ModelLoadError, match="trained on the model revision"):
        load_scorer(str(moved), device="cpu")
    r = humanclap("score", rated, "--model", moved, "--device", "cpu")
    assert r.code == 2 and "trained on the model revision" in r.err, r.err
    (moved / HEAD_WEIGHTS).unlink()
    with pytest.raises(ModelLoadError, match="half a score head"):
        load_scorer(str(moved), device="cpu")


def test_ranking_terms_train_on_the_prediction():
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    t = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    target = torch.linspace(0, 1, 6)
    head = ScoreHead(8, 16, dropout=0.0)
    loss = HumanClapLoss("mae+mse+pairwise+listnet+clipped-mse")
    out = loss(a, t, target, prediction=head(a, t))
    out["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    with pytest.raises(ValueError, match="wsce"):
        HumanClapLoss("wsce+mae")(a, t, target, logit_scale=10.0, prediction=head(a, t))
