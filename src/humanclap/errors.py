"""The one error model of humanclap: every error a user can cause derives from
:class:`HumanclapError` and carries the CLI exit code it maps to.

Exit codes (the same for every command; ``humanclap COMMAND --help`` repeats them):

* 0  everything asked for was done (every row scored, the model trained, ...);
* 1  the job ran but some rows failed (they carry an ``error``), or training diverged;
* 2  usage or input error: bad flags, unreadable manifest, a model that cannot be loaded,
     an output that would overwrite an input ... nothing was scored;
* 3  internal error: a bug in humanclap. The traceback is printed with where to report it.

``cli.main`` is the one place that turns these into exit codes and messages; library code
raises and never exits. Each class also derives from the builtin it replaced
(``ValueError``/``RuntimeError``), so code written against earlier versions still catches it.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ROWS_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3

REPORT_BUGS = (
    "this is a bug in humanclap, not in your input: please report it with the command line and the traceback above"
)


class HumanclapError(Exception):
    """Base of every error humanclap reports to a user; ``exit_code`` is its CLI exit code."""

    exit_code: int = EXIT_USAGE


class UsageError(HumanclapError, ValueError):
    """Bad flags, manifest or output path: nothing was done."""


class DatasetError(HumanclapError, ValueError):
    """A rated dataset could not be loaded; the message names the file and what is wrong."""


class AudioError(HumanclapError, ValueError):
    """An audio item could not be used; the message names the item and the problem.

    Inside a scoring job this marks one row; raised to the CLI it is a usage error."""


class ModelLoadError(HumanclapError, RuntimeError):
    """A checkpoint could not be loaded; the message says what was tried and what to do."""


class ConfigError(HumanclapError, ValueError):
    """An invalid training configuration (flag, YAML/JSON file or combination)."""


class ReproduceError(HumanclapError, ValueError):
    """A usage problem of ``reproduce`` (bad folder, flag or model)."""


class TrainingError(HumanclapError, RuntimeError):
    """Training diverged (NaN/inf) or could not continue; the last good checkpoint is kept."""

    exit_code = EXIT_ROWS_FAILED


class MissingExtraError(HumanclapError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""
