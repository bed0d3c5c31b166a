"""Decoder worker processes: decode + resample + features of audio files, in order.

A GPU embeds clips far faster than one CPU thread decodes them (about 0.04 s a 10 s clip),
so ``humanclap score --workers N`` spreads that stage over ``N`` processes
(:class:`DecoderPool`). What it guarantees:

* **order**: batches come back in the order they were given, each whole: every file of a
  batch gets a result (features, a cached vector or an :class:`AudioError`);
* **bounded memory**: at most ``max_files`` files are submitted and not yet consumed;
* **a dead worker costs one file at most**: each worker has its own pipe and one file at a
  time, so a worker that dies (a segfault in a codec, SIGKILL from the OOM killer or a
  user) is replaced and *that* file alone is decoded again; a file whose worker dies
  ``MAX_TRIES`` times gets an :class:`AudioError` ("the decoder process crashed on this
  file ... (killed by signal 9 (SIGKILL) ...)"). A file that takes longer than ``timeout``
  seconds gets its error and its worker is killed. Nothing here can hang or stop the job.

Why not ``concurrent.futures.ProcessPoolExecutor``: its workers share one result pipe. A
worker killed while writing a result (features are hundreds of KiB: that takes a while)
leaves half a message in it, and the executor's manager thread waits forever for the rest
(the run hung, then never exited: interpreter exit joins that thread). A broken executor
also fails every task in flight, which needed generation bookkeeping that lost files.
Here a pipe has one writer: a half message ends in EOF, and only that worker's file is
concerned.

Workers are started with ``forkserver`` (``spawn`` where there is none): forking a process
that holds torch threads / CUDA state is unsafe. As with any ``spawn``/``forkserver`` pool, a
Python *script* that starts a job with workers needs an ``if __name__ == "__main__":``
guard; without it the workers cannot start and the run is refused with that hint. Each worker
runs :func:`decode_file`, a plain
function of a picklable *featurizer* (:func:`featurizer_of`), never the model.

Test hooks: a path containing the value of ``HUMANCLAP_TEST_DECODER_CRASH`` (an environment
variable, unset in normal use) makes the worker ``os._exit(1)`` as a segfault would; one
containing ``HUMANCLAP_TEST_DECODER_KILL``'s makes it SIGKILL itself as the OOM killer
would; one containing ``HUMANCLAP_TEST_DECODER_HANG``'s makes it sleep for an hour. They
are read when a :class:`DecoderPool` is made, in the parent process.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from multiprocessing.connection import wait as wait_ready
from typing import Any

from humanclap.errors import AudioError, UsageError
from humanclap.scoring.audio import audio_bytes_hash
from humanclap.scoring.families import family_of_scorer
from humanclap.scoring.inputs import check_workers

CRASH_HOOK_ENV = "HUMANCLAP_TEST_DECODER_CRASH"
KILL_HOOK_ENV = "HUMANCLAP_TEST_DECODER_KILL"
HANG_HOOK_ENV = "HUMANCLAP_TEST_DECODER_HANG"
STARTUP_TIMEOUT_S = 120.0  # spawning + imports; minutes only on a badly overloaded machine
DEFAULT_TIMEOUT_S = 300.0  # one file: a 1-hour fused clip decodes in well under this
MAX_TRIES = 3  # a file is decoded at most this often when its worker dies under it
# Workers that die before they are ready, one after another: something kills every new one
# (a memory limit too low for the imports), so the run is refused instead of looping.
MAX_START_DEATHS = 5
POLL_S = 0.5  # the manager's longest sleep; a result, a death or a new file wakes it sooner

# What a worker returns for one file: ("ok", features, is_longer, digest) or
# ("err", AudioError) or ("cached", digest) when the main process should look it up.
Result = tuple


def default_workers(device: str, cores: int | None = None) -> int:
    """``--workers`` when not given. On an accelerator the model waits on decoding: up to 4
    processes, leaving a core for the main one. On a CPU the model's forward needs the
    cores itself: 0 (decode in turn with the forwards, in the main thread) up to 4 cores,
    then a quarter of them (at most 4)."""
    cores = cores or os.cpu_count() or 1
    if device.split(":")[0] in ("cuda", "mps", "xpu"):
        return max(1, min(4, cores - 1))
    return 0 if cores <= 4 else min(4, cores // 4)


def featurizer_of(scorer: Any) -> Callable[[str], tuple[Any, bool]] | None:
    """A picklable ``path -> (features, is_longer)`` for worker processes, or None when the
    scorer has no stand-alone feature extractor (then decoding stays in-process)."""

    family = family_of_scorer(scorer)
    return None if family is None else family.featurizer_for(scorer)


def hook_markers() -> tuple[str, str, str]:
    """The crash / kill / hang markers of the test hooks, read in the *parent*: a
    forkserver started earlier would not see an environment variable set since."""
    return tuple(os.environ.get(env, "") for env in (CRASH_HOOK_ENV, KILL_HOOK_ENV, HANG_HOOK_ENV))


def decode_file(
    featurizer: Callable[[str], tuple[Any, bool]], path: str, want_hash: bool, hooks: tuple[str, ...] = ("", "", "")
) -> Result:
    """Worker body: the file's content hash (for the cache) and features, or its error."""
    crash, kill, hang = hooks
    if crash and crash in path:
        os._exit(1)  # what a segfaulting codec looks like from the parent
    if kill and kill in path:
        os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does
    if hang and hang in path:
        time.sleep(3600)  # what a codec stuck in a loop looks like
    digest = ""
    if want_hash:
        try:
            digest = audio_bytes_hash(path)
        except (AudioError, OSError, RuntimeError, ValueError):
            digest = ""  # the featurizer below reports the same problem the uncached run does
    try:
        feats, longer = featurizer(path)
    except AudioError as exc:
        return ("err", exc)
    except (OSError, RuntimeError, ValueError) as exc:
        return ("err", AudioError(f"{path}: unreadable audio ({type(exc).__name__}: {exc})"))
    return ("ok", feats, bool(longer), digest)


def serve(conn: Any, featurizer: Callable, hooks: tuple[str, ...]) -> None:
    """A worker process: say ready, then decode one path at a time until told to stop."""
    # Ctrl-C reaches the whole process group: the parent handles it and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn.send(("ready",))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if task is None:
            return
        path, want_hash = task
        conn.send(decode_file(featurizer, path, want_hash, hooks))


def _context():
    """``forkserver`` where there is one (Linux, macOS): workers fork from a small server
    process that imported the decoding modules once, so a restart after a crash costs
    milliseconds; ``spawn`` elsewhere. Never plain ``fork``: the parent holds torch threads."""
    try:
        ctx = multiprocessing.get_context("forkserver")
    except ValueError:
        return multiprocessing.get_context("spawn")
    ctx.set_forkserver_preload(["humanclap.scoring.decode", "transformers.models.clap.feature_extraction_clap"])
    return ctx


def _hash_only(path: str) -> str:
    try:
        return audio_bytes_hash(path)
    except (AudioError, OSError, RuntimeError, ValueError):
        return ""


def death_of(exitcode: int | None) -> str:
    """How a worker process ended, in words (a negative exit code is the signal)."""
    if exitcode is None:
        return "it stopped answering"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "an unknown signal"
        why = ", what the out-of-memory killer sends" if -exitcode == signal.SIGKILL else ""
        return f"killed by signal {-exitcode} ({name}{why})"
    return f"exit code {exitcode}"


class _Task:
    """One file to decode: its future (set by the manager thread) and how often a worker
    died while decoding it."""

    __slots__ = ("path", "want_hash", "future", "tries")

    def __init__(self, path: str, want_hash: bool):
        self.path, self.want_hash = path, want_hash
        self.future: Future = Future()
        self.tries = 0


class _Worker:
    """A worker process, its end of the pipe and the file it is decoding (None: idle)."""

    __slots__ = ("proc", "conn", "ready", "task", "since")

    def __init__(self, proc: Any, conn: Any):
        self.proc, self.conn = proc, conn
        self.ready = False
        self.task: _Task | None = None
        self.since = time.monotonic()  # started, or given its current file


class DecoderPool:
    """An ordered pool of decoder processes; see the module docstring.

    ``lookup(digest)`` (optional): the cache; a file whose content hash it knows is not
    decoded, its result is ``("cached", vector)``. ``restarts``: workers replaced after
    they died or hung."""

    def __init__(
        self,
        featurizer: Callable,
        workers: int,
        max_files: int = 64,
        timeout: float = DEFAULT_TIMEOUT_S,
        lookup: Callable[[str], Any] | None = None,
    ):
        if workers < 1:
            raise ValueError(f"DecoderPool needs at least 1 worker, got {workers}")
        check_workers(workers)
        self.featurizer, self.workers, self.timeout = featurizer, workers, timeout
        self.max_files = max(max_files, 2 * workers)
        self.lookup = lookup
        self.restarts = 0
        self.hooks = hook_markers()
        # Shared with the manager thread (under _lock): the files waiting for a worker.
        self._queue: deque[_Task] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._fatal: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = multiprocessing.Pipe(duplex=False)
        # Owned by the manager thread (by close() once that thread has ended).
        self._live: list[_Worker] = []
        self._start_deaths = 0

    # -- the main thread's side -----------------------------------------------------------
    def _submit(self, path: str) -> Future | Result:
        """A cached result, or the future of the file's result."""
        if self.lookup is not None:
            digest = _hash_only(path)  # reading bytes is cheap next to decoding them
            cached = self.lookup(digest) if digest else None
            if cached is not None:
                return ("cached", cached)
        if self._fatal is not None:
            raise self._fatal
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._manage, name="humanclap-decoders", daemon=True
            )  # never keeps the interpreter alive
            self._thread.start()
        task = _Task(path, self.lookup is not None)
        with self._lock:
            self._queue.append(task)
        self._wake()
        return task.future

    def _wake(self) -> None:
        try:
            self._wake_w.send_bytes(b"")
        except OSError:
            pass  # closed: the pool is shutting down

    def _result(self, job: Future | Result) -> Result:
        """Wait for one file's result. The manager thread sets every future (a result, the
        file's error, or the error that stopped the pool); should it end without doing so
        (a bug), this raises instead of waiting forever."""
        if not isinstance(job, Future):
            return job
        while True:
            try:
                return job.result(timeout=POLL_S)
            except FutureTimeout:
                if self._thread is None or not self._thread.is_alive():
                    if self._fatal is not None:
                        raise self._fatal from None  # it stopped as this file was queued
                    raise RuntimeError("the decoder pool's manager thread ended with a file still in flight") from None

    def close(self, kill: bool = False) -> None:
        """Stop the manager thread and the workers: politely, or (``kill``: after an error
        or Ctrl-C) at once."""
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for w in list(self._live):
            if not kill:
                try:
                    w.conn.send(None)
                    w.proc.join(timeout=5)
                except (OSError, ValueError):
                    pass
            self._discard(w)
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> "DecoderPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close(kill=exc[0] is not None)  # do not wait on workers after an error or Ctrl-C

    # -- batches --------------------------------------------------------------------------
    def run(self, batches: Iterable[tuple[Any, list[str]]]) -> Iterator[tuple[Any, dict[str, Result]]]:
        """For each ``(tag, paths)`` in order, yield ``(tag, {path: result})`` with a result
        for every path.

        Files are submitted ahead while fewer than ``max_files`` are in flight (always the
        next batch at least), so workers stay busy while the caller embeds."""
        source = iter(batches)
        inflight: deque[tuple[Any, list[tuple[str, Any]]]] = deque()
        queued = 0
        exhausted = False
        while True:
            while not exhausted and (not inflight or queued < self.max_files):
                try:
                    tag, paths = next(source)
                except StopIteration:
                    exhausted = True
                    break
                jobs = [(p, self._submit(p)) for p in dict.fromkeys(paths)]
                inflight.append((tag, jobs))
                queued += len(jobs)
            if not inflight:
                return
            tag, jobs = inflight.popleft()
            queued -= len(jobs)
            yield tag, {path: self._result(job) for path, job in jobs}

    # -- the manager thread ---------------------------------------------------------------
    def _manage(self) -> None:
        """Start workers, hand them files, collect results, replace dead or hung workers."""
        try:
            ctx = _context()
            while not self._stop.is_set():
                self._spawn(ctx)
                self._dispatch()
                self._collect()
                self._check_clocks()
        except BaseException as exc:  # noqa: BLE001 - handed to every waiter, never lost
            self._fail_all(exc)

    def _spawn(self, ctx: Any) -> None:
        while len(self._live) < self.workers and not self._stop.is_set():
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=serve, args=(child, self.featurizer, self.hooks), name="humanclap-decoder", daemon=True
            )
            try:
                proc.start()
            except OSError as exc:
                # Killed before it read its start-up data (BrokenPipeError), or no memory or
                # processes left: a start death, as one after start().
                parent.close()
                self._start_deaths += 1
                if self._start_deaths >= MAX_START_DEATHS:
                    raise self._cannot_start(f"{type(exc).__name__}: {exc}") from None
                continue
            finally:
                child.close()  # the worker holds the only writing end: its death is an EOF here
            self._live.append(_Worker(proc, parent))

    def _dispatch(self) -> None:
        for w in self._live:
            if not w.ready or w.task is not None:
                continue
            with self._lock:
                task = self._queue.popleft() if self._queue else None
            if task is None:
                return
            try:
                w.conn.send((task.path, task.want_hash))
            except OSError:  # died since: the file goes back first in line, no try counted
                with self._lock:
                    self._queue.appendleft(task)
                continue  # _collect sees the death
            w.task, w.since = task, time.monotonic()

    def _collect(self) -> None:
        """Wait for a message, a death or a wake-up (at most POLL_S) and handle them."""
        by_conn = {w.conn: w for w in self._live}
        by_sentinel = {w.proc.sentinel: w for w in self._live}
        ready = wait_ready([self._wake_r, *by_conn, *by_sentinel], timeout=POLL_S)
        if self._wake_r in ready:
            while self._wake_r.poll():
                self._wake_r.recv_bytes()
        for w in {*(by_conn[r] for r in ready if r in by_conn), *(by_sentinel[r] for r in ready if r in by_sentinel)}:
            self._read(w)

    def _read(self, w: _Worker) -> None:
        """Every message the worker has sent, then its death if it ended."""
        try:
            while w.conn.poll():
                msg = w.conn.recv()  # a pipe with one writer: a half message ends in EOF
                if msg[0] == "ready":
                    w.ready, w.since, self._start_deaths = True, time.monotonic(), 0
                elif w.task is not None:
                    w.task.future.set_result(msg)
                    w.task = None
        except (EOFError, OSError):
            pass
        else:
            if w.proc.is_alive():
                return
        self._died(w)

    def _died(self, w: _Worker) -> None:
        """Replace a dead worker; its file is decoded again, or after MAX_TRIES is its error."""
        self._discard(w)
        self.restarts += 1
        how = death_of(w.proc.exitcode)
        if not w.ready:
            self._start_deaths += 1
            exit_code = w.proc.exitcode
            if (exit_code is not None and exit_code > 0) or self._start_deaths >= MAX_START_DEATHS:
                raise self._cannot_start(f"a worker died as it started: {how}")
        task = w.task
        if task is None:
            return
        task.tries += 1
        if task.tries >= MAX_TRIES:
            task.future.set_result(self._crashed(task, how))
        else:
            with self._lock:
                self._queue.appendleft(task)  # first in line: its batch is the one waited on

    def _check_clocks(self) -> None:
        """A file over ``timeout`` is that file's error (its worker is killed); a worker not
        ready after STARTUP_TIMEOUT_S stops the run."""
        now = time.monotonic()
        for w in list(self._live):
            if not w.ready and now - w.since > STARTUP_TIMEOUT_S:
                raise self._cannot_start(f"no answer in {STARTUP_TIMEOUT_S:.0f} s")
            if w.task is not None and now - w.since > self.timeout:
                task, w.task = w.task, None
                task.future.set_result(self._too_slow(task.path))
                self._discard(w)
                self.restarts += 1

    def _discard(self, w: _Worker) -> None:
        """Kill (if still alive) and forget a worker, its pipe closed."""
        if w in self._live:
            self._live.remove(w)
        if w.proc.is_alive():
            w.proc.kill()
        w.proc.join(timeout=5)
        w.conn.close()

    def _fail_all(self, exc: BaseException) -> None:
        """Stop: every file still waiting gets ``exc`` (the main thread raises it)."""
        self._fatal = exc
        with self._lock:
            tasks = [*self._queue, *(w.task for w in self._live if w.task is not None)]
            self._queue.clear()
        for task in tasks:
            if not task.future.done():
                task.future.set_exception(exc)
        for w in list(self._live):
            self._discard(w)

    # -- the errors -----------------------------------------------------------------------
    def _cannot_start(self, why: str) -> UsageError:
        return UsageError(
            f"cannot start {self.workers} decoder worker process(es) ({why}); decode "
            "in the main process with --workers 0 (a Python script that starts a job "
            "with workers needs an `if __name__ == \"__main__\":` guard)"
        )

    @staticmethod
    def _crashed(task: _Task, how: str) -> Result:
        return (
            "err",
            AudioError(
                f"{task.path}: the decoder process crashed on this file "
                f"{task.tries} times (last: {how}): a codec fault or out of "
                "memory; check or re-export the file, or score it with "
                "--workers 0"
            ),
        )

    def _too_slow(self, path: str) -> Result:
        return (
            "err",
            AudioError(
                f"{path}: decoding took longer than {self.timeout:.0f} s; check the file (or score it with --workers 0)"
            ),
        )
