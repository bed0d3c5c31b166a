"""Reproduce the paper's RELATE-test table: ``reproduce(ReproduceConfig) -> ReproduceResult``.

Rows, all scored on the same RELATE test pairs in one :func:`evaluate_models` call (LAION
CLAP first, so every paired difference is against it):

* LAION CLAP (``laion/clap-htsat-unfused``, or ``laion=`` a local folder);
* MS CLAP 2023 through humanclap's native MS CLAP (``msclap=``: ``msclap-2023`` from the
  Hub or its cache, or a local msclap ``.pth``); 2023 because it is msclap's default
  release (``CLAP(version='2023')``), the one "MS CLAP" means without a year in TTA papers
  and XACLE, and the paper names no other. When its weights cannot be had the row says
  "not run: ..." with how to pass them, and no number is made up;
* Human-CLAP wSCE+MAE, wSCE and MAE: trained here with the shipped configs (train split,
  early stopping on validation) into ``output_dir/models/<variant>/``, or with
  ``official=True`` the released ``sarulab-speech/human-clap-*`` checkpoints;
* with ``recipes=True``, after them, the recipes beyond the paper (``RECIPES``: wSCE+MAE on
  listener-z targets, MSE+pairwise, a score head on frozen embeddings, ListNet), trained the
  same way from their shipped configs; their paper columns are empty ("–"). Not with
  ``official`` (nothing is trained then). The run's identity records ``recipes``; a run
  without it in a folder that has recipe models leaves them there untouched and reports the
  paper's rows only (the report is rewritten by every run).

A run with the same ``output_dir`` skips every variant whose model folder is complete
and of the same identity (base model and its weights, data fingerprint, settings: see
:func:`humanclap.training.output.training_identity`; another one is refused, naming what
differs) and resumes one that was interrupted, so a long reproduction can be continued
(:mod:`humanclap.recipes.reproduce_models`).
Output contract (:mod:`humanclap.outputs`): ``output_dir`` must be new, empty or hold an
earlier reproduce run (its marker), and is locked while the run writes it; the report
folder is replaced as a whole (no file of an earlier report survives beside). The
report (``output_dir/report/``) shows the published numbers beside ours, with bootstrap
CIs on ours, and each row's selection gain on RELATE test (best of N: the human score of its
top-1 clip among the systems' renderings of a prompt against a random and the best pick;
``selection_gain.json``, the ``selection_gain`` of metrics.json, printed after the table).
Heavy modules (torch, transformers) are imported inside the functions, so usage errors
answer at once.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from humanclap.errors import ModelLoadError, ReproduceError
from humanclap.recipes.reproduce_models import (
    COMPLETE_FILES,
    RECIPES,
    VARIANTS,
    Variant,
    train_config,
    train_or_reuse,
    trained_variants,
)

if TYPE_CHECKING:
    from humanclap.evaluation.evaluate import EvaluationResult

LAION_MODEL = "laion/clap-htsat-unfused"
LAION_LABEL, MSCLAP_LABEL = "LAION CLAP", "MS CLAP"
MSCLAP_MODEL = "msclap-2023"
# The note of the msclap-package era, kept for callers that print old results; the
# native MS CLAP row says instead why it was not run (see _msclap_note).
MSCLAP_NOT_RUN = "not run: pip install msclap to enable"

__all__ = [  # the models' definitions live in reproduce_models; importable from here as before
    "COMPLETE_FILES",
    "PAPER_TABLE",
    "RECIPES",
    "VARIANTS",
    "ReproduceConfig",
    "ReproduceResult",
    "Variant",
    "reproduce",
]

# Published RELATE-test numbers (0-1 score scale) of Takano et al., "Human-CLAP:
# Human-perception-based contrastive language-audio pretraining", arXiv:2506.23553 (v2;
# v2's abstract gives the SRCC gain as "more than 0.17" = 0.457 - 0.280, v1's as 0.25,
# so v1's table differs). They are quoted from the paper's results table but are
# UNVERIFIED here: the copies of the paper we could read held only its abstract and
# introduction. Check them against the table in the paper before citing them.
# * LAION CLAP SRCC 0.280, MS CLAP 0.278 / 0.296 / 0.192 / 0.078 (SRCC / LCC / KTAU / MSE),
#   Human-CLAP wSCE+MAE 0.457 / 0.481 / 0.320 / 0.057.
# * None: not copied yet (LAION CLAP's LCC/KTAU/MSE, every wSCE-only and MAE-only number).
#   The report shows "–" for them; fill them in from the paper's table.
PAPER_TABLE: dict[str, dict[str, float | None]] = {
    LAION_LABEL: {"srcc": 0.280, "lcc": None, "ktau": None, "mse": None},
    MSCLAP_LABEL: {"srcc": 0.278, "lcc": 0.296, "ktau": 0.192, "mse": 0.078},
    "Human-CLAP wSCE+MAE": {"srcc": 0.457, "lcc": 0.481, "ktau": 0.320, "mse": 0.057},
    "Human-CLAP wSCE": {"srcc": None, "lcc": None, "ktau": None, "mse": None},
    "Human-CLAP MAE": {"srcc": None, "lcc": None, "ktau": None, "mse": None},
}
PAPER_SOURCE = (
    "Takano et al., Human-CLAP, arXiv:2506.23553 (v2), RELATE test; '–' = "
    "not found in the material we could read (see PAPER_TABLE in reproduce.py)"
)
RECIPE_NOTE = "Recipe rows: beyond the paper (configs/<key>.yaml name their sources), paper columns '–'"
GAIN_TITLE = "Selection gain on RELATE test"


@dataclass
class ReproduceConfig:
    relate: str  # RELATE folder holding scores/REL.csv
    output_dir: str  # models/<variant>/ and report/ go here
    audio_root: str | None = None  # RELATE_wave (or its parent), if not beside the folder
    official: bool = False  # score the released checkpoints instead of training
    recipes: bool = False  # also train the recipes beyond the paper (RECIPES) and add their rows
    device: str = "auto"
    batch_size: int = 8  # clips per forward pass when scoring (training keeps its config's)
    n_boot: int = 1000  # bootstrap resamples for the CIs
    seed: int = 0  # seeds training and the bootstrap
    base: str | None = None  # base checkpoint for training (default: the config's model)
    epochs: int | None = None  # override the configs' epochs (smoke runs)
    laion: str = LAION_MODEL  # the LAION CLAP row's checkpoint (a local folder offline)
    msclap: str = MSCLAP_MODEL  # the MS CLAP row: msclap-2023/-2022 or a local msclap .pth
    plots: bool = True
    progress: bool | None = None  # progress bars (None: on a terminal only)


@dataclass
class ReproduceResult:
    evaluation: EvaluationResult
    files: dict[str, Path]  # write_report's files
    rows: list[dict]  # per row: label, source, model, note, paper
    trained: list[str] = field(default_factory=list)  # variant keys trained (or resumed) now
    skipped: list[str] = field(default_factory=list)  # variant keys already complete
    selection_gain: dict | None = None  # rerank.models_selection_gain of every row on RELATE test

    @property
    def n_failed(self) -> int:
        return self.evaluation.n_failed

    def table(self) -> str:
        """Plain-text table: ours and the paper's numbers per metric; rows not run say why."""
        from humanclap.evaluation.tables import MISSING, Column, fmt, text_table

        metrics = ("srcc", "lcc", "ktau", "mse")
        columns = [Column("model", width=max(len(r["label"]) for r in self.rows), align="<"), Column("n", 5)]
        for k in metrics:
            columns += [Column(k.upper(), 6), Column("paper", 6, sep=" ")]
        rows = []
        for r in self.rows:
            paper = r["paper"] or {}
            m = self.evaluation.metrics.get(r["label"], {}).get("overall")
            if m is None:  # not run: the note, then the published numbers, as free text
                rows.append(
                    [
                        r["label"],
                        MISSING,
                        f"{r['note']} (paper: " + ", ".join(f"{k.upper()} {fmt(paper.get(k))}" for k in metrics) + ")",
                    ]
                )
                continue
            rows.append(
                [r["label"], str(m["n"]), *(cell for k in metrics for cell in (fmt(m.get(k)), fmt(paper.get(k))))]
            )
        ev = self.evaluation
        footer = [
            f"{len(ev.pairs)} test pairs, {int(ev.scored.sum())} scored, {ev.n_failed} "
            "left out; MSE on the 0-1 scale; paper = " + PAPER_SOURCE
        ]
        if any(r.get("recipe") for r in self.rows):
            footer.append(RECIPE_NOTE)
        table = text_table(columns, rows, footer=footer)
        if self.selection_gain is None:
            return table
        from humanclap.evaluation.rerank import selection_gain_table

        return table + "\n\n" + selection_gain_table(self.selection_gain, GAIN_TITLE)


# -- checks --------------------------------------------------------------------------
def _check_model(spec: str, what: str, hint: str) -> None:
    """Fail in seconds (ModelLoadError), before hours of training, when ``spec`` is a
    missing folder or a hub id that is neither cached nor reachable."""
    from humanclap.evaluation.evaluate import check_model_spec
    from humanclap.scoring.hub import hub_reachable, is_local_path

    check_model_spec(spec)
    if is_local_path(spec):
        return
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(spec, "config.json"), str) or hub_reachable():
        return
    raise ModelLoadError(
        f"{what} {spec!r} is not in the local Hugging Face cache and the Hub "
        f"cannot be reached; run once with network access, or {hint}"
    )


def _msclap_note(spec: str) -> str:
    """ "" when the MS CLAP row's weights can be had, else the note the row carries (known
    before any training, so a long run says at its start that this row will be missing)."""
    from humanclap.scoring.hub import hub_reachable
    from humanclap.scoring.msclap.weights import HUB_FILES, HUB_REPO, SPECS

    if spec not in SPECS:
        return ""  # a local file or folder: load_scorer says what is wrong with it, if anything
    from huggingface_hub import try_to_load_from_cache

    name = HUB_FILES[SPECS[spec]]
    if isinstance(try_to_load_from_cache(HUB_REPO, name), str) or hub_reachable():
        return ""
    return (
        f"not run: {HUB_REPO}/{name} is not in the local Hugging Face cache and the Hub cannot be "
        f"reached; pass the msclap .pth (its tokenizer files beside it) as msclap=/path/to/{name}"
    )


COMMAND = "reproduce"  # the command name in the output marker (humanclap.outputs.MARKER)


# -- the run -------------------------------------------------------------------------
def reproduce(cfg: ReproduceConfig, printer: Callable[[str], None] | None = None) -> ReproduceResult:
    """Train (or fetch) the Human-CLAP variants, score every row on RELATE test, write the
    report. ``printer`` gets the progress lines (default: stderr).

    Raises ReproduceError / DatasetError / ConfigError / ModelLoadError / AudioError for
    usage problems and TrainingError when a training run diverges.
    """
    say = printer or (lambda s: print(s, file=sys.stderr, flush=True))
    if cfg.official and (cfg.base or cfg.epochs is not None):
        raise ReproduceError(
            "--base and --epochs choose how models are trained; with --official "
            "nothing is trained: drop them, or drop --official"
        )
    if cfg.official and cfg.recipes:
        raise ReproduceError(
            "--recipes trains the recipes beyond the paper, which have no released checkpoints; "
            "with --official nothing is trained: run --recipes without --official (in another "
            "--output-dir, or in the one of a trained run to add the recipes to it)"
        )
    if cfg.batch_size < 1 or cfg.n_boot < 0 or (cfg.epochs is not None and cfg.epochs < 1):
        raise ReproduceError("--batch-size and --epochs must be at least 1, --n-boot 0 or more")
    relate = Path(cfg.relate).expanduser()
    if not (relate / "scores" / "REL.csv").is_file():
        raise ReproduceError(
            f"{relate} is not a RELATE folder (no scores/REL.csv there); pass "
            "--relate DIR where DIR holds scores/REL.csv"
        )
    data_spec = f"relate:{relate.resolve()}"
    from humanclap.outputs import claim_folder
    from humanclap.recipes.demo import claim_own

    with claim_folder(cfg.output_dir, COMMAND, error=ReproduceError) as run:
        run.set_identity(
            {
                "data": {"relate": data_spec, "audio_root": _resolved_or_none(cfg.audio_root)},
                "settings": {
                    "official": cfg.official,
                    "recipes": cfg.recipes,
                    "seed": cfg.seed,
                    "base": cfg.base,
                    "epochs": cfg.epochs,
                    "laion": cfg.laion,
                    "msclap": cfg.msclap,
                },
            }
        )
        claim_own(run, "models", "report")
        return _reproduce(cfg, relate, data_spec, say)


def _train_config(cfg: ReproduceConfig, variant: Variant, data_spec: str):
    return train_config(
        variant,
        data_spec,
        Path(cfg.output_dir, "models"),
        audio_root=cfg.audio_root,
        device=cfg.device,
        eval_batch_size=cfg.batch_size,
        seed=cfg.seed,
        progress=cfg.progress,
        base=cfg.base,
        epochs=cfg.epochs,
    )


def _resolved_or_none(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def _reproduce(cfg: ReproduceConfig, relate: Path, data_spec: str, say) -> ReproduceResult:
    from humanclap.data import load_rated

    n_stages = 3 + (0 if cfg.official else len(trained_variants(cfg.recipes)))
    counter = itertools.count(1)

    def stage() -> str:
        return f"[{next(counter)}/{n_stages}]"

    say(f"{stage()} data: loading {data_spec}")
    rated = load_rated(data_spec, audio_root=cfg.audio_root)
    need = ["test"] if cfg.official else ["train", "validation", "test"]
    missing = [s for s in need if s not in rated.splits]
    if missing:
        raise ReproduceError(
            f"{relate}: RELATE split(s) {missing} not found (splits present: "
            f"{rated.splits}); is scores/REL.csv the full release?"
        )
    test = rated.split("test")
    counts = ", ".join(f"{s} {int((rated.pairs['split'] == s).sum())}" for s in rated.splits)
    n_missing = int((~test.pairs["audio_exists"]).sum())
    say(
        f"      pairs per split: {counts}"
        + (f"; {n_missing} test pairs have no audio file (they will be listed as failed)" if n_missing else "")
    )

    msclap_note = _msclap_note(cfg.msclap)
    _check_model(cfg.laion, "the LAION CLAP model", "pass --laion /path/to/clap-htsat-unfused")
    if cfg.official:
        for v in VARIANTS:
            _check_model(v.official, "the official checkpoint", "drop --official to train here")
        models = {v.label: v.official for v in VARIANTS}
    else:
        plans = [(v, _train_config(cfg, v, data_spec)) for v in trained_variants(cfg.recipes)]
        for base in dict.fromkeys(tc.model for _, tc in plans):
            _check_model(base, "the base model", "pass --base /path/to/checkpoint")
        models = {v.label: tc.output_dir for v, tc in plans}

    trained, skipped = ([], []) if cfg.official else train_or_reuse(plans, say, stage)
    from humanclap.io import atomic_dir

    final = Path(cfg.output_dir) / "report"
    with atomic_dir(final) as tmp:  # replaced whole: no stale plot of an earlier run stays
        result = _evaluate(cfg, test, data_spec, models, msclap_note, say, stage, tmp, final)
        result.trained, result.skipped = trained, skipped
        from humanclap.evaluation.rerank import evaluation_selection_gain

        # RELATE renders each caption with several systems: the pairs sharing a text compete
        result.selection_gain = evaluation_selection_gain(result.evaluation)
        _annotate(result, cfg)
    result.files = {k: final / p.name for k, p in result.files.items()}
    return result


def _evaluate(
    cfg: ReproduceConfig,
    test,
    data_spec: str,
    models: dict[str, str],
    msclap_note: str,
    say,
    stage,
    out: Path,
    final: Path,
) -> ReproduceResult:
    """Score every row in one evaluate_models call (LAION first) and write the report."""
    from humanclap.evaluation.evaluate import evaluate_models
    from humanclap.evaluation.report import write_report
    from humanclap.scoring.loader import load_scorer

    specs, labels = [cfg.laion], [LAION_LABEL]
    msclap = None
    if not msclap_note:
        try:
            msclap = load_scorer(cfg.msclap, device=cfg.device)
            specs.append(msclap)
            labels.append(MSCLAP_LABEL)
        except ModelLoadError as exc:  # e.g. offline: the other rows are still worth having
            msclap_note = f"not run: {exc}"
            say(f"      MS CLAP {msclap_note}")
    msclap_ok = not msclap_note
    specs += list(models.values())
    labels += list(models)
    paper = {lbl: PAPER_TABLE[lbl] for lbl in labels if lbl in PAPER_TABLE}  # recipes: not in the paper
    if not msclap_ok:  # shown as a "(paper only)" row beside ours
        paper[MSCLAP_LABEL] = PAPER_TABLE[MSCLAP_LABEL]
    say(
        f"{stage()} scoring {len(test)} test pairs with {len(specs)} models: {', '.join(labels)}"
        + ("" if msclap_ok else f" (MS CLAP {msclap_note})")
    )
    result = evaluate_models(
        specs,
        test,
        labels=labels,
        batch_size=cfg.batch_size,
        device=cfg.device,
        n_boot=cfg.n_boot,
        seed=cfg.seed,
        paper=paper,
        data_spec=data_spec,
        progress=cfg.progress,
    )
    result.split = "test"

    source = "released checkpoint" if cfg.official else "trained here"
    rows = [{"label": LAION_LABEL, "source": "pretrained", "model": cfg.laion, "note": ""}]
    release = f"MS CLAP {msclap.model.config.version}" if msclap is not None else None
    rows.append(
        {
            "label": MSCLAP_LABEL,
            "source": "humanclap native MS CLAP",
            "note": msclap_note,
            "model": f"{msclap.info.model_id} ({release})" if msclap is not None else None,
            "release": release,
            "why": _msclap_why(release, cfg.msclap),
        }
    )
    recipes = {v.label: v.key for v in RECIPES}
    for lbl, spec in models.items():
        if lbl in recipes:
            row = {"label": lbl, "source": f"trained here (recipe, configs/{recipes[lbl]}.yaml)", "recipe": True}
        else:
            row = {"label": lbl, "source": source}
        rows.append({**row, "model": spec, "note": ""})
    for r in rows:
        r["paper"] = PAPER_TABLE.get(r["label"])  # None for a recipe: its paper columns show "–"
    say(f"{stage()} report: writing {final}")
    return ReproduceResult(result, write_report(result, out, plots=cfg.plots), rows)


def _msclap_why(release: str | None, spec: str) -> str | None:
    """Why the MS CLAP row used the release it used (said in the report)."""
    if release is None:
        return None
    if spec == MSCLAP_MODEL:
        return (
            "the default: msclap's default release (CLAP(version='2023')), which is what 'MS CLAP' "
            "without a year means in TTA papers and the XACLE baselines; the paper names no release"
        )
    return f"chosen with msclap={spec}"


def _annotate(res: ReproduceResult, cfg: ReproduceConfig) -> None:
    """Add what write_report cannot know: where each row came from and rows not run."""
    from humanclap.evaluation.tables import MISSING, markdown_table
    from humanclap.io import atomic_write_text, write_json

    files, rows, trained, skipped = res.files, res.rows, res.trained, res.skipped

    notes = {r["label"]: r["note"] for r in rows if r["note"]}
    missing = [f"{lbl} {k.upper()}" for lbl, p in PAPER_TABLE.items() for k, v in p.items() if v is None]
    info = {
        "mode": "official" if cfg.official else "trained",
        **({"recipes": [v.key for v in RECIPES]} if cfg.recipes else {}),  # absent: a plain run's file as before
        "rows": rows,
        "notes": notes,
        "trained_now": trained,
        "skipped_complete": skipped,
        "paper_source": PAPER_SOURCE,
        "paper_not_found": missing,
    }
    metrics = json.loads(files["metrics"].read_text())
    metrics["reproduce"] = info
    metrics["selection_gain"] = res.selection_gain
    write_json(files["metrics"], metrics)

    lines = [
        "## Reproduction",
        "",
        (
            f"Rows of the paper's table on RELATE test ({info['mode']} Human-CLAP models). "
            f"*(paper)* columns: {PAPER_SOURCE}."
        ),
        "",
        *markdown_table(
            ["row", "source", "model", "note"],
            [[r["label"], r["source"], r["model"] or MISSING, r["note"] or ""] for r in rows],
        ),
    ]
    for r in rows:
        if r.get("release"):
            lines += [
                "",
                f"{r['label']} row: {r['release']}, {r['why']}. Long clips are centre-cropped "
                "(msclap crops at random) and audio is resampled with soxr (msclap: torchaudio).",
            ]
    if cfg.recipes:
        lines += [
            "",
            "Recipe rows are not in the paper: each is trained here from its shipped config "
            "(configs/<key>.yaml, whose comments name where the recipe comes from and what differs "
            "from wSCE+MAE) on the same base model and data; their *(paper)* columns are empty.",
        ]
    if skipped:
        lines += ["", f"Reused complete models from an earlier run: {', '.join(skipped)}."]
    text = files["report"].read_text()
    section = "\n".join(lines) + "\n\n"
    text = text.replace("## Models\n", section + "## Models\n", 1) if "## Models\n" in text else text + "\n" + section
    atomic_write_text(files["report"], text)
    if res.selection_gain is not None:
        from humanclap.recipes.demo import write_selection_gain

        write_selection_gain(res.selection_gain, files["report"].parent, GAIN_TITLE)
        files["selection_gain"] = files["report"].parent / "selection_gain.json"
