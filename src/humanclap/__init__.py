"""humanclap: human-aligned text-audio relevance scoring (Human-CLAP)."""

from .audio import AudioError, load_audio
from .model import DEFAULT_MODEL, CLAPScorer, ModelLoadError, clapscore

__version__ = "0.1.0"

__all__ = ["CLAPScorer", "DEFAULT_MODEL", "AudioError", "ModelLoadError", "clapscore", "load_audio", "__version__"]
