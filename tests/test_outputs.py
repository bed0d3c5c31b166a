"""The output contract (humanclap.outputs): what a command may write, locks, unique swap
names, and the identity record every reuse decision compares."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

from humanclap.errors import UsageError
from humanclap.io import atomic_dir
from humanclap.outputs import (
    LOCK,
    MARKER,
    OutputLocked,
    claim_folder,
    describe_differences,
    file_lock_path,
    identity_differences,
    output_lock,
    read_marker,
)


def test_new_and_empty_folders_are_claimed_and_marked(tmp_path):
    for folder in (tmp_path / "new" / "deep", tmp_path / "empty"):
        if folder.name == "empty":
            folder.mkdir()
        with claim_folder(folder, "evaluate") as run:
            assert run.previous is None
            assert (folder / LOCK).exists()
            run.record("report.md")
        assert not (folder / LOCK).exists()  # the lock goes with the run
        assert read_marker(folder)["command"] == "evaluate"
        assert read_marker(folder)["files"] == ["report.md"]


def test_a_foreign_folder_is_refused_untouched(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "data").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(UsageError, match=r"not empty and holds no humanclap train run .*data, notes\.txt"):
        with claim_folder(tmp_path, "train"):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # not even a lock was created


def test_another_commands_run_is_refused(tmp_path):
    with claim_folder(tmp_path, "synth"):
        pass
    with pytest.raises(UsageError, match="holds a humanclap synth run, not a evaluate run"):
        with claim_folder(tmp_path, "evaluate"):
            pass


def test_overwrite_deletes_only_what_the_earlier_run_recorded(tmp_path):
    with claim_folder(tmp_path, "evaluate") as run:
        run.record("report.md", "plots")
        (tmp_path / "report.md").write_text("old")
        (tmp_path / "plots").mkdir()
        (tmp_path / "plots" / "a.png").write_bytes(b"x")
        run.set_identity({"model": {"revision": "abc"}})
    (tmp_path / "user.txt").write_text("added later by the user")
    with claim_folder(tmp_path, "evaluate") as run:  # without --overwrite: the caller decides
        assert run.previous["identity"] == {"model": {"revision": "abc"}}
        assert (tmp_path / "report.md").exists()
    with claim_folder(tmp_path, "evaluate", overwrite=True) as run:
        assert run.previous is None and run.files == []
    assert not (tmp_path / "report.md").exists() and not (tmp_path / "plots").exists()
    assert (tmp_path / "user.txt").read_text() == "added later by the user"


def test_a_marker_cannot_make_overwrite_delete_outside_the_folder(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    run_dir = tmp_path / "run"
    with claim_folder(run_dir, "evaluate") as run:
        run.record("../victim.txt")
    marker = json.loads((run_dir / MARKER).read_text())  # a hand-edited marker
    marker["files"] += [str(victim), "."]
    (run_dir / MARKER).write_text(json.dumps(marker))
    with claim_folder(run_dir, "evaluate", overwrite=True):
        pass
    assert victim.read_text() == "keep"


def _hold(folder: str, started, release) -> None:
    with claim_folder(folder, "train"):
        started.set()
        release.wait(30)


def test_a_second_run_on_a_locked_output_is_refused_but_other_outputs_are_free(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    started, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(tmp_path / "a"), started, release))
    holder.start()
    try:
        assert started.wait(60)
        with pytest.raises(OutputLocked, match="being written by another humanclap run"):
            with claim_folder(tmp_path / "a", "train"):
                pass
        with claim_folder(tmp_path / "b", "train"):  # a different output: no waiting
            pass
    finally:
        release.set()
        holder.join(60)
    with claim_folder(tmp_path / "a", "train"):  # free again once the first run ended
        pass


def test_file_lock_beside_an_output(tmp_path):
    out = tmp_path / "scores.csv"
    lock = file_lock_path(out)
    assert lock.name == ".scores.csv.lock"
    code = (
        "import sys, time; from pathlib import Path; from humanclap.outputs import output_lock\n"
        "with output_lock(Path(sys.argv[1]), 'x'):\n    print('held', flush=True); time.sleep(30)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(OutputLocked):
            with output_lock(lock, f"-o {out}"):
                pass
    finally:
        proc.kill()
        proc.wait()
    with output_lock(lock, f"-o {out}"):  # a killed holder's lock is free (the kernel drops it)
        pass
    assert not lock.exists()


def test_atomic_dir_never_touches_a_users_dot_old(tmp_path):
    final = tmp_path / "mymodel"
    users = tmp_path / "mymodel.old"
    users.mkdir()
    (users / "weights.bin").write_bytes(b"precious")
    for text in ("one", "two"):
        with atomic_dir(final) as tmp:
            (tmp / "f.txt").write_text(text)
    assert (final / "f.txt").read_text() == "two"
    assert (users / "weights.bin").read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mymodel", "mymodel.old"]


def test_identity_differences_name_each_field():
    then = {"model": {"revision": "abc", "dtype": "fp32"}, "data": {"sha256": "1" * 64}}
    now = {"model": {"revision": "abd", "dtype": "fp32"}, "data": {"sha256": "1" * 64, "audio_root": "/x"}}
    diffs = identity_differences(then, now)
    assert diffs == [("data.audio_root", None, "/x"), ("model.revision", "abc", "abd")]
    text = describe_differences(diffs)
    assert "model.revision: abc then, abd now" in text and "data.audio_root: null then, /x now" in text
    assert identity_differences(now, now) == []
    assert identity_differences({"a": (1, 2)}, {"a": [1, 2]}) == []  # as read back from JSON


def test_marker_name_is_hidden():
    assert MARKER.startswith(".") and LOCK.startswith(".")
    assert Path(MARKER).suffix == ".json"


def test_a_users_file_with_the_lock_name_is_never_removed(tmp_path):
    out = tmp_path / "scores.csv"
    users = file_lock_path(out)
    users.write_text("my notes")
    with pytest.raises(UsageError, match="is not a humanclap lock"):
        with output_lock(users, f"-o {out}"):
            pass
    assert users.read_text() == "my notes"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK).write_text("mine too")
    with pytest.raises(UsageError, match="is not a humanclap lock"):
        with claim_folder(tmp_path / "run", "evaluate"):
            pass
    assert (tmp_path / "run" / LOCK).read_text() == "mine too"
    users.write_bytes(b"")  # an empty one is what a run killed right after creating it leaves
    with output_lock(users, f"-o {out}"):
        pass
    assert not users.exists()
