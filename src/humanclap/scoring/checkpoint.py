"""A checkpoint loads whole or not at all: the checks around ``ClapModel.from_pretrained``.

transformers is lenient where a metric must not be: a folder without tokenizer files
loads an empty 5-token tokenizer (every text gets the same embedding, every score is
equal), and weights missing from ``model.safetensors`` are initialised at random with
only a log line. Both would print wrong numbers with exit 0. So, for a local folder,
before transformers sees it (:func:`check_local_folder`):

* ``config.json`` must be JSON and a CLAP config (``model_type: clap``);
* weights must be there (``model.safetensors``, a sharded index, or ``pytorch_model.bin``)
  and every ``.safetensors`` file must open (empty, truncated and corrupt headers fail);
* tokenizer files must be there (``tokenizer.json``, or ``vocab.json`` + ``merges.txt``);
* ``preprocessor_config.json``, when present, must be JSON. When it is absent the
  extractor is derived from ``config.json`` with LAION's settings and a warning (the
  documented behaviour, kept: LAION's own converted checkpoints ship no extractor file).

and, for any source, after loading: no missing, unexpected or mismatched weights
(:func:`check_loading_info`), a tokenizer that tokenizes (:func:`check_tokenizer`) and whose
ids fit the text tower's embedding table (:func:`check_vocab_fits`); for a local folder, no
integer or bool tensor stored where the model has float weights (:func:`check_float_weights`).

Every family first refuses a model file that is a FIFO, a device or a socket
(:func:`check_model_files`): reading one blocks until a writer comes, or never ends.

:func:`local_revision` hashes every file that changes a score (config, weights,
tokenizer, extractor settings), so the embedding cache never serves embeddings of
another tokenizer or extractor.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path

from safetensors import safe_open

from humanclap.errors import ModelLoadError

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# Either a fast tokenizer file or the byte-level BPE pair a RoBERTa tokenizer is built from.
TOKENIZER_FILE_SETS = (("tokenizer.json",), ("vocab.json", "merges.txt"))
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)
EXTRACTOR_FILE = "preprocessor_config.json"
# A frozen-feature score head saved beside a model (humanclap.scoring.head): not part of
# the model's weights, so not of :func:`local_revision` (the head's scorer adds its own hash).
HEAD_FILES = ("score_head.safetensors", "score_head.json")
COMPLETE_FOLDER = (
    "a complete checkpoint folder holds config.json, model.safetensors (or "
    "pytorch_model.bin), the tokenizer (tokenizer.json, or vocab.json + merges.txt, "
    "with tokenizer_config.json) and preprocessor_config.json, as written by "
    "save_pretrained of the model, the tokenizer and the feature extractor"
)
# Buffers that a model computes from its config (arange / zeros / counters), so a checkpoint
# written by another transformers version may lack or add them without changing a score.
# Learned buffers (BatchNorm running_mean/var) are *not* here: missing, they are refused.
DERIVED_BUFFERS = re.compile(r"(position_ids|token_type_ids|relative_position_index|num_batches_tracked)$")
# A tokenizer with fewer tokens than this is an empty shell (the 5 special tokens), not a vocabulary.
MIN_VOCAB = 32
PROBE_TEXT = "a dog barks while rain falls"


# Paths that exist but are not files. A FIFO blocks the reader until a writer comes (forever, in
# a batch job) and a device never ends, so a model file of these kinds is never opened.
SPECIAL_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
# What a loader (transformers, msclap's layout, ours) may open in a checkpoint folder: configs,
# weights, tokenizer vocabularies and merges, sentencepiece models.
MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model", ".pth", ".pt")


def special_kind(path: Path) -> str | None:
    """What ``path`` is when it exists but is neither a regular file nor a folder, else None."""
    try:
        mode = os.stat(path).st_mode  # follows links: a link to /dev/zero is a device
    except OSError:  # absent, a broken link or a loop: the loaders name those themselves
        return None
    return next((name for test, name in SPECIAL_KINDS if test(mode)), None)


def check_regular_file(path: Path) -> None:
    """Refuse (``ModelLoadError``) a model file that is a FIFO, a device or a socket."""
    kind = special_kind(path)
    if kind is not None:
        raise ModelLoadError(
            f"{path} is {kind}, not a file: a model file is read whole, and reading "
            f"this would block or never end. Replace it with the real file (copied "
            f"from the original checkpoint)"
        )


def check_model_files(folder: Path, names: tuple[str, ...] | None = None) -> None:
    """Refuse a checkpoint folder where a file a loader may open (``names``, else every name with
    a model-file suffix) is a FIFO, a device or a socket; before anything in it is read."""
    if names is None:
        try:
            names = tuple(sorted(e.name for e in os.scandir(folder) if e.name.endswith(MODEL_FILE_SUFFIXES)))
        except OSError:  # not a folder, or unreadable: the loader says which
            return
    for name in names:
        check_regular_file(folder / name)


def pickle_refusal(path: Path | str, exc: Exception) -> ModelLoadError:
    """The one message for a checkpoint that ``torch.load(weights_only=True)`` refuses: it
    names the file (in a folder: its one ``.bin``) and what was refused, and never suggests
    loading the file with its code."""
    bins = sorted(Path(path).glob("*.bin")) if Path(path).is_dir() else []
    path = bins[0] if len(bins) == 1 else path
    found = re.search(r"GLOBAL (\S+)|refused to load (\S+?):", str(exc))
    what = f" ({found[1] or found[2]})" if found else ""
    return ModelLoadError(
        f"{path}: refused: the file holds code, not only tensors{what}, and humanclap "
        "never runs code from a model file. Use the model's safetensors file or the "
        "original release; if you wrote the file yourself, save only the weights "
        "(torch.save(model.state_dict(), path), or safetensors)"
    )


def _json_file(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(
            f"{path}: the {what} is not readable JSON ({exc}); restore it from the "
            f"original checkpoint ({COMPLETE_FOLDER})"
        ) from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: the {what} must be a JSON object, not {type(data).__name__}")
    return data


def check_local_folder(folder: Path) -> None:
    """Refuse (``ModelLoadError``) a local folder that is not a complete, readable CLAP checkpoint."""
    check_model_files(folder)
    config = _json_file(folder / "config.json", "model config")
    if config.get("model_type") != "clap":
        raise ModelLoadError(
            f"{folder / 'config.json'}: model_type is {config.get('model_type')!r}, "
            "not 'clap': this is not a CLAP checkpoint. Pass a CLAP checkpoint "
            "folder or a hub id like 'laion/clap-htsat-unfused'."
        )
    weights = [name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not weights:
        raise ModelLoadError(f"{folder}: no weights (none of {', '.join(WEIGHT_FILES)}); {COMPLETE_FOLDER}")
    for path in sorted(folder.glob("*.safetensors")):
        _check_safetensors(path)
    if not any(all((folder / f).is_file() for f in group) for group in TOKENIZER_FILE_SETS):
        present = sorted(f for f in TOKENIZER_FILES if (folder / f).is_file())
        raise ModelLoadError(
            f"{folder}: the tokenizer is missing (no tokenizer.json, nor vocab.json + merges.txt"
            f"{'; present: ' + ', '.join(present) if present else ''}). Without it every text "
            f"would get the same embedding. Copy the tokenizer files from the base model "
            f"(tokenizer.save_pretrained(folder)); {COMPLETE_FOLDER}"
        )
    if (folder / EXTRACTOR_FILE).exists():
        _json_file(folder / EXTRACTOR_FILE, "feature extractor config")


def _check_safetensors(path: Path) -> None:
    """Open the header and check that the file covers every tensor it declares."""

    try:
        with safe_open(str(path), framework="pt") as fh:
            fh.keys()
    except Exception as exc:  # SafetensorError (a bare Exception subclass) and OSError
        size = path.stat().st_size if path.exists() else 0
        what = "empty" if size == 0 else f"corrupt or truncated ({size} bytes)"
        raise ModelLoadError(
            f"{path}: the weights file is {what} ({str(exc)[:160]}); restore it "
            f"from the original checkpoint or save the model again"
        ) from None


def check_loading_info(info: dict, source: str, model=None, folder: Path | None = None) -> None:
    """Refuse weights that transformers would silently initialise at random or drop; a tensor
    of the wrong shape is named with both shapes (``model`` and the ``folder``'s safetensors
    headers give them where transformers 4.x reports the name alone)."""
    shapes = _mismatch_shapes(info, model, folder)
    problems = []
    for kind, label in (
        ("missing_keys", "missing from the weights (would be random)"),
        ("unexpected_keys", "in the weights but not in the model config"),
        ("mismatched_keys", "of the wrong shape for the model config"),
    ):
        keys = sorted(_describe_key(k, shapes) for k in info.get(kind) or ())
        keys = [k for k in keys if not DERIVED_BUFFERS.search(k.split(":")[0])]
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            sep = "; " if kind == "mismatched_keys" else ", "  # a shape has commas of its own
            problems.append(f"{len(keys)} weights {label}: {sep.join(keys[:3])}{more}")
    errors = [str(e) for e in info.get("error_msgs") or ()]
    if errors:
        problems.append("; ".join(errors)[:300])
    if problems:
        raise ModelLoadError(
            f"{source}: the weights do not match the model config ({'; '.join(problems)}). "
            "The config.json and model.safetensors must come from the same checkpoint: "
            "restore the config.json that was saved with these weights."
        )


def _mismatch_shapes(info: dict, model, folder: Path | None) -> dict[str, tuple]:
    """(shape in the file, shape in the model) of mismatched tensors reported by name only."""
    names = {k for k in info.get("mismatched_keys") or () if isinstance(k, str)}
    if not names or model is None or folder is None:
        return {}

    own, out = model.state_dict(), {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as fh:
            for key in names & set(fh.keys()) & set(own):
                out[key] = (tuple(fh.get_slice(key).get_shape()), tuple(own[key].shape))
    return out


def _describe_key(key, shapes: dict[str, tuple]) -> str:
    """A loading-info key; a mismatched one (name, shape in the file, shape in the model) with
    both shapes, so the message says what does not fit without a log to look up."""
    if isinstance(key, str) and key in shapes:
        key = (key, *shapes[key])
    if isinstance(key, str):
        return key
    if len(key) == 3:
        return f"{key[0]}: {tuple(key[1])} in the weights, {tuple(key[2])} in the model config"
    return str(key[0])


def is_float_label(dtype: str) -> bool:
    """Whether a safetensors dtype label (F32, BF16, F8_E4M3, I64, BOOL, ...) is floating point."""
    return dtype.startswith("F") or dtype == "BF16"


def check_float_weights(file_dtypes: dict[str, tuple[str, bool]], model_state: dict, source: str) -> None:
    """Refuse integer or bool tensors where the model has floating-point weights.

    ``file_dtypes`` maps a tensor name to (its dtype as stored, whether that is floating point).
    Loading casts such a tensor to float and scores with it, so a damaged or foreign file would
    give numbers with exit 0. Tensors the model keeps as integers itself (``position_ids``,
    ``relative_position_index``, ``num_batches_tracked``) are compared with nothing: any
    dtype the model's own tensor has is what it takes."""
    bad = [
        (k, label)
        for k, (label, is_float) in sorted(file_dtypes.items())
        if not is_float and k in model_state and model_state[k].is_floating_point()
    ]
    if bad:
        name, label = bad[0]
        more = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
        raise ModelLoadError(
            f"{source}: {name} is {label}{more}, but the model's {name} is floating point "
            f"({model_state[name].dtype}): weights must be floating point, and integer or "
            "bool values would be cast and scored as if they were weights. The file is "
            "damaged or belongs to another model; restore it from the original checkpoint"
        )


def safetensors_dtypes(folder: Path) -> dict[str, tuple[str, bool]]:
    """(stored dtype, is floating point) of every tensor of the folder's ``.safetensors`` files,
    read from their headers (no tensor data is read)."""

    out = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():
                label = fh.get_slice(key).get_dtype()
                out[key] = (label, is_float_label(label))
    return out


def check_vocab_fits(tokenizer, rows: int, source: str, config_field: str) -> None:
    """Refuse a tokenizer whose token ids go beyond the text tower's embedding table: every text
    with such a token would fail deep inside torch (an IndexError), blamed on no one."""
    ids = max(len(tokenizer), max(tokenizer.get_vocab().values(), default=-1) + 1)
    if ids > rows:
        raise ModelLoadError(
            f"{source}: the tokenizer has {ids} tokens (ids 0..{ids - 1}), but the text "
            f"tower's embedding table has {rows} rows ({config_field}): a text with a token "
            f"id of {rows} or more cannot be embedded. The tokenizer and the model must come "
            "from the same checkpoint: restore its tokenizer files, or pass the tokenizer "
            "the model was trained with"
        )


def check_loaded_clap(model, tokenizer, source: str, folder: Path | None) -> None:
    """The checks a loaded transformers CLAP needs beyond transformers' own: the tokenizer fits
    the embedding table and (local folder) no float weight was stored as integers."""
    rows = int(model.text_model.get_input_embeddings().num_embeddings)
    check_vocab_fits(tokenizer, rows, source, f"config.json text_config.vocab_size = {rows}")
    if folder is not None:
        check_float_weights(safetensors_dtypes(folder), model.state_dict(), source)


def check_tokenizer(tokenizer, source: str) -> None:
    """A tokenizer that yields real tokens for ordinary text, and can pad to a fixed length."""
    size = len(tokenizer)
    ids = tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
    unk = getattr(tokenizer, "unk_token_id", None)
    if size < MIN_VOCAB or not ids or all(i == unk for i in ids):
        raise ModelLoadError(
            f"{source}: the tokenizer is empty or broken ({size} tokens; {PROBE_TEXT!r} "
            f"-> {ids}); every text would get the same embedding. Restore the "
            f"tokenizer files; {COMPLETE_FOLDER}"
        )
    if tokenizer.pad_token_id is None:
        raise ModelLoadError(
            f"{source}: the tokenizer has no padding token, which fixed-length "
            "(77-token) text batches need; set pad_token in tokenizer_config.json"
        )


# Extractor settings that must be positive numbers: a zero, negative or non-numeric one
# would otherwise surface per row as "unreadable audio", blaming every clip for the model.
EXTRACTOR_NUMBERS = ("sampling_rate", "feature_size", "hop_length", "fft_window_size", "nb_max_samples")


def check_extractor(extractor, source: str, audio_config=None) -> None:
    """The feature extractor's sizes and rate are positive integers, its band a valid range,
    and (given the model's ``audio_config``) its features fit the audio tower's input."""
    for name in EXTRACTOR_NUMBERS:
        value = getattr(extractor, name, None)
        # a float (16000.0) is refused too: the extractor pads with it and numpy needs ints
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ModelLoadError(
                f"{source}: {EXTRACTOR_FILE}: {name} is {value!r}, not a positive "
                f"integer; restore the file; {COMPLETE_FOLDER}"
            )
    low, high = getattr(extractor, "frequency_min", None), getattr(extractor, "frequency_max", None)
    if not (isinstance(low, (int, float)) and isinstance(high, (int, float)) and 0 <= low < high):
        raise ModelLoadError(
            f"{source}: {EXTRACTOR_FILE}: frequency_min/frequency_max are "
            f"{low!r}/{high!r}, not a range 0 <= min < max; restore the file; "
            f"{COMPLETE_FOLDER}"
        )
    if audio_config is None:
        return
    # The HTSAT tower takes at most spec_size * (spec_size // mel bins) frames of exactly
    # num_mel_bins mels; beyond that every forward fails, a model fault, not a clip's.
    mels, spec = int(audio_config.num_mel_bins), int(audio_config.spec_size)
    frames = int(extractor.nb_max_samples) // int(extractor.hop_length) + 1
    if int(extractor.feature_size) != mels or (mels <= spec and frames > spec * (spec // mels)):
        raise ModelLoadError(
            f"{source}: {EXTRACTOR_FILE} does not fit the model: {frames} frames of "
            f"{extractor.feature_size} mels per window, the audio tower takes at most "
            f"{spec * max(spec // mels, 1)} frames of {mels} mels (config.json); the "
            f"extractor and the model must come from the same checkpoint"
        )


def local_revision(folder: Path) -> str:
    """Content hash of every file of a local checkpoint that changes an embedding: config,
    weights, tokenizer files and the feature extractor config (not a score head's
    :data:`HEAD_FILES`: the head changes scores, not embeddings, and is hashed by its scorer)."""
    h = hashlib.sha256()
    files = (
        sorted(f for f in folder.glob("*.safetensors") if f.name not in HEAD_FILES)
        + sorted(folder.glob("*.bin"))
        + sorted(folder.glob("*.index.json"))
        + sorted(folder.glob("*.model"))
        + [folder / name for name in ("config.json", *TOKENIZER_FILES, EXTRACTOR_FILE)]
    )
    for f in files:
        if f.is_file():
            h.update(f.name.encode() + b"\0")
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
            h.update(b"\0")
    return "sha256:" + h.hexdigest()[:16]
