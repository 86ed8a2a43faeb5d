"""The engine options as pydantic fields, for adapters whose framework configures components with pydantic.

:class:`RerankerOptionFields` has one field per :class:`~jina_local_rerank.options.RerankerOptions` option,
generated from it (so a new option appears in every adapter), and checks each through ``RerankerOptions``
whenever it is set: one rule per option, the same as everywhere else. LlamaIndex's postprocessor and
LangChain's compressor inherit from it.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, create_model, field_validator

from .options import OPTION_NAMES, RerankerOptions


class _OptionFieldsBase(BaseModel):
    model_config = ConfigDict(validate_assignment=True, protected_namespaces=())

    @field_validator("*")
    @classmethod
    def _check_option(cls, value: Any, info: ValidationInfo) -> Any:
        # RerankerOptions checks each option on its own; its normalized value (a Path as str, torch.float16 as
        # "float16") is what the field keeps, so the component serializes to plain values. A bad value is refused
        # before an assignment takes effect.
        if info.field_name not in OPTION_NAMES:
            return value
        try:
            options = RerankerOptions(**{info.field_name: value})
        except TypeError as exc:
            raise ValueError(str(exc)) from None  # pydantic reports ValueErrors with the field's name
        return getattr(options, info.field_name)

    def engine_options(self) -> RerankerOptions:
        """The :class:`RerankerOptions` these fields describe."""
        return RerankerOptions(**{name: getattr(self, name) for name in OPTION_NAMES})


def _field(option: Any) -> tuple[Any, Any]:
    secret = bool(option.metadata.get("secret"))
    # ``Any``: the options object is the one that checks values, with its own messages.
    return Any, Field(
        default=None if option.default is MISSING else option.default,
        description=option.metadata["help"],
        exclude=secret,
        repr=not secret,
    )


RerankerOptionFields: type[BaseModel] = create_model(
    "RerankerOptionFields",
    __base__=_OptionFieldsBase,
    __module__=__name__,
    **{option.name: _field(option) for option in fields(RerankerOptions)},
)
RerankerOptionFields.__doc__ = (
    "Engine options (see :class:`~jina_local_rerank.options.RerankerOptions`) as pydantic fields; "
    "``engine_options()`` returns them as one ``RerankerOptions``."
)


def apply_aliases(data: Any, aliases: dict[str, str]) -> Any:
    """``data`` (a component's keyword arguments) with each alias renamed to the option it names, as another
    framework's component spells it (``model_name`` for ``model``...); giving both is a ``ValueError``. For a
    ``model_validator(mode="before")``; ``data`` itself is not modified."""
    if not isinstance(data, dict) or not any(alias in data for alias in aliases):
        return data
    data = dict(data)
    for alias, name in aliases.items():
        if alias in data:
            if name in data:
                raise ValueError(f"give {name} or {alias} (the same setting), not both")
            data[name] = data.pop(alias)
    return data
