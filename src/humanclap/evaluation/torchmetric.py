"""``HumanCLAPScore``: CLAPScore as a torchmetrics ``Metric`` for a training or validation loop.

``update(audio, text, sample_rate, lengths=None)`` scores a batch of waveforms with
:func:`humanclap.clap_score` (the bits of ``humanclap score``, no files, no gradients) and
keeps the per-clip scores; ``compute()`` returns a dict of tensors:

* ``mean``: the mean CLAPScore over every clip seen (on every process, under DDP);
* ``ci95_low`` / ``ci95_high``: its 95% Student-t interval, ``mean +- t(0.975, n-1) * s / sqrt(n)``
  with ``s`` the sample standard deviation, clipped to [0, 1] (CLAPScore's range) -- the
  interval ``humanclap score`` prints for a manifest (NaN for fewer than two clips);
* ``count``: how many clips.

State: the per-clip scores, a list state with ``dist_reduce_fx="cat"``, so under DDP
torchmetrics gathers every process's scores before ``compute`` (exact: the same mean and
interval as one process scoring every clip, up to float summation order) and a bootstrap
over them stays possible. Memory: 4 bytes per clip.

torchmetrics is an optional extra (``pip install 'humanclap[torchmetrics]'``): without it,
``humanclap`` imports and :func:`humanclap.clap_score` works, and creating a
``HumanCLAPScore`` raises :class:`~humanclap.errors.MissingExtraError`.
"""

from __future__ import annotations

from typing import Any

from humanclap.defaults import DEFAULT_MODEL
from humanclap.errors import MissingExtraError
from humanclap.scoring.citation import scorer_protocol
from humanclap.scoring.inmemory import clap_score, get_scorer, scorer_for
from humanclap.scoring.summary import ScoreSummary

__all__ = ["HAVE_TORCHMETRICS", "HumanCLAPScore", "mean_ci95"]

try:
    from torchmetrics import Metric
    from torchmetrics.utilities import dim_zero_cat

    HAVE_TORCHMETRICS = True
except ImportError:
    HAVE_TORCHMETRICS = False

EXTRA_MESSAGE = (
    "HumanCLAPScore needs torchmetrics, which is not installed: pip install "
    "'humanclap[torchmetrics]' (humanclap.clap_score works without it)"
)


def mean_ci95(scores: Any) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval (clipped to [0, 1]) of per-clip scores: the one
    definition of ``humanclap score``'s summary (``ScoreSummary.mean_ci``)."""
    return ScoreSummary(scores=[float(x) for x in scores]).mean_ci()


if HAVE_TORCHMETRICS:
    import torch

    class HumanCLAPScore(Metric):
        """Mean CLAPScore of (audio, text) pairs with a 95% CI; see the module docstring.

        ``model``: a model spec (hub id, folder, ``msclap-2023``) or a loaded scorer; specs
        are loaded once per (spec, device, dtype) for the process. ``device``: where the
        model runs (None: the audio's accelerator, else ``auto``), independent of where the
        metric's state lives (``metric.to(...)``). Other keyword arguments go to
        ``torchmetrics.Metric`` (``sync_on_compute``, ``process_group``, ...).

        >>> metric = HumanCLAPScore("sarulab-speech/human-clap-wsce-mae")   # doctest: +SKIP
        >>> metric.update(waveforms, captions, sample_rate=16000)           # doctest: +SKIP
        >>> metric.compute()["mean"]                                        # doctest: +SKIP
        tensor(0.4213)
        """

        is_differentiable = False
        higher_is_better = True
        full_state_update = False

        def __init__(self, model: Any = DEFAULT_MODEL, device: Any = None, dtype: str | None = None, **kwargs: Any):
            super().__init__(**kwargs)
            self.model = model
            self.model_device = device
            self.model_dtype = dtype
            self.last_scorer: Any = None  # the scorer the last update used (for protocol)
            self.add_state("scores", default=[], dist_reduce_fx="cat")

        def scorer(self) -> Any:
            """The scorer of the last update, else the one ``device`` names (loaded on first
            use, from the process-wide cache)."""
            return self.last_scorer or get_scorer(self.model, self.model_device, self.model_dtype)

        def update(self, audio: Any, text: Any, sample_rate: int, lengths: Any = None) -> None:
            """Score one batch (see :func:`humanclap.clap_score` for the accepted forms)."""
            self.last_scorer = scorer_for(self.model, audio, self.model_device, self.model_dtype)
            scores = clap_score(audio, text, sample_rate, model=self.last_scorer, lengths=lengths)
            self.scores.append(scores.to(self.device))

        def compute(self) -> dict[str, torch.Tensor]:
            """``mean``, ``ci95_low``, ``ci95_high`` (float64) and ``count`` over every clip."""
            scores = dim_zero_cat(self.scores) if len(self.scores) else torch.zeros(0)
            mean, lo, hi = mean_ci95(scores.cpu().tolist())
            as_t = lambda v: torch.tensor(v, dtype=torch.float64, device=self.device)  # noqa: E731
            return {
                "mean": as_t(mean),
                "ci95_low": as_t(lo),
                "ci95_high": as_t(hi),
                "count": torch.tensor(int(scores.numel()), device=self.device),
            }

        @property
        def protocol(self) -> str:
            """The line a paper can paste: score, model and revision, rate, window, clip rules."""
            return scorer_protocol(self.scorer()) + "; mean over clips, 95% Student-t CI"

else:

    class HumanCLAPScore:  # type: ignore[no-redef]
        """Stands in for the metric when torchmetrics is missing: says what to install."""

        def __init__(self, *args: Any, **kwargs: Any):
            raise MissingExtraError(EXTRA_MESSAGE)
