"""Types and ranges of option parameters, read from their type hints.

An option's constructor declares what its config node may hold: ``alpha: PositiveFloat = 0.5`` is
``Annotated[float, Range(0, low_open=True)]``. :mod:`fedkd.utils.option_schema` checks a composed
node against these hints; :func:`fedkd.config.ranged` uses :class:`Range` for the typed schemas, so
every range reads the same (``must be >= 0 and <= 1 (got 1.5)``).

:func:`conforms` answers only for types a config can hold (numbers, booleans, strings, null,
``Literal``, lists, mappings, enums); for any other type (a tensor, a device, a callable) it
cannot judge a config value and accepts it.
"""

from __future__ import annotations

import collections.abc as abc
import enum
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, Union

from fedkd.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """A numeric parameter's valid range: ``low <= value <= high`` (strict with ``low_open`` /
    ``high_open``); a ``None`` bound is no bound. On a list or tuple every item is checked."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def text(self) -> str:
        """The range in words: ``> 0 and <= 1``."""
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high}")
        return " and ".join(parts)

    def contains(self, value: float) -> bool:
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        return not (below or above)

    def check(self, key: str, value: Any) -> None:
        """Raise the one-line :class:`ConfigError` for the first number of ``value`` outside the range
        (``None``, booleans and non-numbers are left to the type check)."""
        for item in value if isinstance(value, list | tuple) else [value]:
            if isinstance(item, bool) or not isinstance(item, int | float):
                continue
            if not self.contains(item):
                raise ConfigError(f"{key} must be {self.text()} (got {item}); set {key}=<a value in that range>")


# The ranges most parameters need, under names that read well in a signature.
PositiveInt = Annotated[int, Range(1)]
NonNegativeInt = Annotated[int, Range(0)]
PositiveFloat = Annotated[float, Range(0, low_open=True)]
NonNegativeFloat = Annotated[float, Range(0)]
UnitFloat = Annotated[float, Range(0, 1)]  # a share or probability in [0, 1]
ShareBelowOne = Annotated[float, Range(0, 1, high_open=True)]  # a share in [0, 1): 1 would leave nothing else
AdamBetas = Annotated[tuple[float, float], Range(0, 1, high_open=True)]  # Adam's two decay rates


class _Supplied:
    def __repr__(self) -> str:
        return "SUPPLIED"


#: Marks a parameter that the code passes when it calls the target (the labels, the run's seed):
#: a config node cannot set it. Written ``num_clients: Supplied[PositiveInt]``.
SUPPLIED = _Supplied()
_T = TypeVar("_T")
Supplied = Annotated[_T, SUPPLIED]


def supplied(hint: Any) -> bool:
    """Whether ``hint`` is marked :data:`SUPPLIED`."""
    return typing.get_origin(hint) is Annotated and any(m is SUPPLIED for m in hint.__metadata__)


@dataclass(frozen=True)
class Forward:
    """Where the keys of a ``**kwargs`` parameter go, declared as ``**kwargs: Annotated[Any, Forward(...)]``.

    - ``Forward()``: to the parent class's ``__init__`` (``super().__init__(**kwargs)``);
    - ``Forward(node="base")``: to the target of the option node under the sibling key ``base``;
    - ``Forward(choice="name", lookup=fn)``: to ``fn(value of name)``, a dispatcher (the model registry's
      ``build_model`` takes the options of the model it builds).

    A ``**kwargs`` without it accepts any key as it is (a class's keys that its parent's ``__init__``
    takes are still checked against the parent's hints).
    """

    node: str | None = None
    choice: str | None = None
    lookup: abc.Callable[[Any], abc.Callable[..., Any]] | None = None


def _arms(hint: Any) -> tuple[Any, ...]:
    """The alternatives of a union (``X | None``), else ``(hint,)``."""
    return typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)


def strip(hint: Any) -> Any:
    """``hint`` without ``Annotated[...]``."""
    return typing.get_args(hint)[0] if typing.get_origin(hint) is Annotated else hint


def ranges(hint: Any) -> list[Range]:
    """The :class:`Range` declared on ``hint``, or on an arm of it (``Annotated[float, Range(0)] | None``)."""
    if typing.get_origin(hint) is Annotated:
        return [m for m in hint.__metadata__ if isinstance(m, Range)] + ranges(strip(hint))
    if _arms(hint) != (hint,):
        return [r for arm in _arms(hint) for r in ranges(arm)]
    return []


def forward_of(hint: Any) -> Forward | None:
    """The :class:`Forward` declared on a ``**kwargs`` hint, if any."""
    if typing.get_origin(hint) is Annotated:
        return next((m for m in hint.__metadata__ if isinstance(m, Forward)), None)
    return None


_SEQUENCES = (list, tuple, abc.Sequence, abc.MutableSequence)
_MAPPINGS = (dict, abc.Mapping, abc.MutableMapping)
_NUMBERS = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
_PLURALS = {int: "integers", float: "numbers", bool: "booleans", str: "strings"}


def _base(hint: Any) -> Any:
    return typing.get_origin(hint) or hint


def expressible(hint: Any) -> bool:
    """Whether a config can give a value of ``hint`` (no hint, a primitive, a container, a node)."""
    hint = strip(hint)
    if hint is None or hint is Any or hint is type(None):
        return True
    if _arms(hint) != (hint,):
        return any(expressible(a) for a in _arms(hint))
    base = _base(hint)
    return (base in _NUMBERS or base is Literal or base in _SEQUENCES or base in _MAPPINGS or base is abc.Callable
            or (isinstance(base, type) and issubclass(base, enum.Enum)))


def numeric(hint: Any) -> bool:
    """Whether ``hint`` holds numbers (an int or float, or a list or tuple of them), booleans aside."""
    for arm in _arms(strip(hint)):
        arm = strip(arm)
        if arm in (int, float):
            return True
        if _base(arm) in _SEQUENCES and any(numeric(a) for a in typing.get_args(arm) if a is not Ellipsis):
            return True
    return False


def conforms(value: Any, hint: Any) -> bool:
    """``False`` only when ``value`` (plain Python, as a config gives it) cannot be a ``hint``."""
    hint = strip(hint)
    if hint is None or hint is Any:
        return True
    if _arms(hint) != (hint,):
        return any(conforms(value, a) for a in _arms(hint))
    base, args = _base(hint), typing.get_args(hint)
    if hint is type(None):
        return value is None
    if base is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if base in _SEQUENCES:  # a config writes tuples as lists
        if not isinstance(value, list | tuple):
            return False
        if base is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(conforms(v, a) for v, a in zip(value, args, strict=True))
        return not args or all(conforms(v, args[0]) for v in value)
    if base in _MAPPINGS:
        return isinstance(value, dict)
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return any(value in (m.name, m.value) for m in base)
    return True  # a type no config value can be checked against here


def describe(hint: Any) -> str:
    """``hint`` in words, for messages: ``a number or null``, ``one of: 'probs', 'logits'``."""
    hint = strip(hint)
    if _arms(hint) != (hint,):
        return " or ".join(describe(a) for a in _arms(hint))
    base, args = _base(hint), typing.get_args(hint)
    if hint in _NUMBERS:
        return _NUMBERS[hint]
    if base is Literal:
        return "one of: " + ", ".join(repr(a) for a in args)
    if base in _SEQUENCES:
        item = strip(args[0]) if args else None
        return f"a list of {_PLURALS[item]}" if item in _PLURALS else "a list"
    if base in _MAPPINGS:
        return "a mapping"
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return "one of: " + ", ".join(m.name for m in base)
    return getattr(hint, "__name__", str(hint))

