"""Simulated TTA systems, the perceptual model, and simulated listeners.

Systems (:func:`realise`, :data:`PROFILES`)
    A system turns a caption's :class:`Scene` into a :class:`Clip` description.
    ``audiocaps`` (natural audio) renders every described event with its attributes and
    temporal relations, under real-world conditions: background noise at 3-30 dB below
    the events, unmentioned events (42 % of clips), a described event recorded far away
    (12.5 % of events, 6-19 dB quieter) and AudioCaps-like annotation slips (3 % of events
    are really a confusable class, 20 % of mentioned attributes are overstated). The four
    TTA systems fail as listed in :data:`PROFILES`: per-event rates (missing, confusable
    substitute, unrelated substitute, wrong attribute) are scaled by a per-clip severity
    ~ U(1 - s, 1 + s) (TTA outputs are either fine or badly off) times 1 + 0.25 per extra
    event in the caption; order scrambling is per multi-event caption; artefacts
    (band-limiting, hiss, glitches, smearing) per clip.

Perceptual model (:func:`perceive`, :meth:`Perception.latents`)
    Computed from the clip description, i.e. from what is audible. Per described event:
    audibility from its SNR against background, hiss and overlapping events (0 at -8 dB,
    1 at +6 dB; halved when band-limiting cuts below the event's main band; reduced by
    smearing); credit = audibility if rendered as described, 0.3 x audibility if as a
    confusable class, 0 if missing or unrelated. inclusion = mean credit; order = share of
    relations realised among heard events ("followed by": onset order kept; "while":
    overlapping, half credit when pulled apart); attr_err = share of mentioned attributes
    rendered opposite; extras = audibility sum of unmentioned events; artefacts in [0, 1]
    (0.15 x band-limit width, up to 0.6 for hiss, 0.12 per glitch, 0.5 x smear). With
    LO = -0.8 and HI = 11 (past both ends, so clear cases survive listener noise):

        q   = inclusion^1.3 * (1 - 0.4 (1 - order)) * (1 - 0.25 attr_err)
              * (1 - 0.12 min(extras, 2)) * (1 - 0.35 artefacts)
        REL = LO + (HI - LO) * q^KAPPA
        IS  = LO + (HI - LO) * inclusion^1.3 * (1 - 0.3 artefacts)
        OS  = LO + (HI - LO) * mean over relations of min(credit of its two events)
                                * (0.45 + 0.55 order credit)

Listeners (:func:`make_listener`, :meth:`Listener.rate`)
    rating = clip(round(5 + scale (latent - 5) + bias + noise * spread * N(0, 1)), 0, 10)
    with bias ~ N(0, 1.2), scale ~ exp N(0, 0.2), noise ~ U(2.0, 3.6) per listener and
    spread = 0.5 at the ends of the scale, 1 at its middle (people agree on clear cases);
    then, with a per-listener probability ~ U(0, 0.5), snapped to 0/2/5/8/10 (real
    ratings pile up there). 20 % of listeners are careless: they rate 0.25 latent + 0.75
    of a personal set point ~ U(5.5, 10), so they tend to rate anchors high and get
    screened. The constants were fitted so that the per-pair mean REL distribution and
    the per-system means match RELATE (see ``synth.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from humanclap.synth.sounds import (
    CLIP_SECONDS,
    EVENT_CLASSES,
    SAMPLE_RATE,
    Artefacts,
    Clip,
    PlacedEvent,
    Scene,
)

SYSTEMS = ("audiocaps", "audioldm", "audioldm2", "tango", "tango2")
AUDIO_TYPE = {
    "audiocaps": "natural",
    "audioldm": "audioldm",
    "audioldm2": "audioldm",
    "tango": "tango",
    "tango2": "tango",
}  # RELATE's "audio type" column
LO, HI = -0.8, 11.0  # latent range: below 0 / above 10 so that extremes survive noise
KAPPA = 0.75
MASKED_DB = (6.0, 19.0)  # attenuation of a natural event recorded far away


@dataclass(frozen=True)
class SystemProfile:
    """Failure rates of one system (per described event unless stated otherwise)."""

    miss: float  # event not rendered at all
    confuse: float  # rendered as a confusable class (siren -> whistle)
    unrelated: float  # rendered as an unrelated class (hallucination)
    wrong_order: float  # per multi-event caption: temporal relations scrambled
    wrong_attr: float  # per mentioned attribute: rendered with the opposite value
    extra: float  # per clip: an unmentioned event is added
    lowpass: float  # per clip: band-limited (muffled)
    hiss: float  # per clip: broadband noise floor
    glitches: float  # per clip: mean number of dropouts/stutters/clicks
    smear: float  # per clip: transients smeared (vocoder-like blur)
    masked: float = 0.0  # natural only: an event recorded far away (low SNR)
    severity_spread: float = 1.0  # per-clip severity ~ U(1 - s, 1 + s) scales event rates


PROFILES: dict[str, SystemProfile] = {
    # natural audio: the described events are all there; AudioCaps-like annotation slips
    # (a confusable class, an overstated attribute) and real-world recording conditions
    "audiocaps": SystemProfile(
        0, 0.03, 0, 0, 0.2, extra=0.425, lowpass=0, hiss=0, glitches=0, smear=0, masked=0.125, severity_spread=0
    ),
    # AudioLDM: muffled (band-limited) output, misses and ignored temporal relations
    "audioldm": SystemProfile(
        0.053, 0.041, 0.02, 0.62, 0.62, extra=0.2, lowpass=0.47, hiss=0.37, glitches=0.32, smear=0.37
    ),
    # AudioLDM2: fewer misses, more hallucinated sounds, smearing and glitches
    "audioldm2": SystemProfile(
        0.041, 0.041, 0.037, 0.62, 0.56, extra=0.25, lowpass=0.21, hiss=0.21, glitches=0.58, smear=0.58
    ),
    # Tango: good event coverage but confusions and a noise floor
    "tango": SystemProfile(
        0.037, 0.061, 0.016, 0.5, 0.5, extra=0.15, lowpass=0.16, hiss=0.47, glitches=0.21, smear=0.21
    ),
    # Tango2 (preference-tuned Tango): rarely misses, mostly clean
    "tango2": SystemProfile(
        0.012,
        0.02,
        0.004,
        0.16,
        0.16,
        extra=0.05,
        lowpass=0.042,
        hiss=0.074,
        glitches=0.042,
        smear=0.042,
        severity_spread=0.8,
    ),
}


@dataclass(frozen=True)
class Realisation:
    """A rendered clip plus which clip event (if any) stands for each described event."""

    clip: Clip
    status: tuple[str, ...]  # per described event: ok | confused | unrelated | missing
    source: tuple[int, ...]  # per described event: index into clip.events, -1 if missing
    attr_ok: tuple[bool, ...]  # per attribute the caption mentions


def _params(lv: dict[str, int], rng: np.random.Generator) -> tuple[float, float, float]:
    gain = rng.uniform(-4, 3) + (6.0 if lv["L"] > 0 else -8.0 if lv["L"] < 0 else 0.0)
    pitch = np.exp(rng.uniform(-0.12, 0.12)) * (1.6 if lv["P"] > 0 else 0.62 if lv["P"] < 0 else 1.0)
    rate = np.exp(rng.uniform(-0.15, 0.15)) * (1.8 if lv["R"] > 0 else 0.55 if lv["R"] < 0 else 1.0)
    return float(gain), float(pitch), float(rate)


def _layout(scene: Scene, rng: np.random.Generator, scramble: bool) -> list[tuple[float, float]]:
    """(onset, duration) per described event. ``scramble``: reverse the sequential groups
    and split simultaneous events apart (a TTA system ignoring the temporal relations)."""
    groups: list[list[int]] = []
    for i, ev in enumerate(scene.events):
        if i == 0 or ev.relation == "seq" or (scramble and ev.relation == "sim"):
            groups.append([i])
        else:
            groups.append(groups.pop() + [i])
    if scramble and len(groups) > 1:
        groups = groups[::-1]
    w = rng.uniform(0.7, 1.3, len(groups))
    gap = rng.uniform(0.1, 0.3)
    usable = CLIP_SECONDS - 0.3 - gap * (len(groups) - 1)
    out: dict[int, tuple[float, float]] = {}
    t = 0.1 + rng.uniform(0, 0.1)
    for g, wg in zip(groups, w):
        seg = usable * wg / w.sum()
        for j, i in enumerate(g):
            d = dict(scene.events[i].attrs).get("D")
            dur = rng.uniform(0.35, 0.6) if d == -1 else seg if d == 1 else seg * rng.uniform(0.65, 1.0)
            start = t if j == 0 else t + rng.uniform(0, 0.25) * seg
            out[i] = (start, max(min(dur, t + seg - start), 0.3))
        t += seg + gap
    return [out[i] for i in range(len(scene.events))]


def realise(scene: Scene, system: str, rng: np.random.Generator, clip_seed: int) -> Realisation:
    """Render ``scene`` as ``system`` would (a clip description, not samples yet)."""
    prof = PROFILES[system]
    n = len(scene.events)
    sev = rng.uniform(1 - prof.severity_spread, 1 + prof.severity_spread) * (1 + 0.25 * (n - 1))
    scramble = n > 1 and rng.random() < prof.wrong_order
    times = _layout(scene, rng, scramble)
    names = list(EVENT_CLASSES)
    described = {e.cls for e in scene.events}
    events: list[PlacedEvent] = []
    status, source, attr_ok = [], [], []
    for ev, (onset, dur) in zip(scene.events, times):
        cls = EVENT_CLASSES[ev.cls]
        u = rng.random()
        lv = dict.fromkeys("LPRD", 0)
        for kind, value in ev.attrs:
            wrong = rng.random() < prof.wrong_attr * sev
            attr_ok.append(not wrong)
            lv[kind] = -value if wrong else value
        if u < prof.miss * sev:
            status.append("missing"), source.append(-1)
            continue
        name, st = ev.cls, "ok"
        if u < (prof.miss + prof.confuse) * sev:
            name, st = cls.confusable[int(rng.integers(len(cls.confusable)))], "confused"
        elif u < (prof.miss + prof.confuse + prof.unrelated) * sev:
            pool = [c for c in names if c not in described and c not in cls.confusable]
            name, st = pool[int(rng.integers(len(pool)))], "unrelated"
        gain, pitch, rate = _params(lv, rng)
        if rng.random() < prof.masked:
            gain -= rng.uniform(*MASKED_DB)
        events.append(PlacedEvent(name, onset, dur, gain, pitch, rate))
        status.append(st), source.append(len(events) - 1)
    pool = [c for c in names if c not in described]
    for second in (0, 1):  # unmentioned events: a second one at half the rate
        if rng.random() < prof.extra / (1 + second):
            name = pool.pop(int(rng.integers(len(pool))))
            on = rng.uniform(0, CLIP_SECONDS - 1.0)
            _, pitch, rate = _params(dict.fromkeys("LPRD", 0), rng)
            events.append(PlacedEvent(name, on, rng.uniform(0.5, CLIP_SECONDS - on), rng.uniform(-14, -4), pitch, rate))
    art = Artefacts(
        lowpass=int(rng.integers(2, 5)) if rng.random() < prof.lowpass else 0,
        hiss_db=float(rng.uniform(-24, -8)) if rng.random() < prof.hiss else None,
        glitches=int(rng.poisson(prof.glitches)),
        smear=float(rng.uniform(0.3, 0.9)) if rng.random() < prof.smear else 0.0,
    )
    bg = str(rng.choice(("pink", "brown", "hum", "low", "white")))
    clip = Clip(
        tuple(events),
        bg,
        float(-rng.uniform(3, 30)),
        float(rng.uniform(0.2, 1.0)) if rng.random() < 0.5 else 0.0,
        art,
        clip_seed,
    )
    return Realisation(clip, tuple(status), tuple(source), tuple(attr_ok))


@dataclass(frozen=True)
class Perception:
    """What a listener can tell about a (clip, caption) pair; all in [0, 1] except extras."""

    inclusion: float
    order: float  # share of relations realised, among events present (1 if < 2 present)
    strict_order: float  # share of relations realised with both events present
    attr_err: float
    extras: float
    artefacts: float

    def latents(self) -> tuple[float, float, float]:
        """Latent (REL, IS, OS) on the 0-10 scale (see the module docstring)."""
        q = (
            self.inclusion**1.3
            * (1 - 0.4 * (1 - self.order))
            * (1 - 0.25 * self.attr_err)
            * (1 - 0.12 * min(self.extras, 2.0))
            * (1 - 0.35 * self.artefacts)
        )
        rel = LO + (HI - LO) * q**KAPPA
        inc = LO + (HI - LO) * self.inclusion**1.3 * (1 - 0.3 * self.artefacts)
        return rel, inc, LO + (HI - LO) * self.strict_order


def _audibility(clip: Clip) -> np.ndarray:
    a = clip.artefacts
    floor = 10 ** (clip.background_db / 10) + (10 ** (a.hiss_db / 10) if a.hiss_db is not None else 0)
    cutoff = 0.3 * SAMPLE_RATE / a.lowpass if a.lowpass else np.inf
    out = np.zeros(len(clip.events))
    for j, e in enumerate(clip.events):
        overlap = sum(
            10 ** (o.gain_db / 10)
            for k, o in enumerate(clip.events)
            if k != j and o.onset < e.onset + e.duration and e.onset < o.onset + o.duration
        )
        snr = e.gain_db - 10 * np.log10(floor + 0.3 * overlap)
        aud = np.clip((snr + 8) / 14, 0, 1) * min(1.0, e.duration / 0.5) ** 0.5
        if EVENT_CLASSES[e.cls].centroid_hz * e.pitch > cutoff:
            aud *= 0.5
        out[j] = aud * (1 - 0.3 * a.smear)
    return out


def perceive(scene: Scene, real: Realisation) -> Perception:
    """Apply the perceptual model to a (caption scene, rendered clip) pair."""
    aud = _audibility(real.clip)
    weight = {"ok": 1.0, "confused": 0.3, "unrelated": 0.0, "missing": 0.0}
    credit = [weight[s] * (aud[j] if j >= 0 else 0) for s, j in zip(real.status, real.source)]
    present = [c > 0.3 for c in credit]
    ev = real.clip.events
    ok, ok_strict, n_rel = 0.0, 0.0, 0
    for i in range(1, len(scene.events)):
        a, b = real.source[i - 1], real.source[i]
        n_rel += 1
        if not (present[i - 1] and present[i]):
            ok += 1  # an unheard event cannot be out of order; it is counted by inclusion
            continue
        x, y = ev[a], ev[b]
        if scene.events[i].relation == "seq":  # reversed: wrong; "while" pulled apart: half
            good = float(x.onset + 0.5 * x.duration <= y.onset + 0.1)
        else:
            good = 1.0 if x.onset < y.onset + y.duration and y.onset < x.onset + x.duration else 0.5
        ok += good
        # listeners judging order still give some credit when both events are there
        ok_strict += (0.45 + 0.55 * good) * min(credit[i - 1], credit[i])
    used = {j for j in real.source if j >= 0}
    extras = float(sum(aud[j] for j in range(len(ev)) if j not in used))
    a = real.clip.artefacts
    art = (
        (0.15 * a.lowpass if a.lowpass else 0.0)  # width 2 (4 kHz null) .. 4 (2 kHz)
        + (np.clip((a.hiss_db + 30) / 25, 0, 1) * 0.6 if a.hiss_db is not None else 0.0)
        + 0.12 * a.glitches
        + 0.5 * a.smear
    )
    attr_err = 1 - float(np.mean(real.attr_ok)) if real.attr_ok else 0.0
    return Perception(
        inclusion=float(np.mean(credit)),
        order=ok / n_rel if n_rel else 1.0,
        strict_order=ok_strict / n_rel if n_rel else float(np.mean(credit)),
        attr_err=attr_err,
        extras=extras,
        artefacts=float(min(art, 1.0)),
    )


# An anchor pair: the audio holds none of the described events nor a confusable class
# (anchors are drawn that way), so only the inclusion part matters: latent REL = LO.
ANCHOR_PERCEPTION = Perception(inclusion=0.0, order=1.0, strict_order=0.0, attr_err=0.0, extras=0.0, artefacts=0.0)


# ----------------------------------------------------------------------------- listeners
SNAP_POINTS = (0, 2, 5, 8, 10)  # ties go to the lower point
BIAS_SD = 1.2  # spread of listeners' personal offsets
NOISE_RANGE = (2.0, 3.6)  # per-listener rating noise std (halved for clear-cut pairs)


@dataclass(frozen=True)
class Listener:
    listener_id: str
    bias: float  # added to every rating
    scale: float  # stretch of the 0-10 scale around 5
    noise: float  # std of the rating noise
    snap: float  # probability of snapping to a labelled scale point
    careless: bool  # rates with little regard to the audio (screened if caught by anchors)
    set_point: float  # careless listeners' default rating
    attributes: tuple = field(default=(), compare=False)  # questionnaire answers (12)

    def rate(self, latent: float, rng: np.random.Generator) -> int:
        if self.careless:
            latent = 0.25 * latent + 0.75 * self.set_point
        # listeners agree on clear cases and disagree on ambiguous ones (mid-scale)
        spread = 0.5 + 0.5 * min(max(1 - abs(latent - 5) / 5, 0.0), 1.0)
        x = 5 + self.scale * (latent - 5) + self.bias + self.noise * spread * float(rng.standard_normal())
        x = min(max(round(x), 0), 10)
        if rng.random() < self.snap:
            x = min(SNAP_POINTS, key=lambda s: abs(s - x))
        return int(x)


_COUNTRIES = (
    ("United Kingdom", 0.6),
    ("United States", 0.26),
    ("Nigeria", 0.09),
    ("Canada", 0.02),
    ("Ireland", 0.02),
    ("Australia", 0.01),
)


def make_listener(listener_id: str, rng: np.random.Generator, careless_rate: float = 0.2) -> Listener:
    """Draw one listener and their questionnaire answers (RELATE's 12 questions)."""
    names, p = zip(*_COUNTRIES)
    country = str(rng.choice(names, p=np.array(p) / sum(p)))
    answers = (
        int(rng.integers(1, 7)),
        int(rng.choice((1, 2, 3), p=(0.58, 0.41, 0.01))),
        country,
        country if rng.random() < 0.9 else str(rng.choice(names)),
        country,
        int(rng.integers(1, 7)),
        int(rng.integers(1, 8)),
        int(rng.integers(1, 6)),
        int(rng.choice((1, 2, 3), p=(0.55, 0.4, 0.05))),
        int(rng.choice((1, 2, 3, 4, 5), p=(0.88, 0.1, 0.01, 0.005, 0.005))),
        int(rng.choice((1, 2, 3, 4), p=(0.35, 0.47, 0.15, 0.03))),
        int(rng.choice((1, 2), p=(0.1, 0.9))),
    )
    return Listener(
        listener_id,
        bias=float(rng.normal(0.0, BIAS_SD)),
        scale=float(np.exp(rng.normal(0, 0.2))),
        noise=float(rng.uniform(*NOISE_RANGE)),
        snap=float(rng.uniform(0, 0.5)),
        careless=bool(rng.random() < careless_rate),
        set_point=float(rng.uniform(5.5, 10)),
        attributes=answers,
    )
