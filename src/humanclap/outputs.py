"""The output contract and the result identity: what any humanclap command may write, and
what makes two results "the same". Every command that writes (score, merge, evaluate, train,
reproduce, synth, demo, convert) goes through this module.

**The output contract.**

* A command writes into a path that is new, empty, or holds *its own* earlier run: a folder
  with the marker :data:`MARKER` it wrote (naming the command and the files it wrote), or an
  output file with the ``OUT.meta.json`` that ``score``/``merge`` write beside it.
* Anything else is refused (exit 2), naming what is there. A command never deletes or
  replaces a name it did not create, with or without ``--overwrite``: ``--overwrite``
  replaces its own earlier run only, and deletes exactly the names that run's marker lists.
* Temporary and swap names are unique per run (:func:`unique_sibling`), never a predictable
  ``.old`` that could be someone's folder.
* A lock (:func:`output_lock`: ``.humanclap.lock`` in a folder, ``.NAME.lock`` beside a
  file) keeps two runs out of one output; a second run is refused at once. Two runs that
  write different outputs never wait for each other.

**The result identity** is a nested record (``{"model": {...}, "data": {...},
"settings": {...}}``) that every reuse decision compares with :func:`identity_differences`;
a difference is refused by the caller, naming it (:func:`describe_differences`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from humanclap import __version__
from humanclap.errors import HumanclapError, UsageError
from humanclap.io import json_safe, write_json

MARKER = ".humanclap-run.json"
LOCK = ".humanclap.lock"
LOCK_TAG = b"humanclap lock\n"  # what a lock file holds: a file of that name without it is not ours
# Names a run may find in its own folder besides what its marker lists.
_OWN_NAMES = {MARKER, LOCK}


# -- locks ---------------------------------------------------------------------------
class OutputLocked(UsageError):
    """Another humanclap run holds the output's lock."""


@contextmanager
def output_lock(lock_file: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (created if needed, removed afterwards) or
    raise :class:`OutputLocked` at once when another process holds it.

    The classic race of removable lock files (B opens the file, A unlinks it, C creates a
    new one: B and C both "hold" it) is closed by checking, once the lock is taken, that the
    name still names the inode locked; otherwise the lock is taken again."""
    try:
        # lazy: fcntl is POSIX-only
        import fcntl
    except ImportError:  # not POSIX: no advisory locks; the rest of the contract still holds
        yield
        return
    while True:
        try:
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(
                f"cannot create the lock {lock_file} for {what}: {exc.strerror or exc}; choose another output"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise OutputLocked(
                    f"{what} is being written by another humanclap run (it holds "
                    f"{lock_file}); wait for that run to finish, or choose "
                    "another output"
                ) from None
            raise
        try:
            same = os.stat(lock_file).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # locked a name that another run has just removed: take the new one
    # The name may be a file of the user's (not a lock any run of ours wrote): never remove
    # or overwrite it. Ours hold LOCK_TAG, or nothing when a run died between open and write.
    content = os.pread(fd, len(LOCK_TAG) + 1, 0)
    if content and content != LOCK_TAG:
        os.close(fd)
        raise UsageError(
            f"{lock_file} exists and is not a humanclap lock; humanclap uses that name to lock "
            f"{what}: move that file away, or choose another output"
        )
    os.pwrite(fd, LOCK_TAG, 0)
    try:
        yield
    finally:
        try:
            os.unlink(lock_file)
        except OSError:
            pass
        os.close(fd)


def file_lock_path(output: Path) -> Path:
    """The lock beside an output file: ``.NAME.lock``."""
    return output.with_name(f".{output.name}.lock")


# -- unique names --------------------------------------------------------------------
def unique_sibling(path: Path, tag: str) -> Path:
    """A name beside ``path`` that no one else uses: ``.NAME.TAG-PID-RANDOM``."""
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


# -- folders -------------------------------------------------------------------------
def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker of a humanclap run in ``folder``, or None when there is none (or it is
    not a readable JSON object naming a command: then the folder is not provably ours)."""
    path = folder / MARKER
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(marker, dict) or not isinstance(marker.get("command"), str):
        return None
    return marker


def _listing(folder: Path, limit: int = 5) -> str:
    names = sorted(p.name for p in folder.iterdir() if p.name not in _OWN_NAMES)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _foreign(folder: Path) -> bool:
    return any(p.name not in _OWN_NAMES for p in folder.iterdir())


@dataclass
class RunFolder:
    """A folder a command has claimed (see :func:`claim_folder`). ``previous`` is the
    marker of its own earlier run there (None when the folder was new or empty)."""

    folder: Path
    command: str
    previous: dict[str, Any] | None
    files: list[str] = field(default_factory=list)
    identity: dict[str, Any] | None = None

    def record(self, *names: str | Path) -> None:
        """Add written names (relative to the folder) to the marker, so that a later
        ``--overwrite`` deletes exactly them. Call it *before* writing a name: a run killed
        while writing still leaves a marker that owns the half-written file."""
        for name in names:
            rel = Path(name)
            rel = rel.relative_to(self.folder) if rel.is_absolute() else rel
            if str(rel) not in self.files:
                self.files.append(str(rel))
        self.save()

    def set_identity(self, identity: Mapping[str, Any]) -> None:
        """Record the identity of the result the folder holds (compared on reuse)."""
        self.identity = json.loads(json.dumps(json_safe(dict(identity))))
        self.save()

    def save(self) -> None:
        write_json(
            self.folder / MARKER,
            {"command": self.command, "humanclap_version": __version__, "identity": self.identity, "files": self.files},
        )

    def remove_own(self) -> None:
        """Delete what the marker says this command wrote here (its earlier run), nothing
        else; names that escape the folder are ignored."""
        root = self.folder.resolve()
        for name in self.files:
            path = self.folder / name
            try:
                inside = path.resolve().parent == root or root in path.resolve().parents
            except OSError:
                continue
            if not inside or path.resolve() == root:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        self.files = []
        self.identity = None
        self.save()


def check_folder(
    folder: Path,
    command: str,
    what: str = "--output-dir",
    error: type[HumanclapError] = UsageError,
    accept: Iterable[str] = (),
) -> dict[str, Any] | None:
    """Refuse ``folder`` unless it is new, empty, or holds an earlier run of ``command`` (or
    of one of ``accept``); return that run's marker. Creates nothing: safe before any work."""
    if folder.exists() and not folder.is_dir():
        raise error(f"{what} {folder} is a file, not a folder; choose a new or empty folder")
    if not folder.is_dir():
        return None
    marker = read_marker(folder)
    if marker is not None:
        if marker["command"] == command or marker["command"] in set(accept):
            return marker
        raise error(
            f"{what} {folder} holds a humanclap {marker['command']} run, not a "
            f"{command} run; choose a new or empty folder"
        )
    try:
        foreign = _foreign(folder)
    except OSError as exc:
        raise error(f"cannot read {what} {folder}: {exc.strerror or exc}; choose another folder") from None
    if foreign:
        raise error(
            f"{what} {folder} is not empty and holds no humanclap {command} run (it has "
            f"{_listing(folder)}); humanclap never writes over files it did not create: "
            "choose a new or empty folder"
        )
    return None


@contextmanager
def claim_folder(
    folder: str | Path,
    command: str,
    *,
    overwrite: bool = False,
    what: str = "--output-dir",
    error: type[HumanclapError] = UsageError,
    accept: Iterable[str] = (),
) -> Iterator[RunFolder]:
    """Claim ``folder`` for a run of ``command`` for the duration of the ``with`` block: it
    must be new, empty or hold an earlier run of the same command (:func:`check_folder`),
    and it is locked (a second run is refused). With ``overwrite``, the earlier run's own
    files are deleted first; without it, the caller decides from ``run.previous`` whether to
    reuse, resume or refuse."""
    folder = Path(folder)
    check_folder(folder, command, what, error, accept)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(
            f"cannot create the output folder {folder} ({what}): {exc.strerror or exc}; choose another folder"
        ) from None
    with output_lock(folder / LOCK, f"{what} {folder}"):
        # Looked at again under the lock: another run may have claimed it in between.
        previous = check_folder(folder, command, what, error, accept)
        run = RunFolder(
            folder,
            command,
            previous,
            files=list((previous or {}).get("files") or []),
            identity=(previous or {}).get("identity"),
        )
        if overwrite and previous is not None:
            run.remove_own()
            run.previous = None
        run.save()
        yield run


# -- identity ------------------------------------------------------------------------
def _flatten(record: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(record, Mapping):
        flat: dict[str, Any] = {}
        for key, value in record.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: record}


def identity_differences(then: Mapping[str, Any] | None, now: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(field, then, now)`` for every field of two identity records that differs; a field
    missing on one side counts as a difference (``None`` on that side)."""
    a = _flatten(json.loads(json.dumps(json_safe(dict(then or {})))))
    b = _flatten(json.loads(json.dumps(json_safe(dict(now)))))
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


def describe_differences(diffs: list[tuple[str, Any, Any]], limit: int = 4) -> str:
    """``"data.sha256: 1a2b... then, 9f8e... now; ..."`` for a message."""
    parts = [f"{k}: {_short(a)} then, {_short(b)} now" for k, a, b in diffs[:limit]]
    if len(diffs) > limit:
        parts.append(f"and {len(diffs) - limit} more")
    return "; ".join(parts)
