"""Decoder worker processes: decode + resample + features of audio files, in order.

A GPU embeds clips far faster than one CPU thread decodes them (about 0.04 s a 10 s clip),
so ``humanclap score --workers N`` spreads that stage over ``N`` processes
(:class:`DecoderPool`). What it guarantees:

* **order**: batches come back in the order they were given, each whole;
* **bounded memory**: at most ``max_files`` files are submitted and not yet consumed;
* **a crash is one row's error**: a worker that dies (segfault in a codec, killed by the
  OOM killer) breaks a ``ProcessPoolExecutor`` and fails every task in flight. The pool is
  then restarted and the failed files are retried *one at a time*; the file that kills
  a worker again gets an :class:`AudioError` ("the decoder process crashed"), the others
  their normal result. A file that takes longer than ``timeout`` seconds is treated the
  same way (its worker is killed). Nothing here can hang or stop the job.

Workers are started with ``forkserver`` (``spawn`` where there is none): forking a process
that holds torch threads / CUDA state is unsafe. As with any ``spawn``/``forkserver`` pool, a
Python *script* that starts a job with workers needs an ``if __name__ == "__main__":``
guard; without it the workers cannot start and the run is refused with that hint. Each worker runs :func:`decode_file`, a plain
function of a picklable *featurizer* (:func:`featurizer_of`), never the model.

Test hooks: a path containing the value of ``HUMANCLAP_TEST_DECODER_CRASH`` (an environment
variable, unset in normal use) makes the worker ``os._exit(1)`` as a segfault would; one
containing ``HUMANCLAP_TEST_DECODER_HANG``'s makes it sleep for an hour. Both are read
when a :class:`DecoderPool` is made, in the parent process.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from humanclap.errors import AudioError, UsageError
from humanclap.scoring.audio import audio_bytes_hash, load_clip_features

CRASH_HOOK_ENV = "HUMANCLAP_TEST_DECODER_CRASH"
HANG_HOOK_ENV = "HUMANCLAP_TEST_DECODER_HANG"
STARTUP_TIMEOUT_S = 120.0  # spawning + imports; minutes only on a badly overloaded machine
DEFAULT_TIMEOUT_S = 300.0  # one file: a 1-hour fused clip decodes in well under this

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
    from humanclap.scoring.families import family_of_scorer  # the family table says what workers need

    family = family_of_scorer(scorer)
    return None if family is None else family.featurizer_for(scorer)


def hook_markers() -> tuple[str, str]:
    """The crash / hang markers of the test hooks, read in the *parent*: a forkserver
    started earlier would not see an environment variable set since."""
    return os.environ.get(CRASH_HOOK_ENV, ""), os.environ.get(HANG_HOOK_ENV, "")


def decode_file(featurizer: Callable[[str], tuple[Any, bool]], path: str, want_hash: bool,
                hooks: tuple[str, str] = ("", "")) -> Result:
    """Worker body: the file's content hash (for the cache) and features, or its error."""
    crash, hang = hooks
    if crash and crash in path:
        os._exit(1)  # what a segfaulting codec looks like from the parent
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


def _started() -> int:
    return os.getpid()


def _context():
    """``forkserver`` where there is one (Linux, macOS): workers fork from a small server
    process that imported the decoding modules once, so a restart after a crash costs
    milliseconds; ``spawn`` elsewhere. Never plain ``fork``: the parent holds torch threads."""
    try:
        ctx = multiprocessing.get_context("forkserver")
    except ValueError:
        return multiprocessing.get_context("spawn")
    ctx.set_forkserver_preload(["humanclap.scoring.decode",
                                "transformers.models.clap.feature_extraction_clap"])
    return ctx


def _hash_only(path: str) -> str:
    try:
        return audio_bytes_hash(path)
    except (AudioError, OSError, RuntimeError, ValueError):
        return ""


class DecoderPool:
    """An ordered pool of decoder processes; see the module docstring.

    ``lookup(digest)`` (optional): the cache; a file whose content hash it knows is not
    decoded, its result is ``("cached", vector)``."""

    def __init__(self, featurizer: Callable, workers: int, max_files: int = 64,
                 timeout: float = DEFAULT_TIMEOUT_S, lookup: Callable[[str], Any] | None = None):
        if workers < 1:
            raise ValueError(f"DecoderPool needs at least 1 worker, got {workers}")
        self.featurizer, self.workers, self.timeout = featurizer, workers, timeout
        self.max_files = max(max_files, 2 * workers)
        self.lookup = lookup
        self.restarts = 0
        self.hooks = hook_markers()
        self._pool: ProcessPoolExecutor | None = None

    # -- the process pool ---------------------------------------------------------------
    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=_context())
            # A worker that cannot start at all (a script without an ``if __name__ ==
            # "__main__":`` guard, an unpicklable featurizer, no memory) would otherwise
            # look like a crash on every file: refuse the run instead.
            try:
                self._pool.submit(_started).result(timeout=STARTUP_TIMEOUT_S)
            except (BrokenProcessPool, FutureTimeout, OSError, RuntimeError) as exc:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
                raise UsageError(f"cannot start {self.workers} decoder worker process(es) "
                                 f"({type(exc).__name__}: {exc or 'no answer'}); decode in the main "
                                 "process with --workers 0 (a Python script that starts a job with "
                                 "workers needs an `if __name__ == \"__main__\":` guard)") from None
        return self._pool

    def _restart(self) -> None:
        """Kill every worker (one may hang) and start afresh on the next submit."""
        pool, self._pool = self._pool, None
        self.restarts += 1
        if pool is None:
            return
        # _processes is the stdlib executor's own table; there is no public way to kill a
        # hung worker before Python 3.14 (terminate_workers).
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            try:
                proc.kill()
            except (OSError, ValueError):
                pass
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "DecoderPool":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:
            self._restart()  # do not wait on workers after an error or Ctrl-C

    # -- one file -----------------------------------------------------------------------
    def _submit(self, path: str) -> tuple[Future, int] | Result:
        """A cached result, or the future of the file's task and the pool generation."""
        if self.lookup is not None:
            digest = _hash_only(path)  # reading bytes is cheap next to decoding them
            cached = self.lookup(digest) if digest else None
            if cached is not None:
                return ("cached", cached)
        try:
            fut = self._executor().submit(decode_file, self.featurizer, path, self.lookup is not None,
                                             self.hooks)
        except (BrokenProcessPool, RuntimeError):
            self._restart()
            fut = self._executor().submit(decode_file, self.featurizer, path, self.lookup is not None,
                                             self.hooks)
        return fut, self.restarts

    def _crashed(self, path: str) -> Result:
        return ("err", AudioError(f"{path}: the decoder process crashed on this file (a codec fault "
                                  "or out of memory); check or re-export the file"))

    def _too_slow(self, path: str) -> Result:
        return ("err", AudioError(f"{path}: decoding took longer than {self.timeout:.0f} s; check "
                                  "the file (or score it with --workers 0)"))

    def _wait(self, path: str, job: Any) -> Result | None:
        """The result of one submitted file; None when its pool broke under it (the file is
        then retried alone: it may be the culprit or a bystander)."""
        if isinstance(job, tuple) and job and isinstance(job[0], str):
            return job  # a cached result
        fut, generation = job
        try:
            return fut.result(timeout=self.timeout)
        except (BrokenProcessPool, CancelledError):
            if generation == self.restarts:
                self._restart()
            return None
        except FutureTimeout:
            self._restart()  # the worker hangs: kill the pool (its other tasks are retried)
            return self._too_slow(path)

    def _alone(self, path: str) -> Result:
        """Decode ``path`` alone, nothing else in flight: a crash now is this file's."""
        job = self._submit(path)
        if isinstance(job[0], str):
            return job
        fut = job[0]
        try:
            return fut.result(timeout=self.timeout)
        except (BrokenProcessPool, CancelledError):
            self._restart()
            return self._crashed(path)
        except FutureTimeout:
            self._restart()
            return self._too_slow(path)

    # -- batches ------------------------------------------------------------------------
    def run(self, batches: Iterable[tuple[Any, list[str]]]) -> Iterator[tuple[Any, dict[str, Result]]]:
        """For each ``(tag, paths)`` in order, yield ``(tag, {path: result})``.

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
            before = self.restarts
            out: dict[str, Result] = {}
            suspects = []
            for path, job in jobs:
                res = self._wait(path, job)
                if res is None:
                    suspects.append(path)
                else:
                    out[path] = res
            if self.restarts != before:
                # The pool died: the tasks of the batches behind this one died with it.
                # Queue nothing new until the suspects are sorted out one by one.
                for path in suspects:
                    out[path] = self._alone(path)
                self._resubmit(inflight)
            yield tag, out

    def _resubmit(self, inflight: deque) -> None:
        """Resubmit the queued tasks that belonged to a pool that is gone."""
        for i, (tag, jobs) in enumerate(inflight):
            fresh = []
            for path, job in jobs:
                if not isinstance(job[0], str) and job[1] != self.restarts:
                    fut = job[0]
                    finished = fut.done() and not fut.cancelled() and fut.exception() is None
                    if not finished:
                        fut.cancel()
                        job = self._submit(path)
                fresh.append((path, job))
            inflight[i] = (tag, fresh)
