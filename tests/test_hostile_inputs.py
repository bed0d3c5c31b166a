"""Hostile arguments to the Python API and hostile values in data and config files: each
is a clear ``HumanclapError`` (or a row error) saying what was wrong and what to do, never
a silently wrong number, an IndexError/TypeError/AttributeError, a hang or a traceback.

Before these checks (recorded on the tiny unfused model): a quiet int16 array scored 0.0
where its wav file scored 0.117; ``embed_text("dog")`` embedded 3 characters;
``score([wav], "a")`` scored the text "a"; ``embed_text([])`` raised IndexError; a generator
of audio raised TypeError; ``n_boot=2.5`` raised TypeError; ``evaluate_models(models,
"relate:DIR")`` raised AttributeError; JSONL list texts were scored as "['a', 'dog']" by
``evaluate``/``train``; YAML ``lr: "1e-3"`` and ``--adam-beta1 1.5`` exited 3; an alias
bomb hung ``train``; ``score | head -1`` exited 1 (as if rows had failed); a manifest naming
an NFC file that exists as NFD said only "file not found"."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import noise_clip, write_manifest, write_wav

from humanclap.cli import main as cli_main
from humanclap.errors import AudioError, ConfigError, HumanclapError, UsageError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def quiet(tmp_path_factory) -> tuple[np.ndarray, Path]:
    """A quiet int16 clip (peak <= 100 counts) and the same samples as a PCM_16 wav."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(16000) * 30).clip(-100, 100).astype(np.int16)
    path = tmp_path_factory.mktemp("quiet") / "q.wav"
    sf.write(str(path), x, 16000, subtype="PCM_16")
    return x, path


# -- 1. integer PCM arrays are scaled by their dtype, as soundfile scales files ------------
def test_quiet_int16_array_scores_like_its_wav_file(scorer, quiet):
    x, path = quiet
    from_file = scorer.score([str(path)], ["a dog barks"])[0]
    from_array = scorer.score([(x, 16000)], ["a dog barks"])[0]
    as_float = scorer.score([(x.astype(np.float32) / 32768, 16000)], ["a dog barks"])[0]
    assert from_file > 0.01  # the premise: this pair scores (it scored 0.0 as raw floats)
    assert from_array == pytest.approx(from_file, abs=1e-6) and from_array == as_float


def test_int32_and_uint8_are_scaled_and_wider_ints_are_refused(scorer, quiet):
    x, _ = quiet
    ref = scorer.embed_audio([(x.astype(np.float32) / 32768, 16000)])
    wide = scorer.embed_audio([(x.astype(np.int32) << 16, 16000)])  # int32 full scale 2**31
    np.testing.assert_allclose(wide, ref, atol=1e-6)
    x8 = np.clip(x // 4, -128, 127).astype(np.int16)
    u8 = scorer.embed_audio([((x8 + 128).astype(np.uint8), 16000)])  # centred on 128
    np.testing.assert_allclose(u8, scorer.embed_audio([(x8.astype(np.float32) / 128, 16000)]), atol=1e-6)
    for bad in (x.astype(np.int64), x.astype(np.uint16), [0, 1, 2] * 100):
        with pytest.raises(AudioError) as err:
            scorer.embed_audio([(bad, 16000)])
        assert "have no defined full scale" in str(err.value) and "float" not in str(err.value).split(";")[0]


def test_cache_key_of_an_int16_array_is_its_scaled_samples(quiet):
    from humanclap.scoring.audio import audio_bytes_hash

    x, _ = quiet
    assert audio_bytes_hash((x, 16000)) == audio_bytes_hash((x.astype(np.float32) / 32768, 16000))
    assert audio_bytes_hash((x, 16000)) != audio_bytes_hash((x.astype(np.float32), 16000))


# -- 2. one string where a list is expected; generators; empty lists ---------------------------
def test_a_bare_string_is_refused_with_the_list_to_pass(scorer, quiet):
    _, path = quiet
    cases = [
        (lambda: scorer.embed_text("dog"), 'pass a list of texts: ["dog"]'),
        (lambda: scorer.score([str(path)], "a dog"), 'pass a list of texts: ["a dog"]'),
        (lambda: scorer.cosine([str(path)], "a dog"), 'pass a list of texts'),
        (lambda: scorer.embed_audio(str(path)), f"pass a list of audio items: [{str(path)!r}]"),
        (lambda: scorer.embed_audio(path), "pass a list of audio items"),
        (
            lambda: scorer.embed_audio((np.zeros(800, np.float32), 16000)),
            "pass a list of audio items: [(array, sample_rate)]",
        ),
        (lambda: scorer.embed_audio(np.zeros(800, np.float32)), "not one array"),
        (lambda: scorer.embed_text([1, "a"]), "texts[0] must be a string, got int"),
        (lambda: scorer.embed_text(None), "texts must be a list of strings, got NoneType"),
    ]
    for call, message in cases:
        with pytest.raises(UsageError) as err:
            call()
        assert message in str(err.value)


def test_generators_are_consumed_and_empty_lists_give_empty_results(scorer, quiet):
    _, path = quiet
    texts = ["a dog barks", "rain"]
    np.testing.assert_array_equal(scorer.embed_text(t for t in texts), scorer.embed_text(texts))
    np.testing.assert_array_equal(scorer.embed_audio(p for p in [str(path)]), scorer.embed_audio([str(path)]))
    assert scorer.score(iter([str(path)]), iter(texts[:1])).shape == (1,)
    assert scorer.embed_text([]).shape == (0, scorer.embedding_dim)
    assert scorer.embed_audio([]).shape == (0, scorer.embedding_dim)
    assert scorer.score([], []).shape == (0,)
    with pytest.raises(UsageError, match="1 audio items vs 2 texts"):
        scorer.score([str(path)], texts)


def test_msclap_scorer_has_the_same_checks(tmp_path, quiet):
    from humanclap.recipes.tiny_msclap import build_tiny_msclap
    from humanclap.scoring.msclap.scorer import MSClapScorer

    _, path = quiet
    ms = MSClapScorer.from_pretrained(str(build_tiny_msclap(tmp_path / "ms", "2023")), device="cpu")
    for call, message in [
        (lambda: ms.embed_text("dog"), 'pass a list of texts: ["dog"]'),
        (lambda: ms.embed_audio(str(path)), "pass a list of audio items"),
        (lambda: ms.embed_text([3]), "texts[0] must be a string, got int"),
    ]:
        with pytest.raises(UsageError, match=message.replace("[", r"\[")):
            call()
    assert ms.embed_text(t for t in ["a dog"]).shape == (1, ms.embedding_dim)
    assert ms.embed_audio(p for p in [str(path)]).shape == (1, ms.embedding_dim)
    assert ms.embed_text([]).shape == (0, ms.embedding_dim)


def test_metric_arguments_are_usage_errors():
    from humanclap.evaluation import metrics as M

    p, t = [0.1, 0.4, 0.35, 0.8], [0.0, 0.5, 0.5, 1.0]
    cases = [
        (lambda: M.srcc("preds.csv", t), "got the string 'preds.csv'"),
        (lambda: M.srcc([], []), "at least 3 pairs"),
        (lambda: M.bootstrap_ci(M.srcc, p, t, n_boot=2.5), "n_boot must be a whole number"),
        (lambda: M.bootstrap_ci(M.srcc, p, t, n_boot=True), "n_boot must be a whole number"),
        (lambda: M.bootstrap_ci(M.srcc, p, t, n_boot=-1), "n_boot must be >= 1"),
        (lambda: M.bootstrap_ci(M.srcc, p, t, level=95), "level must be between 0 and 1"),
        (lambda: M.bootstrap_ci(M.srcc, p, t, seed=1.5), "seed must be a whole number"),
        (lambda: M.evaluate_all(p, t, n_boot=2.5), "n_boot must be a whole number"),
        (lambda: M.evaluate_all(p, t, seed=-1), "seed must be >= 0"),
        (lambda: M.paired_bootstrap(M.srcc, p, p[::-1], t, n_boot="10"), "n_boot must be a whole number"),
        (lambda: M.system_level(p, t, "abcd"), "pass a list of system labels"),
    ]
    for call, message in cases:
        with pytest.raises(HumanclapError, match=message):
            call()
    assert M.bootstrap_ci(M.srcc, p, t, n_boot=np.int64(20)) == M.bootstrap_ci(M.srcc, p, t, n_boot=20)
    assert M.srcc((x for x in p), iter(t)) == M.srcc(p, t)  # an iterator is consumed, not a 0-d array


def test_evaluate_and_fine_tune_arguments_are_humanclap_errors(scorer, tiny_unfused, tmp_path):
    from humanclap.evaluation.evaluate import evaluate_models
    from humanclap.evaluation.workflow import run_evaluation
    from humanclap.training.trainer import fine_tune

    data = write_manifest(tmp_path, [{"audio": f"c{i}.wav", "text": f"t{i}", "score": i / 4} for i in range(4)])
    from humanclap.data import load_rated

    rated = load_rated(str(data))
    out = tmp_path / "out"
    cases = [
        (lambda: evaluate_models([scorer], "relate:/data"), UsageError, "load_rated"),
        (lambda: evaluate_models(str(tiny_unfused), rated), UsageError, "pass a list of models"),
        (lambda: evaluate_models([scorer], rated, n_boot=2.5), UsageError, "n_boot must be a whole number"),
        (lambda: evaluate_models([scorer], rated, n_boot=False), UsageError, "n_boot must be a whole"),
        (lambda: evaluate_models([scorer], rated, labels="a"), UsageError, "pass a list of labels"),
        (lambda: run_evaluation(str(data), out, [str(tiny_unfused)], n_boot=2.5), UsageError, "n_boot"),
        (lambda: run_evaluation(str(data), out, [str(tiny_unfused)], seed="0"), UsageError, "seed"),
        (lambda: run_evaluation(str(data), out, str(tiny_unfused)), UsageError, "pass a list of models"),
        (lambda: run_evaluation(rated, out, [str(tiny_unfused)]), HumanclapError, "dataset spec"),
        (lambda: fine_tune("wsce_mae.yaml"), ConfigError, "TrainConfig.load"),
    ]
    for call, kind, message in cases:
        with pytest.raises(kind, match=message):
            call()
    assert not out.exists()


# -- 3. non-string texts in a JSONL manifest: row errors, as in `score` ----------------------
def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def odd_texts(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("odd")
    rows = []
    for i in range(8):
        write_wav(root / f"c{i}.wav", noise_clip(0.4, seed=i))
        rows.append(
            {
                "audio": f"c{i}.wav",
                "text": f"a sound number {i}",
                "score": (i % 4) / 4,
                "split": "train" if i < 6 else "validation",
            }
        )
    rows[1]["text"], rows[2]["text"], rows[3]["text"], rows[4]["text"] = ["a", "dog"], {"t": 1}, 7, True
    return jsonl(root / "m.jsonl", rows)


EXPECTED = [
    "'text' must be a string, got list",
    "'text' must be a string, got object",
    "'text' must be a string, got number",
    "'text' must be a string, got boolean",
]


def test_score_evaluate_and_train_give_non_string_texts_the_same_error(tiny_unfused, odd_texts, tmp_path, capsys):
    out = tmp_path / "s.jsonl"
    assert cli_main(["score", str(odd_texts), "-o", str(out), "--model", str(tiny_unfused), "--device", "cpu"]) == 1
    errors = [json.loads(line)["error"] for line in out.read_text().splitlines()]
    assert errors[1:5] == EXPECTED and not any(errors[5:]) and not errors[0]

    ev = tmp_path / "ev"
    code = cli_main(
        [
            "evaluate",
            "--data",
            str(odd_texts),
            "-o",
            str(ev),
            "--model",
            str(tiny_unfused),
            "--device",
            "cpu",
            "--split",
            "all",
            "--n-boot",
            "10",
            "--no-plots",
        ]
    )
    assert code == 1, capsys.readouterr().err
    preds = pd.read_csv(ev / "predictions.csv", keep_default_na=False)
    assert preds["error"].tolist()[1:5] == EXPECTED and preds["scored"].tolist().count(False) == 4
    m = json.loads((ev / "metrics.json").read_text())
    assert (m["n_scored"], m["n_failed"]) == (4, 4)
    assert "['a', 'dog']" not in (ev / "predictions.csv").read_text()

    run = tmp_path / "run"
    assert (
        cli_main(
            [
                "train",
                "--model",
                str(tiny_unfused),
                "--data",
                str(odd_texts),
                "--output-dir",
                str(run),
                "--device",
                "cpu",
                "--batch-size",
                "2",
                "--epochs",
                "1",
                "--no-progress",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "4 of 8 pairs" in err and EXPECTED[0] in err and "Traceback" not in err


def test_manifest_and_score_word_a_non_string_value_alike():
    """The data layer cannot import scoring (layer rule): the wording is kept equal here."""
    from humanclap.data.manifest import value_problem
    from humanclap.scoring.rows import row_problem

    for value in (["a"], {"a": 1}, 1, 1.5, True, None, float("nan")):
        assert value_problem("text", value) == row_problem({"audio": "x.wav", "text": value})
    assert value_problem("text", "a dog") == ""


# -- 4. training configs: types, ranges, aliases, size -------------------------------------------
def load_yaml(tmp_path: Path, text: str):
    from humanclap.training.config import TrainConfig

    path = tmp_path / "c.yaml"
    path.write_text(text)
    return TrainConfig.load(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ('lr: "fast"\n', "lr must be a number (float), got string 'fast'"),
        ("epochs: 2.5\n", "epochs must be a whole number (int), got float 2.5"),
        ('epochs: "10"\n', "epochs must be a whole number (int), got string '10'"),
        ("epochs: true\n", "epochs must be a whole number (int), got boolean True"),
        ('clip_score: "no"\n', "clip_score must be true or false (bool), got string 'no'"),
        ("model: 5\n", "model must be a string (str), got int 5"),
        ("seed: null\n", "seed must be a whole number (int), got null"),
        ("lora_targets: {a: 1}\n", "lora_targets must be a list of strings"),
        ("lr: .nan\n", "lr must be finite"),
        ("learning_rate: 0.1\n", "unknown config key(s) ['learning_rate']"),
    ],
)
def test_yaml_values_are_type_checked_field_by_field(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_yaml(tmp_path, text)
    assert message in str(err.value) and "c.yaml" in str(err.value)


def test_yaml_numbers_are_converted_deliberately(tmp_path):
    cfg = load_yaml(tmp_path, 'lr: 1e-3\nweight_decay: "0.5"\nwarmup_ratio: 0\ntemperature: 0.07\ntest_split: null\n')
    assert (cfg.lr, cfg.weight_decay, cfg.warmup_ratio, cfg.temperature, cfg.test_split) == (
        1e-3,
        0.5,
        0.0,
        "0.07",
        None,
    )
    assert isinstance(cfg.warmup_ratio, float)
    from humanclap.training.config import TrainConfig

    with pytest.raises(ConfigError, match="lr must be a number"):
        TrainConfig(data="x.csv", output_dir="o", lr=[1]).validate()


def test_yaml_aliases_and_huge_files_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="aliases"):
        load_yaml(tmp_path, "a: &x [1, 2]\nlora_targets: *x\n")
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (2 << 20) + "\nlr: 0.1\n")
    from humanclap.training.config import TrainConfig

    with pytest.raises(ConfigError, match="larger than"):
        TrainConfig.load(big)


def test_an_alias_bomb_is_refused_at_once_not_expanded(tmp_path):
    # every anchor inside a known key: 10**9 strings once expanded (asdict copied them all)
    levels = ['&a0 ["x","x","x","x","x","x","x","x","x","x"]']
    levels += [f"&a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("lora_targets: [" + ", ".join(levels) + "]\n")
    start = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "humanclap.cli",
            "train",
            "--config",
            str(bomb),
            "--data",
            "x.csv",
            "--output-dir",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "aliases" in proc.stderr and time.monotonic() - start < 60


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--adam-beta1", "1.5", "adam_beta1 must be in [0, 1), got 1.5"),
        ("--adam-beta2", "1", "adam_beta2 must be in [0, 1), got 1.0"),
        ("--lora-dropout", "2", "lora_dropout must be in [0, 1), got 2.0"),
        ("--adam-eps", "0", "adam_eps must be > 0"),
        ("--weight-decay", "-1", "weight_decay must be >= 0"),
        ("--lora-alpha", "0", "lora_alpha must be >= 1"),
        ("--lr", "nan", "lr must be finite"),
        ("--max-grad-norm", "inf", "max_grad_norm must be finite"),
    ],
)
def test_train_flags_out_of_range_exit_2(tmp_path, capsys, flag, value, message):
    code = cli_main(["train", "--data", "x.csv", "--output-dir", str(tmp_path / "o"), flag, value])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


# -- 5. messages: a closed stdout pipe; NFC vs NFD file names ------------------------------------
def test_a_closed_stdout_pipe_exits_141_silently(tiny_unfused, tmp_path):
    rows = [{"audio": f"c{i % 3}.wav", "text": f"text {i}"} for i in range(200)]
    data = write_manifest(tmp_path, rows)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "humanclap.cli",
            "score",
            str(data),
            "--model",
            str(tiny_unfused),
            "--device",
            "cpu",
            "--batch-size",
            "8",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = proc.stdout.readline()  # `| head -1`
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 141, err
    assert json.loads(first)["text"] == "text 0"
    assert "Traceback" not in err and "Exception ignored" not in err and "BrokenPipe" not in err


def test_a_missing_file_whose_other_unicode_form_exists_says_so(tiny_unfused, tmp_path):
    nfc, nfd = unicodedata.normalize("NFC", "café.wav"), unicodedata.normalize("NFD", "café.wav")
    write_wav(tmp_path / nfd, noise_clip(0.4, seed=1))
    data = tmp_path / "m.csv"
    data.write_text(f"audio,text\n{nfc},a cafe\ngone.wav,x\n", encoding="utf-8")
    out = tmp_path / "o.jsonl"
    assert cli_main(["score", str(data), "-o", str(out), "--model", str(tiny_unfused), "--device", "cpu"]) == 1
    first, second = (json.loads(line)["error"] for line in out.read_text().splitlines())
    assert f"not found; a file named {nfd!r} in NFD form exists" in first
    assert "different Unicode normalisation" in first
    assert "Unicode" not in second and "file not found" in second
