#!/usr/bin/env bash
# Build the isolated environment in which the reference laion_clap code runs (parity only;
# laion_clap is never a dependency of humanclap: it pins numpy<2 and imports torchvision).
#
#   bash parity/make_env.sh DIR        # ~6 minutes, 1.6 GB; re-running on a built DIR is a no-op
#
# What goes in, and why (checked against laion_clap 1.1.7's clap_module/*.py imports):
# * torch==2.13.0: the CPU wheel on this disk (never a bare `torch`: that is a multi-GB CUDA build);
# * numpy<2: laion_clap 1.1.x declares numpy<2 (and builds its state dicts with numpy-1 scalars);
# * transformers 4.57.6: model.py builds the text tower with transformers' RobertaModel and
#   imports BatchEncoding from transformers.tokenization_utils_base (still there in 4.x);
# * torchlibrosa (+ librosa, which its stft module imports for the mel filters): htsat.py and
#   pann_model.py build their spectrogram front end with it;
# * h5py, tqdm: clap_module/utils.py imports them at module level;
# * laion_clap itself with --no-deps: its declared deps add wandb, webdataset, wget,
#   scikit-learn, progressbar, ... which the model modules never import;
# * a stub `torchvision`: clap_module/utils.py imports torchvision.ops.misc.FrozenBatchNorm2d
#   (used only to freeze batch norms for fine-tuning) and the registry's torchvision builds
#   do not load against this CPU torch. The other torchvision import of laion_clap
#   (clap_module/transform.py: image transforms, pulled in by factory.py and the package
#   __init__) is never imported by the harness, which loads model.py/htsat.py directly.
# * torchaudio 2.11's Python code in DIR/torchaudio-py (not on the env's path: only
#   laion_reference.py adds it), its compiled extension deleted: laion_clap's fused front end
#   (data.py's get_mel) is torchaudio's MelSpectrogram + AmplitudeToDB, pure Python over
#   torch.stft; no torchaudio build loads against torch 2.13, and with no extension file
#   torchaudio imports without it.
set -euo pipefail
DIR=${1:?usage: make_env.sh DIR}
PY=${PYTHON:-python3}
if [ -f "$DIR/.parity-env-ok" ] && [ -d "$DIR/torchaudio-py/torchaudio" ] \
    && "$DIR/bin/python" -c "import torchlibrosa, transformers, torchvision.ops.misc" 2>/dev/null; then
  echo "parity env ready: $DIR"; exit 0
fi
"$PY" -m venv "$DIR"
PIP=("$DIR/bin/pip" install -q --disable-pip-version-check)
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" "numpy>=1.23.5,<2" "transformers==4.57.6" "torchlibrosa==0.1.0" "librosa>=0.10,<0.12" h5py tqdm
"${PIP[@]}" --no-deps "laion_clap==1.1.*"
SITE=$("$DIR/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
mkdir -p "$SITE/torchvision/ops"
cat > "$SITE/torchvision/__init__.py" <<'PYEOF'
"""Stub torchvision for the laion_clap parity harness: only ops.misc.FrozenBatchNorm2d."""
__version__ = "0.0.0+humanclap-parity-stub"
PYEOF
: > "$SITE/torchvision/ops/__init__.py"
cat > "$SITE/torchvision/ops/misc.py" <<'PYEOF'
"""FrozenBatchNorm2d as torchvision defines it (batch norm with fixed statistics)."""
import torch


class FrozenBatchNorm2d(torch.nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        bias = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)
PYEOF
rm -rf "$DIR/torchaudio-py"
"${PIP[@]}" --no-deps --target "$DIR/torchaudio-py" "torchaudio==2.11.0"
rm -f "$DIR"/torchaudio-py/torchaudio/lib/*.so
PYTHONPATH="$DIR/torchaudio-py" "$DIR/bin/python" -c "import torchaudio.transforms"
"$DIR/bin/python" -c "import torch, numpy, transformers, torchlibrosa; print('parity env:', 'torch', torch.__version__, 'numpy', numpy.__version__, 'transformers', transformers.__version__)"
touch "$DIR/.parity-env-ok"
