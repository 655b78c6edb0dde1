"""Request JSON parsed through :mod:`hive_project.jsonsafe`: DRF's parser and the admin's form field.

DRF's stock ``JSONParser`` calls ``json.load``, which recurses once per nesting level:
a body of 100,000 ``[`` is a RecursionError and a 500. :class:`SafeJSONParser` is the
default parser of every API view (``REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"]``), so a
body nested deeper than ``HIVE_MAX_JSON_DEPTH`` or holding ``NaN``/``Infinity`` is a 400
that says so. :class:`SafeJSONFormField` does the same for JSON typed into an admin form.
"""
from __future__ import annotations

from typing import Any

from django import forms
from django.forms.fields import InvalidJSONInput, JSONString
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser, get_encoding

from hive_project import jsonsafe

__all__ = ["SafeJSONFormField", "SafeJSONParser"]


class SafeJSONParser(JSONParser):
    """``application/json`` bodies, depth-limited and without NaN/Infinity."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict[str, Any] | None = None) -> Any:
        encoding = get_encoding(parser_context or {})
        try:
            return jsonsafe.loads(stream.read().decode(encoding))
        except ValueError as exc:  # UnsafeJSON, JSONDecodeError and UnicodeDecodeError alike
            raise ParseError(f"JSON parse error - {exc}") from None


class SafeJSONFormField(forms.JSONField):
    """Django's JSON form field, parsing with :func:`jsonsafe.loads`.

    Django parses the text in ``to_python`` and again in ``bound_data`` (to show the form
    with its errors): both go through jsonsafe, so neither can recurse without bound.
    """

    def to_python(self, value: Any) -> Any:
        if self.disabled or not isinstance(value, str) or value in self.empty_values:
            return super().to_python(value)
        try:
            converted = jsonsafe.loads(value)
        except jsonsafe.UnsafeJSON as exc:
            raise forms.ValidationError(str(exc), code="invalid") from None
        except ValueError:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid",
                                        params={"value": value}) from None
        return JSONString(converted) if isinstance(converted, str) else converted

    def bound_data(self, data: Any, initial: Any) -> Any:
        if self.disabled or not isinstance(data, str):
            return super().bound_data(data, initial)
        try:
            return jsonsafe.loads(data)
        except ValueError:
            return InvalidJSONInput(data)
