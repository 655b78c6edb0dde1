"""Ollama generation options from outside Hive, checked before a task may carry them.

A task's ``options`` go to the node as they are, so an unchecked value is a request a
node cannot survive: ``num_predict`` of 10**40 (or Ollama's "unlimited" -1) keeps a
slot generating until the node runs out of memory. :func:`validate_options` is the one
place that knows Ollama's options (names and types from Ollama's ``api.Options``,
docs/api.md and the Modelfile ``PARAMETER`` list); the task serializers, ``Task.clean``
(so the admin too) and the workflow LLM nodes all call it.

Rules:

* Unknown names are refused (Ollama only logs and ignores them, so a typo such as
  ``temprature`` would silently do nothing); names Ollama retired (``f16_kv``,
  ``logits_all`` ...) are dropped, since clients still send them.
* ``null`` means "Ollama's default" and is dropped.
* Booleans must be JSON booleans; integers must be whole numbers (``2048.0`` is read as
  ``2048``, ``0.5`` and ``true`` are refused); floats must be finite numbers.
* ``num_predict`` may be 1..``HIVE_MAX_NUM_PREDICT``; Ollama's -1 (until the model
  stops) and -2 (until the context is full) are stored as that cap, so no task asks a
  node for an unbounded answer (0, which Ollama's runner also reads as "no limit", and
  anything below -2 are refused). ``num_ctx`` may be 1..``HIVE_MAX_NUM_CTX``. A value
  above a cap is refused with the cap's name rather than silently shortened.
* ``stop`` is a list of up to 16 non-empty strings of at most 256 characters; a single
  string is stored as a one-item list (Ollama's API only accepts a list).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

__all__ = ["MAX_STOP_LENGTH", "MAX_STOP_SEQUENCES", "OPTION_NAMES", "validate_options"]

MAX_STOP_SEQUENCES = 16
MAX_STOP_LENGTH = 256
NUM_PREDICT_UNLIMITED = (-1, -2)  # Ollama: -1 until the model stops, -2 until the context is full
_INT64 = (-(2**63), 2**63 - 1)  # Go's int on the node

# Bounds are generous: they exist so that no number reaches the node that it would
# overflow or allocate for, not to second-guess sampling settings. A bound given as a
# setting's name is read when validating, so tests and deployments can change it.
_Bound = int | float | str
_BOOLS = frozenset({"numa", "low_vram", "vocab_only", "use_mmap", "use_mlock", "penalize_newline"})
_INTS: dict[str, tuple[_Bound, _Bound]] = {
    "num_ctx": (1, "HIVE_MAX_NUM_CTX"),
    "num_batch": (1, "HIVE_MAX_NUM_CTX"),
    "num_gpu": (-1, 100_000),        # layers to offload; -1 lets Ollama decide
    "main_gpu": (0, 1024),
    "num_thread": (0, 4096),         # 0 lets Ollama decide
    "num_keep": (-1, "HIVE_MAX_NUM_CTX"),
    "seed": _INT64,
    "num_predict": (1, "HIVE_MAX_NUM_PREDICT"),  # plus -1/-2, see _num_predict
    "top_k": (0, 1_000_000),
    "repeat_last_n": (-1, "HIVE_MAX_NUM_CTX"),  # -1 = num_ctx, 0 = off
    "mirostat": (0, 2),
}
_FLOATS: dict[str, tuple[_Bound, _Bound]] = {
    "temperature": (0, 100),
    "top_p": (0, 1),
    "min_p": (0, 1),
    "typical_p": (0, 1),
    "tfs_z": (0, 100),
    "repeat_penalty": (0, 100),
    "presence_penalty": (-100, 100),
    "frequency_penalty": (-100, 100),
    "mirostat_tau": (0, 100),
    "mirostat_eta": (0, 100),
}
OPTION_NAMES = frozenset({*_BOOLS, *_INTS, *_FLOATS, "stop"})
# Options Ollama once had and now ignores, which clients still send (the official ollama
# Python client declares the first three; LiteLLM and older LangChain the rest): dropped,
# so those clients work, rather than refused as unknown.
RETIRED_NAMES = frozenset({"f16_kv", "logits_all", "embedding_only", "num_gqa", "rope_frequency_base",
                           "rope_frequency_scale"})


class _Refused(Exception):
    """One option's value is refused; the message is a sentence that names it."""


def _bound(value: _Bound) -> tuple[int | float, str]:
    """(the bound, how to name it in a message: the setting when it is one)."""
    if isinstance(value, str):
        cap = int(getattr(settings, value))
        return cap, f"{cap} ({value})"
    return value, str(value)


def _in_range(name: str, value: int | float, bounds: tuple[_Bound, _Bound]) -> None:
    (low, low_text), (high, high_text) = _bound(bounds[0]), _bound(bounds[1])
    if value < low:
        raise _Refused(f"{name} must be at least {low_text}, not {_short(value)}")
    if value > high:
        raise _Refused(f"{name} must be at most {high_text}, not {_short(value)}")


def _short(value: int | float) -> str:
    text = str(value)
    return text if len(text) <= 24 else f"{text[:12]}…({len(text)} digits)"


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
             dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Refused(f"{name} must be true or false, not {_kind(value)}")
    return value


def _integer(name: str, value: Any) -> int:
    # bool is an int subclass in Python; Ollama (Go) refuses true for an int option.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Refused(f"{name} must be a whole number, not {_kind(value)}")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise _Refused(f"{name} must be a whole number, not {value}")
        value = int(value)
    _in_range(name, value, _INTS[name])
    return value


def _num_predict(name: str, value: Any) -> int:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if numeric and value in NUM_PREDICT_UNLIMITED:
        return int(settings.HIVE_MAX_NUM_PREDICT)
    if numeric and value < 1:
        raise _Refused(f"{name} must be a number of tokens from 1 to {_bound('HIVE_MAX_NUM_PREDICT')[1]} "
                       f"(or -1 / -2 for up to that many), not {value}")
    return _integer(name, value)


def _number(name: str, value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Refused(f"{name} must be a number, not {_kind(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _Refused(f"{name} must be a finite number, not {value}")
    _in_range(name, value, _FLOATS[name])
    return value


def _stop(name: str, value: Any) -> list[str]:
    sequences = [value] if isinstance(value, str) else value
    if not isinstance(sequences, list):
        raise _Refused(f"{name} must be a list of strings (or one string), not {_kind(value)}")
    if len(sequences) > MAX_STOP_SEQUENCES:
        raise _Refused(f"{name} may hold at most {MAX_STOP_SEQUENCES} strings, not {len(sequences)}")
    for index, sequence in enumerate(sequences):
        if not isinstance(sequence, str):
            raise _Refused(f"{name}[{index}] must be a string, not {_kind(sequence)}")
        if not sequence:
            raise _Refused(f"{name}[{index}] may not be empty")
        if len(sequence) > MAX_STOP_LENGTH:
            raise _Refused(f"{name}[{index}] may be at most {MAX_STOP_LENGTH} characters long, not {len(sequence)}")
    return list(sequences)


def _checker(name: str) -> Callable[[str, Any], Any]:
    if name in _BOOLS:
        return _boolean
    if name == "num_predict":
        return _num_predict
    if name in _INTS:
        return _integer
    if name in _FLOATS:
        return _number
    return _stop


def validate_options(options: Any) -> dict[str, Any]:
    """The options as the node should receive them, or ValidationError naming each bad one.

    Idempotent: validating the result again returns it unchanged.
    """
    if not isinstance(options, dict):
        raise ValidationError('options must be a JSON object of Ollama options, e.g. {"temperature": 0.2}',
                              code="invalid")
    clean: dict[str, Any] = {}
    problems: list[ValidationError] = []
    for key, value in options.items():
        name = str(key)
        if name in RETIRED_NAMES:
            continue
        if name not in OPTION_NAMES:
            shown = name if len(name) <= 64 else f"{name[:64]}…"
            problems.append(ValidationError(
                "%(option)s is not an Ollama option (see Ollama's docs/api.md for the valid ones)",
                code="unknown_option", params={"option": repr(shown)}))
            continue
        if value is None:  # Ollama's default, as Ollama itself reads null
            continue
        try:
            clean[name] = _checker(name)(name, value)
        except _Refused as exc:
            problems.append(ValidationError("%(message)s", code="invalid_option", params={"message": str(exc)}))
    if problems:
        raise ValidationError(problems)
    return clean
