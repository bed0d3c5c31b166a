"""``humanclap train``: fine-tune CLAP on human relevance ratings (Human-CLAP)."""

from __future__ import annotations

import argparse
import os
import sys

EPILOG = """\
every TrainConfig field is a flag (above); --config FILE (YAML/JSON, or a shipped name:
wsce_mae, wsce, mae, mse, mse_mae, wsce_mse, wsce_mse_mae) sets several at once, and
flags given on the command line override it.

output: --output-dir becomes a Hugging Face model folder (ClapModel.from_pretrained and
CLAPScorer.from_pretrained load it) with training_config.json, metrics.json (best epoch,
validation and test metrics) and metrics.jsonl (one line per epoch); resume state is in
OUTPUT/checkpoints/.

several GPUs or machines: launch the same command with torchrun or accelerate launch;
--batch-size is the global batch, so results do not depend on the number of processes.

exit codes: 0 trained; 1 training failed (NaN/inf loss; the last good checkpoint is
kept); 2 usage error (bad flags or config, dataset or model that cannot be loaded).

examples:
  humanclap train --config wsce_mae --data relate:/data/RELATE --audio-root /data/RELATE_wave \\
      --output-dir runs/wsce_mae
  torchrun --nproc-per-node 4 -m humanclap.cli train --config wsce_mae --data relate:/data/RELATE \\
      --output-dir runs/wsce_mae_4gpu
"""


def add_parser(subparsers) -> None:
    from humanclap.training.config import add_config_arguments

    p = subparsers.add_parser(
        "train", help="fine-tune a CLAP model on human ratings (Human-CLAP)",
        description="Fine-tune CLAP so that its CLAPScore follows human relevance ratings.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="FILE", help="YAML/JSON config file or shipped config name")
    add_config_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from humanclap.training.config import ConfigError, config_from_args

    main_process = int(os.environ.get("RANK", "0")) == 0
    try:
        cfg = config_from_args(args).validate()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from humanclap.scoring.audio import AudioError
    from humanclap.data import DatasetError
    from humanclap.scoring.scorer import ModelLoadError, quiet_transformers
    from humanclap.training.trainer import TrainingError, train

    quiet_transformers()
    try:
        result = train(cfg, printer=lambda line: print(line, file=sys.stderr, flush=True))
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, DatasetError, ModelLoadError, AudioError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if main_process:
        print(result.summary(), file=sys.stderr)
    return 0
