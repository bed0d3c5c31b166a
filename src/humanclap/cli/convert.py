"""``humanclap convert``: a LAION-CLAP ``.pt`` checkpoint -> a transformers CLAP folder."""

from __future__ import annotations

import argparse
import sys

from humanclap.cli import flags

EPILOG = f"""\
The folder written (config.json, model.safetensors, preprocessor_config.json, tokenizer
files, conversion.json) loads with `humanclap score --model OUT_DIR`,
ClapModel.from_pretrained(OUT_DIR) and as the base of `humanclap train`.
--arch and --fusion are inferred from the weights when not given (and checked when given).
Every key of the checkpoint is mapped or dropped for a stated reason; anything else refuses
the conversion and nothing is written.
exit codes: 0 converted; 2 usage error or bad input (unknown architecture, unexpected or
missing keys, OUT_DIR not empty, no tokenizer);
{flags.EXIT_CODES_TAIL}.

example:
  humanclap convert 630k-audioset-fusion-best.pt clap-630k-fusion/ --tokenizer roberta-base/
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert a LAION-CLAP .pt checkpoint into a transformers folder",
        description="Convert a laion_clap .pt checkpoint (e.g. 630k-audioset-best.pt, "
        "music_audioset_epoch_15_esc_90.14.pt) into a transformers CLAP folder.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="CKPT.pt", help="laion_clap checkpoint (read with weights_only)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="new (or empty) folder for the converted model")
    p.add_argument("--arch", help="audio tower: HTSAT-tiny or HTSAT-base (default: inferred from the weights)")
    p.add_argument(
        "--fusion",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fused (feature fusion for long clips) or not (default: inferred from the weights)",
    )
    p.add_argument("--text", default="roberta", help="text tower (default roberta, the only one LAION released)")
    p.add_argument(
        "--tokenizer",
        metavar="DIR",
        help="folder with the roberta-base tokenizer files (default: roberta-base from the local Hugging Face cache)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # lazy: keeps torch out of `humanclap --help`
    from humanclap.scoring.clap.laion_convert import convert_laion_checkpoint

    report = convert_laion_checkpoint(
        args.checkpoint, args.out_dir, arch=args.arch, fusion=args.fusion, text=args.text, tokenizer_dir=args.tokenizer
    )
    print(f"{report.text_summary()}\nwrote {args.out_dir}", file=sys.stderr)
    return 0
