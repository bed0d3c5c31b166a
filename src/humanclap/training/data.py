"""Training data in memory: one feature tensor per unique audio file, one token row per
unique text, and per split the indices of each pair into them plus its human score.

Audio goes through the same deterministic preprocessing as scoring (``audio.py``: no
random crops, no augmentation), once per unique file, so what the model learns from is
exactly what it is later scored on. Memory: one ``(channels, frames, mels)`` float32 array
per file, about 256 kB (unfused) or 1 MB (fused) for a 10 s LAION window; for MS CLAP the
raw window waveform (the front end is in the model), 0.9 MB (2022, 5 s) or 1.2 MB (2023,
7 s) at 44.1 kHz.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from humanclap.data import load_rated
from humanclap.errors import ConfigError
from humanclap.scoring.engine import features_of
from humanclap.training.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class SplitTable:
    """The pairs of one split, as indices into :class:`TrainData`'s unique items."""

    name: str
    pairs: pd.DataFrame
    audio_idx: torch.Tensor  # (N,) long
    text_idx: torch.Tensor  # (N,) long
    target: torch.Tensor  # (N,) float32, 0-1: the human mean, or the training targets (targets.py)

    def __len__(self) -> int:
        return int(self.target.shape[0])


@dataclass
class TrainData:
    audio_paths: list[str]
    texts: list[str]
    features: torch.Tensor  # (U, C, T, F) float32; MS CLAP: (U, window samples)
    is_longer: torch.Tensor  # (U, 1) bool
    # (V, L) long, L = the longest tokenized text (at most 77, LAION's limit): padding to
    # the longest instead of 77 changes no embedding (the mask hides pads) and costs less.
    # MS CLAP pads to its text length (77 GPT-2 / 100 BERT), as its scorer does.
    input_ids: torch.Tensor
    attention_mask: torch.Tensor  # (V, L) long, 0 on padding
    splits: dict[str, SplitTable] = field(default_factory=dict)


def load_splits(cfg: TrainConfig):
    """The rated dataset and the names of the splits this run uses (train, val, test)."""

    rated = load_rated(cfg.data, audio_root=cfg.audio_root)
    available = rated.splits
    if cfg.train_split not in available:
        raise ConfigError(
            f"{cfg.data}: no split {cfg.train_split!r} to train on; splits present: "
            f"{available}. Pass --train-split, or add a 'split' column to the manifest."
        )
    val = cfg.val_split or None
    if val is not None and val not in available:
        raise ConfigError(
            f"{cfg.data}: no validation split {val!r}; splits present: {available}. "
            "Pass --val-split NAME, or --val-split '' to train without validation "
            "(no early stopping; the last epoch is kept)."
        )
    test = cfg.test_split if cfg.test_split and cfg.test_split in available else None
    names = [n for n in dict.fromkeys([cfg.train_split, val, test]) if n]
    return rated, names, val, test


def build_train_data(
    rated,
    split_names: list[str],
    scorer,
    progress: bool = False,
    memo: dict | None = None,
    targets: dict[str, pd.Series] | None = None,
) -> TrainData:
    """Preprocess each unique audio file and text of the used splits once.

    ``memo``: a dict shared by several runs in one process (the demo's three variants):
    features already in it, for the same preprocessing, are reused instead of recomputed.
    ``targets``: per split name, the target of each pair by ``pair_id`` instead of its human
    mean (the training split's, :mod:`~humanclap.training.targets`); that split's pairs
    without one are left out. Other splits keep the raw human mean."""
    targets = targets or {}
    pairs = rated.pairs[rated.pairs["split"].isin(split_names)]
    for name, values in targets.items():
        pairs = pairs[(pairs["split"] != name) | pairs["pair_id"].isin(values.index)]
    pairs = pairs.reset_index(drop=True)
    _refuse_unusable(pairs)
    missing = pairs.loc[~pairs["audio_exists"].astype(bool), "audio"].tolist()
    if missing:
        raise ConfigError(
            f"{len(missing)} of {len(pairs)} pairs have no audio file, e.g. {missing[:3]}. "
            "Point --audio-root at the folder the dataset's audio paths start from."
        )
    audio_paths = list(dict.fromkeys(pairs["audio"]))
    texts = list(dict.fromkeys(pairs["text"]))
    feats, longer = [], []
    bar = _bar(audio_paths, progress, "preprocessing audio")
    prep_key = json.dumps(asdict(scorer.info.preprocessing), sort_keys=True)
    for path in bar:
        key = (prep_key, path)
        if memo is not None and key in memo:
            f, is_longer = memo[key]
        else:
            f, is_longer = features_of(scorer, path)  # the engine's own feature stage
            if memo is not None:
                memo[key] = (f, is_longer)
        feats.append(torch.from_numpy(np.ascontiguousarray(f)))
        longer.append(bool(is_longer))
    tokens = scorer.tokenize(texts)
    data = TrainData(
        audio_paths=audio_paths,
        texts=texts,
        features=stack_padded(feats),
        is_longer=torch.tensor(longer).view(-1, 1),
        input_ids=tokens["input_ids"],
        attention_mask=tokens["attention_mask"],
    )
    a_index = {p: i for i, p in enumerate(audio_paths)}
    t_index = {t: i for i, t in enumerate(texts)}
    for name in split_names:
        part = pairs[pairs["split"] == name].reset_index(drop=True)
        data.splits[name] = SplitTable(
            name=name,
            pairs=part,
            audio_idx=torch.tensor([a_index[p] for p in part["audio"]], dtype=torch.long),
            text_idx=torch.tensor([t_index[t] for t in part["text"]], dtype=torch.long),
            target=torch.tensor(
                (targets[name].reindex(part["pair_id"]) if name in targets else part["human"]).to_numpy(
                    dtype=np.float32
                )
            ),
        )
    return data


def stack_padded(feats: list[torch.Tensor]) -> torch.Tensor:
    """Stack per-clip features; features of unequal length (PE-Audio's ``(2, n)`` waveform +
    padding mask, one row per clip's own length) are zero-padded on the last axis to the
    longest, which pads the mask with zeros too. Fixed-window families stack as they are."""
    if len({f.shape for f in feats}) <= 1:
        return torch.stack(feats)
    longest = max(f.shape[-1] for f in feats)
    return torch.stack([torch.nn.functional.pad(f, (0, longest - f.shape[-1])) for f in feats])


def _refuse_unusable(pairs: pd.DataFrame) -> None:
    """Refuse pairs whose manifest audio/text was not a string (``input_error``, see
    ``data.manifest``): training on the rest would silently learn from other data than
    the user rated, and the value's repr is not a caption."""
    if "input_error" not in pairs:
        return
    bad = pairs[pairs["input_error"].astype(bool)]
    if len(bad):
        first = bad.iloc[0]
        raise ConfigError(
            f"{len(bad)} of {len(pairs)} pairs cannot be trained on, e.g. {first['wavname']!r} "
            f"with text {first['text']!r}: {first['input_error']}. Every 'audio' and 'text' of "
            "the manifest must be a JSON string: fix or remove those rows"
        )


def global_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """Shuffled global batches of one epoch; the incomplete last batch is dropped (a
    contrastive loss on a handful of pairs is mostly noise, and every process needs the
    same share). The order depends only on (seed, epoch): a resumed run sees the same."""
    if n < batch_size:
        raise ConfigError(f"the training split has {n} pairs, fewer than one batch of {batch_size}; lower --batch-size")
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=g)
    return [order[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def rank_share(batch: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This process's contiguous slice of a global batch (rank order = batch order)."""
    per = batch.shape[0] // world_size
    return batch[rank * per : (rank + 1) * per]


def _bar(items, progress: bool, desc: str):
    if not progress:
        return items

    return tqdm(items, desc=desc, leave=False)
