"""The server's teacher: which remembered clients join it under a per-class cap, and their weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedkd.data import get_spec
from fedkd.datafree import class_weights_from_counts
from fedkd.federated import records as R
from fedkd.federated.server_run import ServerRun
from fedkd.models import build_model
from fedkd.strategies.client_memory import RememberedUpdate
from fedkd.strategies.server_teacher import ensemble_teacher, select_members

SPEC = get_spec("digits")

COUNTS = np.array([
    [50, 0, 3, 0],   # 0: most of class 0
    [40, 9, 0, 0],   # 1: second in class 0, first in class 1
    [40, 1, 0, 0],   # 2: ties with 1 in class 0 (comes later: loses); a sample of class 1
    [0, 0, 2, 0],    # 3: second in class 2
    [0, 0, 0, 0],    # 4: nothing at all (no class)
])


def test_each_class_keeps_its_largest_holders_and_only_those_classes():
    kept, counts = select_members(COUNTS, 1)
    np.testing.assert_array_equal(kept, [0, 1])  # 0 for classes 0 and 2, 1 for class 1; class 3 nobody holds
    np.testing.assert_array_equal(counts, [[50, 0, 3, 0], [0, 9, 0, 0]])  # 1 is not weighted for class 0

    kept, counts = select_members(COUNTS, 2)
    np.testing.assert_array_equal(kept, [0, 1, 2, 3])  # the tie in class 0 goes to the earlier member
    np.testing.assert_array_equal(counts, [[50, 0, 3, 0], [40, 9, 0, 0], [0, 1, 0, 0], [0, 0, 2, 0]])

    kept, counts = select_members(COUNTS, 10)  # a cap above the holders: everyone with samples, unchanged
    np.testing.assert_array_equal(kept, [0, 1, 2, 3])
    np.testing.assert_array_equal(counts, COUNTS[:4])


def test_label_weights_renormalise_each_class_over_its_chosen_members():
    _, counts = select_members(COUNTS, 2)
    weights = class_weights_from_counts(counts)
    torch.testing.assert_close(weights[:, 0], torch.tensor([50 / 90, 40 / 90, 0.0, 0.0]))
    torch.testing.assert_close(weights[:, 1], torch.tensor([0.0, 0.9, 0.1, 0.0]))
    torch.testing.assert_close(weights.sum(0), torch.ones(4))


def test_every_member_stays_without_counts_and_bad_input_is_refused():
    kept, counts = select_members(np.zeros((3, 4), dtype=np.int64), 2)
    np.testing.assert_array_equal(kept, [0, 1, 2])
    with pytest.raises(ValueError, match="per_class"):
        select_members(COUNTS, 0)
    with pytest.raises(ValueError, match="per_class"):
        select_members(COUNTS[0], 1)


def test_the_capped_teacher_loads_only_the_chosen_clients():
    torch.manual_seed(0)
    configs = [{"name": "lenet5"}] * 5
    run = ServerRun(SPEC, None, torch.device("cpu"), None, configs)
    counts = np.zeros((5, SPEC.num_classes), dtype=np.int64)
    counts[:, :4] = COUNTS
    models = [build_model("lenet5", SPEC).eval() for _ in range(5)]
    updates = [RememberedUpdate(pid, R.to_arrays(m), counts[pid], 1) for pid, m in enumerate(models)]

    teacher = ensemble_teacher(run, updates, members_per_class=1)
    assert teacher.num_members == 2 and teacher.weighting == "label"
    x, labels = torch.randn(6, *SPEC.shape), torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        expected = torch.stack([(models[0] if y != 1 else models[1])(x[n : n + 1])[0] for n, y in enumerate(labels)])
        torch.testing.assert_close(teacher(x, labels), expected)
    assert ensemble_teacher(run, updates).num_members == 5  # no cap: every remembered client


def test_fedftg_passes_its_cap_to_the_teacher_and_refuses_a_cap_below_one(tmp_path):
    from conftest import FEDFTG_BUDGET, SMALL_SIM, bound_strategy, client_updates

    from fedkd.cli.common import _user_error
    from fedkd.federated.config import compose_sim_config

    cfg = compose_sim_config(SMALL_SIM + FEDFTG_BUDGET + ["strategy=fedftg", "strategy.teacher_members_per_class=1"])
    strategy, run = bound_strategy(cfg, tmp_path)
    updates = client_updates(cfg, run)
    kept, _ = select_members(np.stack([u.label_counts for u in updates]), 1)
    assert strategy.ensemble(updates).num_members == len(kept) <= SPEC.num_classes

    cfg = compose_sim_config(SMALL_SIM + FEDFTG_BUDGET + ["strategy=fedftg", "strategy.teacher_members_per_class=0"])
    with pytest.raises(Exception) as raised:  # noqa: PT011 -- Hydra's instantiate wraps it; the CLI unwraps it
        bound_strategy(cfg, tmp_path)
    error = _user_error(raised.value)
    assert error is not None and "teacher_members_per_class" in str(error) and "\n" not in str(error)
