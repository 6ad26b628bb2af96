"""The seed methods under bf16 autocast, on the CPU.

On CUDA every forward of the loop, the pool, the replay VAE and the virtual-interpolation term runs
in ``fedkd.utils.device.autocast`` (bf16); on the CPU that context is a no-op, so CI never sees a
bf16 logit. Here the context is swapped for CPU bf16 autocast: the dtype paths (losses cast to
float32, the VAE's reconstruction terms, mixed virtual samples) run as they would on a GPU, and the
students still learn.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch

from fedkd.data import get_spec
from fedkd.datafree import (
    DeepInversionSynthesizer,
    DFADSynthesizer,
    PseudoReplaySynthesizer,
    RDSKDSynthesizer,
    StudentRecipe,
    Teacher,
    distill,
)
from fedkd.datafree.student_terms import ActivationRegularizer, VirtualInterpolation
from fedkd.models import build_model
from fedkd.training import evaluate
from fedkd.utils import device as device_module
from fedkd.utils.seeding import seed_everything

SPEC = get_spec("digits")
CPU = torch.device("cpu")
SMALL_G = {"name": "dfad_generator", "ngf": 8}


@pytest.fixture
def cpu_bf16(monkeypatch) -> list[torch.device]:
    """Every fedkd module's ``autocast`` becomes CPU bf16 autocast; returns the devices it was entered for."""
    entered: list[torch.device] = []
    original = device_module.autocast

    def bf16(device: torch.device, enabled: bool = True):
        entered.append(device)
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)

    for name, module in list(sys.modules.items()):
        if name.startswith("fedkd") and getattr(module, "autocast", None) is original:
            monkeypatch.setattr(module, "autocast", bf16)
    return entered


def _tensors(state) -> list[torch.Tensor]:
    """Every tensor in a nested state dict."""
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        state = list(state.values())
    return [t for item in state for t in _tensors(item)] if isinstance(state, (list, tuple)) else []


def _replay_over_dfad():
    base = DFADSynthesizer(SPEC, "cpu", SMALL_G, batch_size=64)
    return PseudoReplaySynthesizer(SPEC, "cpu", base, vae={"latent_dim": 16, "nf": 16}, vae_batch_size=64, vae_steps=2)


# name: (synthesizer, student terms, student loss, whether 32 student steps beat chance clearly:
# the two DFAD-generator methods need more steps than a quick test gives, see test_rdskd/test_replay)
CASES = {
    "rdskd": (lambda: RDSKDSynthesizer(SPEC, "cpu", SMALL_G, batch_size=64, generator_warmup=5, generator_steps=1,
                                       ref_interval=3), (), "l1", False),
    "replay_dfad": (_replay_over_dfad, (), "l1", False),
    "deepinversion": (lambda: DeepInversionSynthesizer(SPEC, "cpu", batch_size=64, synthesis_steps=5, pool_size=512),
                      (), "kl", True),
    "dfad_both_terms": (lambda: DFADSynthesizer(SPEC, "cpu", SMALL_G, batch_size=64),
                        (VirtualInterpolation(weight=0.1), ActivationRegularizer()), "l1", True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_seed_methods_learn_under_bf16_autocast(name, cpu_bf16, digits, digits_teacher):
    make, terms, loss, learns = CASES[name]
    seed_everything(0)
    student = build_model("lenet5_half", SPEC)
    dtypes: set[torch.dtype] = set()
    student.register_forward_hook(lambda _m, _i, out: dtypes.add(out.dtype))
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    synth = make()
    out = distill(student, Teacher(digits_teacher), synth, opt, iterations_per_epoch=8,
                  recipe=StudentRecipe(steps=4, loss=loss, temperature=4.0), student_batch_size=64,
                  progress=False, terms=list(terms))
    assert cpu_bf16 and all(d == CPU for d in cpu_bf16)
    assert torch.bfloat16 in dtypes  # the student's forwards ran in bf16
    assert all(math.isfinite(v) for v in out.values() if isinstance(v, float)), out
    synth_state = [t for t in _tensors(synth.state_dict()) if t.is_floating_point()]
    # generator, VAE, pool: no NaN from a bf16 step
    assert synth_state and all(torch.isfinite(t).all() for t in synth_state)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in student.parameters())
    if learns:
        acc = evaluate(student, digits.test, CPU)["accuracy"]
        assert acc > 0.4, acc  # chance: 0.1
