"""Shared base for resource models: camelCase JSON, unknown fields kept.

Argo Rollouts manifests are JSON/YAML with camelCase keys. Every model here accepts them
unchanged, keeps fields we do not model (`extra="allow"`), and dumps back to the same shape
(`to_json`), so a manifest survives a trip through the store without losing anything.
Optional fields default to None, mirroring Go pointers: "unset" and "set to the zero value"
differ in Argo (e.g. `count` unset means unbounded with an interval); defaults are applied by
the planning code, not here.
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        serialize_by_alias=True,
    )

    def to_json(self) -> dict[str, Any]:
        """The manifest form: camelCase keys, unset (None) fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls.model_validate(data)
