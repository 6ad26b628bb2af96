"""Every data-free method of the pipeline in the generator strategy: a distillation round of
FedFTG's server (no warm-up round) on real digits client models, with each synthesizer (the
replay wrappers included) and each student-side term, and a state that survives a safe save/load.

The strategy's own generator (``conf/synthesizer/fedftg.yaml``) and the options that decide whether
it pays are tested in test_fedftg.py; here the question is only whether a method the centralized
mode runs also runs, learns and resumes on the server, against an ensemble teacher."""

from __future__ import annotations

import pytest
import torch
from conftest import SMALL_SIM, bound_strategy

from fedkd.federated import records as R
from fedkd.federated.config import compose_sim_config

CHANCE = 0.1
ROUND = ["strategy=fedftg", "strategy.warmup_rounds=0", "strategy.iterations_per_round=2",
         "strategy.student_batch_size=32", "strategy.diagnostics_every=0", "strategy.image_every=0"]
S = "strategy.synthesizer"
# Per method: the group override and the sizes that keep a round to a few seconds.
METHODS = {
    "dfad": [f"synthesizer@{S}=dfad", f"{S}.batch_size=32"],
    "rdskd": [f"synthesizer@{S}=rdskd", f"{S}.batch_size=32", f"{S}.generator_warmup=4", f"{S}.ref_interval=2",
              f"{S}.generator_steps=1"],
    "dafl": [f"synthesizer@{S}=dafl", f"{S}.batch_size=32"],
    "zskt": [f"synthesizer@{S}=zskt", f"{S}.batch_size=32"],
    "cmi": [f"synthesizer@{S}=cmi", f"{S}.batch_size=32", f"{S}.synthesis_steps=3", f"{S}.bank_size=128",
            f"{S}.negatives=32"],
    "deepinversion": [f"synthesizer@{S}=deepinversion", f"{S}.batch_size=32", f"{S}.synthesis_steps=5"],
    "replay_dfad": [f"synthesizer@{S}=replay_dfad", f"{S}.base.batch_size=32", f"{S}.vae_batch_size=32"],
    "replay_rdskd": [f"synthesizer@{S}=replay_rdskd", f"{S}.base.batch_size=32", f"{S}.base.generator_warmup=4",
                     f"{S}.base.ref_interval=2", f"{S}.base.generator_steps=1", f"{S}.vae_batch_size=32"],
    "replay_conditional": [f"synthesizer@{S}=replay_conditional", f"{S}.base.batch_size=32", f"{S}.vae_batch_size=32"],
    "activation+interpolation": ["student_terms@strategy.student_terms=[activation,interpolation]"],
    "attention": ["student_terms@strategy.student_terms=[attention]"],
}


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_distils_on_the_server_and_its_state_survives_a_save(method, fedftg_replies, tmp_path):
    from fedkd.models import build_from_config
    from fedkd.training import evaluate

    cfg = compose_sim_config(SMALL_SIM + ROUND + METHODS[method])
    strategy, run = bound_strategy(cfg, tmp_path / "run")
    arrays, _ = strategy.aggregate(1, fedftg_replies[:2])  # a two-member ensemble: half the teacher cost
    server = dict(strategy._round.server)
    assert server["server_seconds_distillation"] > 0 and server["student_grad_norm"] > 0
    assert all(torch.isfinite(torch.as_tensor(a.numpy())).all() for a in arrays.values())
    for name in strategy.student_terms:
        assert server[f"term/{name}"] > 0, server  # the term ran against the ensemble teacher
    model = build_from_config(run.client_model_configs[0], run.spec)
    model.load_state_dict(R.state_dict(arrays))
    assert evaluate(model, run.test, run.device)["accuracy"] > 3 * CHANCE

    path = tmp_path / "state.pt"
    torch.save(strategy.state_dict(), path)
    restored, _ = bound_strategy(cfg, tmp_path / "again")
    restored.load_state_dict(torch.load(path, weights_only=True))
    _assert_same(restored.synthesizer.state_dict(), strategy.synthesizer.state_dict())
    for name, term in strategy.student_terms.items():
        _assert_same(restored.student_terms[name].state_dict(), term.state_dict())


def _assert_same(a, b, path: str = "state") -> None:
    """Equal nested states: the same keys, tensors and values all the way down."""
    assert type(a) is type(b), path
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    else:
        assert a == b, path
