"""Compact pickling for the frozen pydantic models the dataflow keeps in state and sends between
workers (order books' conversions, refunds and ledger entries; decided rows).

pydantic pickles a model as its whole state dict (`__dict__` with every field name, the set of
fields given, extra and private slots): measured by `bench.order_path`'s snapshot and a one-off
timing of the bench's order books, 41.5 µs and 2.3 KB per book. `CompactPickle` pickles a model as
`(rebuild, (class, field values))`: the values in field order, no names, no validation on load
(the values were validated when the model was made). With `WireDatetime` pickled as its text
alone (`schemas.events.wire`), a book takes 28.8 µs and 1.5 KB.

Contract of a model using it:
- fields are only ever **appended** (a snapshot written before a field existed has fewer values:
  the missing trailing fields get their defaults); a renamed, removed or reordered field breaks
  resuming old snapshots, so `tests/schemas/test_compact.py` pins each model's field order;
- frozen, no private attributes, no extra fields (`extra="forbid"`);
- every field counts as set after loading (`model_fields_set`): none of these models is dumped
  with `exclude_unset`.
Pickles written before this module (pydantic's own format) still load through pydantic's
`__setstate__`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import msgspec
from pydantic import BaseModel

_set = object.__setattr__

M = TypeVar("M", bound=BaseModel)


def _values_getter(cls: type[BaseModel]) -> tuple[tuple[str, ...], Callable[[dict[str, Any]], Any]]:
    names = tuple(cls.model_fields)
    getter = operator.itemgetter(*names)
    if len(names) == 1:  # itemgetter of one key returns the value, not a 1-tuple
        return names, lambda d, _g=getter: (_g(d),)
    return names, getter


def _names(cls: type[BaseModel]) -> tuple[str, ...]:
    """The class's field names, and its values getter, made once per class and process (a
    process may load a model it never pickled: another worker's, or a snapshot)."""
    names: tuple[str, ...] | None = cls.__dict__.get("_compact_names")
    if names is None:
        names, getter = _values_getter(cls)
        cls._compact_names, cls._compact_values = names, getter  # type: ignore[attr-defined]
    return names


def _made(cls: type[M], data: dict[str, Any], fields_set: set[str]) -> M:
    """An instance of the frozen model holding `data` (every field, in field order) as is."""
    obj = cls.__new__(cls)
    _set(obj, "__dict__", data)
    _set(obj, "__pydantic_fields_set__", fields_set)
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", None)
    return obj


def rebuild_model(cls: type[BaseModel], values: tuple[Any, ...]) -> Any:
    """The model `CompactPickle.__reduce__` pickled (no validation: its values were validated
    when it was made). Fields added after it was pickled get their defaults. A class that has
    since become a msgspec struct with the same fields in the same order (`ConversionLine`,
    `Conversion`) is made from them as such, checked by its own `__post_init__`."""
    made: Any = getattr(cls, "stands_for", cls)  # (`schemas.conversion.StateUnpickler`'s)
    if issubclass(made, msgspec.Struct):
        return made(**dict(zip(made.__struct_fields__, values, strict=False)))
    names = _names(cls)
    data = dict(zip(names, values, strict=False))
    if len(values) < len(names):
        for name in names[len(values) :]:
            data[name] = cls.model_fields[name].get_default(call_default_factory=True)
    return _made(cls, data, set(names))


class CompactPickle:
    """Mixin for a frozen pydantic model: pickled as its field values in order (see the module
    docstring). Put it before `BaseModel` in the bases."""

    __slots__ = ()
    _compact_names: ClassVar[tuple[str, ...]]
    _compact_values: ClassVar[Callable[[dict[str, Any]], tuple[Any, ...]]]

    def __reduce__(self) -> tuple[Any, ...]:
        cls = type(self)
        getter = cls.__dict__.get("_compact_values")
        if getter is None:  # first use of this class here: its fields are complete by now
            assert issubclass(cls, BaseModel)
            _names(cls)
            getter = cls.__dict__["_compact_values"]
        return (rebuild_model, (cls, getter(self.__dict__)))


def _defaults(cls: type[BaseModel]) -> tuple[dict[str, Any], frozenset[str]]:
    """Every field of the class with its default (`_REQUIRED` for none), in field order, and the
    required fields' names; made once per class and process."""
    made: tuple[dict[str, Any], frozenset[str]] | None = cls.__dict__.get("_trusted_defaults")
    if made is None:
        if any(f.default_factory is not None for f in cls.model_fields.values()):
            raise TypeError(f"{cls.__name__}: a field with a default factory")
        defaults = {
            name: _REQUIRED if f.is_required() else f.get_default(call_default_factory=False)
            for name, f in cls.model_fields.items()
        }
        required = frozenset(name for name, value in defaults.items() if value is _REQUIRED)
        made = cls._trusted_defaults = (defaults, required)  # type: ignore[attr-defined]
    return made


_REQUIRED: Any = object()


def trusted(cls: type[M], **values: Any) -> M:
    """A model made from values that are already valid, without validating them again: for the
    engine's own derivations from validated models (a ledger entry from its conversion and
    rules), where pydantic's validation costs several µs a model on the order path. The caller
    is responsible for the values' types and constraints; `tests/schemas/test_compact.py` and
    the callers' tests compare what it makes with the validated model. Every field must be
    given or have a default (fields with a default factory are not supported)."""
    defaults, required = _defaults(cls)
    data = {**defaults, **values}
    if len(data) != len(defaults) or not required <= values.keys():
        unknown = set(values) - set(defaults)
        missing = [name for name, value in data.items() if value is _REQUIRED]
        raise TypeError(f"{cls.__name__}: unknown fields {sorted(unknown)}, missing {missing}")
    return _made(cls, data, set(values))


def trusted_replace(model: M, **changes: Any) -> M:
    """`model` (made by `trusted` or validated) with the fields in `changes` replaced, made as
    `trusted` makes a model: without validating the new values, which the caller answers for.
    For many models that share most of their values (the ledger entries of one order, each made
    from the one before), cheaper than `trusted` with every value. Its fields set is `model`'s
    and the replaced fields."""
    values = model.__dict__
    data = values.copy()
    data.update(changes)
    if len(data) != len(values):
        unknown = sorted(changes.keys() - values.keys())
        raise TypeError(f"{type(model).__name__}: unknown fields {unknown}")
    return _made(type(model), data, model.__pydantic_fields_set__.union(changes))
