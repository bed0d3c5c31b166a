"""The tiny test models are a function of their seed alone, the same on every tested stack.

transformers 4.x and 5.x initialise ``ClapModel`` from the same distributions but draw them
in a different order, so a tiny model seeded with ``torch.manual_seed`` differed between
versions (on 4.57 every test cosine came out negative). ``init_weights`` draws each tensor
itself; these digests are checked on both CI stacks (.ci/run, ci/old-stack.txt).
"""

from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import load_file

from humanclap.recipes.tiny import init_weights, tiny_clap_config

# sha256 (first 16 hex digits) of every saved tensor, by sorted name, of build_tiny_clap(seed=0):
# equal on transformers 5.24 + numpy 2.4 and transformers 4.57.6 + numpy 1.26.4 (torch 2.13).
DIGESTS = {False: "186eb4fe91af247b", True: "69c8f0bfaf9cef1b"}


def digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode() + b"\0" + tensors[name].contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("fused", [False, True])
def test_the_tiny_model_is_the_same_on_every_transformers_version(fused, tiny_unfused, tiny_fused):
    folder = tiny_fused if fused else tiny_unfused
    assert digest(load_file(str(folder / "model.safetensors"))) == DIGESTS[fused]


def test_init_weights_depends_on_its_seed_alone():
    from transformers import ClapModel

    def model(torch_seed: int, seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(torch_seed)  # the library's own draws, overwritten by init_weights
        m = ClapModel(tiny_clap_config())
        init_weights(m, seed)
        return m.state_dict()

    a, b, c = model(0, 7), model(1, 7), model(0, 8)
    assert digest(a) == digest(b) != digest(c)
    assert float(a["logit_scale_a"]) == pytest.approx(2.6593, abs=1e-4)  # log(1 / 0.07)
    assert float(a["text_projection.linear2.bias"].abs().max()) == 0.0


def test_init_weights_refuses_a_parameter_it_has_no_rule_for():
    from transformers import ClapModel

    m = ClapModel(tiny_clap_config())
    m.text_projection.extra = torch.nn.Module()
    m.text_projection.extra.scale = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(TypeError, match=r"no rule for text_projection\.extra\. .*\['scale'\]"):
        init_weights(m, 0)
