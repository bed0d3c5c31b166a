"""What each CPU speed-up of `humanclap score` buys, one step at a time, in one run.

The same in-process ``ScoreJob`` (64 ten-second 16 kHz clips, 64 distinct prompts, the
full-size LAION CLAP architecture with random weights, fp32, ``--batch-size 8``), each
configuration in its own fresh process, alternating, ``--repeat`` times; the median job
time (model loading excluded) and the time inside the audio and text forwards are printed.
The configurations switch the changes back off through the module constants and functions
that hold them:

1. before: decoding in a background thread beside the forwards, every text padded to 77
   tokens and embedded with its step's 8 rows, ClapFeatureExtractor's per-frame log-mel,
   glibc's default allocator settings;
2. + decoding in turn with the forwards (``EmbeddingEngine._inline``);
3. + texts in length buckets, 256 rows' texts at a time (``TEXT_BUCKETS``, ``TEXT_LOOKAHEAD``);
4. + the all-frames log-mel (``scoring/fbank.py``);
5. + freed memory kept for reuse (``scoring/runtime.py``): everything on, as shipped.

Every configuration must give the same cosines to the bit except (3), which may differ in
the last bits of a text embedding (other shapes); the script checks and prints that.

    python benchmarks/bench_score_steps.py [--repeat 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

STEPS = ["before", "+inline decode", "+text buckets", "+fast log-mel", "+keep freed memory"]

CHILD = r"""
import json, sys, time
from pathlib import Path
step, ckpt, manifest, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
if step >= 4:
    from humanclap.scoring.runtime import keep_freed_memory
    assert keep_freed_memory()
import numpy as np
import humanclap.scoring.audio as audio
import humanclap.scoring.engine as engine
import humanclap.scoring.job as job
import humanclap.scoring.clap.scorer as scorer_module
if step < 1:
    engine.EmbeddingEngine._inline = engine.EmbeddingEngine._threaded
if step < 2:
    scorer_module.TEXT_BUCKETS = (77,)
    job.TEXT_LOOKAHEAD = 1
if step < 3:
    def stock(extractor, waveform, fused):
        return extractor(waveform, sampling_rate=extractor.sampling_rate,
                         truncation="fusion" if fused else "rand_trunc",
                         padding="repeatpad", return_tensors="np")["input_features"][0].astype(np.float32)
    audio.window_features = stock
from humanclap.scoring.clap.scorer import CLAPScorer
s = CLAPScorer.from_pretrained(ckpt, device="cpu")
spent = {"audio": 0.0, "text": 0.0}
for name, key in (("get_audio_features", "audio"), ("get_text_features", "text")):
    original = getattr(s.model, name)
    def timed(*a, _f=original, _k=key, **k):
        t = time.perf_counter()
        try:
            return _f(*a, **k)
        finally:
            spent[_k] += time.perf_counter() - t
    setattr(s.model, name, timed)
t = time.perf_counter()
job.ScoreJob(s, batch_size=8).run(Path(manifest), Path(out), progress=False)
print(json.dumps({"job": time.perf_counter() - t, **spent}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_score import build_full_size_checkpoint, read_cosines, write_clips

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_steps_"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / "ckpt"
    if not (ckpt / "model.safetensors").exists():
        build_full_size_checkpoint(ckpt)
    manifest = work / "manifest.csv"
    if not manifest.exists():
        write_clips(work, 64, 10.0)
    runs: dict[int, list[dict]] = {i: [] for i in range(len(STEPS))}
    for _ in range(args.repeat):
        for i in range(len(STEPS)):
            out = work / f"step{i}.csv"
            out.unlink(missing_ok=True)
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, str(i), str(ckpt), str(manifest), str(out)],
                capture_output=True,
                text=True,
                check=True,
            )
            runs[i].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    cos = {i: read_cosines(work / f"step{i}.csv") for i in range(len(STEPS))}
    print(f"\n== in-process ScoreJob, 64 ten-second clips, full-size LAION CLAP, fp32, medians of {args.repeat} ==")
    base = float(np.median([r["job"] for r in runs[0]]))
    for i, name in enumerate(STEPS):
        med = {k: float(np.median([r[k] for r in runs[i]])) for k in ("job", "audio", "text")}
        same = (
            "same bits"
            if cos[i].tobytes() == cos[max(i - 1, 0)].tobytes()
            else f"max |d cos| {np.abs(cos[i] - cos[max(i - 1, 0)]).max():.1e}"
        )
        print(
            f"{name:20s} job {med['job']:5.1f} s  (audio fwd {med['audio']:5.1f} s, text fwd {med['text']:4.1f} s)  "
            f"{base / med['job']:4.2f}x of before   vs previous step: {same}"
        )


if __name__ == "__main__":
    main()
