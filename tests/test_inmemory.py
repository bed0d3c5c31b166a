"""The in-memory API (``humanclap.clap_score``, ``humanclap.protocol``): the very bits of
``humanclap score`` on the same samples stored as float WAVs, for every model family; input
errors; the scorer cache; the README's training-loop snippet."""

from __future__ import annotations

import csv
import io
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import noise_clip

import humanclap
from humanclap.cli import main
from humanclap.errors import AudioError, HumanclapError, UsageError
from humanclap.scoring.inmemory import ArrayFile, clear_scorer_cache, get_scorer

TEXTS = ["a dog barks", "rain falls on a tin roof", "a bell rings twice", "music plays"]
# Seconds, against the tiny models' 1-second window: shorter, exactly one window (at the
# model's rate), longer (centre window / fusion), and far longer (several chunks).
SECONDS = (0.37, 1.0, 1.6, 3.3)


@pytest.fixture(scope="module")
def msclap_2022(tmp_path_factory) -> Path:
    from humanclap.recipes.tiny_msclap import build_tiny_msclap

    return build_tiny_msclap(tmp_path_factory.mktemp("msclap2022"), version="2022", seed=0)


@pytest.fixture(scope="module")
def msclap_2023(tmp_path_factory) -> Path:
    from humanclap.recipes.tiny_msclap import build_tiny_msclap

    return build_tiny_msclap(tmp_path_factory.mktemp("msclap2023"), version="2023", seed=0)


def clips_at(rate: int) -> list[np.ndarray]:
    """Mono float32 test clips of ``SECONDS`` at ``rate`` (seeded, so every family sees the same)."""
    return [noise_clip(s, rate=rate, seed=i) for i, s in enumerate(SECONDS)]


def cli_scores(model: Path, clips: list[np.ndarray], texts: list[str], rate: int, folder: Path):
    """``humanclap score`` (in-process) on the clips written as float WAVs: (clapscore, cosine) lists."""
    folder.mkdir(parents=True)
    rows = ["audio,text"]
    for i, clip in enumerate(clips):
        sf.write(str(folder / f"c{i}.wav"), clip, rate, subtype="FLOAT")
        rows.append(f"c{i}.wav,{texts[i]}")
    (folder / "m.csv").write_text("\n".join(rows) + "\n")
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(
            ["score", str(folder / "m.csv"), "--model", str(model), "--device", "cpu", "-o", str(folder / "out.csv")]
        )
    assert code == 0, err.getvalue()
    with open(folder / "out.csv", newline="") as f:
        got = list(csv.DictReader(f))
    assert all(r["error"] == "" for r in got), got
    # the CSV holds the shortest text that round-trips each float32: parsed back to float32
    return f32([r["clapscore"] for r in got]), f32([r["cosine"] for r in got])


def f32(values) -> np.ndarray:
    """CSV numbers (or floats) as float32, the dtype of the scores."""
    return np.array([float(v) for v in values], dtype=np.float32)


def same_bits(got: torch.Tensor, want: np.ndarray) -> bool:
    """Bit-for-bit equality of float32 results (not a tolerance)."""
    got = got.numpy()
    return got.dtype == want.dtype and np.array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("family", ["unfused", "fused", "msclap-2022", "msclap-2023"])
def test_same_bits_as_the_score_command(family, request, tmp_path, one_thread):
    model = request.getfixturevalue(
        {"unfused": "tiny_unfused", "fused": "tiny_fused", "msclap-2022": "msclap_2022", "msclap-2023": "msclap_2023"}[
            family
        ]
    )
    scorer = get_scorer(str(model), device="cpu")
    texts = TEXTS[: len(SECONDS)]
    for rate in (scorer.sampling_rate, 22050):  # the model's rate and another one
        clips = clips_at(rate)
        want_scores, want_cos = cli_scores(model, clips, texts, rate, tmp_path / str(rate))
        scores, cos = humanclap.clap_score(clips, texts, rate, model=str(model), return_cosine=True)
        assert scores.dtype == torch.float32 and scores.shape == (len(clips),)
        assert same_bits(scores, want_scores), (family, rate, scores, want_scores)
        assert same_bits(cos, want_cos), (family, rate, cos, want_cos)
        # the same clips as one zero-padded (B, T) batch with lengths: the same bits
        batch = np.zeros((len(clips), max(len(c) for c in clips)), dtype=np.float32)
        for i, c in enumerate(clips):
            batch[i, : len(c)] = c
        lengths = torch.tensor([len(c) for c in clips])
        as_batch = humanclap.clap_score(torch.from_numpy(batch), texts, rate, model=scorer, lengths=lengths)
        assert same_bits(as_batch, want_scores), (family, rate)


def test_integer_pcm_is_scaled_like_a_pcm_file(tiny_unfused, tmp_path, one_thread):
    """int16 samples score as a PCM_16 wav of them does (soundfile's scaling, x / 32768)."""
    clips = [(noise_clip(s, rate=16000, seed=i) * 32767).astype(np.int16) for i, s in enumerate((0.5, 1.4))]
    folder = tmp_path / "pcm"
    folder.mkdir()
    for i, clip in enumerate(clips):
        sf.write(str(folder / f"c{i}.wav"), clip, 16000, subtype="PCM_16")
    (folder / "m.csv").write_text("audio,text\nc0.wav,a dog barks\nc1.wav,rain\n")
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        assert (
            main(
                [
                    "score",
                    str(folder / "m.csv"),
                    "--model",
                    str(tiny_unfused),
                    "--device",
                    "cpu",
                    "-o",
                    str(folder / "out.csv"),
                ]
            )
            == 0
        )
    with open(folder / "out.csv", newline="") as f:
        want = f32(r["clapscore"] for r in csv.DictReader(f))
    got = humanclap.clap_score(
        [torch.from_numpy(c) for c in clips], ["a dog barks", "rain"], 16000, model=str(tiny_unfused)
    )
    assert same_bits(got, want)


def test_a_clips_score_does_not_depend_on_its_batch(tiny_fused, one_thread, monkeypatch):
    from humanclap.scoring import inmemory

    clips = clips_at(16000) * 3  # 12 clips: short and long (fused: embedded apart) mixed
    texts = (TEXTS * 3)[: len(clips)]
    together = humanclap.clap_score(clips, texts, 16000, model=str(tiny_fused))
    alone = torch.cat([humanclap.clap_score([c], [t], 16000, model=str(tiny_fused)) for c, t in zip(clips, texts)])
    assert together.tolist() == alone.tolist()
    monkeypatch.setattr(inmemory, "CLIPS_PER_STEP", 8)  # steps of 8 + 4 clips instead of one of 12
    assert humanclap.clap_score(clips, texts, 16000, model=str(tiny_fused)).tolist() == together.tolist()


def test_scorers_are_loaded_once_per_spec_device_dtype(tiny_unfused):
    clear_scorer_cache()
    first = get_scorer(str(tiny_unfused), device="cpu")
    assert get_scorer(str(tiny_unfused), device="cpu") is first
    assert get_scorer(Path(tiny_unfused), device="cpu") is first
    assert get_scorer(f"{tiny_unfused}/../{Path(tiny_unfused).name}", device="cpu") is first
    assert get_scorer(str(tiny_unfused), device="cpu", dtype="bf16") is not first
    assert get_scorer(first) is first  # an already-loaded scorer is used as it is
    with pytest.raises(UsageError, match="loaded in fp32, not bf16"):
        get_scorer(first, dtype="bf16")
    clear_scorer_cache()
    assert get_scorer(str(tiny_unfused), device="cpu") is not first


def test_no_gradients_and_results_on_the_audio_device(tiny_unfused):
    wave = torch.randn(2, 8000, requires_grad=True)
    out = humanclap.clap_score(wave * 0.1, ["a dog barks", "rain"], 16000, model=str(tiny_unfused))
    assert not out.requires_grad and out.device == wave.device
    assert not out.is_inference()  # usable beside autograd: (out * w).sum().backward() works
    w = torch.ones(2, requires_grad=True)
    (out * w).sum().backward()
    assert torch.equal(w.grad, out)
    one = humanclap.clap_score(
        np.zeros((1, 800)) + 0.01, "one text is fine for one clip", 16000.0, model=str(tiny_unfused)
    )
    assert one.shape == (1,) and one.device.type == "cpu"


@pytest.mark.parametrize(
    "audio, text, kwargs, error, words",
    [
        (np.zeros((2, 800)), ["a", "b", "c"], {}, UsageError, "2 clips but 3 texts"),
        (np.zeros((2, 800)), "a dog", {}, UsageError, "one string but audio holds 2 clips"),
        (np.zeros((2, 800)), ["a", ""], {}, UsageError, "text[1] is empty"),
        (np.zeros((2, 800)), ["a", 3], {}, UsageError, "text[1] must be a string"),
        (np.zeros((2, 800)), ["a", "b"], {"lengths": [800, 801]}, UsageError, "lengths[1] = 801 is out of range"),
        (np.zeros((2, 800)), ["a", "b"], {"lengths": [0, 5]}, UsageError, "lengths[0] = 0 is out of range"),
        (np.zeros((2, 800)), ["a", "b"], {"lengths": [5]}, UsageError, "one length per clip"),
        ([np.zeros(800)], ["a"], {"lengths": [5]}, UsageError, "lengths applies to a (B, T) batch"),
        (np.zeros((2, 2, 800)), ["a", "b"], {}, UsageError, "(B, T) batch or a list"),
        (np.zeros(800), ["a"], {}, UsageError, "one clip, not a batch"),
        (np.zeros((0, 800)), [], {}, UsageError, "empty batch"),
        ([], [], {}, UsageError, "empty batch"),
        ([np.zeros((800, 2))], ["a"], {}, AudioError, "must be 1-D"),
        (np.zeros((1, 800), dtype=np.int64), ["a"], {}, AudioError, "not PCM"),
        (np.zeros((1, 800), dtype=bool), ["a"], {}, AudioError, "got dtype bool"),
        (np.full((1, 800), np.nan, dtype=np.float32), ["a"], {}, AudioError, "audio[0]: contains NaN"),
        (
            np.full((1, 800), 1e300),
            ["a"],
            {},
            AudioError,
            "audio[0]: contains NaN or inf samples (the first at sample 0)",
        ),
        (np.full((1, 800), 30000.0, dtype=np.float32), ["a"], {}, AudioError, "audio[0]: samples out of range"),
        (np.zeros((1, 800)), ["a"], {"sample_rate": 0}, UsageError, "sample_rate must be a positive"),
        (np.zeros((1, 800)), ["a"], {"sample_rate": 16000.5}, UsageError, "sample_rate must be a positive"),
        (np.zeros((1, 1)), ["a"], {"sample_rate": 48000}, AudioError, "audio[0]: too short"),
    ],
)
def test_bad_input_is_a_clear_humanclap_error(tiny_unfused, audio, text, kwargs, error, words):
    kwargs = {"sample_rate": 16000, **kwargs}
    with pytest.raises(error) as info:
        humanclap.clap_score(audio, text, model=str(tiny_unfused), **kwargs)
    assert isinstance(info.value, HumanclapError)
    assert words in str(info.value), str(info.value)


def test_array_file_reads_like_soundfile(tmp_path):
    """ArrayFile answers the reader's calls as soundfile does for a float WAV of the same samples."""
    data = noise_clip(0.3, rate=8000, seed=3, channels=2)
    sf.write(str(tmp_path / "x.wav"), data, 8000, subtype="FLOAT")
    mem = ArrayFile(data, 8000)
    with sf.SoundFile(str(tmp_path / "x.wav")) as real:
        assert (mem.samplerate, mem.frames, mem.format) == (real.samplerate, real.frames, real.format)
        for n in (100, 1000, 5000):
            assert np.array_equal(
                mem.read(n, dtype="float32", always_2d=True), real.read(n, dtype="float32", always_2d=True)
            )
        assert mem.seek(37) == real.seek(37) and mem.tell() == real.tell()
        assert np.array_equal(mem.read(-1), real.read(-1, dtype="float32", always_2d=True))


def test_protocol_line_names_model_revision_rate_window_and_rules(tiny_unfused, tiny_fused, msclap_2023):
    unfused = get_scorer(str(tiny_unfused), device="cpu")
    line = humanclap.protocol(unfused)
    assert unfused.info.model_id in line and unfused.info.revision in line
    assert line.startswith("CLAPScore = max(cos, 0)") and "16000 Hz" in line and "window 1 s" in line
    assert "centre-cropped" in line and "repeat-padded" in line and "fp32" in line
    assert "raw cosine" in humanclap.protocol(unfused, raw_cosine=True)
    assert "fused" in humanclap.protocol(str(tiny_fused), device="cpu")
    ms = humanclap.protocol(str(msclap_2023), device="cpu")
    assert "44100 Hz" in ms and "tiled and cut" in ms
    from humanclap.scoring.citation import protocol_line

    assert protocol_line(unfused.info.as_dict(), dtype="fp32", family="laion") == line  # meta.json's form


def test_readme_training_loop_snippet_runs(tiny_unfused):
    """The README's "In your training loop" code, with the tiny model for the hub id."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## In your training loop", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], flags=re.S)
    assert blocks, "README: no python block under 'In your training loop'"
    code = "\n".join(blocks).replace('"sarulab-speech/human-clap-wsce-mae"', repr(str(tiny_unfused)))
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own README
    assert "scores" in scope and scope["scores"].shape == (4,)
