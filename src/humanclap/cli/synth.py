"""``humanclap synth``: write the procedural RELATE-style dataset (offline benchmark)."""

from __future__ import annotations

import argparse

from humanclap.cli import flags
from humanclap.errors import UsageError

EPILOG = f"""\
writes, in OUTPUT_DIR, the RELATE release layout (scores/REL.csv, IS.csv, OS.csv,
listener_attributes/, RELATE_wave/<system>/<train|test>/<id>.wav: 4 s, 16 kHz mono
16-bit), a disjoint pretraining corpus (pretrain/manifest.csv + pretrain/wav/) and
synth_summary.json. Everything is procedural (no downloads) and a pure function of
--seed. Sizes: default = 1,960 texts x 3 clips, as many texts as RELATE (about 5,700
rated pairs after screening) + 3,000 pretraining clips (under a minute on two cores);
small = 120 texts + 300 clips.

output: OUTPUT_DIR must be new, empty, or hold an earlier synth run (its marker
.humanclap-run.json lists what it wrote); it is locked while written, so a second run on
it is refused. --overwrite replaces an earlier synth run, deleting only the files that
run wrote; a folder holding anything else is refused, with or without --overwrite.

exit codes: 0 written; 2 usage error (OUTPUT_DIR holds something else, or an earlier run
without --overwrite, or is being written by another run; a --real-rel-csv that does not
exist; a folder that cannot be written);
{flags.EXIT_CODES_TAIL}.

examples:
  humanclap synth --output-dir synth_relate
  humanclap evaluate --data relate:synth_relate --split test -o out/ --model M
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "synth",
        help="generate the synthetic RELATE-style dataset (offline demo data)",
        description="Generate procedural sound scenes, captions, simulated TTA outputs and "
        "simulated listener ratings in the RELATE release layout.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--output-dir", "-o", required=True, help="folder to write (created if missing)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    p.add_argument(
        "--size",
        choices=["small", "default"],
        default="default",
        help="default: 1,960 texts (RELATE-sized) + 3,000 pretraining clips; small: 120 + 300 (tests)",
    )
    p.add_argument(
        "--real-rel-csv",
        metavar="CSV",
        help="RELATE scores/REL.csv to compare the score distribution with (default: histograms stored in the package)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier synth run in OUTPUT_DIR (deletes only what that run "
        "wrote: scores/, listener_attributes/, RELATE_wave/, pretrain/, synth_summary.json)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="rendering processes (default: up to 2); the output does not depend on it",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # lazy: keeps numpy out of `humanclap --help`
    from humanclap.synth.dataset import generate

    try:
        s = generate(
            args.output_dir,
            seed=args.seed,
            size=args.size,
            real_rel_csv=args.real_rel_csv,
            workers=args.workers,
            overwrite=args.overwrite,
        )
    # generate() refuses a non-empty folder (FileExistsError) or a missing --real-rel-csv
    # (FileNotFoundError) with builtin errors, and the disk may refuse a write: all are the
    # user's to fix. Only this one call is covered, so a bug elsewhere stays an internal error.
    except (FileExistsError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from exc
    except OSError as exc:
        raise UsageError(f"could not write {args.output_dir}: {exc}; pass a folder you can write to") from exc
    splits = ", ".join(f"{k} {v}" for k, v in s.pairs_per_split.items())
    systems = ", ".join(f"{k} {v}" for k, v in s.pairs_per_system.items())
    means = ", ".join(f"{k} {v:.2f}" for k, v in s.mean_score_per_system.items())
    print(f"wrote {s.output_dir} (seed {s.seed}, size {s.size}) in {s.seconds:.1f} s")
    print(f"  {s.texts} texts; rated pairs after screening: {splits}")
    print(f"  pairs per system: {systems}")
    print(
        f"  rows: REL {s.rows['REL']}, IS {s.rows['IS']}, OS {s.rows['OS']}; listeners "
        f"{s.listeners} ({s.screened_listeners} screened); pretraining clips {s.pretrain_clips}"
    )
    print(f"  mean REL per system: {means}")
    print(
        f"  TV distance to RELATE ({s.real_histogram_source}): natural {s.tv_natural:.3f}, "
        f"synthesized {s.tv_synthesized:.3f}"
    )
    return 0
