"""What a ``score`` run reports: the summary on stderr and ``OUT.meta.json``, from typed records.

:class:`ScoreSummary` counts a run's rows as they are written (a running mean and variance,
never a list of scores); :class:`ScoreRecord` is the fixed part of ``OUT.meta.json`` (model,
dtype, manifest, the part a ``--shard``/torchrun process wrote, the citation line);
:func:`write_run_metadata` writes both as one JSON file. The job writes it, ``merge`` writes
it for the joined file from its parts' records: one writer, one set of keys.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scipy.stats import t as student_t

from humanclap import __version__
from humanclap.io import write_json
from humanclap.scoring.citation import protocol_line, scorer_protocol
from humanclap.scoring.output_guard import meta_path, read_own_meta
from humanclap.scoring.protocol import Scorer
from humanclap.scoring.rows import ManifestScan

# What every meta file says about its numbers.
NOTE = (
    "clapscore = max(cosine, 0), or a score head's output clipped to [0, 1] when the protocol "
    "says so; scoring is deterministic (no seed involved); the CI is clipped to [0, 1]"
)


class RunningStats:
    """Count, mean and sum of squared deviations of a stream of scores (Welford's
    algorithm): what the summary needs, in constant memory. ``append``/``extend``/``len``
    as on the list of scores it replaces."""

    __slots__ = ("n", "mean", "m2")

    def __init__(self, scores: Iterable[float] = ()):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0
        self.extend(scores)

    def append(self, score: float) -> None:
        self.n += 1
        delta = score - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (score - self.mean)

    def extend(self, scores: Iterable[float]) -> None:
        for x in scores:
            self.append(float(x))

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"RunningStats(n={self.n}, mean={self.mean})"


@dataclass
class ScoreSummary:
    """What a run did; printed on stderr and returned to Python callers.

    ``scores`` is summarised as it comes (:class:`RunningStats`), never kept: a run of
    millions of rows needs no list of them (a list passed in is summarised)."""

    rows: int = 0
    scored: int = 0
    failed: int = 0
    resumed: int = 0
    scores: RunningStats = field(default_factory=RunningStats)
    seconds: float = 0.0
    model_id: str = ""
    revision: str = ""
    device: str = ""
    dtype: str = ""
    cache_hits: int = 0
    protocol: str = ""  # the citation line (scoring.citation); printed last when known

    def __post_init__(self) -> None:
        if not isinstance(self.scores, RunningStats):
            self.scores = RunningStats(self.scores)

    def mean_ci(self) -> tuple[float, float, float]:
        """Mean CLAPScore and its 95% t-interval over scored rows (NaN when none).

        The interval is clipped to [0, 1], CLAPScore's range: with few rows or many zeros
        the t-interval reaches below 0, which no mean CLAPScore can be."""
        n = self.scores.n
        if n == 0:
            return math.nan, math.nan, math.nan
        mean = self.scores.mean
        if n < 2:
            return mean, math.nan, math.nan
        std = math.sqrt(max(self.scores.m2, 0.0) / (n - 1))
        half = float(student_t.ppf(0.975, n - 1) * std / math.sqrt(n))
        return mean, max(mean - half, 0.0), min(mean + half, 1.0)

    def text(self, ran: bool = True) -> str:
        """The summary on stderr; ``ran=False`` (``merge``: nothing was scored) leaves out
        the device and time."""
        mean, lo, hi = self.mean_ci()
        n = len(self.scores)
        if n == 0:
            mean_line = "mean CLAPScore: none (no row scored)"
        elif n == 1:  # no spread to estimate from one score: say so rather than print NaN
            mean_line = f"mean CLAPScore: {mean:.4f}  95% CI undefined for one scored row  (n=1)"
        else:
            mean_line = f"mean CLAPScore: {mean:.4f}  95% CI [{lo:.4f}, {hi:.4f}]  (n={n})"
        lines = [
            f"rows: {self.rows}  scored: {self.scored}  failed: {self.failed}"
            + (f"  (resumed after {self.resumed})" if self.resumed else ""),
            mean_line,
            f"model: {self.model_id}  revision: {self.revision}",
        ]
        if ran:
            lines.append(
                f"device: {self.device} ({self.dtype})  time: {self.seconds:.1f} s"
                + (f"  cache hits: {self.cache_hits}" if self.cache_hits else "")
            )
        if self.protocol:
            lines.append(f"protocol: {self.protocol}")
        return "\n".join(lines)

    def count(self, score: float | None) -> None:
        """Count one row: its CLAPScore, or None for a row with an error."""
        if score is None:
            self.failed += 1
        else:
            self.scored += 1
            self.scores.append(score)


@dataclass
class ManifestRecord:
    """The manifest a score output was made from (what ``--resume`` and ``merge`` compare).
    Paths are stored resolved, so that a later run from another folder compares them."""

    path: str
    columns: list[str]
    rows: int  # the manifest's own row count (a part's or selection's is the summary's "rows")
    sha256: str  # ManifestScan.fingerprint: columns and every row, in order
    audio_root: str

    @classmethod
    def of_scan(cls, scan: ManifestScan, audio_root: str | Path) -> ManifestRecord:
        return cls(
            str(scan.path.resolve()), list(scan.columns), scan.rows, scan.fingerprint, str(Path(audio_root).resolve())
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "columns": list(self.columns),
            "rows": self.rows,
            "sha256": self.sha256,
            "audio_root": self.audio_root,
        }


@dataclass
class ScoreRecord:
    """The fixed part of ``OUT.meta.json``: which model, settings and manifest made the rows.

    ``model`` is :meth:`ModelInfo.as_dict` as written (revision, source, preprocessing);
    ``part`` the block of rows a part file holds (:func:`~humanclap.scoring.parts.part_record`);
    ``protocol`` the citation line (:func:`~humanclap.scoring.citation.protocol_line`), None
    where it cannot be told (a record written before it existed, with too little to rebuild it)."""

    model: dict[str, Any]
    dtype: str
    device: str
    manifest: ManifestRecord
    part: dict[str, int] | None = None
    protocol: str | None = None
    humanclap_version: str = __version__
    command: str = "score"

    @classmethod
    def of_run(cls, scorer: Scorer, manifest: ManifestRecord, part: dict[str, int] | None = None) -> ScoreRecord:
        """The record of a run of ``scorer`` on ``manifest`` (this humanclap's version)."""
        return cls(
            model=scorer.info.as_dict(),
            dtype=scorer.dtype,
            device=str(scorer.device),
            manifest=manifest,
            part=part,
            protocol=scorer_protocol(scorer),
        )

    @classmethod
    def from_json(cls, meta: dict[str, Any]) -> ScoreRecord:
        """The record in a meta file (a part's, for ``merge``). A file written before the
        citation line existed gets it rebuilt from its model record where that is complete."""
        m = meta["manifest"]
        record = cls(
            model=meta["model"],
            dtype=meta.get("dtype"),
            device=meta.get("device"),
            manifest=ManifestRecord(
                m.get("path"), m.get("columns"), m.get("rows"), m.get("sha256"), m.get("audio_root")
            ),
            part=meta.get("part"),
            protocol=meta.get("protocol"),
            humanclap_version=meta.get("humanclap_version"),
            command=meta.get("command", "score"),
        )
        if record.protocol is None:
            try:
                record.protocol = protocol_line(record.model, dtype=record.dtype, version=record.humanclap_version)
            except (KeyError, TypeError, ValueError):
                pass  # too old to tell: the file goes without the line
        return record

    def to_json(self, summary: ScoreSummary) -> dict[str, Any]:
        """The meta file's content, keys in the order every version wrote them (the citation
        line last, where it was added). Strict JSON: an undefined mean is null."""
        mean, lo, hi = summary.mean_ci()
        out: dict[str, Any] = {
            "humanclap_version": self.humanclap_version,
            "command": self.command,
            "model": self.model,
            "dtype": self.dtype,
            "device": self.device,
            "manifest": self.manifest.to_json(),
        }
        if self.part is not None:
            out["part"] = self.part
        out.update(
            {
                "rows": summary.rows,
                "scored": summary.scored,
                "failed": summary.failed,
                "mean_clapscore": mean,
                "mean_clapscore_ci95": [lo, hi],
                "note": NOTE,
            }
        )
        if self.protocol is not None:
            out["protocol"] = self.protocol
        return out


def write_run_metadata(output: Path, record: ScoreRecord, summary: ScoreSummary) -> None:
    """``OUT.meta.json`` beside the output: which model, settings and manifest made these
    scores (what ``--resume`` checks), and the counts so far."""
    write_json(meta_path(output), record.to_json(summary))


def recorded_protocol(output: str | Path) -> str | None:
    """The citation line of the score file ``output``, from the ``OUT.meta.json`` beside it
    (rebuilt for a file written before the line was recorded); None without such a file."""
    meta = read_own_meta(meta_path(Path(output)))
    if meta is None:
        return None
    try:
        return ScoreRecord.from_json(meta).protocol
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
