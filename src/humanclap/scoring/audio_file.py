"""Reading audio files with memory bounded by what the model uses.

A file is never decoded whole at its source rate and channel count: it is read in blocks
of ``BLOCK_FRAMES`` frames, each block is downmixed to mono right away, and the mono signal
goes through a streaming resampler (``soxr.ResampleStream``, which gives the very same
samples as ``soxr.resample`` on the whole signal). So the largest buffer is one mono copy
at the model's rate, and for an unfused model not even that: only the centre window (plus a
resampler margin) is read, by seeking, from formats whose frame count and seeks are exact.

Before anything is opened, the path is checked so a user hears what is wrong with it: not
found, a broken symlink, a symlink loop, a directory, not a regular file (a FIFO would
block the reader forever), no read permission.
"""

from __future__ import annotations

import errno
import math
import os
import stat
import unicodedata
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import soxr

from humanclap.errors import AudioError

# 65536 frames: 1.5 MB per block for 96 kHz 6-channel float32, a few ms of decoding.
BLOCK_FRAMES = 1 << 16
# Extra signal read on each side of the centre window so that the resampler's edge
# transient stays outside it. soxr "HQ" settles within ~10 ms; 0.1 s leaves room for
# low source rates and costs nothing (measured in tests/test_hostile_audio.py).
RESAMPLER_MARGIN_S = 0.1
# Containers whose header frame count is exact and whose seeks are sample-accurate in
# libsndfile. Lossy formats (OGG, MP3, OPUS) may estimate their length: they are streamed.
EXACT_SEEK_FORMATS = frozenset(
    {
        "WAV",
        "WAVEX",
        "W64",
        "RF64",
        "AIFF",
        "AU",
        "CAF",
        "FLAC",
        "NIST",
        "IRCAM",
        "SVX",
        "VOC",
        "PAF",
        "HTK",
        "SD2",
        "WVE",
        "MAT4",
        "MAT5",
        "PVF",
        "XI",
        "AVR",
        "MPC2K",
    }
)


def check_audio_path(item: str | os.PathLike) -> Path:
    """Return ``item`` as a Path to a readable regular file, or raise AudioError saying why not."""
    path = Path(item)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise AudioError(
                f"{path}: broken symlink (it points to {os.readlink(path)!r}, which does "
                "not exist); fix the link or pass the real file"
            ) from None
        raise AudioError(f"{path}: {_not_found(path)}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise AudioError(
                f"{path}: symlink loop (the link resolves back to itself); point it at a real audio file"
            ) from None
        if exc.errno == errno.ENOTDIR:
            raise AudioError(
                f"{path}: file not found (a part of the path is a file, not a folder; check the path or --audio-root)"
            ) from None
        if exc.errno == errno.EACCES:
            raise AudioError(
                f"{path}: permission denied on a folder of the path; make the folders readable (chmod +x) for this user"
            ) from None
        raise AudioError(f"{path}: cannot access the file ({exc.strerror}); check the path") from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioError(f"{path}: is a directory, not an audio file; list the audio files themselves")
    if not stat.S_ISREG(st.st_mode):
        raise AudioError(f"{path}: not a regular file (a FIFO, socket or device); pass a wav/flac/ogg file")
    if not os.access(path, os.R_OK):
        raise AudioError(
            f"{path}: permission denied: the file exists but this user cannot read it; fix its permissions (chmod a+r)"
        )
    return path


def _not_found(path: Path) -> str:
    """ "file not found ...", naming the path's other Unicode normal form when that exists:
    Linux file names are bytes, so a manifest written in NFC ("é" one code point) misses a
    file saved in NFD ("e" + a combining accent, as macOS tools write names) and vice versa.
    Two stats, and only for a non-ASCII path: no folder is listed."""
    name = str(path)
    if not name.isascii():
        for form in ("NFC", "NFD"):
            other = unicodedata.normalize(form, name)
            if other != name and os.path.lexists(other):
                return (
                    f"not found; a file named {Path(other).name!r} in {form} form exists: the manifest and "
                    "the file name use different Unicode normalisation; rename the file or write its "
                    f"name in {form} in the manifest"
                )
    return "file not found (check the path or --audio-root)"


def open_audio(path: Path) -> sf.SoundFile:
    """Open a checked path for reading; unreadable content becomes an AudioError."""
    try:
        return sf.SoundFile(str(path))
    except PermissionError:
        raise AudioError(
            f"{path}: permission denied: the file exists but this user cannot read it; fix its permissions (chmod a+r)"
        ) from None
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, ...
        raise AudioError(f"{path}: unreadable audio ({exc}); expected wav/flac/ogg") from None


def resampled_length(frames: int, rate: int, target_rate: int) -> int:
    """Samples soxr returns for ``frames`` input samples: round half up of frames * target / rate."""
    return (2 * frames * target_rate + rate) // (2 * rate)


def mono_blocks(f: sf.SoundFile, name: str, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
    """Frames ``[start, stop)`` of an open file as float64 mono blocks (mean of the channels).

    Float64 because that is what the whole-file path always used (identical samples). NaN or
    inf samples raise AudioError as soon as their block is read.
    """
    if start or (f.seekable() and f.tell()):
        f.seek(start)
    left = None if stop is None else stop - start
    while left is None or left > 0:
        n = BLOCK_FRAMES if left is None else min(BLOCK_FRAMES, left)
        try:
            block = f.read(n, dtype="float32", always_2d=True)
        except Exception as exc:  # a truncated or corrupt stream fails mid-file
            raise AudioError(f"{name}: unreadable audio ({exc}); expected wav/flac/ogg") from None
        if block.shape[0] == 0:
            return
        if not np.isfinite(block).all():
            raise AudioError(f"{name}: contains NaN or inf samples; fix or re-export the file")
        if left is not None:
            left -= block.shape[0]
        yield block.mean(axis=1, dtype=np.float64)


def resampled_blocks(blocks: Iterator[np.ndarray], rate: int, target_rate: int) -> Iterator[np.ndarray]:
    """Float32 blocks at ``target_rate`` from float64 mono blocks at ``rate`` (streaming soxr HQ)."""
    if rate == target_rate:
        for block in blocks:
            yield block.astype(np.float32)
        return
    stream = soxr.ResampleStream(rate, target_rate, 1, dtype="float64", quality="HQ")
    for block in blocks:
        yield stream.resample_chunk(block).astype(np.float32)
    yield stream.resample_chunk(np.zeros(0, dtype=np.float64), last=True).astype(np.float32)


def read_mono(f: sf.SoundFile, name: str, target_rate: int) -> np.ndarray:
    """The whole file as float32 mono at ``target_rate``, holding one mono copy at a time.

    The output is written into one buffer sized from the header's frame count; a header
    that was wrong (lossy formats estimate it) falls back to joining the blocks.
    """
    expected = resampled_length(f.frames, f.samplerate, target_rate) if f.frames > 0 else 0
    out = np.empty(expected, dtype=np.float32)
    filled, extra = 0, []
    for block in resampled_blocks(mono_blocks(f, name), f.samplerate, target_rate):
        room = min(block.shape[0], expected - filled)
        out[filled : filled + room] = block[:room]
        filled += room
        if room < block.shape[0]:
            extra.append(block[room:])
    if extra:
        return np.concatenate([out, *extra])
    return out[:filled]


def read_centre_window(f: sf.SoundFile, name: str, target_rate: int, window: int) -> tuple[np.ndarray, int] | None:
    """The centre ``window`` samples at ``target_rate`` and the clip's full length there.

    Returns None when the file is not longer than the window (read it whole) or cannot be
    read this way (not seekable, a format whose length is estimated). The window is the
    one the whole-file path would crop: equal to it exactly without resampling, and to
    soxr's own float32 rounding (~3e-7) with resampling.
    """
    rate, frames = f.samplerate, f.frames
    if not f.seekable() or f.format not in EXACT_SEEK_FORMATS or frames <= 0:
        return None
    total = resampled_length(frames, rate, target_rate)
    if total <= window:
        return None
    start = (total - window) // 2
    if rate == target_rate:
        first, stop, offset = start, start + window, 0
    else:
        # Start the read on a sample whose time is a whole number of output samples, so the
        # segment's output grid is the whole file's grid shifted by an integer ``offset``.
        g = math.gcd(rate, target_rate)
        step_in, step_out = rate // g, target_rate // g
        margin = math.ceil(RESAMPLER_MARGIN_S * target_rate)
        k = max(0, (start - margin) // step_out)
        first, offset = k * step_in, start - k * step_out
        stop = min(frames, -(-(start + window + margin) * rate // target_rate))
    blocks = resampled_blocks(mono_blocks(f, name, first, stop), rate, target_rate)
    segment = np.concatenate(list(blocks))
    if segment.shape[0] < offset + window:  # the file held fewer frames than its header said
        return None
    return np.ascontiguousarray(segment[offset : offset + window]), total
