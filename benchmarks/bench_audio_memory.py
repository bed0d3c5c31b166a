"""Peak memory and feature equality of loading one long multichannel file.

Writes a 10-minute 96 kHz 6-channel 16-bit wav (691 MB), then, each in a fresh process
(peak RSS from ``resource.getrusage``), featurises it with LAION CLAP's extractor settings
(48 kHz, 10 s window, 64 mels, 50-14000 Hz):

* before: the whole-file path (``read_audio`` + downmix + ``soxr.resample`` + ``clip_features``),
  as ``scoring/audio.py`` did it before bounded reading (``git show f9e125b:...``);
* after:  ``load_clip_features`` (unfused: centre window only; fused: one mono copy).

and prints the max abs difference of the features between the two paths.

    python benchmarks/bench_audio_memory.py [--minutes 10] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import soundfile as sf

BEFORE_COMMIT = "f9e125b"  # the last commit with the whole-file path
CHILD = textwrap.dedent("""
    import resource, sys, time, importlib.util
    import numpy as np, soxr
    from transformers import ClapFeatureExtractor
    path, mode, fused, out = sys.argv[1], sys.argv[2], sys.argv[3] == "fused", sys.argv[4]
    ext = ClapFeatureExtractor(feature_size=64, frequency_min=50, frequency_max=14000)
    ext.truncation = "fusion" if fused else "rand_trunc"
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    if mode == "before":
        spec = importlib.util.spec_from_file_location("old_audio", sys.argv[5])
        old = importlib.util.module_from_spec(spec); sys.modules["old_audio"] = old; spec.loader.exec_module(old)
        feats, longer = old.clip_features(old.load_audio(path, ext.sampling_rate), ext, fused)
    else:
        from humanclap.scoring.audio import load_clip_features
        feats, longer = load_clip_features(path, ext, fused)
    dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    np.save(out, feats)
    print(f"{mode:6s} {'fused' if fused else 'unfused':7s} peak RSS {peak / 1024:8.0f} MB "
          f"(imports {base / 1024:.0f} MB)  {dt:6.1f} s  longer={longer}")
""")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_audio_"))
    work.mkdir(parents=True, exist_ok=True)
    wav = work / "long_96k_6ch.wav"
    rate, channels = 96000, 6
    if not wav.exists():
        rng = np.random.default_rng(0)
        with sf.SoundFile(str(wav), "w", rate, channels, subtype="PCM_16") as f:
            block = rate * 10
            for i in range(int(args.minutes * 60 * rate) // block):
                t = (np.arange(block) + i * block) / rate
                tone = 0.3 * np.sin(2 * np.pi * (220 + 20 * (i % 7)) * t)
                f.write(
                    (
                        tone[:, None] * np.linspace(0.4, 1, channels) + 0.02 * rng.standard_normal((block, channels))
                    ).astype(np.float32)
                )
    old = work / "old_audio.py"
    repo = Path(__file__).resolve().parents[1]
    old.write_bytes(
        subprocess.run(
            ["git", "-C", str(repo), "show", f"{BEFORE_COMMIT}:src/humanclap/scoring/audio.py"],
            check=True,
            capture_output=True,
        ).stdout
    )
    print(f"{wav}: {wav.stat().st_size / 1e6:.0f} MB, {args.minutes:g} min, {rate} Hz, {channels} ch, PCM_16")
    for fused in ("unfused", "fused"):
        feats = {}
        for mode in ("before", "after"):
            out = work / f"{mode}_{fused}.npy"
            run = subprocess.run(
                [sys.executable, "-c", CHILD, str(wav), mode, fused, str(out), str(old)], capture_output=True, text=True
            )
            sys.stdout.write(run.stdout)
            if run.returncode:
                sys.exit(run.stderr)
            feats[mode] = np.load(out)
        print(
            f"        {fused:7s} max |features after - before| = "
            f"{np.abs(feats['after'] - feats['before']).max():.3g} (features span "
            f"{feats['before'].min():.1f}..{feats['before'].max():.1f} dB)"
        )


if __name__ == "__main__":
    main()
