"""What both sides of the parity checks share: the probe clips, and the gate every printed row goes through.

Imported by the reference scripts (isolated env) and the compare scripts (humanclap's env), so
numpy and the standard library only.

The probe clips are chosen so that a wrong implementation cannot pass by accident: tones far
apart in frequency and white noise (different spectra), silence (every mel bin at the log
floor: a wrong floor shows), a clean chirp (its far bins sit near the floor; it is not
time-symmetric: a reversed clip shows), a quiet tone, a clip shorter than the window (tiled /
repeat-padded) and clips longer than it (cropped / fused).
"""

from __future__ import annotations

import os

import numpy as np

# Known bugs that the compare scripts can inject into humanclap's side: each must make the
# comparison fail (parity/run.sh checks that it does), so the gate is shown to bite.
MUTATIONS = ("time-reverse", "no-qkv-bias", "log-floor-1e-5")
MUTATION_ENV = "HUMANCLAP_PARITY_MUTATION"
# Reference embeddings of two different probe clips must differ at least this much (cosine
# below it): a random model whose embedding ignores its input would make every check pass.
DISTINCT_COSINE = 0.999


def clips(rate: int, window: int) -> dict[str, np.ndarray]:
    """The probe clips as float32 arrays at ``rate``; ``window`` is the model's input length."""
    rng = np.random.default_rng(1234)
    t = np.arange(window) / rate

    def chirp(n: int, f0: float = 50.0, f1: float = 14000.0) -> np.ndarray:
        tt = np.arange(n) / rate  # linear sweep f0 -> f1, no noise: its far bins reach the floor
        return 0.5 * np.sin(2 * np.pi * (f0 * tt + (f1 - f0) / (2 * tt[-1]) * tt**2))

    long_n = int(window * 1.6)
    out = {
        "tone 220 Hz": 0.3 * np.sin(2 * np.pi * 220 * t),
        "tone 6.5 kHz": 0.3 * np.sin(2 * np.pi * 6500 * t),
        "white noise": 0.3 * rng.standard_normal(window),
        "silence": np.zeros(window),
        "chirp": chirp(window),
        "quiet tone": 1e-3 * np.sin(2 * np.pi * 1000 * t),
        "short (0.4 window)": np.concatenate(
            [0.3 * rng.standard_normal(window // 5), 0.3 * np.sin(2 * np.pi * 880 * t[: window // 5])]
        ),
        "long chirp (1.6 window)": chirp(long_n, 14000.0, 200.0) + 0.02 * rng.standard_normal(long_n),
    }
    return {k: v.astype(np.float32) for k, v in out.items()}


def mutation() -> str | None:
    """The mutation asked for in the environment, or None; an unknown name is an error."""
    name = os.environ.get(MUTATION_ENV) or None
    if name is not None and name not in MUTATIONS:
        raise SystemExit(f"{MUTATION_ENV}={name!r} is not a known mutation; use one of {', '.join(MUTATIONS)}")
    return name


def pairwise_max_cosine(emb: np.ndarray) -> float:
    """Largest cosine between the embeddings of two different clips (rows)."""
    unit = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
    cos = unit @ unit.T
    return float(cos[~np.eye(len(cos), dtype=bool)].max())


class Gate:
    """Every number the checks print goes through :meth:`row`, with its bound: none is printed ungated."""

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.count = 0

    def row(self, name: str, value: float, bound: float, why: str = "") -> None:
        """Print one row and fail it when ``value`` is over ``bound`` (or not a number)."""
        self.count += 1
        ok = bool(np.isfinite(value) and value <= bound)
        if not ok:
            self.failed.append(name)
        print(
            f"{name:72s} {value:10.3e} <= {bound:<8.3g}  {'ok' if ok else 'FAIL'}{'  ' + why if why else ''}",
            flush=True,
        )

    def at_least(self, name: str, value: float, bound: float, why: str = "") -> None:
        """A row that fails when ``value`` is *below* ``bound`` (printed as such)."""
        self.count += 1
        ok = bool(np.isfinite(value) and value >= bound)
        if not ok:
            self.failed.append(name)
        print(
            f"{name:72s} {value:10.3e} >= {bound:<8.3g}  {'ok' if ok else 'FAIL'}{'  ' + why if why else ''}",
            flush=True,
        )

    def finish(self) -> int:
        """The summary line (``PARITY PASS`` / ``PARITY FAIL``, which run.sh reads) and the exit code."""
        if self.failed:
            print(f"PARITY FAIL: {len(self.failed)} of {self.count} rows over their bounds: {'; '.join(self.failed)}")
            return 1
        print(f"PARITY PASS: all {self.count} rows within their bounds")
        return 0


def reference_function(path, name: str, namespace: dict):
    """Function ``name`` of the reference's source file ``path``, its code unchanged, run with
    ``namespace`` as its globals: for functions whose module cannot be imported here (msclap's
    CLAPWrapper imports torchaudio's I/O; laion_clap's data.py imports webdataset, wget, PIL,
    pandas, ...), although the function itself needs only torch and numpy."""
    import ast
    from pathlib import Path

    source = Path(path).read_text()
    node = next((n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef) and n.name == name), None)
    if node is None:
        raise SystemExit(f"{path} has no function {name}: the reference changed; update parity/")
    code = compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec")
    exec(code, namespace)
    return namespace[name]


class MiddleChoice:
    """Stands in for the reference's random crop / chunk choice: the middle of each range, as
    humanclap chooses (its documented, deterministic rule), so both sides see the same samples."""

    @staticmethod
    def choice(values):
        return values[len(values) // 2]

    @staticmethod
    def randint(low: int, high: int) -> int:  # numpy: high exclusive
        return low + (high - 1 - low) // 2

    @staticmethod
    def randrange(stop: int) -> int:  # random.randrange(overflow): humanclap's start (n - window) // 2
        return stop // 2
