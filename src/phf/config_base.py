"""The base of every config section: a pydantic model that refuses unknown keys and
non-finite numbers, with each field's meaning in its docstring (shown by `phf config`).

Numbers are taken as a user writes them in YAML: `5e-4` (a string to YAML, which wants
a dot) is 0.0005 and `2e6` for a whole number is 2000000; `true` is never a number.

A section may add `problems()`: checks across its fields, as "key: message" lines, so
that the run config reports every problem at once.
"""

from __future__ import annotations

import types
import typing

from pydantic import BaseModel, ConfigDict, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, use_attribute_docstrings=True,
                              validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _numbers_as_written(cls, data):
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, value in data.items():
            field = cls.model_fields.get(name)
            kinds = _kinds(field.annotation) if field else set()
            if kinds & {int, float} and bool not in kinds:
                out[name] = _number(value, float in kinds)
        return out

    def problems(self) -> list[str]:
        """Impossible combinations of this section's values ("key: message" each)."""
        return []


def _number(value, float_ok: bool):
    """A numeric setting as YAML gave it -> a number where one is meant. A boolean is
    passed on as its YAML spelling, so that the type check names it ("got 'true'")."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value  # pydantic says why it is not a number
    if isinstance(value, float) and not float_ok and value.is_integer():
        return int(value)
    return value


def _kinds(annotation) -> set:
    """The plain types an annotation admits (int | None -> {int, NoneType})."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return {k for a in typing.get_args(annotation) for k in _kinds(a)}
    if typing.get_origin(annotation) is typing.Annotated:
        return _kinds(typing.get_args(annotation)[0])
    return {annotation} if isinstance(annotation, type) else set()
