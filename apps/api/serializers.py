"""What the API's serializers share."""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from rest_framework import serializers

Fields = dict[str, serializers.Field[Any, Any, Any, Any]]


class FieldsBuiltOnce:
    """A serializer whose fields are built once per class, then shallow-copied for each instance.

    DRF deep-copies every declared field for each serializer, and a ModelSerializer also builds its
    other fields from the model each time: on the job submission path that was about a fifth of the
    request's CPU (py-spy over bench/jobs.py). Fields keep no per-request state of their own
    (binding sets attributes on the copy), so a shallow copy of each, bound to this serializer as
    usual, is enough. Only for serializers whose fields don't depend on the instance or context."""

    _fields_built: ClassVar[Fields | None] = None

    def get_fields(self) -> Fields:
        cls = type(self)
        built = cls.__dict__.get("_fields_built")
        if built is None:
            built = super().get_fields()  # type: ignore[misc]
            cls._fields_built = built  # a race builds it twice: harmless
        return {name: copy.copy(field) for name, field in built.items()}
