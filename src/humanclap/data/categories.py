"""Coarse sound-event categories of a caption, for per-category metric breakdowns.

A small hand-made lexicon loosely following AudioSet's top-level ontology. It reads only
the caption (no audio), so a category means "the text mentions such a sound". It is
deliberately coarse: a caption can fall in several categories ("A man talks as an engine
idles" -> human, vehicles) or in none; ambiguous words are left out rather than guessed
("fly", "roar", "hiss" could be animals or machines), and a word that names two kinds
of sound is listed under both ("singing": human and music).

Matching is case-insensitive on whole words; each lexicon word also matches its simple
inflections: +s (+es after s/x/z/ch/sh/o), +ed/+ing, a final e dropped before -ing
("whine" -> "whining"), y -> ies/ied ("cry" -> "cries"), and a doubled final consonant
in one-syllable words ("tap" -> "tapping"). A few inflections that are other words
("being", a gun "firing") are excluded.
"""

from __future__ import annotations

import re
from functools import lru_cache

CATEGORIES: dict[str, tuple[str, ...]] = {
    "human": (
        "speech",
        "speak",
        "talk",
        "conversation",
        "chat",
        "chatter",
        "narrate",
        "narrator",
        "voice",
        "say",
        "announce",
        "announcer",
        "whisper",
        "shout",
        "yell",
        "scream",
        "laugh",
        "laughter",
        "giggle",
        "chuckle",
        "cry",
        "sob",
        "cough",
        "sneeze",
        "burp",
        "breathe",
        "breath",
        "snore",
        "sniff",
        "gasp",
        "groan",
        "grunt",
        "moan",
        "hiccup",
        "sing",
        "singer",
        "hum",
        "whistle",
        "cheer",
        "applause",
        "applaud",
        "clap",
        "crowd",
        "baby",
        "babies",
        "child",
        "children",
        "kid",
        "footstep",
        "chew",
        "gargle",
        "gulp",
        "wheeze",
        "fart",
        "chant",
        "yodel",
        "vocalize",
        "verbalize",
        "monologue",
    ),
    "animals": (
        "animal",
        "dog",
        "puppy",
        "bark",
        "howl",
        "growl",
        "whimper",
        "yip",
        "cat",
        "kitten",
        "meow",
        "purr",
        "bird",
        "chirp",
        "tweet",
        "birdsong",
        "coo",
        "pigeon",
        "dove",
        "crow",
        "caw",
        "rooster",
        "chicken",
        "hen",
        "cluck",
        "duck",
        "quack",
        "goose",
        "geese",
        "owl",
        "hoot",
        "squawk",
        "parrot",
        "seagull",
        "gull",
        "cow",
        "moo",
        "cattle",
        "horse",
        "neigh",
        "whinny",
        "gallop",
        "clip-clop",
        "pig",
        "oink",
        "grunt",
        "sheep",
        "goat",
        "bleat",
        "baa",
        "frog",
        "croak",
        "insect",
        "bee",
        "mosquito",
        "cricket",
        "cicada",
        "bug",
        "trot",
        "cuckoo",
        "wildlife",
    ),
    "vehicles": (
        "vehicle",
        "car",
        "truck",
        "bus",
        "van",
        "train",
        "railroad",
        "locomotive",
        "tram",
        "subway",
        "motorcycle",
        "motorbike",
        "scooter",
        "bike",
        "bicycle",
        "engine",
        "motorboat",
        "boat",
        "ship",
        "aircraft",
        "airplane",
        "plane",
        "jet",
        "helicopter",
        "tire",
        "wheel",
        "brake",
        "traffic",
        "accelerate",
        "rev",
        "idle",
        "skid",
        "race",
        "tractor",
    ),
    "nature": (
        "wind",
        "rain",
        "rainfall",
        "raindrop",
        "thunder",
        "thunderstorm",
        "storm",
        "water",
        "wave",
        "ocean",
        "sea",
        "surf",
        "stream",
        "river",
        "waterfall",
        "creek",
        "splash",
        "drip",
        "trickle",
        "gurgle",
        "bubble",
        "flow",
        "fire",
        "crackle",
        "rustle",
        "leaves",
        "leaf",
        "forest",
        "pour",
        "liquid",
    ),
    "music": (
        "music",
        "musical",
        "song",
        "sing",
        "singer",
        "melody",
        "tune",
        "instrument",
        "guitar",
        "piano",
        "keyboard instrument",
        "drum",
        "violin",
        "cello",
        "trumpet",
        "flute",
        "saxophone",
        "harmonica",
        "organ",
        "orchestra",
        "band",
        "synthesizer",
        "chime",
        "xylophone",
        "accordion",
        "banjo",
        "harp",
    ),
    "tools_machines": (
        "tool",
        "power tool",
        "drill",
        "saw",
        "chainsaw",
        "hammer",
        "jackhammer",
        "sand",
        "grind",
        "grinder",
        "machine",
        "machinery",
        "motor",
        "compressor",
        "air compressor",
        "spray",
        "mower",
        "lawn mower",
        "sewing machine",
        "printer",
        "typewriter",
        "generator",
        "pump",
        "ratchet",
        "wrench",
        "weld",
        "tick",
        "mechanical",
    ),
    "domestic": (
        "door",
        "doorbell",
        "dish",
        "cutlery",
        "silverware",
        "plate",
        "spoon",
        "fork",
        "cup",
        "glass",
        "faucet",
        "sink",
        "toilet",
        "flush",
        "drawer",
        "cabinet",
        "cupboard",
        "key",
        "typing",
        "keyboard",
        "computer",
        "microwave",
        "blender",
        "vacuum",
        "vacuum cleaner",
        "fry",
        "sizzle",
        "cook",
        "pan",
        "pot",
        "kettle",
        "clock",
        "paper",
        "crumple",
        "zipper",
        "shower",
        "tap water",
        "kitchen",
        "food",
    ),
    "alarms_signals": (
        "alarm",
        "siren",
        "beep",
        "buzzer",
        "bell",
        "ring",
        "ringtone",
        "telephone",
        "phone",
        "horn",
        "honk",
        "foghorn",
        "signal",
        "ding",
        "smoke detector",
    ),
    "impacts": (
        "explosion",
        "explode",
        "blast",
        "gunshot",
        "gun",
        "gunfire",
        "shot",
        "firework",
        "firecracker",
        "bang",
        "boom",
        "thud",
        "thump",
        "knock",
        "tap",
        "hit",
        "bump",
        "clank",
        "clang",
        "clink",
        "clatter",
        "crash",
        "smash",
        "shatter",
        "break",
        "slam",
        "pop",
        "crack",
        "snap",
        "click",
        "rattle",
        "smack",
        "pound",
        "stamp",
        "clack",
    ),
}


_VOWELS = "aeiou"
# Inflections that are real words with another meaning ("being" is not bees, a gun
# "firing" is not a fire, "winding" a clock is not wind).
_FALSE_FRIENDS = {"being", "fired", "firing", "winding", "tired", "planed"}


def _variants(word: str) -> set[str]:
    """The word and its simple inflections (see the module docstring)."""
    forms = {word, word + "s"}
    if word.endswith(("s", "x", "z", "ch", "sh", "o")):
        forms.add(word + "es")
    if len(word) > 2 and word.endswith("y") and word[-2] not in _VOWELS:
        forms |= {word[:-1] + "ies", word[:-1] + "ied", word + "ing"}
    elif word.endswith("ee"):
        forms |= {word + "d", word + "ing"}
    elif word.endswith("e"):
        forms |= {word + "d", word[:-1] + "ing"}
    elif _short_cvc(word):
        forms |= {word + word[-1] + "ed", word + word[-1] + "ing"}  # tap -> tapping
    else:
        forms |= {word + "ed", word + "ing"}
    return forms - _FALSE_FRIENDS


def _short_cvc(word: str) -> bool:
    """One syllable ending consonant-vowel-consonant: the consonant doubles."""
    return (
        len(word) >= 3
        and len(re.findall(f"[{_VOWELS}]+", word)) == 1
        and word[-1] not in _VOWELS + "wxy"
        and word[-2] in _VOWELS
        and word[-3] not in _VOWELS
    )


@lru_cache(maxsize=None)
def _patterns() -> dict[str, re.Pattern[str]]:
    out = {}
    for name, words in CATEGORIES.items():
        forms: set[str] = set()
        for w in words:
            head, _, last = w.rpartition(" ")  # inflect only the last word of a phrase
            forms |= {f"{head} {v}".strip() for v in _variants(last)}
        alternation = "|".join(sorted((re.escape(f) for f in forms), key=len, reverse=True))
        out[name] = re.compile(rf"(?<![a-z])(?:{alternation})(?![a-z])")
    return out


def categories_of(text: str) -> list[str]:
    """The categories a caption mentions, in :data:`CATEGORIES` order (possibly none).

    >>> categories_of("A man talks as an engine idles loudly")
    ['human', 'vehicles']
    >>> categories_of("Birds chirping while a dog barks in the distance")
    ['animals']
    >>> categories_of("Silence")
    []
    """
    lowered = " ".join(text.lower().split())
    return [name for name, pat in _patterns().items() if pat.search(lowered)]
