"""The CLI's one error model, for every command, in-process and without real work.

Each command's library call is replaced (monkeypatch) by one that raises: a
``HumanclapError`` must exit with its ``exit_code`` and print exactly one line,
``humanclap COMMAND: error: MESSAGE``; any other exception is a bug and must exit 3 with
the traceback and the report line, never 2.
"""

from __future__ import annotations

import pytest

from humanclap.cli import main
from humanclap.cli.flags import EXIT_CODES_TAIL
from humanclap.cli.main import COMMANDS
from humanclap.errors import (
    EXIT_INTERNAL,
    REPORT_BUGS,
    DatasetError,
    HumanclapError,
    ModelLoadError,
    TrainingError,
    UsageError,
)


@pytest.fixture
def argv_of(tmp_path):
    """command -> (argv that reaches the library call, dotted name of that call)."""
    manifest = tmp_path / "m.csv"
    manifest.write_text("audio,text\nclip.wav,a dog barks\n")
    return {
        "score": (
            ["score", str(manifest), "--model", str(tmp_path / "m")],
            "humanclap.scoring.clap.scorer.CLAPScorer.from_pretrained",
        ),
        "evaluate": (
            ["evaluate", "--data", "relate:R", "-o", str(tmp_path / "o")],
            "humanclap.evaluation.workflow.run_evaluation",
        ),
        "train": (
            ["train", "--model", "m", "--data", "d.csv", "--output-dir", str(tmp_path / "t")],
            "humanclap.training.trainer.fine_tune",
        ),
        "reproduce": (
            ["reproduce", "--relate", "R", "-o", str(tmp_path / "r")],
            "humanclap.recipes.reproduce.reproduce",
        ),
        "synth": (["synth", "-o", str(tmp_path / "s")], "humanclap.synth.dataset.generate"),
        "demo": (["demo", "-o", str(tmp_path / "d")], "humanclap.recipes.demo.run_demo"),
        "demo --rebuild-base": (
            ["demo", "--rebuild-base", str(tmp_path / "b")],
            "humanclap.recipes.demo_base.rebuild_base",
        ),
        "convert": (
            ["convert", str(tmp_path / "c.pt"), str(tmp_path / "c")],
            "humanclap.scoring.clap.laion_convert.convert_laion_checkpoint",
        ),
        "merge": (["merge", str(tmp_path / "out.csv")], "humanclap.scoring.parts.merge_parts"),
        "compare": (
            ["compare", str(manifest), "-o", str(tmp_path / "cmp")],
            "humanclap.evaluation.compare_workflow.run_compare",
        ),
        "rerank": (
            ["rerank", str(manifest), "-o", str(tmp_path / "best.csv")],
            "humanclap.evaluation.rerank.run_rerank",
        ),
        "stack": (
            ["stack", str(tmp_path / "predictions.csv"), "-o", str(tmp_path / "st")],
            "humanclap.evaluation.stack.fit_stack",
        ),
    }


CASES = [
    "score",
    "evaluate",
    "train",
    "reproduce",
    "synth",
    "demo",
    "demo --rebuild-base",
    "convert",
    "merge",
    "compare",
    "rerank",
    "stack",
]


def raiser(exc: BaseException):
    def fake(*args, **kwargs):
        raise exc

    return fake


def test_every_command_is_covered():
    assert {c.split()[0] for c in CASES} == set(COMMANDS)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(
    "error,code",
    [
        (UsageError("bad flag; pass a good one"), 2),
        (DatasetError("no REL.csv; pass relate:DIR"), 2),
        (ModelLoadError("cannot load m; pass a folder"), 2),
        (TrainingError("diverged at epoch 3"), 1),
    ],
)
def test_humanclap_errors_map_to_their_code_and_one_prefix(case, error, code, argv_of, monkeypatch, capsys):
    argv, target = argv_of[case]
    monkeypatch.setattr(target, raiser(error))
    assert main(argv) == code == error.exit_code
    cap = capsys.readouterr()
    assert cap.err == f"humanclap {argv[0]}: error: {error}\n", cap.err  # one line, no traceback
    assert cap.out == ""


@pytest.mark.parametrize("case", CASES)
def test_an_unexpected_exception_is_an_internal_error(case, argv_of, monkeypatch, capsys):
    argv, target = argv_of[case]
    # A ValueError from a bug must not pass for a usage error (exit 2), as it used to.
    monkeypatch.setattr(target, raiser(ValueError("index out of step")))
    assert main(argv) == EXIT_INTERNAL == 3
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "index out of step" in err
    last = err.strip().splitlines()[-1]
    assert last == (f"humanclap {argv[0]}: internal error: ValueError: index out of step; {REPORT_BUGS}")


def test_interrupt_and_broken_pipe(argv_of, monkeypatch, capsys):
    argv, target = argv_of["evaluate"]
    monkeypatch.setattr(target, raiser(KeyboardInterrupt()))
    assert main(argv) == 130
    assert capsys.readouterr().err == "interrupted\n"
    monkeypatch.setattr(target, raiser(BrokenPipeError()))
    # the reader went away: 128 + SIGPIPE, nothing printed (test_hostile_inputs runs a real pipe)
    assert main(argv) == 141
    assert capsys.readouterr().err == ""


def test_argparse_errors_stay_exit_2_with_argparse_message(capsys):
    assert main(["score"]) == 2
    assert "humanclap score: error: the following arguments are required: manifest" in capsys.readouterr().err
    assert main(["evaluate", "--data", "x", "-o", "o", "--n-boot", "many"]) == 2
    assert "invalid int value: 'many'" in capsys.readouterr().err
    assert main([]) == 2  # no command: the help, on stderr


@pytest.mark.parametrize(
    "argv,message",
    [
        (["evaluate", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["evaluate", "--n-boot", "-1"], "--n-boot must be 0 or more"),
        (["evaluate", "--label", "a", "--label", "b"], "2 --label for 1 --model"),
        (["evaluate", "--device", "no-such-device"], "--device 'no-such-device' not understood"),
        (["evaluate", "--device", "cpu", "--dtype", "fp16"], "fp16 is not supported on CPU"),
        (["demo", "--n-boot", "-1"], "--n-boot must be 0 or more"),
        (["demo", "--base", "nowhere"], "--base nowhere is not a CLAP checkpoint folder"),
        (["demo", "--extended", "--rebuild-base", "b"], "--rebuild-base runs no demo"),
    ],
)
def test_flag_checks_are_usage_errors(argv, message, tmp_path, capsys):
    """Checked before any data or model is touched (the data spec here does not exist)."""
    out = ["-o", str(tmp_path / "o")]
    full = [*argv, *out] if argv[0] == "demo" else [*argv, "--data", "relate:nowhere", *out]
    assert main(full) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"humanclap {argv[0]}: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_unavailable_cuda_is_a_usage_error(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main(["evaluate", "--data", "relate:nowhere", "-o", str(tmp_path), "--device", "cuda"]) == 2
    assert "CUDA is not available; use --device cpu" in capsys.readouterr().err


def test_thin_commands_pass_their_flags_through(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_demo(output_dir, **kwargs):
        seen.update(output_dir=output_dir, **kwargs)
        kwargs["printer"]("the table")

    monkeypatch.setattr("humanclap.recipes.demo.run_demo", fake_demo)
    assert main(["demo", "-o", str(tmp_path), "--size", "small", "--seed", "2", "--n-boot", "7", "--no-progress"]) == 0
    assert seen["output_dir"] == str(tmp_path) and seen["size"] == "small" and seen["seed"] == 2
    assert seen["n_boot"] == 7 and seen["progress"] is False and seen["base"] is None
    assert seen["extended"] is False
    assert capsys.readouterr().out == "the table\n"
    assert main(["demo", "-o", str(tmp_path), "--extended"]) == 0 and seen["extended"] is True
    capsys.readouterr()

    monkeypatch.setattr(
        "humanclap.recipes.demo_base.rebuild_base", lambda out_dir, printer: seen.update(rebuild=out_dir)
    )
    assert main(["demo", "--rebuild-base", str(tmp_path / "b")]) == 0
    assert seen["rebuild"] == str(tmp_path / "b")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_epilog_documents_the_exit_codes(command, capsys):
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "exit codes: 0 " in text and " 2 usage error" in text and EXIT_CODES_TAIL in text


def test_library_errors_derive_from_the_base():
    for cls in (UsageError, DatasetError, ModelLoadError, TrainingError):
        assert issubclass(cls, HumanclapError)
