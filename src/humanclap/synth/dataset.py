"""Synthetic RELATE-style dataset: scenes -> captions -> clips -> simulated ratings -> files.

:func:`generate` writes, under ``output_dir``, exactly the RELATE release layout::

    scores/REL.csv  scores/IS.csv  scores/OS.csv
    listener_attributes/REL.csv  listener_attributes/IS_and_OS.csv
    RELATE_wave/<system>/<train|test>/<id>.wav        16 kHz mono 16-bit, 4 s
    pretrain/manifest.csv (audio,text) + pretrain/wav/*.wav   disjoint natural pairs
    synth_summary.json

It mirrors the real files' conventions: every text has its natural clip plus two TTA
clips ({audioldm, tango2} or {audioldm2, tango}) sharing its clip id; texts are split
about half into the AudioCaps-train folder (RELATE ``train``) and half into the test
folder, whose texts are split evenly into RELATE ``validation`` and ``test`` (the real
data keep validation pairs under ``test`` folders). A listener rates 6 texts x 3 clips
plus 3 anchors (a natural clip with an unrelated caption); listeners who rate an anchor
``SCREEN_AT`` or higher are screened (all their rows ``excluded``), anchors are always
``excluded`` with an empty ``in AudioCaps``. IS/OS come from a separate listener pool
(ids from 10000) rating the same pairs; OS rows exist only for captions with 2+ events.

Deliberate differences from the real release: clips are 4 s, not 10 s (a fast demo);
screening is per listener (the real file also excludes some listeners' rows for only
part of their session, and keeps 14 anchor rows in train/validation); the real OS.csv
has a row for every IS row, single-event captions included, while its README counts OS
pairs for about half of them; here OS is written only where an order exists.

The per-pair mean REL score distribution after screening is checked against the real
RELATE one (total-variation distance on 11 bins, natural and synthesized separately).
Everything is a pure function of the seed: same seed, byte-identical CSVs and wavs on
the same platform and numpy version (float32 maths may differ across CPUs);
``synth_summary.json`` also records the wall time, so it differs.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from humanclap.errors import UsageError
from humanclap.outputs import claim_folder, describe_differences, identity_differences, read_marker
from humanclap.synth.listeners import (
    ANCHOR_PERCEPTION,
    AUDIO_TYPE,
    Listener,
    Realisation,
    make_listener,
    perceive,
    realise,
)
from humanclap.synth.sounds import (
    EVENT_CLASSES,
    Clip,
    NoiseBank,
    Scene,
    render,
    sample_scene,
    write_wav,
)

REL_COLUMNS = [
    "wavname",
    "text",
    "score",
    "listener_id",
    "audio type",
    "anchor label",
    "in RELATE dataset",
    "in AudioCaps",
]
ISOS_COLUMNS = ["wavname", "text", "score", "listener_id", "audio type", "anchor label", "in AudioCaps"]
ATTRIBUTE_COLUMNS = ["listener_id"] + [f"question{i}" for i in range(1, 13)]
# (rated texts, pretraining clips). default has as many texts as RELATE (1,960), hence about
# as many pairs (5,460 in RELATE): a smaller set trains weaker models and tests with less power.
SIZES = {"small": (120, 300), "default": (1960, 3000)}
SYSTEM_PAIRS = (("audioldm", "tango2"), ("audioldm2", "tango"))  # as in RELATE, half each
TEXTS_PER_SESSION, ANCHORS_PER_SESSION = 6, 3
SCREEN_AT = 5  # an anchor rated this high or higher screens the listener
# Raters per text in RELATE (every listener rates all 3 clips of a text): counts of
# non-anchor (pair, listener) group sizes / 3, from scores/REL.csv.
RATERS = {1: 162, 2: 307, 3: 384, 4: 324, 5: 341, 6: 181, 7: 120, 8: 84, 9: 49, 10: 18, 12: 6}
# Real 11-bin histograms of the per-pair mean REL score after screening, computed from
# RELATE scores/REL.csv as: keep rows with anchor label False and in RELATE dataset !=
# "excluded"; mean score per (wavname, text); bin = floor(mean + 0.5); natural = wavname
# under /audiocaps/, synthesized = the other four systems (1,820 and 3,640 pairs).
REAL_HIST_NATURAL = (22, 13, 47, 44, 52, 98, 123, 222, 283, 382, 534)
REAL_HIST_SYNTHESIZED = (99, 124, 204, 237, 317, 371, 379, 384, 509, 492, 524)


@dataclass
class SynthSummary:
    """What :func:`generate` made (also written to ``synth_summary.json``)."""

    output_dir: str
    seed: int
    size: str
    seconds: float
    texts: int
    pairs_per_split: dict[str, int]  # after screening: pairs with at least one kept rating
    pairs_per_system: dict[str, int]
    rows: dict[str, int]  # REL / IS / OS rows
    listeners: int
    screened_listeners: int
    pretrain_clips: int
    mean_score_per_system: dict[str, float]  # per-pair mean REL after screening
    tv_natural: float
    tv_synthesized: float
    real_histogram_source: str
    hist_natural: list[int] = field(default_factory=list)
    hist_synthesized: list[int] = field(default_factory=list)


@dataclass
class SynthText:
    """One caption with its clip id, splits, systems and their clips and latent scores."""

    scene: Scene
    caption: str
    clip_id: int
    fold: str  # AudioCaps split = audio folder: train | test
    split: str  # RELATE split: train | validation | test
    systems: tuple[str, ...]
    real: dict[str, Realisation] = field(default_factory=dict)
    latents: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    def wavname(self, system: str) -> str:
        return f"/{system}/{self.fold}/{self.clip_id}.wav"


def _classes(scene: Scene) -> set[str]:
    return {c for e in scene.events for c in (e.cls, *EVENT_CLASSES[e.cls].confusable)}


def build_texts(seed: int, n_texts: int) -> list[SynthText]:
    """Scenes, captions, splits, system assignment, realisations and latent scores."""
    rng = np.random.default_rng([seed, 1])
    scenes, seen = [], set()
    while len(scenes) < n_texts:
        s = sample_scene(rng)
        while s.caption() in seen:  # texts are unique; redraw with the same event count
            s = sample_scene(rng, len(s.events))
        seen.add(s.caption())
        scenes.append(s)
    n_train = round(n_texts * 0.505)
    order = rng.permutation(n_texts)
    train_ids = rng.choice(np.arange(1, 100_000), n_train, replace=False)
    test_ids = rng.choice(np.arange(100_000, 110_000), n_texts - n_train, replace=False)
    pair_of = rng.permutation(np.arange(n_texts) % 2)
    texts = []
    for rank, i in enumerate(order):
        train = rank < n_train
        split = "train" if train else ("validation" if (rank - n_train) % 2 == 0 else "test")
        cid = int(train_ids[rank] if train else test_ids[rank - n_train])
        texts.append(
            SynthText(
                scenes[i],
                scenes[i].caption(),
                cid,
                "train" if train else "test",
                split,
                ("audiocaps",) + SYSTEM_PAIRS[int(pair_of[i])],
            )
        )
    for k, t in enumerate(texts):
        for s, system in enumerate(t.systems):
            r = realise(t.scene, system, np.random.default_rng([seed, 2, k, s]), seed * 1_000_003 + k * 8 + s)
            t.real[system] = r
            t.latents[system] = perceive(t.scene, r).latents()
    return texts


def _sessions(n_texts: int, rng: np.random.Generator) -> list[list[int]]:
    """Group text slots into listening sessions of 6 distinct texts."""
    counts = rng.choice(list(RATERS), n_texts, p=np.array(list(RATERS.values())) / sum(RATERS.values()))
    slots: list[int] = []
    for c in range(max(counts)):  # copy rounds keep a text's copies far apart
        slots.extend(int(i) for i in rng.permutation(np.flatnonzero(counts > c)))
    sessions = [list(dict.fromkeys(slots[i : i + TEXTS_PER_SESSION])) for i in range(0, len(slots), TEXTS_PER_SESSION)]
    return sessions


def _anchor(texts: list[SynthText], rng: np.random.Generator) -> tuple[SynthText, SynthText]:
    """(audio text, caption text) with no event (or confusable) in common."""
    while True:
        a, b = (texts[int(i)] for i in rng.integers(0, len(texts), 2))
        if not _classes(a.scene) & _classes(b.scene):
            return a, b


def _rate_pool(
    texts: list[SynthText], rng: np.random.Generator, first_id: int, id_width: int, which: tuple[int, ...]
) -> tuple[list[Listener], list[tuple], set[str]]:
    """Simulate one listening test; ``which`` picks latents (0 REL, 1 IS, 2 OS) to rate.

    Rows: (listener id, caption's text, system, text whose natural clip is played for an
    anchor or None, scores). Returns the listeners, the rows and the screened ids.
    """
    listeners, rows, screened = [], [], set()
    anchor_latents = ANCHOR_PERCEPTION.latents()
    for s, session in enumerate(_sessions(len(texts), rng)):
        lst = make_listener(str(first_id + s).zfill(id_width), rng)
        listeners.append(lst)
        items = [(texts[i], sys, None) for i in session for sys in texts[i].systems]
        items += [(b, "audiocaps", a) for a, b in (_anchor(texts, rng) for _ in range(ANCHORS_PER_SESSION))]
        mine = []
        for j in rng.permutation(len(items)):
            t, system, audio_of = items[j]
            lat = anchor_latents if audio_of is not None else t.latents[system]
            scores = tuple(lst.rate(lat[m], rng) for m in which)
            mine.append((lst.listener_id, t, system, audio_of, scores))
            if audio_of is not None and scores[0] >= SCREEN_AT:
                screened.add(lst.listener_id)
        rows.extend(mine)
    return listeners, rows, screened


def pair_mean_histograms(rows: list[tuple[str, str, int, bool, str]]) -> tuple[np.ndarray, np.ndarray]:
    """11-bin histograms (natural, synthesized) of per-pair mean scores.

    ``rows`` are (wavname, text, score, anchor, in RELATE dataset); anchors and excluded
    rows are dropped, scores are averaged per (wavname, text), bin = floor(mean + 0.5).
    """
    sums: dict[tuple[str, str], list[float]] = {}
    for wav, text, score, anchor, split in rows:
        if anchor or split == "excluded":
            continue
        acc = sums.setdefault((wav, text), [0.0, 0.0])
        acc[0] += score
        acc[1] += 1
    hist = np.zeros((2, 11), dtype=int)
    for (wav, _), (total, n) in sums.items():
        natural = wav.split("/")[1] == "audiocaps"
        hist[0 if natural else 1, min(int(np.floor(total / n + 0.5)), 10)] += 1
    return hist[0], hist[1]


def tv_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Total-variation distance between two histograms (normalised first)."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    return float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())


def real_histograms(real_rel_csv: str | Path | None) -> tuple[np.ndarray, np.ndarray, str]:
    """Real RELATE histograms: from ``scores/REL.csv`` if given, else the stored table."""
    if real_rel_csv is None:
        return np.array(REAL_HIST_NATURAL), np.array(REAL_HIST_SYNTHESIZED), "table"
    path = Path(real_rel_csv)
    if not path.is_file():
        raise UsageError(
            f"real RELATE REL.csv not found at {path}; pass the path of "
            "RELATE's scores/REL.csv or None to use the stored histograms"
        )
    needed = ["wavname", "text", "score", "anchor label", "in RELATE dataset"]
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in needed if c not in (reader.fieldnames or [])]
            if missing:
                raise UsageError(f"{path} is not RELATE's REL.csv: it lacks column(s) {missing}")
            rows = [
                (r["wavname"], r["text"], int(r["score"]), r["anchor label"] == "True", r["in RELATE dataset"])
                for r in reader
            ]
    except (ValueError, UnicodeDecodeError, csv.Error) as exc:
        if isinstance(exc, UsageError):
            raise
        raise UsageError(f"{path}: cannot read RELATE scores ({exc})") from None
    nat, syn = pair_mean_histograms(rows)
    if nat.sum() == 0 or syn.sum() == 0:  # a distance to an empty histogram is NaN, not a number
        raise UsageError(
            f"{path} has no rated natural and synthesized pairs to compare with; "
            "pass RELATE's full scores/REL.csv, or leave --real-rel-csv out"
        )
    return nat, syn, str(path)


def _write_csv(path: Path, columns: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:  # "\n" endings and minimal quoting, like RELATE
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns)
        w.writerows(rows)


def _score_rows(rows: list[tuple], screened: set[str] | None, m: int, multi_only: bool = False) -> list[list]:
    out = []
    for lid, t, system, audio_of, scores in rows:
        if multi_only and len(t.scene.events) < 2:
            continue
        anchor = audio_of is not None
        wav = audio_of.wavname("audiocaps") if anchor else t.wavname(system)
        row = [wav, t.caption, scores[m], lid, AUDIO_TYPE[system], str(anchor)]
        if screened is not None:
            row.append("excluded" if anchor or lid in screened else t.split)
        out.append(row + ["" if anchor else t.fold])
    return out


def _attribute_rows(listeners: list[Listener]) -> list[list]:
    return [[lst.listener_id, *lst.attributes] for lst in listeners]


def _pretrain_pairs(seed: int, n_clips: int, exclude: set[str]) -> list[tuple[str, Realisation]]:
    """Disjoint natural (caption, clip) pairs for contrastive pretraining of a base CLAP:
    own random stream and clips, no caption of the rated set (captions may repeat within
    the corpus, with different clips, as in AudioCaps)."""
    rng = np.random.default_rng([seed, 5])
    pairs: list[tuple[str, Realisation]] = []
    while len(pairs) < n_clips:
        scene = sample_scene(rng)
        while scene.caption() in exclude:
            scene = sample_scene(rng, len(scene.events))
        cap = scene.caption()
        k = len(pairs)
        pairs.append(
            (cap, realise(scene, "audiocaps", np.random.default_rng([seed, 6, k]), seed * 1_000_003 + 500_000_000 + k))
        )
    return pairs


def _render_jobs(seed: int, jobs: list[tuple[Path, Clip]]) -> None:
    bank = NoiseBank(seed)  # deterministic per seed, so every worker has the same one
    for path, clip in jobs:
        write_wav(path, render(clip, bank))


def _render_all(seed: int, jobs: list[tuple[Path, Clip]], workers: int) -> None:
    """Render and write clips; each clip depends only on its own description and the
    seed, so the split over processes cannot change a byte."""
    for d in sorted({p.parent for p, _ in jobs}):
        d.mkdir(parents=True, exist_ok=True)
    if workers <= 1 or len(jobs) < 200:
        _render_jobs(seed, jobs)
        return
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        for f in [pool.submit(_render_jobs, seed, jobs[i::workers]) for i in range(workers)]:
            f.result()


OUTPUTS = ("scores", "listener_attributes", "RELATE_wave", "pretrain", "synth_summary.json")
COMMAND = "synth"  # the command name in the output marker (humanclap.outputs.MARKER)


def synth_identity(seed: int, size: str, real_rel_csv: str | Path | None) -> dict:
    """What decides the dataset's content (the output marker's identity)."""
    real = str(Path(real_rel_csv).expanduser().resolve()) if real_rel_csv is not None else None
    return {
        "data": {"seed": seed, "size": size, "texts_and_clips": list(SIZES[size])},
        "settings": {"real_rel_csv": real},
    }


def is_complete(folder: str | Path, seed: int, size: str) -> bool:
    """Whether ``folder`` holds a finished synth run of ``seed`` and ``size`` (its marker
    names them and its summary, written last, is there): what the demo reuses."""

    folder = Path(folder)
    marker = read_marker(folder)
    if marker is None or marker["command"] != COMMAND or not (folder / "synth_summary.json").is_file():
        return False
    data = (marker.get("identity") or {}).get("data") or {}
    return data.get("seed") == seed and data.get("size") == size


def generate(
    output_dir: str | Path,
    seed: int = 0,
    size: str = "default",
    real_rel_csv: str | Path | None = None,
    workers: int | None = None,
    overwrite: bool = False,
) -> SynthSummary:
    """Write a synthetic RELATE-style dataset under ``output_dir`` and return its summary.

    ``size``: ``"default"`` (1,960 texts as in RELATE, about 5,700 pairs, 3,000 pretraining clips) or
    ``"small"`` (120 texts, 300 pretraining clips; for tests). ``real_rel_csv``: RELATE's
    ``scores/REL.csv`` to compare against; without it the stored real histograms are
    used. ``workers``: processes for rendering (default: up to 2); the output does not
    depend on it.

    Output contract (:mod:`humanclap.outputs`): ``output_dir`` must be new, empty, or hold
    an earlier synth run (its marker ``.humanclap-run.json``), and is locked while written.
    An earlier run is refused unless ``overwrite``, which first deletes exactly the names
    that run recorded (so no stale clip survives) and nothing else; a folder holding
    anything else is refused with or without ``overwrite`` (UsageError).
    """
    if size not in SIZES:
        raise UsageError(f"unknown size {size!r}; use one of {sorted(SIZES)}")
    if workers is not None and workers < 1:
        raise UsageError(f"workers must be at least 1 (got {workers}); leave it out for the default")

    t0 = time.perf_counter()
    out = Path(output_dir)
    if real_rel_csv is not None:  # fail before minutes of work, not after
        real_histograms(real_rel_csv)
    identity = synth_identity(seed, size, real_rel_csv)
    with claim_folder(out, COMMAND, overwrite=overwrite, what="the output folder") as run:
        if run.previous is not None and run.files:
            diffs = identity_differences(run.previous.get("identity"), identity)
            then = f" ({describe_differences(diffs)})" if diffs else " (the same seed and size)"
            raise UsageError(
                f"{out} is not empty: it holds an earlier synth run{then}; pass "
                "--overwrite to replace it (only the files that run wrote are "
                "deleted), or choose an empty or new folder"
            )
        run.set_identity(identity)
        run.record(*OUTPUTS)  # before writing: a killed run's marker owns what it left
        return _generate(out, seed, size, real_rel_csv, workers, t0)


def _generate(out: Path, seed: int, size: str, real_rel_csv, workers: int | None, t0: float) -> SynthSummary:
    n_texts, n_pretrain = SIZES[size]
    texts = build_texts(seed, n_texts)
    pretrain = _pretrain_pairs(seed, n_pretrain, {t.caption for t in texts})
    jobs = [(out / "RELATE_wave" / t.wavname(s).lstrip("/"), t.real[s].clip) for t in texts for s in t.systems]
    jobs += [(out / "pretrain" / "wav" / f"{k:05d}.wav", r.clip) for k, (_, r) in enumerate(pretrain)]
    _render_all(seed, jobs, min(2, os.cpu_count() or 1) if workers is None else workers)
    _write_csv(
        out / "pretrain" / "manifest.csv",
        ["audio", "text"],
        [[f"wav/{k:05d}.wav", cap] for k, (cap, _) in enumerate(pretrain)],
    )

    rel_listeners, rel_rows, screened = _rate_pool(texts, np.random.default_rng([seed, 3]), 0, 4, (0,))
    iso_listeners, iso_rows, _ = _rate_pool(texts, np.random.default_rng([seed, 4]), 10_000, 5, (1, 2))
    rel = _score_rows(rel_rows, screened, 0)
    is_rows = _score_rows(iso_rows, None, 0)
    os_rows = _score_rows(iso_rows, None, 1, multi_only=True)
    _write_csv(out / "scores" / "REL.csv", REL_COLUMNS, rel)
    _write_csv(out / "scores" / "IS.csv", ISOS_COLUMNS, is_rows)
    _write_csv(out / "scores" / "OS.csv", ISOS_COLUMNS, os_rows)
    _write_csv(out / "listener_attributes" / "REL.csv", ATTRIBUTE_COLUMNS, _attribute_rows(rel_listeners))
    _write_csv(out / "listener_attributes" / "IS_and_OS.csv", ATTRIBUTE_COLUMNS, _attribute_rows(iso_listeners))

    kept = [(r[0], r[1], r[2], r[5] == "True", r[6]) for r in rel]
    nat, syn = pair_mean_histograms(kept)
    real_nat, real_syn, source = real_histograms(real_rel_csv)
    pair_scores: dict[tuple[str, str], list[int]] = {}
    for wav, text, score, anchor, split in kept:
        if not anchor and split != "excluded":
            pair_scores.setdefault((wav, text), []).append(score)
    split_of = {(t.wavname(s), t.caption): t.split for t in texts for s in t.systems}
    per_split = {s: 0 for s in ("train", "validation", "test")}
    per_system: dict[str, list[float]] = {}
    for key, scores in pair_scores.items():
        per_split[split_of[key]] += 1
        per_system.setdefault(key[0].split("/")[1], []).append(float(np.mean(scores)))
    summary = SynthSummary(
        output_dir=str(out),
        seed=seed,
        size=size,
        seconds=round(time.perf_counter() - t0, 2),
        texts=len(texts),
        pairs_per_split=per_split,
        pairs_per_system={s: len(v) for s, v in sorted(per_system.items())},
        rows={"REL": len(rel), "IS": len(is_rows), "OS": len(os_rows)},
        listeners=len(rel_listeners),
        screened_listeners=len(screened),
        pretrain_clips=len(pretrain),
        mean_score_per_system={s: round(float(np.mean(v)), 3) for s, v in sorted(per_system.items())},
        tv_natural=round(tv_distance(nat, real_nat), 4),
        tv_synthesized=round(tv_distance(syn, real_syn), 4),
        real_histogram_source=source,
        hist_natural=nat.tolist(),
        hist_synthesized=syn.tolist(),
    )
    (out / "synth_summary.json").write_text(json.dumps(asdict(summary), indent=2) + "\n")
    return summary
