"""``humanclap reproduce``: the paper's RELATE-test table, trained here or from the released models."""

from __future__ import annotations

import argparse
import sys

from humanclap.cli import flags

EPILOG = f"""\
rows: LAION CLAP, MS CLAP (2023 release by default, humanclap's native MS CLAP; when its
weights cannot be had the row says why), Human-CLAP wSCE+MAE, wSCE and MAE. The
Human-CLAP models are trained here with the shipped configs (wsce_mae, wsce, mae) on
RELATE's train split with early stopping on validation, into OUTPUT_DIR/models/<variant>/,
or with --official the released sarulab-speech/human-clap-* checkpoints are scored. --recipes also trains, the same way,
the four recipes beyond the paper (configs wsce_mae_listenerz, mse_pairwise, head_pairwise,
listnet: each config names its source) and adds their rows after the paper's, with empty
paper columns (not with --official: nothing is trained then). Every row is scored on the same
test pairs; OUTPUT_DIR/report/ holds report.md (the published numbers beside ours, 95 %
bootstrap CIs on ours, paired differences against LAION CLAP), metrics.json,
predictions.csv and plots. Run it again with the same OUTPUT_DIR to continue: complete
models of the same identity (base model weights, data fingerprint, settings) are reused,
an interrupted training run resumes; a model of another identity is refused, naming what
differs. OUTPUT_DIR must be new, empty, or hold an earlier reproduce run (its marker
.humanclap-run.json); anything else is refused and never deleted or replaced. It is
locked while the run writes it (a second run on it is refused); report/ is replaced as
a whole on each run: a run without --recipes in a folder with recipe models leaves
them untouched and reports the paper's rows only.

exit codes: 0 every test pair scored; 1 some pairs could not be scored (everything is
still written) or a training run diverged; 2 usage error (bad folder, missing RELATE
files, a model that cannot be loaded, bad flags);
{flags.EXIT_CODES_TAIL}.

examples:
  humanclap reproduce --relate /data/RELATE --audio-root /data/RELATE_wave -o runs/repro
  humanclap reproduce --relate /data/RELATE --official -o runs/official
  humanclap reproduce --relate /data/RELATE -o runs/repro --recipes   # adds 4 rows to runs/repro
  humanclap reproduce --relate /data/RELATE -o /tmp/smoke --epochs 1 --n-boot 100
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="reproduce the paper's RELATE-test table (LAION CLAP, MS CLAP, Human-CLAP)",
        description="Train (or fetch) the Human-CLAP variants and score them with LAION CLAP and "
        "MS CLAP on the RELATE test split, beside the published numbers.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--relate", required=True, metavar="DIR", help="RELATE folder holding scores/REL.csv")
    p.add_argument(
        "-o",
        "--output-dir",
        required=True,
        metavar="D",
        help="models/<variant>/ and report/ are written here; rerun to continue",
    )
    p.add_argument(
        "--audio-root", metavar="DIR", help="RELATE_wave folder (or its parent), if not next to the RELATE folder"
    )
    p.add_argument(
        "--official",
        action="store_true",
        help="score the released sarulab-speech/human-clap-* checkpoints (no training)",
    )
    p.add_argument(
        "--recipes",
        action="store_true",
        help="also train the recipes beyond the paper (wSCE+MAE listener-z, MSE+pairwise, a score head, "
        "ListNet) and add their rows",
    )
    flags.add_device(p)
    flags.add_batch_size(
        p,
        help="clips per forward pass when scoring (default 8); the training batch "
        "stays the config's, since wSCE's negatives depend on it",
    )
    flags.add_n_boot(p)
    p.add_argument("--seed", type=int, default=0, help="seed of training and of the bootstrap (default 0)")
    p.add_argument(
        "--base", metavar="MODEL", help="base checkpoint to fine-tune (default: the config's, laion/clap-htsat-fused)"
    )
    p.add_argument("--epochs", type=int, metavar="N", help="override the configs' epochs (for smoke runs)")
    p.add_argument(
        "--laion",
        default="laion/clap-htsat-unfused",
        metavar="MODEL",
        help="checkpoint of the LAION CLAP row (default laion/clap-htsat-unfused); a "
        "local folder where the Hub cannot be reached",
    )
    p.add_argument(
        "--msclap",
        default="msclap-2023",
        metavar="MODEL",
        help="checkpoint of the MS CLAP row: msclap-2023 (default; msclap's default "
        "release), msclap-2022, or a local msclap .pth with its tokenizer files "
        "beside it where the Hub cannot be reached",
    )
    flags.add_plots(p)
    flags.add_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from humanclap.recipes.reproduce import ReproduceConfig, reproduce

    flags.check_compute(args.device)
    cfg = ReproduceConfig(
        relate=args.relate,
        output_dir=args.output_dir,
        audio_root=args.audio_root,
        official=args.official,
        recipes=args.recipes,
        device=args.device,
        batch_size=args.batch_size,
        n_boot=args.n_boot,
        seed=args.seed,
        base=args.base,
        epochs=args.epochs,
        laion=args.laion,
        msclap=args.msclap,
        plots=args.plots,
        progress=args.progress,
    )
    result = reproduce(cfg)  # TrainingError (a diverged run) exits 1 through cli.main
    print(result.table())
    print(f"wrote {result.files['report'].parent}", file=sys.stderr)
    if result.n_failed:
        print(
            f"humanclap reproduce: {result.n_failed} of {len(result.evaluation.pairs)} test pairs "
            "could not be scored (see the error column of report/predictions.csv)",
            file=sys.stderr,
        )
        return 1
    return 0
