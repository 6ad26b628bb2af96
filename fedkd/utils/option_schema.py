"""Option nodes checked against their targets' signatures, right after the config is composed.

An option node is a config mapping with ``_target_`` (``conf/model``, ``conf/optim``,
``conf/partition``, ``conf/strategy``, ``conf/synthesizer``, ``conf/student_terms``, and the nodes
nested in them). Hydra's ``instantiate`` calls the target with the node's keys, so the target's
parameters are the node's schema: a key that is no parameter, a value of the wrong type and a
number outside the ``Range`` of its hint (:mod:`fedkd.utils.option_types`) each end in one line
naming the key, before anything is built. A parameter without a hint takes any value.

This module sits in the lowest layer: it imports no option's module; it locates each target by
its dotted path, as ``instantiate`` does.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fedkd.errors import ConfigError
from fedkd.utils.option_types import Forward, conforms, describe, expressible, forward_of, ranges, supplied

#: Library callables whose signatures cannot carry a ``Range``: the fedkd function whose signature
#: annotates their parameters (located by dotted path, like ``_target_``).
ANNOTATED_BY = {
    "torch.optim.SGD": "fedkd.training.optimizers.sgd_options",
    "torch.optim.Adam": "fedkd.training.optimizers.adam_options",
    "torch.optim.AdamW": "fedkd.training.optimizers.adam_options",
}

#: Keys whose node a reader checks, key by key, rather than the target's type hint, by the target's
#: base class: a synthesizer's ``student`` argument (a node of ``fedkd.datafree.recipe.StudentRecipe``).
TAKEN_OFF = {"fedkd.datafree.Synthesizer": {"student": "fedkd.datafree.recipe.StudentRecipe"}}

_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


@dataclass
class OptionSchema:
    """The keys an option node may hold, read from its target's signature."""

    label: str  # the target (and the dispatcher's choice), for messages
    params: dict[str, Any] = field(default_factory=dict)  # key -> type hint (Any: none)
    owners: dict[str, str] = field(default_factory=dict)  # key -> dotted path of the callable declaring it
    open: bool = False  # keys beyond params pass unchecked (an unmarked **kwargs)
    forward_node: str | None = None  # keys beyond params belong to the option node under this key
    taken_off: dict[str, str] = field(default_factory=dict)  # key -> its reader's dotted path

    def accepted(self) -> list[str]:
        """The keys a config can set (not those the code passes, such as the data or the run's seed)."""
        return sorted(k for k, hint in self.params.items() if expressible(hint) and not supplied(hint))


def located(path: str) -> Any | None:
    """The object at dotted ``path``, or ``None`` when it cannot be imported (its builder reports it)."""
    from hydra.utils import get_object

    try:
        return get_object(path)
    except Exception:  # ImportError, AttributeError, anything a broken module raises on import
        return None


def dotted(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _hints(fn: Callable[..., Any], params: Mapping[str, inspect.Parameter]) -> dict[str, Any]:
    """``fn``'s type hints with ``Annotated`` kept; one hint that does not resolve loses only itself."""
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:  # a name only imported for type checkers, a syntax the running Python lacks
        out = {}
        for name, p in params.items():
            if isinstance(p.annotation, str):
                try:
                    out[name] = eval(p.annotation, getattr(fn, "__globals__", {}))  # noqa: S307 (the module's own hint)
                except Exception:
                    continue
            elif p.annotation is not inspect.Parameter.empty:
                out[name] = p.annotation
        return out


def _init_of(cls: type) -> tuple[type, Callable[..., Any]]:
    owner = next(c for c in cls.__mro__ if "__init__" in vars(c))
    return owner, vars(owner)["__init__"]


def _parent(cls: type) -> type | None:
    """The next class in ``cls``'s MRO that defines ``__init__`` after the one ``cls`` uses (not object)."""
    owner, _ = _init_of(cls)
    later = cls.__mro__[cls.__mro__.index(owner) + 1:]
    parent = next((c for c in later if "__init__" in vars(c)), None)
    return None if parent is object else parent


def _add(schema: OptionSchema, fn: Any, node: Mapping[str, Any], strict: bool = True) -> None:
    """Add ``fn``'s parameters to ``schema``; follow its ``**kwargs`` as its :class:`Forward` says."""
    if isinstance(fn, type):
        owner, init = _init_of(fn)
        if owner is object:
            return
        skip_first = True
    else:
        owner, init, skip_first = fn, fn, False
    try:
        params = dict(inspect.signature(init).parameters)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check against
        schema.open = True
        return
    if skip_first and params:
        params.pop(next(iter(params)))  # self
    hints = _hints(init, params)
    for name, p in params.items():
        if p.kind in _KEYWORD and name not in schema.params:
            schema.params[name] = hints.get(name, Any)
            schema.owners[name] = dotted(owner)
    var_kw = next((p for p in params.values() if p.kind is inspect.Parameter.VAR_KEYWORD), None)
    if var_kw is None:
        return
    forward = forward_of(hints.get(var_kw.name))
    if forward is None or not strict:
        schema.open = True  # unmarked: any key, though a parent's own keys keep their hints
        if isinstance(fn, type) and (parent := _parent(fn)) is not None:
            _add(schema, parent, node, strict=False)
    elif forward.choice is not None:
        _add_choice(schema, forward, node)
    elif forward.node is not None:
        schema.forward_node = forward.node
    elif isinstance(fn, type) and (parent := _parent(fn)) is not None:
        _add(schema, parent, node)


class UnknownChoice(ConfigError):
    """A dispatcher's choice (``model.name``) that its lookup does not know."""

    def __init__(self, choice: str, value: str, reason: str) -> None:
        super().__init__(reason)
        self.choice, self.value, self.reason = choice, value, reason


def _add_choice(schema: OptionSchema, forward: Forward, node: Mapping[str, Any]) -> None:
    value = node.get(forward.choice) if forward.choice in node else None
    if not isinstance(value, str) or forward.lookup is None:
        schema.open = True  # no choice to read the options of (a missing value is reported where it is used)
        return
    try:
        chosen = forward.lookup(value)
    except ConfigError as exc:  # the caller knows the node's path and names the key
        raise UnknownChoice(forward.choice, value, str(exc)) from None
    schema.label = f"{schema.label} {forward.choice}={value}"
    _add(schema, chosen, node)


def option_schema(target: str, node: Mapping[str, Any] | None = None) -> OptionSchema | None:
    """The schema of a node whose ``_target_`` is ``target`` (``node`` gives a dispatcher its choice);
    ``None`` when the target cannot be located (the code that builds it names the problem)."""
    fn = located(target)
    if fn is None or not callable(fn):
        return None
    schema = OptionSchema(label=target)
    _add(schema, fn, node or {})
    stand_in = located(ANNOTATED_BY.get(target, "")) if target in ANNOTATED_BY else None
    if stand_in is not None:
        extra = _hints(stand_in, inspect.signature(stand_in).parameters)
        for name in schema.params.keys() & extra.keys():
            schema.params[name], schema.owners[name] = extra[name], ANNOTATED_BY[target]
    for base_path, keys in TAKEN_OFF.items():
        base = located(base_path)
        if isinstance(fn, type) and isinstance(base, type) and issubclass(fn, base):
            schema.taken_off.update(keys)
    return schema


def _value(node: DictConfig, name: str) -> tuple[bool, Any]:
    """``(True, value)`` of ``node[name]``; ``(False, None)`` for a missing or unresolvable value."""
    try:
        if OmegaConf.is_missing(node, name):
            return False, None
        return True, node[name]
    except OmegaConfBaseException:  # an interpolation that does not resolve: the run reports it
        return False, None


def is_option_node(value: Any) -> bool:
    return isinstance(value, DictConfig) and "_target_" in value


def check_value(path: str, value: Any, hint: Any) -> None:
    """Type and range of one value (an option node instead: its own check)."""
    if is_option_node(value):
        check_option_node(value, path)
        return
    plain = OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig | ListConfig) else value
    if not conforms(plain, hint):
        expected = describe(hint)
        raise ConfigError(f"{path} must be {expected} (got {plain!r}); set {path}=<{expected}>")
    for valid in ranges(hint):
        valid.check(path, plain)
    check_nested(value, path)


def check_nested(value: Any, path: str) -> None:
    """Check the option nodes inside a container value (the terms of a ``student_terms`` mapping)."""
    if is_option_node(value):
        check_option_node(value, path)
    elif isinstance(value, DictConfig):
        for name in value:
            ok, child = _value(value, str(name))
            if ok:
                check_nested(child, f"{path}.{name}")
    elif isinstance(value, ListConfig):
        for i, child in enumerate(value):
            check_nested(child, f"{path}[{i}]")


def _unknown(path: str, schema: OptionSchema) -> ConfigError:
    return ConfigError(
        f"{path} is not an option of {schema.label}; drop it, or use one of its options: {', '.join(schema.accepted())}"
    )


def check_keys(node: DictConfig, path: str, schema: OptionSchema) -> None:
    """Every key of ``node`` against ``schema`` (Hydra's own ``_keys_`` aside)."""
    forward = node.get(schema.forward_node) if schema.forward_node and schema.forward_node in node else None
    forward_schema = option_schema(str(forward["_target_"]), forward) if is_option_node(forward) else None
    for name in (str(k) for k in node):
        if name.startswith("_"):
            continue
        ok, value = _value(node, name)
        key = f"{path}.{name}"
        if name in schema.taken_off:
            reader = option_schema(schema.taken_off[name])
            if ok and isinstance(value, DictConfig) and reader is not None:
                check_keys(value, key, reader)
        elif name in schema.params and supplied(schema.params[name]):
            raise ConfigError(f"{key} is given by the run, not by the config; drop {key}")
        elif name in schema.params:
            if ok:
                check_value(key, value, schema.params[name])
        elif forward_schema is not None and name in forward_schema.params:
            if ok:
                check_value(key, value, forward_schema.params[name])
        elif schema.open or (schema.forward_node and (forward_schema is None or forward_schema.open)):
            if ok:
                check_nested(value, key)
        else:
            raise _unknown(key, forward_schema if forward_schema is not None and not schema.open else schema)


def check_option_node(node: DictConfig, path: str, default_target: str | None = None) -> None:
    """Check every key of the option node ``node`` at ``path`` (``model``, ``strategy.synthesizer``)
    against its target's signature; ``default_target`` stands in for a node without ``_target_``."""
    if "_target_" in node:
        ok, target = _value(node, "_target_")
        if not ok or target is None:
            return  # no target yet (model=custom): its builder says what to set
    elif default_target is None:
        return
    else:
        target = default_target
    try:
        schema = option_schema(str(target), node)
    except UnknownChoice as exc:
        raise ConfigError(f"{path}.{exc.choice} '{exc.value}' is unknown: {exc.reason}") from None
    if schema is not None:
        check_keys(node, path, schema)


# --- the same hints for code that calls an option's constructor itself (a test, a script, another option)

_F = TypeVar("_F", bound=Callable[..., Any])


def check_call(fn: Callable[..., Any], prefix: str, arguments: Mapping[str, Any]) -> None:
    """``arguments`` (by parameter name) of a direct call of ``fn`` against its hints, as the config
    check would judge them: a number outside its ``Range``, and a null or a string the hint does not
    take, and a fraction where it takes an integer, end in one line naming ``prefix.<name>``.

    Other values are not judged by type: Python callers pass numpy numbers, tensors and config nodes
    where a config holds plain values, and the constructor itself handles them."""
    hints = _hints(fn, inspect.signature(fn).parameters)
    for name, value in arguments.items():
        hint = hints.get(name)
        if hint is None or supplied(hint) or not expressible(hint):
            continue
        key = f"{prefix}.{name}"
        plain = OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig | ListConfig) else value
        if (plain is None or isinstance(plain, str | float)) and not conforms(plain, hint):
            expected = describe(hint)
            raise ConfigError(f"{key} must be {expected} (got {plain!r}); set {key}=<{expected}>")
        for valid in ranges(hint):
            valid.check(key, plain)


def checked(prefix: str) -> Callable[[_F], _F]:
    """Decorate a constructor so that every call checks its arguments against its hints
    (:func:`check_call`), not only a composed config: the ``Range`` in the signature is the one
    declaration of a value's valid range. ``prefix`` is the config key the messages name
    (``"synthesizer"``). The signature and hints stay readable (``functools.wraps``)."""

    def decorate(init: _F) -> _F:
        signature = inspect.signature(init)
        named = [p.name for p in signature.parameters.values() if p.kind in _KEYWORD]

        @functools.wraps(init)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                bound = signature.bind(*args, **kwargs).arguments
            except TypeError:  # a wrong call: the constructor's own TypeError says which
                return init(*args, **kwargs)
            check_call(init, prefix, {name: bound[name] for name in named[1:] if name in bound})
            return init(*args, **kwargs)

        return typing.cast(_F, run)

    return decorate
