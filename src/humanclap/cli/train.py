"""``humanclap train``: fine-tune CLAP on human relevance ratings (Human-CLAP)."""

from __future__ import annotations

import argparse
import os
import sys

from humanclap.cli import flags
from humanclap.training.config import add_config_arguments, config_from_args

EPILOG = f"""\
every TrainConfig field is a flag (above); --config FILE (YAML/JSON, or a shipped name:
wsce_mae, wsce, mae, mse, mse_mae, wsce_mse, wsce_mse_mae) sets several at once, and
flags given on the command line override it.

output: --output-dir becomes a model folder in the base's own format: a Hugging Face
folder (ClapModel.from_pretrained and CLAPScorer.from_pretrained load it) or, from an MS
CLAP base (--model msclap-2022, msclap-2023, an msclap .pth or an MS CLAP folder), an MS
CLAP folder (config.json + model.safetensors + tokenizer; MSClapScorer.from_pretrained
loads it); `score`/`evaluate --model OUTPUT` load either. Beside it: training_config.json,
metrics.json (best epoch, validation and test metrics, selected_by: how the kept model was
chosen; targets: how the training targets were made, listeners screened out) and metrics.jsonl (one line per epoch); resume state is in OUTPUT/checkpoints/.
OUTPUT must be new, empty, or hold an earlier train run (its marker .humanclap-run.json,
which lists what the run wrote); any other folder is refused and nothing in it is deleted
or replaced. It is locked while the run writes it: a second run on it is refused.
--resume continues only a run of the same identity (base model weights, tokenizer and
preprocessing; a fingerprint of the pairs trained, validated and tested on: resolved
audio paths, texts, scores, splits; the settings) and names what differs otherwise. A
folder of an older humanclap (checkpoints/last, no marker) is adopted by --resume (its
checkpoint predates the identity record: only its settings are compared).
When the validation SRCC is undefined on every epoch (constant predictions), the
last epoch is kept, with a warning.
The validation and test splits must differ from the training split. --targets and
--screen-listeners change what the training split learns; validation and test metrics are
always against the raw mean human scores.

several GPUs or machines: launch the same command with torchrun or accelerate launch;
--batch-size is the global batch, so results do not depend on the number of processes.

exit codes: 0 trained; 1 training failed (NaN/inf loss; the last good checkpoint is
kept); 2 usage error (bad flags or config, dataset or model that cannot be loaded);
{flags.EXIT_CODES_TAIL}.

examples:
  humanclap train --config wsce_mae --data relate:/data/RELATE --audio-root /data/RELATE_wave \\
      --output-dir runs/wsce_mae
  humanclap train --config wsce_mae --model msclap-2023 --data relate:/data/RELATE \\
      --audio-root /data/RELATE_wave --output-dir runs/msclap_wsce_mae
  torchrun --nproc-per-node 4 -m humanclap.cli train --config wsce_mae --data relate:/data/RELATE \\
      --output-dir runs/wsce_mae_4gpu
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="fine-tune a CLAP model on human ratings (Human-CLAP)",
        description="Fine-tune CLAP so that its CLAPScore follows human relevance ratings.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="FILE", help="YAML/JSON config file or shipped config name")
    add_config_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args).validate()  # ConfigError: bad flags fail before any loading
    # lazy: keeps torch out of `humanclap --help`
    from humanclap.training.trainer import fine_tune

    # TrainingError (a diverged run) exits 1 through cli.main; the last good checkpoint stays.
    result = fine_tune(cfg, printer=lambda line: print(line, file=sys.stderr, flush=True))
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one summary, not one per process
        print(result.summary(), file=sys.stderr)
    return 0
