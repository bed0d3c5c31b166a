"""Procedural sound events and clip rendering for the synthetic RELATE-style dataset.

Everything is built from signal recipes (tones and harmonics, chirps, noise bands,
impulse trains, AM/FM, envelopes, a sparse-tap room reverb); no assets are read. A clip
is fully described by a :class:`Clip` (placed events, background, reverb, artefacts,
seed), so the perceptual model in :mod:`synth_listeners` can reason about exactly what
is audible, and :func:`render` turns the description into samples.

Levels: an event's ``gain_db`` is its *active* level (mean power of its louder half of
10 ms frames) relative to ``REF_DBFS``; the background's ``background_db`` is its RMS
relative to the same reference, so ``gain_db - background_db`` is the event's SNR.
Clips are 4 s (RELATE's are 10 s) to keep the offline demo fast.

Speed matters (the default dataset renders ~6,600 clips in well under a minute on two
cores): recipes use float32 elementwise maths, noise comes from a precomputed bank that
is sliced at random offsets, and filters are moving averages (cumsum), never FFTs.
"""

from __future__ import annotations

import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
CLIP_SECONDS = 4.0
CLIP_SAMPLES = int(SAMPLE_RATE * CLIP_SECONDS)
REF_DBFS = -22.0  # reference active level of a 0 dB event; leaves headroom for mixes
TWO_PI = np.float32(2 * np.pi)
F32 = np.float32


class NoiseBank:
    """Unit-RMS noise colours and bands, made once per seed and sliced at random offsets.

    Drawing fresh Gaussian noise for every event would dominate generation time; slices
    of a 16 s buffer at random offsets are indistinguishable for our purposes.
    """

    LENGTH = 1 << 18

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng([seed, 7_919])
        spec = np.fft.rfft(rng.standard_normal(self.LENGTH))
        freq = np.fft.rfftfreq(self.LENGTH, 1 / SAMPLE_RATE)
        f = np.maximum(freq, 20.0)
        shapes = {
            "white": np.ones_like(f),
            "pink": f**-0.5,
            "brown": f**-1.0,
            "low": _band(f, 30, 400),
            "lowmid": _band(f, 150, 1500),
            "mid": _band(f, 500, 3000),
            "high": _band(f, 2000, 7000),
            "hum": f**-0.8 * (1 + 6 * np.exp(-0.5 * ((f - 100) / 8) ** 2)),
        }
        self.bands: dict[str, np.ndarray] = {}
        for name, shape in shapes.items():
            x = np.fft.irfft(spec * shape, self.LENGTH).astype(F32)
            self.bands[name] = x / np.sqrt(np.mean(x * x))

    def take(self, name: str, n: int, rng: np.random.Generator) -> np.ndarray:
        start = int(rng.integers(0, self.LENGTH - n))
        return self.bands[name][start : start + n].copy()


def _band(f: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return 1.0 / (1 + (lo / f) ** 4) / (1 + (f / hi) ** 4)


# ----------------------------------------------------------------------------- helpers
_TIME = np.arange(CLIP_SAMPLES, dtype=F32) / F32(SAMPLE_RATE)
_RAMP = np.linspace(0, 1, 160, dtype=F32)  # 10 ms fade


def _t(n: int) -> np.ndarray:
    """Sample times in seconds (a read-only view for clip-length or shorter signals)."""
    return _TIME[:n] if n <= CLIP_SAMPLES else np.arange(n, dtype=F32) / F32(SAMPLE_RATE)


def _harm(freq: np.ndarray | float, n: int, amps: tuple[float, ...]) -> np.ndarray:
    """Sum of harmonics ``amps[k] * sin((k+1) * phase)`` of a (possibly varying) pitch."""
    f = np.broadcast_to(np.asarray(freq, dtype=F32), (n,))
    phase = np.cumsum(f, dtype=F32) * (TWO_PI / SAMPLE_RATE)
    out = np.zeros(n, F32)
    for k, a in enumerate(amps):
        out += F32(a) * np.sin(phase * F32(k + 1))
    return out


def _saw(freq: np.ndarray | float, n: int) -> np.ndarray:
    f = np.broadcast_to(np.asarray(freq, dtype=F32), (n,))
    cyc = np.cumsum(f, dtype=np.float64) / SAMPLE_RATE
    return (2 * (cyc % 1.0) - 1).astype(F32)


def _lowpass(x: np.ndarray, width: int) -> np.ndarray:
    """Moving average of ``width`` samples (first spectral null at SAMPLE_RATE/width)."""
    if width <= 1:
        return x
    c = np.concatenate([np.zeros(width, F32), np.cumsum(x, dtype=F32)])
    return (c[width:] - c[:-width]) / F32(width)


def _onsets(n: int, rate: float, rng: np.random.Generator, jitter: float = 0.15, first: float = 0.0) -> np.ndarray:
    """Sample indices of a roughly periodic train (``rate`` per second)."""
    period = SAMPLE_RATE / max(rate, 0.2)
    k = np.arange(first * SAMPLE_RATE, n, period)
    k = k + rng.uniform(-jitter, jitter, k.size) * period
    return np.clip(k, 0, n - 1).astype(int)


def _place(n: int, onsets: np.ndarray, grain: np.ndarray) -> np.ndarray:
    """Overlap-add ``grain`` at every onset (the impulse-train/burst builder)."""
    out = np.zeros(n + grain.size, F32)
    for k in onsets:
        out[k : k + grain.size] += grain
    return out[:n]


def _decay(n: int, tau: float, attack: float = 0.002) -> np.ndarray:
    t = _t(n)
    return (1 - np.exp(-t / F32(attack))) * np.exp(-t / F32(tau))


def _gate(n: int, rate: float, duty: float, rng: np.random.Generator) -> np.ndarray:
    """On/off envelope with ``rate`` cycles per second and 5 ms ramps (one period, tiled)."""
    period = max(int(SAMPLE_RATE / rate), 200)
    on, ramp = max(int(duty * period), 160), 80
    tpl = np.zeros(period, F32)
    tpl[:on] = 1
    tpl[:ramp] = np.linspace(0, 1, ramp, dtype=F32)
    tpl[on - ramp : on] = np.linspace(1, 0, ramp, dtype=F32)
    return np.resize(np.roll(tpl, int(rng.integers(0, max(period // 5, 1)))), n)


def _slow_am(n: int, rate: float, depth: float, rng: np.random.Generator, bank: NoiseBank) -> np.ndarray:
    """Random smooth amplitude modulation around 1 (gusts, gurgles, rumble)."""
    step = max(int(SAMPLE_RATE / rate), 2)
    pts = rng.uniform(-1, 1, n // step + 2).astype(F32)
    env = np.interp(np.arange(n, dtype=F32) / step, np.arange(pts.size), pts).astype(F32)
    return np.maximum(F32(1) + F32(depth) * env, F32(0.05))


def _tilt(x: np.ndarray, p: float) -> np.ndarray:
    """ "Pitch" of a noisy sound: darker (p < 1) or brighter (p > 1) spectral balance."""
    smooth = _lowpass(x, 2)
    return smooth + F32(min(p, 2.0)) ** 2 * (x - smooth)


# ----------------------------------------------------------------------------- recipes
# A recipe takes (n samples, pitch factor, rate factor, rng, bank) and returns n samples.
Recipe = Callable[[int, float, float, np.random.Generator, NoiseBank], np.ndarray]


def _dog_bark(n, p, r, rng, bank):
    g = int(0.16 * SAMPLE_RATE)
    bark = _harm(np.linspace(520 * p, 380 * p, g), g, (1, 0.7, 0.5, 0.4, 0.3)) + 0.4 * bank.take("mid", g, rng)
    return _place(n, _onsets(n, 2.2 * r, rng), bark * _decay(g, 0.05, 0.004))


def _duck_quack(n, p, r, rng, bank):
    g = int(0.2 * SAMPLE_RATE)
    q = np.sign(_harm(300 * p, g, (1,))) * 0.5 + _harm(300 * p, g, (0, 0.6, 0.5, 0.5, 0.4))
    return _place(n, _onsets(n, 3.0 * r, rng), q * _decay(g, 0.08, 0.01))


def _car_horn(n, p, r, rng, bank):
    return (_harm(350 * p, n, (1, 0.6, 0.4, 0.3)) + _harm(440 * p, n, (1, 0.6, 0.4, 0.3))) * _gate(n, 0.9 * r, 0.6, rng)


def _alarm_beep(n, p, r, rng, bank):
    return np.sign(_harm(2000 * p, n, (1,))) * _gate(n, 2.5 * r, 0.5, rng)


def _phone_ring(n, p, r, rng, bank):
    trill = F32(0.6) + F32(0.4) * np.sign(np.sin(TWO_PI * 20 * _t(n)))
    return (_harm(440 * p, n, (1, 0.3)) + _harm(480 * p, n, (1, 0.3))) * trill * _gate(n, 0.9 * r, 0.6, rng)


def _siren(n, p, r, rng, bank):
    f = 900 * p + 350 * p * np.sin(TWO_PI * F32(0.45 * r) * _t(n) + F32(rng.uniform(0, 6)))
    return _harm(f, n, (1, 0.4, 0.2))


def _whistle(n, p, r, rng, bank):
    f = 1800 * p * (1 + 0.015 * np.sin(TWO_PI * 5.5 * _t(n))) * (1 + 0.15 * _gate(n, 1.3 * r, 0.5, rng))
    return _harm(f, n, (1, 0.08)) * _gate(n, 1.3 * r, 0.8, rng) + 0.03 * bank.take("high", n, rng)


def _bell(n, p, r, rng, bank):
    g = min(int(1.2 * SAMPLE_RATE), n)
    t = _t(g)
    strike = sum(
        F32(a) * np.sin(TWO_PI * F32(500 * p * m) * t) * np.exp(-t / F32(d))
        for m, a, d in ((1, 1, 0.9), (2.76, 0.6, 0.5), (5.4, 0.4, 0.25), (8.93, 0.25, 0.12))
    )
    return _place(n, _onsets(n, 0.9 * r, rng, 0.05), strike.astype(F32))


def _bird_chirp(n, p, r, rng, bank):
    g = int(0.09 * SAMPLE_RATE)
    chirp = _harm(np.linspace(2500 * p, 4500 * p, g), g, (1, 0.15)) * np.hanning(g).astype(F32)
    return _place(n, _onsets(n, 5.0 * r, rng, 0.4), chirp)


def _crickets(n, p, r, rng, bank):
    pulses = F32(0.5) + F32(0.5) * np.sign(np.sin(TWO_PI * 30 * _t(n)))
    return _harm(4500 * p, n, (1, 0.2)) * pulses * _gate(n, 2.5 * r, 0.4, rng)


def _speech(f0: float) -> Recipe:
    def recipe(n, p, r, rng, bank):
        t = _t(n)
        f = f0 * p * (1 + 0.12 * np.sin(TWO_PI * 0.7 * t + F32(rng.uniform(0, 6))))
        vowel = _harm(f, n, (1, 0.8, 0.9, 0.5, 0.45, 0.3))
        syll = _slow_am(n, 4.5 * r, 0.9, rng, bank) * _gate(n, 0.6, 0.8, rng)
        return _lowpass(vowel, 3) * syll + 0.05 * bank.take("mid", n, rng) * syll

    return recipe


def _baby_cry(n, p, r, rng, bank):
    g = int(0.8 * SAMPLE_RATE)
    contour = 420 * p * (1 + 0.25 * np.sin(np.linspace(0, np.pi, g)))
    cry = _harm(contour, g, (1, 0.7, 0.6, 0.4, 0.3)) * np.hanning(g).astype(F32) ** 0.5
    return _place(n, _onsets(n, 0.9 * r, rng, 0.1), cry)


def _cat_meow(n, p, r, rng, bank):
    g = int(0.6 * SAMPLE_RATE)
    contour = np.interp(np.linspace(0, 1, g), [0, 0.4, 1], [500 * p, 800 * p, 450 * p])
    meow = _harm(contour, g, (1, 0.5, 0.3, 0.2)) * np.hanning(g).astype(F32)
    return _place(n, _onsets(n, 0.8 * r, rng, 0.2), meow)


def _rain(n, p, r, rng, bank):
    drops = _place(n, rng.integers(0, n, int(150 * r * n / SAMPLE_RATE)), _decay(40, 0.0008))
    return _tilt(bank.take("pink", n, rng) * F32(0.5) + _lowpass(bank.take("high", n, rng), 2) + drops * F32(2), p)


def _applause(n, p, r, rng, bank):
    g = int(0.008 * SAMPLE_RATE)
    claps = _place(n, rng.integers(0, n, int(25 * r * n / SAMPLE_RATE)), _decay(g, 0.002))
    return _tilt(claps * bank.take("mid", n, rng) * F32(3) + F32(0.2) * bank.take("pink", n, rng), p)


def _water(n, p, r, rng, bank):
    gurgle = _slow_am(n, 12 * r, 0.8, rng, bank)
    return bank.take("mid", n, rng) * gurgle + 0.3 * _harm(700 * p * gurgle, n, (1,))


def _wind(n, p, r, rng, bank):
    return _tilt(bank.take("low", n, rng) * _slow_am(n, 0.8 * r, 0.8, rng, bank) + 0.3 * bank.take("pink", n, rng), p)


def _waves(n, p, r, rng, bank):
    swell = (0.5 - 0.5 * np.cos(TWO_PI * F32(0.3 * r) * _t(n))) ** 3
    return _tilt(bank.take("pink", n, rng) * (F32(0.15) + swell), p)


def _engine(n, p, r, rng, bank):
    f0 = 45 * p
    firing = F32(0.7) + F32(0.3) * np.sin(TWO_PI * F32(f0 / 2 * r) * _t(n))
    return _lowpass(_saw(f0, n), 4) * firing + 0.4 * bank.take("low", n, rng)


def _drill(n, p, r, rng, bank):
    f = 180 * p * (1 + 0.1 * _gate(n, 0.7 * r, 0.7, rng))
    return _saw(f, n) * _gate(n, 0.7 * r, 0.7, rng) * F32(0.6)


def _insect_buzz(n, p, r, rng, bank):
    f = 230 * p * (1 + 0.04 * np.sin(TWO_PI * 7 * _t(n)))
    return (
        _harm(f, n, (1, 0.5, 0.35, 0.2))
        * (F32(0.7) + F32(0.3) * np.sin(TWO_PI * 23 * _t(n)))
        * _slow_am(n, 1.5 * r, 0.5, rng, bank)
    )


def _knock_train(freq: float, tau: float, rate: float, noise: str, group: bool) -> Recipe:
    def recipe(n, p, r, rng, bank):
        g = int(6 * tau * SAMPLE_RATE)
        grain = _harm(freq * p, g, (1, 0.3)) * _decay(g, tau) + 0.3 * bank.take(noise, g, rng) * _decay(g, tau / 3)
        on = _onsets(n, rate * r, rng, 0.05)
        if group:  # knocks come in groups of 2-4 with pauses
            on = on[(np.arange(on.size) % int(rng.integers(4, 7))) < int(rng.integers(2, 5))]
        return _place(n, on, grain)

    return recipe


def _typing(n, p, r, rng, bank):
    g = int(0.008 * SAMPLE_RATE)
    return _place(
        n,
        np.sort(rng.integers(0, n, int(8 * r * n / SAMPLE_RATE))),
        _tilt(bank.take("high", g, rng), p) * _decay(g, 0.002),
    )


def _thunder(n, p, r, rng, bank):
    return _tilt(
        bank.take("brown", n, rng) * _decay(n, 0.8 + 0.3 * n / SAMPLE_RATE, 0.05) * _slow_am(n, 6 * r, 0.6, rng, bank),
        p,
    )


def _gunshot(n, p, r, rng, bank):
    g = int(0.3 * SAMPLE_RATE)
    shot = bank.take("white", g, rng) * _decay(g, 0.006) * F32(3) + bank.take("low", g, rng) * _decay(g, 0.09)
    return _place(n, _onsets(n, 1.3 * r, rng, 0.3), _tilt(shot, p))


@dataclass(frozen=True)
class EventClass:
    """One sound-event class: how it sounds and how captions talk about it."""

    name: str
    recipe: Recipe
    # (finite clause, gerund phrase) pairs: "a dog barks" / "a dog barking"
    phrasings: tuple[tuple[str, str], ...]
    confusable: tuple[str, ...]  # classes a listener could mistake it for
    attrs: str  # attributes it can vary audibly in: L(oudness) P(itch) R(ate) D(uration)
    centroid_hz: float  # main energy; band-limiting below it makes the event inaudible


_C = EventClass
EVENT_CLASSES: dict[str, EventClass] = {
    c.name: c
    for c in (
        _C(
            "dog_bark",
            _dog_bark,
            (("a dog barks", "a dog barking"), ("a dog is barking", "a dog barking"), ("dogs bark", "dogs barking")),
            ("duck_quack",),
            "LPRD",
            1500,
        ),
        _C(
            "duck_quack",
            _duck_quack,
            (
                ("a duck quacks", "a duck quacking"),
                ("ducks quack", "ducks quacking"),
                ("a duck is quacking", "a duck quacking"),
            ),
            ("dog_bark", "car_horn"),
            "LPRD",
            1200,
        ),
        _C(
            "car_horn",
            _car_horn,
            (
                ("a car horn honks", "a car horn honking"),
                ("a vehicle horn honks", "a vehicle horn honking"),
                ("a horn blares", "a horn blaring"),
            ),
            ("duck_quack",),
            "LPRD",
            1200,
        ),
        _C(
            "alarm_beep",
            _alarm_beep,
            (
                ("an alarm beeps", "an alarm beeping"),
                ("a device beeps", "a device beeping"),
                ("electronic beeps sound", "electronic beeping"),
            ),
            ("phone_ring",),
            "LPRD",
            2500,
        ),
        _C(
            "phone_ring",
            _phone_ring,
            (
                ("a phone rings", "a phone ringing"),
                ("a telephone rings", "a telephone ringing"),
                ("a phone is ringing", "a phone ringing"),
            ),
            ("alarm_beep", "bell"),
            "LPRD",
            700,
        ),
        _C(
            "siren",
            _siren,
            (
                ("a siren wails", "a siren wailing"),
                ("an emergency siren blares", "an emergency siren blaring"),
                ("a police siren sounds", "a police siren sounding"),
            ),
            ("whistle",),
            "LPRD",
            1300,
        ),
        _C(
            "whistle",
            _whistle,
            (
                ("a person whistles", "a person whistling"),
                ("someone whistles a tune", "someone whistling a tune"),
                ("a man whistles", "a man whistling"),
            ),
            ("siren", "bird_chirp"),
            "LPRD",
            2000,
        ),
        _C(
            "bell",
            _bell,
            (
                ("a bell rings", "a bell ringing"),
                ("a bell chimes", "a bell chiming"),
                ("church bells ring", "church bells ringing"),
            ),
            ("phone_ring",),
            "LPRD",
            1500,
        ),
        _C(
            "bird_chirp",
            _bird_chirp,
            (
                ("a bird chirps", "a bird chirping"),
                ("birds chirp", "birds chirping"),
                ("birds are tweeting", "birds tweeting"),
            ),
            ("crickets", "whistle"),
            "LPRD",
            3500,
        ),
        _C(
            "crickets",
            _crickets,
            (
                ("crickets chirp", "crickets chirping"),
                ("insects chirp", "insects chirping"),
                ("crickets are chirping", "crickets chirping"),
            ),
            ("bird_chirp",),
            "LPRD",
            4500,
        ),
        _C(
            "man_speech",
            _speech(110),
            (
                ("a man speaks", "a man speaking"),
                ("a man talks", "a man talking"),
                ("an adult male is speaking", "an adult male speaking"),
            ),
            ("woman_speech",),
            "LPRD",
            600,
        ),
        _C(
            "woman_speech",
            _speech(210),
            (
                ("a woman speaks", "a woman speaking"),
                ("a woman talks", "a woman talking"),
                ("a female voice speaks", "a female voice speaking"),
            ),
            ("man_speech", "baby_cry"),
            "LPRD",
            900,
        ),
        _C(
            "baby_cry",
            _baby_cry,
            (
                ("a baby cries", "a baby crying"),
                ("an infant cries", "an infant crying"),
                ("a baby is crying", "a baby crying"),
            ),
            ("cat_meow",),
            "LPRD",
            1200,
        ),
        _C(
            "cat_meow",
            _cat_meow,
            (
                ("a cat meows", "a cat meowing"),
                ("a kitten meows", "a kitten meowing"),
                ("a cat is meowing", "a cat meowing"),
            ),
            ("baby_cry",),
            "LPRD",
            1200,
        ),
        _C(
            "rain",
            _rain,
            (
                ("rain falls", "rain falling"),
                ("rain pours down", "rain pouring down"),
                ("raindrops patter", "raindrops pattering"),
            ),
            ("applause", "water"),
            "LRD",
            3000,
        ),
        _C(
            "applause",
            _applause,
            (
                ("people applaud", "people applauding"),
                ("a crowd claps", "a crowd clapping"),
                ("an audience applauds", "an audience applauding"),
            ),
            ("rain",),
            "LRD",
            1800,
        ),
        _C(
            "water",
            _water,
            (
                ("water runs", "water running"),
                ("water trickles", "water trickling"),
                ("water gurgles", "water gurgling"),
            ),
            ("rain",),
            "LRD",
            1500,
        ),
        _C(
            "wind",
            _wind,
            (
                ("wind blows", "wind blowing"),
                ("wind gusts", "wind gusting"),
                ("strong wind blows", "strong wind blowing"),
            ),
            ("waves",),
            "LRD",
            250,
        ),
        _C(
            "waves",
            _waves,
            (
                ("ocean waves crash", "ocean waves crashing"),
                ("waves break on the shore", "waves breaking on the shore"),
                ("water splashes in waves", "water splashing in waves"),
            ),
            ("wind",),
            "LRD",
            800,
        ),
        _C(
            "engine",
            _engine,
            (
                ("an engine idles", "an engine idling"),
                ("a motor runs", "a motor running"),
                ("a vehicle engine rumbles", "a vehicle engine rumbling"),
            ),
            ("drill",),
            "LPD",
            200,
        ),
        _C(
            "drill",
            _drill,
            (
                ("a drill whirs", "a drill whirring"),
                ("a power tool drills", "a power tool drilling"),
                ("a machine drills", "a machine drilling"),
            ),
            ("engine", "insect_buzz"),
            "LPRD",
            900,
        ),
        _C(
            "insect_buzz",
            _insect_buzz,
            (("a bee buzzes", "a bee buzzing"), ("insects buzz", "insects buzzing"), ("a fly buzzes", "a fly buzzing")),
            ("drill",),
            "LPD",
            500,
        ),
        _C(
            "knocking",
            _knock_train(220, 0.025, 5.0, "lowmid", True),
            (
                ("someone knocks on a door", "someone knocking on a door"),
                ("a person knocks", "a person knocking"),
                ("wood is tapped", "wood being tapped"),
            ),
            ("footsteps",),
            "LPRD",
            400,
        ),
        _C(
            "footsteps",
            _knock_train(90, 0.04, 1.9, "mid", False),
            (
                ("a person walks", "a person walking"),
                ("footsteps sound", "footsteps"),
                ("someone walks on a hard floor", "someone walking on a hard floor"),
            ),
            ("knocking",),
            "LRD",
            400,
        ),
        _C(
            "clock_tick",
            _knock_train(3000, 0.003, 1.5, "high", False),
            (
                ("a clock ticks", "a clock ticking"),
                ("a clock is ticking", "a clock ticking"),
                ("a timer ticks", "a timer ticking"),
            ),
            ("typing",),
            "LRD",
            3000,
        ),
        _C(
            "typing",
            _typing,
            (
                ("someone types on a keyboard", "someone typing on a keyboard"),
                ("keys clack", "keys clacking"),
                ("a person types", "a person typing"),
            ),
            ("clock_tick",),
            "LRD",
            4000,
        ),
        _C(
            "thunder",
            _thunder,
            (
                ("thunder rumbles", "thunder rumbling"),
                ("thunder roars", "thunder roaring"),
                ("thunder cracks", "thunder cracking"),
            ),
            ("gunshot",),
            "LD",
            150,
        ),
        _C(
            "gunshot",
            _gunshot,
            (
                ("a gun fires", "a gun firing"),
                ("gunshots ring out", "gunshots ringing out"),
                ("a gun is shot", "a gun being shot"),
            ),
            ("thunder",),
            "LRD",
            1000,
        ),
    )
}


# ----------------------------------------------------------------------------- clips
@dataclass(frozen=True)
class PlacedEvent:
    """One event as it is actually rendered in a clip."""

    cls: str
    onset: float  # seconds
    duration: float  # seconds
    gain_db: float  # active level relative to REF_DBFS
    pitch: float  # factor on the class's base pitch
    rate: float  # factor on the class's base repetition rate


@dataclass(frozen=True)
class Artefacts:
    """Generation artefacts of a simulated TTA system (all zero for natural audio)."""

    lowpass: int = 0  # moving-average width (band-limiting: null at SAMPLE_RATE/width)
    hiss_db: float | None = None  # broadband noise level relative to REF_DBFS
    glitches: int = 0  # dropouts, stutters and clicks
    smear: float = 0.0  # 0..1: transients washed out into a metallic blur


@dataclass(frozen=True)
class Clip:
    """Everything needed to render one clip, and all the perceptual model looks at."""

    events: tuple[PlacedEvent, ...]
    background: str  # a NoiseBank band
    background_db: float
    reverb: float  # 0 = dry, 1 = strong room
    artefacts: Artefacts
    seed: int


def _active_level(x: np.ndarray) -> float:
    """Mean power of the louder half of 10 ms frames (how loud an event *sounds*)."""
    m = x.size // 160 * 160
    frames = np.mean(x[:m].reshape(-1, 160) ** 2, axis=1) if m else np.array([np.mean(x * x)])
    top = np.sort(frames)[frames.size // 2 :]
    return float(np.mean(top)) + 1e-12


def _room(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Sparse-tap room: a few early reflections plus an exponentially decaying tail."""
    out = x.copy()
    delays = np.concatenate([rng.uniform(0.004, 0.035, 3), np.sort(rng.uniform(0.035, 0.3, 7))])
    for d in delays:
        k = int(d * SAMPLE_RATE)
        out[k:] += F32(amount * 0.6 * np.exp(-d / 0.12) * rng.choice((-1, 1))) * x[:-k]
    return out


def _apply_artefacts(x: np.ndarray, a: Artefacts, rng: np.random.Generator, bank: NoiseBank) -> np.ndarray:
    if a.smear > 0:  # dense short echoes blur onsets; a short comb adds vocoder-like colour
        blur = np.zeros_like(x)
        for d in rng.uniform(0.004, 0.12, 12):
            k = int(d * SAMPLE_RATE)
            blur[k:] += x[:-k]
        comb = int(rng.uniform(0.003, 0.008) * SAMPLE_RATE)
        blur[comb:] += F32(3) * blur[:-comb]
        x = F32(1 - a.smear) * x + F32(a.smear) * blur * F32(np.sqrt(_active_level(x) / _active_level(blur)))
    if a.lowpass:
        x = _lowpass(_lowpass(x, a.lowpass), a.lowpass)
    if a.hiss_db is not None:
        x = x + bank.take("white", x.size, rng) * F32(10 ** ((REF_DBFS + a.hiss_db) / 20))
    for _ in range(a.glitches):
        k = int(rng.integers(1000, x.size - 2000))
        w = int(rng.uniform(0.02, 0.08) * SAMPLE_RATE)
        kind = rng.integers(3)
        if kind == 0:
            x[k : k + w] = 0  # dropout
        elif kind == 1:  # stutter: the previous 30 ms repeated
            x[k : k + w] = np.tile(x[k - 480 : k], w // 480 + 1)[:w]
        else:
            x[k : k + 40] += F32(10 ** ((REF_DBFS + 12) / 20)) * np.sign(rng.standard_normal(40)).astype(F32)
    return x


def render(clip: Clip, bank: NoiseBank) -> np.ndarray:
    """Render a clip description to ``CLIP_SAMPLES`` float32 samples in [-1, 1]."""
    rng = np.random.default_rng([clip.seed, 1])
    mix = np.zeros(CLIP_SAMPLES, F32)
    for ev in clip.events:
        start = int(ev.onset * SAMPLE_RATE)
        n = min(int(ev.duration * SAMPLE_RATE), CLIP_SAMPLES - start)
        if n < 400:
            continue
        x = EVENT_CLASSES[ev.cls].recipe(n, ev.pitch, ev.rate, rng, bank).astype(F32)
        x[:160] *= _RAMP  # 10 ms fades avoid clicks at the event edges (n >= 400)
        x[n - 160 :] *= _RAMP[::-1]
        x *= F32(10 ** ((REF_DBFS + ev.gain_db) / 20) / np.sqrt(_active_level(x)))
        mix[start : start + n] += x
    if clip.reverb > 0:
        mix = _room(mix, clip.reverb, rng)
    mix += bank.take(clip.background, CLIP_SAMPLES, rng) * F32(10 ** ((REF_DBFS + clip.background_db) / 20))
    mix = _apply_artefacts(mix, clip.artefacts, rng, bank)
    peak = float(np.max(np.abs(mix)))
    return mix * F32(0.98 / peak) if peak > 0.98 else mix  # one gain for the clip keeps its SNRs


def write_wav(path: Path, samples: np.ndarray) -> None:
    """Write 16 kHz mono 16-bit PCM (the RELATE format).

    The stdlib writer is used because soundfile fsyncs every file on close, which made
    writing thousands of small clips take longer than rendering them.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.rint(np.clip(samples, -1, 1) * F32(32767)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())


# ----------------------------------------------------------------------------- scenes
# AudioCaps-style wording of a mentioned attribute, by (kind, direction).
ATTR_WORDS = {
    ("L", 1): "loudly",
    ("L", -1): "softly",
    ("P", 1): "at a high pitch",
    ("P", -1): "at a low pitch",
    ("R", 1): "rapidly",
    ("R", -1): "slowly",
    ("D", 1): "continuously",
    ("D", -1): "briefly",
}
# connector -> (relation, next event written as a finite clause?)
CONNECTORS = {
    "followed by": ("seq", False),
    "then": ("seq", True),
    "and then": ("seq", True),
    "while": ("sim", True),
    "as": ("sim", True),
    "and": ("sim", True),
}
EVENTS_PER_SCENE = (0.42, 0.36, 0.22)  # P(1, 2, 3 events); about half of RELATE has OS


@dataclass(frozen=True)
class EventSpec:
    """One event as the caption describes it."""

    cls: str
    phrasing: int
    attrs: tuple[tuple[str, int], ...]  # mentioned attributes, e.g. (("L", 1),) = "loudly"
    connector: str | None  # how it is joined to the previous event (None for the first)

    @property
    def relation(self) -> str | None:
        return CONNECTORS[self.connector][0] if self.connector else None


@dataclass(frozen=True)
class Scene:
    """What a caption says: 1-3 events and their temporal relations."""

    events: tuple[EventSpec, ...]

    def caption(self) -> str:
        parts = []
        for i, ev in enumerate(self.events):
            finite = i == 0 or CONNECTORS[ev.connector][1]
            phrase = EVENT_CLASSES[ev.cls].phrasings[ev.phrasing][0 if finite else 1]
            if ev.attrs:  # adverbs first ("loudly and rapidly"), then "at a high pitch"
                words = sorted((ATTR_WORDS[a] for a in ev.attrs), key=lambda w: w.startswith("at "))
                phrase += " " + (" and ".join(words) if not words[-1].startswith("at ") else " ".join(words))
            parts.append(phrase if i == 0 else f"{ev.connector} {phrase}")
        text = " ".join(parts)
        return text[0].upper() + text[1:]


def sample_scene(rng: np.random.Generator, n_events: int | None = None) -> Scene:
    """Draw 1-3 (or ``n_events``) distinct, mutually non-confusable events, their
    wording, mentioned attributes (up to two per event) and temporal relations."""
    n = int(rng.choice(3, p=EVENTS_PER_SCENE)) + 1 if n_events is None else n_events
    names = list(EVENT_CLASSES)
    chosen: list[str] = []
    while len(chosen) < n:
        c = names[int(rng.integers(len(names)))]
        # confusable classes in one caption would make "which one is missing" ambiguous
        if c not in chosen and not any(
            c in EVENT_CLASSES[o].confusable or o in EVENT_CLASSES[c].confusable for o in chosen
        ):
            chosen.append(c)
    connectors = list(CONNECTORS)
    events = []
    for i, c in enumerate(chosen):
        cls = EVENT_CLASSES[c]
        attrs: list[tuple[str, int]] = []
        kinds = list(cls.attrs)
        while kinds and rng.random() < (0.3 if not attrs else 0.3 * (len(attrs) < 2)):
            attrs.append((kinds.pop(int(rng.integers(len(kinds)))), int(rng.choice((-1, 1)))))
        conn = None if i == 0 else connectors[int(rng.integers(len(connectors)))]
        events.append(EventSpec(c, int(rng.integers(len(cls.phrasings))), tuple(attrs), conn))
    return Scene(tuple(events))
