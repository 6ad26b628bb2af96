"""Option nodes checked against their targets' signatures: unknown keys, wrong types and values out of
range end in one line naming the key -- in the checker itself, and through the entry points before
Hydra creates the run folder."""

from __future__ import annotations

import sys
from typing import Annotated, Any, Literal

import pytest
from omegaconf import OmegaConf

from fedkd.errors import ConfigError
from fedkd.utils.option_schema import check_nested, check_option_node, checked, option_schema
from fedkd.utils.option_types import (
    Forward,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Range,
    Supplied,
    UnitFloat,
)

HERE = __name__


def sample(
    labels: Supplied[list[int]],
    count: Supplied[PositiveInt],
    rate: PositiveFloat = 0.5,
    share: UnitFloat | None = None,
    mode: Literal["a", "b"] = "a",
    sizes: Annotated[list[int], Range(1)] = (1,),
    flag: bool = False,
    free=None,
) -> None:
    """A target with one parameter of each kind the checker reads."""


class Parent:
    def __init__(self, *, fraction: Annotated[float, Range(0, 1, low_open=True)] = 1.0) -> None:
        pass


class Child(Parent):
    def __init__(self, *, mu: NonNegativeFloat = 0.0, **kwargs: Annotated[Any, Forward()]) -> None:
        super().__init__(**kwargs)


class Loose(Parent):
    def __init__(self, *, mu: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)


def small(width: PositiveInt = 1) -> None:
    """One of the callables :func:`dispatch` chooses from."""


def _lookup(kind: str):
    if kind != "small":
        raise ConfigError(f"kind '{kind}' is unknown; choose one of: small")
    return small


def dispatch(kind: str, **options: Annotated[Any, Forward(choice="kind", lookup=_lookup)]) -> None:
    """Takes the options of the callable ``kind`` names (as the model registry does)."""


def wrapper(base: Any = None, steps: PositiveInt = 1, **overrides: Annotated[Any, Forward(node="base")]) -> None:
    """Its other keys belong to the node under ``base`` (as a synthesizer wrapper's do)."""


def _check(target: str, **keys: Any) -> None:
    check_option_node(OmegaConf.create({"_target_": f"{HERE}.{target}", **keys}), "x")


def _refused(target: str, **keys: Any) -> str:
    with pytest.raises(ConfigError) as info:
        _check(target, **keys)
    message = str(info.value)
    assert "\n" not in message and "; " in message, message
    return message


def test_values_that_fit_pass():
    _check("sample", rate=2, share=None, mode="b", sizes=[1, 2], flag=True, free={"any": "thing"})
    _check("sample", _partial_=True)  # Hydra's own keys are not options


@pytest.mark.parametrize(("keys", "message"), [
    ({"rate": "high"}, "x.rate must be a number (got 'high')"),
    ({"rate": 0}, "x.rate must be > 0 (got 0)"),
    ({"share": 1.5}, "x.share must be >= 0 and <= 1 (got 1.5)"),
    ({"share": "half"}, "x.share must be a number or null (got 'half')"),
    ({"mode": "c"}, "x.mode must be one of: 'a', 'b' (got 'c')"),
    ({"sizes": [1, 0]}, "x.sizes must be >= 1 (got 0)"),
    ({"sizes": 3}, "x.sizes must be a list of integers (got 3)"),
    ({"flag": 1}, "x.flag must be true or false (got 1)"),
    ({"rtae": 1}, f"x.rtae is not an option of {HERE}.sample; drop it, or use one of its options: "
                  "flag, free, mode, rate, share, sizes"),
    ({"count": 3}, "x.count is given by the run"),
])
def test_a_bad_key_ends_in_one_line_naming_it(keys, message):
    assert message in _refused("sample", **keys)


def test_forwarded_keys_are_the_parents_with_its_ranges():
    _check("Child", mu=0.1, fraction=0.5)
    assert "x.fraction must be > 0 and <= 1 (got 1.5)" in _refused("Child", fraction=1.5)
    assert "use one of its options: fraction, mu" in _refused("Child", fractoin=0.5)


def test_unmarked_kwargs_take_any_key_but_keep_the_parents_hints():
    _check("Loose", anything=1)
    assert "x.fraction must be > 0" in _refused("Loose", fraction=0)


def test_a_dispatcher_takes_the_options_of_its_choice():
    _check("dispatch", kind="small", width=3)
    assert "x.width must be >= 1 (got 0)" in _refused("dispatch", kind="small", width=0)
    assert f"x.depth is not an option of {HERE}.dispatch kind=small" in _refused("dispatch", kind="small", depth=2)
    assert "kind 'large' is unknown" in _refused("dispatch", kind="large")


def test_forwarded_to_a_node_takes_that_nodes_options():
    base = {"_target_": f"{HERE}.small"}
    _check("wrapper", base=base, steps=2, width=4)
    assert "x.width must be >= 1" in _refused("wrapper", base=base, width=0)
    assert "x.depth is not an option of" in _refused("wrapper", base=base, depth=1)
    assert "x.base.width must be >= 1" in _refused("wrapper", base={**base, "width": 0})  # the nested node itself


def test_nested_nodes_and_unlocatable_targets():
    terms = {"a": {"_target_": f"{HERE}.sample"}, "b": {"_target_": f"{HERE}.sample", "rate": -1}}
    with pytest.raises(ConfigError, match=r"terms\.b\.rate must be > 0"):
        check_nested(OmegaConf.create(terms), "terms")
    _check("no_such_function", whatever=1)  # left to the code that builds it, which names the problem
    assert option_schema("no.such.module.Thing") is None


class Direct:
    """A constructor that also checks direct calls against its hints."""

    @checked("x")
    def __init__(self, size: PositiveInt = 1, mode: Literal["a", "b"] = "a", share: UnitFloat | None = None,
                 data: Supplied[Any] = None) -> None:
        self.size = size


def test_a_checked_constructor_refuses_a_direct_call_as_the_config_check_would():
    import numpy as np

    assert Direct(np.int64(3), data=object()).size == 3  # numbers a config cannot hold pass on to the body
    for keys, message in [({"size": 0}, "x.size must be >= 1 (got 0)"), ({"size": 2.5}, "x.size must be an integer"),
                          ({"size": None}, "x.size must be an integer (got None)"),
                          ({"mode": "c"}, "x.mode must be one of: 'a', 'b' (got 'c')"),
                          ({"share": 1.5}, "x.share must be >= 0 and <= 1 (got 1.5)")]:
        with pytest.raises(ConfigError) as info:
            Direct(**keys)
        assert message in str(info.value) and "\n" not in str(info.value), str(info.value)
    assert option_schema(f"{HERE}.Direct").accepted() == ["mode", "share", "size"]  # the signature stays readable


def test_library_signatures_get_fedkd_ranges():
    schema = option_schema("torch.optim.SGD")
    assert schema is not None and {"lr", "momentum", "weight_decay", "nesterov"} <= set(schema.accepted())
    node = OmegaConf.create({"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1, "momentum": 1.0})
    with pytest.raises(ConfigError, match=r"optim\.momentum must be >= 0 and < 1 \(got 1\.0\)"):
        check_option_node(node, "optim")


# --- through the entry points: one line, exit 2, no run folder

CASES = {
    "partition.alpha=high": ("fedkd-sim", ["partition.alpha=high"], "partition.alpha must be a number (got 'high')"),
    "strategy.fraction_train=1.5": ("fedkd-sim", ["strategy.fraction_train=1.5"],
                                    "strategy.fraction_train must be > 0 and <= 1 (got 1.5)"),
    "strategy.iterations_per_round=ten": ("fedkd-sim", ["strategy=fedftg", "strategy.iterations_per_round=ten"],
                                          "strategy.iterations_per_round must be an integer (got 'ten')"),
    # 0 switches the sample grids off; a negative period once logged a grid every round
    "strategy.image_every=-1": ("fedkd-sim", ["strategy=fedftg", "strategy.image_every=-1"],
                                "strategy.image_every must be >= 0 (got -1)"),
    "strategy.synthesizer.lr=0": ("fedkd-sim", ["strategy=fedftg", "strategy.synthesizer.lr=0"],
                                  "strategy.synthesizer.lr must be > 0 (got 0)"),
    "+strategy.fraction_trian=0.5": ("fedkd-sim", ["strategy=fedgen", "+strategy.fraction_trian=0.5"],
                                     "strategy.fraction_trian is not an option of fedkd.strategies.fedgen.FedGen"),
    "synthesizer.batch_size=0": ("fedkd-distill", ["synthesizer=deepinversion", "synthesizer.batch_size=0"],
                                 "synthesizer.batch_size must be >= 1 (got 0)"),
    # a wrapper's keys beyond its own are its base's, with the base's ranges
    "+synthesizer.batch_size=0 on a wrapper": ("fedkd-distill",
                                               ["synthesizer=replay_dfad", "+synthesizer.batch_size=0"],
                                               "synthesizer.batch_size must be >= 1 (got 0)"),
    "optim.momentum=2": ("fedkd-train", ["optim.momentum=2"], "optim.momentum must be >= 0 and < 1 (got 2)"),
    "+model.width=wide": ("fedkd-train", ["+model.width=wide"], "model.width is not an option of"),
    "model.channels=0": ("fedkd-sim", ["model.channels=0"], "model.channels must be >= 1 (got 0)"),
    # Hydra's hint for an unknown key is "To append to your config use +partition.aplha=0.1": following it
    # ends here, with the keys the partition takes.
    "+partition.aplha=0.1": ("fedkd-sim", ["+partition.aplha=0.1"], "partition.aplha is not an option of "
                             "fedkd.data.partitions.dirichlet; drop it, or use one of its options: alpha, min_size"),
    "student_terms.interpolation.alpha=0": ("fedkd-distill", ["student_terms=[interpolation]",
                                            "student_terms.interpolation.alpha=0"],
                                            "student_terms.interpolation.alpha must be > 0 (got 0)"),
}


def _entry(cmd: str):
    from fedkd.cli import distill, sim, train

    return {"fedkd-train": train.main, "fedkd-sim": sim.main, "fedkd-distill": distill.main}[cmd]


@pytest.mark.parametrize("case", list(CASES))
def test_entry_points_refuse_before_the_run_folder_exists(case, tmp_path, capfd, monkeypatch):
    cmd, overrides, message = CASES[case]
    run = tmp_path / "run"
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    monkeypatch.setattr(sys, "argv", [cmd, *overrides, f"hydra.run.dir={run}"])
    with pytest.raises(SystemExit) as exited:
        _entry(cmd)()
    _, stderr = capfd.readouterr()
    lines = [line for line in stderr.splitlines() if line.startswith("fedkd: error: ")]
    assert exited.value.code == 2 and len(lines) == 1, stderr[-2000:]
    assert message in lines[0] and "Traceback" not in stderr, lines[0]
    assert not run.exists(), "the run folder was created before the config was checked"


def test_a_partition_that_cannot_fit_the_data_ends_in_one_line(tmp_path, capfd, monkeypatch):
    """Checked where the partition is built, against the training labels, which the entry point's
    preflight does before Hydra creates the run folder (fedkd.cli.inputs)."""
    run = tmp_path / "run"
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    overrides = ["dataset=digits", "partition=shards", "partition.classes_per_client=11", f"hydra.run.dir={run}"]
    monkeypatch.setattr(sys, "argv", ["fedkd-sim", *overrides])
    with pytest.raises(SystemExit) as exited:
        _entry("fedkd-sim")()
    _, stderr = capfd.readouterr()
    lines = [line for line in stderr.splitlines() if line.startswith("fedkd: error: ")]
    assert exited.value.code == 2 and len(lines) == 1, stderr[-2000:]
    assert "partition.classes_per_client must be >= 1 and <= 10, the dataset's class count (got 11)" in lines[0]
    assert "Traceback" not in stderr
    assert not run.exists(), "the run folder was created before the partition was checked"

