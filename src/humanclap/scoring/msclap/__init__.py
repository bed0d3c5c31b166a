"""MS CLAP 2022 and 2023, native: the model (:mod:`.model`, towers in :mod:`.cnn14`,
:mod:`.htsat`, front end in :mod:`.frontend`), its weights (:mod:`.weights`) and its
:class:`MSClapScorer` (:mod:`.scorer`). msclap itself is never imported."""

from humanclap.scoring.msclap.model import MSClapConfig, MSClapModel, is_msclap_folder
from humanclap.scoring.msclap.scorer import LONG_CLIP_RULE, MSClapScorer
from humanclap.scoring.msclap.weights import SPECS, infer_version, load_pth, save_pth

__all__ = [
    "LONG_CLIP_RULE",
    "MSClapConfig",
    "MSClapModel",
    "MSClapScorer",
    "SPECS",
    "infer_version",
    "is_msclap_folder",
    "load_pth",
    "save_pth",
]
