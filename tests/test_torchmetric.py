"""``humanclap.HumanCLAPScore`` (torchmetrics): per-clip scores equal ``clap_score``'s, the
mean and CI over updates, DDP with two real gloo processes against one, and the optional
extra's error when torchmetrics is missing."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import noise_clip
from scipy import stats

import humanclap
from humanclap.errors import MissingExtraError

pytest.importorskip("torchmetrics")

TEXTS = [
    "a dog barks",
    "rain falls on a tin roof",
    "a bell rings twice",
    "music plays",
    "wind howls",
    "a car passes by",
    "birds sing",
    "a door slams",
]


def clips(n: int = 8) -> list[np.ndarray]:
    return [noise_clip(0.3 + 0.2 * i, rate=22050, seed=i) for i in range(n)]


def test_mean_and_ci_over_updates_match_clap_score(tiny_unfused, one_thread):
    metric = humanclap.HumanCLAPScore(str(tiny_unfused), device="cpu")
    data, texts = clips(), TEXTS
    metric.update(data[:5], texts[:5], 22050)
    batch = np.zeros((3, max(len(c) for c in data[5:])), dtype=np.float32)
    for i, c in enumerate(data[5:]):
        batch[i, : len(c)] = c
    metric.update(torch.from_numpy(batch), texts[5:], 22050, lengths=[len(c) for c in data[5:]])
    out = metric.compute()
    want = humanclap.clap_score(data, texts, 22050, model=str(tiny_unfused)).numpy().astype(np.float64)
    assert int(out["count"]) == 8
    assert torch.equal(torch.cat(metric.scores), torch.from_numpy(want.astype(np.float32)))
    assert float(out["mean"]) == pytest.approx(want.mean(), rel=1e-12)
    half = stats.t.ppf(0.975, 7) * want.std(ddof=1) / math.sqrt(8)
    assert float(out["ci95_low"]) == pytest.approx(max(want.mean() - half, 0.0), rel=1e-9)
    assert float(out["ci95_high"]) == pytest.approx(min(want.mean() + half, 1.0), rel=1e-9)
    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        empty = metric.compute()
    assert int(empty["count"]) == 0 and math.isnan(float(empty["mean"]))
    assert metric.protocol.startswith("CLAPScore = max(cos, 0)") and "Student-t" in metric.protocol


def _ddp_rank(rank: int, world: int, port: int, model: str, out_dir: str) -> None:
    """One DDP process: its share of the clips (uneven: 5 and 3), then the synced compute."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        share = [0, 2, 4, 6, 7] if rank == 0 else [1, 3, 5]
        data = clips()
        metric = humanclap.HumanCLAPScore(model, device="cpu")
        metric.update([data[i] for i in share[:2]], [TEXTS[i] for i in share[:2]], 22050)
        metric.update([data[i] for i in share[2:]], [TEXTS[i] for i in share[2:]], 22050)
        out = metric.compute()
        result = {k: float(v) for k, v in out.items()}
        # after compute the state is this rank's own again: its clips' scores, by clip index
        result["local"] = dict(zip(map(str, share), torch.cat(list(metric.scores)).tolist()))
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_gloo_processes_equal_one_process(tiny_unfused, tmp_path, one_thread):
    """Two real processes in a gloo group. Forked (not spawned) after the model is loaded:
    they start at once with the loaded scorer in the cache, where spawned ones would import
    torch, transformers and torchmetrics and load the model again (~50 s on 2 cores)."""
    import torch.multiprocessing as mp

    from humanclap.scoring.inmemory import get_scorer

    get_scorer(str(tiny_unfused), device="cpu")
    mp.start_processes(
        _ddp_rank, args=(2, _free_port(), str(tiny_unfused), str(tmp_path)), nprocs=2, join=True, start_method="fork"
    )
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    single = humanclap.HumanCLAPScore(str(tiny_unfused), device="cpu")
    single.update(clips(), TEXTS, 22050)
    want = {k: float(v) for k, v in single.compute().items()}
    for got in ranks:  # every rank computes the global value, not its own share's
        assert got["count"] == want["count"] == 8
        for key in ("mean", "ci95_low", "ci95_high"):
            assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key
    # each clip's score is the same bits in whichever process and batch it was scored
    local = {int(i): v for got in ranks for i, v in got["local"].items()}
    assert [local[i] for i in range(8)] == torch.cat(list(single.scores)).tolist()


def test_without_torchmetrics_humanclap_imports_and_the_metric_says_what_to_install():
    code = (
        "import sys; sys.modules['torchmetrics'] = None\n"
        "import humanclap\n"
        "from humanclap import clap_score, protocol, HumanCLAPScore\n"
        "from humanclap.errors import MissingExtraError\n"
        "try:\n"
        "    humanclap.HumanCLAPScore('any-model')\n"
        "except MissingExtraError as exc:\n"
        "    print('refused:', exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout and "humanclap[torchmetrics]" in out.stdout
    assert issubclass(MissingExtraError, humanclap.HumanclapError)
