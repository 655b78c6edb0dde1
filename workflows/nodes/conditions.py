"""If, Switch and Filter nodes, n8n's "filter" parameter type and the JavaScript semantics they share.

n8n evaluates conditions with JavaScript rules (``===``, ``Number()``, ``String()``,
``new Date()``, ``RegExp``). The helpers at the top of this module reproduce those
rules in Python so the condition nodes (and Set, Rename Keys, Date & Time, which
import them) give the same answers as n8n for the same data.
"""
from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from workflows.engine.contract import (
    MISSING,
    Item,
    Node,
    NodeContext,
    NodeError,
    NodeSpec,
    Outputs,
    ValidationIssue,
    register,
)
from workflows.engine.jsvalues import UNDEFINED, js_string, js_typeof, json_stringify, lodash_get, lodash_has, lodash_set, lodash_unset

NAN = float("nan")

# --------------------------------------------------------------------------- JavaScript value semantics


def is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def normalize_number(value: float | int) -> float | int:
    """JS has one number type: integral floats are written as ints so JSON output matches n8n."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


_JS_DECIMAL = re.compile(r"^[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)$")


def js_number(value: Any) -> float | int:
    """JavaScript ``Number(value)``; NaN is ``float('nan')``."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text == "":
            return 0
        if _JS_DECIMAL.match(text):
            number = float(text)
            return normalize_number(number)
        lowered = text.lower()
        if text in ("Infinity", "+Infinity"):
            return math.inf
        if text == "-Infinity":
            return -math.inf
        for prefix, base in (("0x", 16), ("0o", 8), ("0b", 2)):
            if lowered.startswith(prefix):
                try:
                    return int(text[2:], base)
                except ValueError:
                    return NAN
        return NAN
    if isinstance(value, list):
        if not value:
            return 0
        if len(value) == 1:
            return js_number(js_string(value[0]))
        return NAN
    return NAN


def js_truthy(value: Any) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return not (value == 0 or is_nan(value))
    if isinstance(value, str):
        return value != ""
    return True


def js_strict_equal(a: Any, b: Any) -> bool:
    """``a === b`` for JSON values (objects compare by identity)."""
    ta, tb = js_typeof(a), js_typeof(b)
    if ta != tb:
        return False
    if ta == "number":
        return a == b  # NaN != NaN holds in Python too
    if ta == "object":
        return a is b
    return a == b


def _js_primitive(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return js_string(value)
    return value


def js_compare(a: Any, b: Any, op: str) -> bool:
    """Relational ``<``, ``<=``, ``>``, ``>=`` with JavaScript coercion."""
    a, b = _js_primitive(a), _js_primitive(b)
    if isinstance(a, str) and isinstance(b, str):
        x: Any = a
        y: Any = b
    else:
        x, y = js_number(a), js_number(b)
        if is_nan(x) or is_nan(y):
            return False
    if op == "<":
        return x < y
    if op == "<=":
        return x <= y
    if op == ">":
        return x > y
    return x >= y


def js_or(value: Any, fallback: Any) -> Any:
    """``value || fallback``."""
    return value if js_truthy(value) else fallback


def deep_copy(value: Any) -> Any:
    return json.loads(json.dumps(value)) if value is not None else None


# --------------------------------------------------------------------------- JavaScript regular expressions

_REGEX_LITERAL = re.compile(r"^/(.*?)/([gimusy]*)$", re.S)


def js_regex(pattern: str, flags: str = "") -> re.Pattern[str]:
    """Compile a JavaScript regular expression source with JS flags."""
    source = pattern.replace("(?<", "(?P<").replace("(?P<=", "(?<=").replace("(?P<!", "(?<!")
    source = re.sub(r"\\k<(\w+)>", r"(?P=\1)", source)
    py_flags = 0
    if "i" in flags:
        py_flags |= re.IGNORECASE
    if "m" in flags:
        py_flags |= re.MULTILINE
    if "s" in flags:
        py_flags |= re.DOTALL
    if "u" not in flags:
        py_flags |= re.ASCII
    try:
        return re.compile(source, py_flags)
    except re.error as exc:
        raise NodeError(f"Invalid regular expression: /{pattern}/: {exc}") from exc


def parse_regex_pattern(pattern: Any, ignore_case: bool = False) -> re.Pattern[str]:
    """n8n's parseRegexPattern: ``/body/flags`` literals or a bare pattern."""
    text = js_string(pattern) if pattern not in (None, "") else ""
    match = _REGEX_LITERAL.match(text)
    if not match:
        return js_regex(text, "i" if ignore_case else "")
    flags = match.group(2)
    if ignore_case and "i" not in flags:
        flags += "i"
    return js_regex(match.group(1), flags)


def js_replacement(replacement: str) -> Any:
    """Translate a JS ``String.replace`` replacement string into a Python callable."""

    def apply(match: re.Match[str]) -> str:
        out: list[str] = []
        i = 0
        while i < len(replacement):
            ch = replacement[i]
            if ch == "$" and i + 1 < len(replacement):
                nxt = replacement[i + 1]
                if nxt == "$":
                    out.append("$")
                    i += 2
                    continue
                if nxt == "&":
                    out.append(match.group(0))
                    i += 2
                    continue
                if nxt == "`":
                    out.append(match.string[: match.start()])
                    i += 2
                    continue
                if nxt == "'":
                    out.append(match.string[match.end():])
                    i += 2
                    continue
                if nxt.isdigit():
                    two = replacement[i + 1: i + 3]
                    if len(two) == 2 and two.isdigit() and 0 < int(two) <= (match.re.groups or 0):
                        out.append(match.group(int(two)) or "")
                        i += 3
                        continue
                    if 0 < int(nxt) <= (match.re.groups or 0):
                        out.append(match.group(int(nxt)) or "")
                        i += 2
                        continue
                if nxt == "<":
                    end = replacement.find(">", i + 2)
                    if end != -1 and match.re.groupindex:
                        name = replacement[i + 2: end]
                        out.append(match.group(name) or "" if name in match.re.groupindex else "")
                        i = end + 1
                        continue
            out.append(ch)
            i += 1
        return "".join(out)

    return apply


# --------------------------------------------------------------------------- lodash-style paths

def path_get(obj: Any, path: str | list[str], default: Any = MISSING) -> Any:
    """lodash ``_.get`` (``default``, MISSING unless given, when absent)."""
    value = lodash_get(obj, path)
    return default if value is UNDEFINED else value


def path_set(obj: dict[str, Any], path: str | list[str], value: Any) -> None:
    """lodash ``_.set``: creates objects, or arrays when the next key is an index."""
    lodash_set(obj, path, value)


def path_unset(obj: Any, path: str | list[str]) -> bool:
    """lodash ``_.unset``: whether the path existed."""
    existed = lodash_has(obj, path)
    lodash_unset(obj, path)
    return existed


# --------------------------------------------------------------------------- dates (JS Date / Luxon parsing)


def get_zone(name: str | None, *, node: str | None = None) -> Any:
    """A tzinfo for an IANA name or n8n/Luxon shorthand (UTC, GMT, UTC+3, Etc/GMT-5)."""
    if not name:
        return UTC
    lowered = name.lower()
    if lowered in ("utc", "gmt", "z", "etc/utc", "etc/gmt", "universal", "zulu"):
        return UTC if lowered in ("utc", "gmt", "z") else ZoneInfo("Etc/UTC")
    offset = re.fullmatch(r"(?:utc|gmt)([+-])(\d{1,2})(?::?(\d{2}))?", lowered)
    if offset:
        from datetime import timezone

        minutes = int(offset.group(2)) * 60 + int(offset.group(3) or 0)
        return timezone(timedelta(minutes=minutes if offset.group(1) == "+" else -minutes))
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise NodeError(f"The timezone {name} is not valid. Please check the timezone.", node=node) from exc


def workflow_timezone(ctx: NodeContext) -> str:
    """The workflow's timezone setting, else the engine default (n8n's ``this.getTimezone()``)."""
    settings = (getattr(ctx, "workflow", None) or {}).get("settings") or {}
    tz = settings.get("timezone")
    if tz and tz != "DEFAULT":
        return str(tz)
    return ctx.settings.timezone


_ISO_RE = re.compile(
    r"^([+-]\d{6}|\d{4})(?:-?(\d{2})(?:-?(\d{2}))?)?"
    r"(?:[T ](\d{2})(?::?(\d{2})(?::?(\d{2})(?:[.,](\d{1,9}))?)?)?)?"
    r"\s*(Z|[+-]\d{2}(?::?\d{2})?)?(?:\[([^\]]+)\])?$",
    re.I,
)


def _tz_from_offset(text: str) -> Any:
    from datetime import timezone

    if text.upper() == "Z":
        return UTC
    sign = 1 if text[0] == "+" else -1
    digits = text[1:].replace(":", "")
    hours = int(digits[:2])
    minutes = int(digits[2:4]) if len(digits) > 2 else 0
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def parse_iso(text: str, zone: Any, *, require_t: bool = False, date_only_utc: bool = False) -> datetime | None:
    """ISO 8601 (as Luxon/JS read it). Naive values are taken in ``zone``."""
    match = _ISO_RE.match(text.strip())
    if not match:
        return None
    if require_t and " " in text.strip() and "T" not in text.upper():
        return None
    year, month, day, hour, minute, second, frac, offset, _ = match.groups()
    try:
        micro = int((frac or "0").ljust(6, "0")[:6])
        naive = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0), int(second or 0), micro)
    except ValueError:
        return None
    if offset:
        return naive.replace(tzinfo=_tz_from_offset(offset))
    if date_only_utc and hour is None:
        return naive.replace(tzinfo=UTC)
    return localize(naive, zone)


def localize(naive: datetime, zone: Any) -> datetime:
    """Attach ``zone`` to a wall-clock time (gaps resolve forward like JS/Luxon)."""
    aware = naive.replace(tzinfo=zone)
    roundtrip = aware.astimezone(UTC).astimezone(zone)
    if roundtrip.replace(tzinfo=None) != naive:  # inside a DST gap: move forward
        aware = (naive + timedelta(hours=1)).replace(tzinfo=zone)
    return aware


def js_date_parse(value: Any, zone: Any) -> datetime | None:
    """``new Date(value)``: ISO first (date-only is UTC), then RFC 2822, then the lenient V8 forms."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        if is_nan(value) or math.isinf(value):
            return None
        return datetime.fromtimestamp(value / 1000, UTC)
    text = js_string(value).strip()
    if not text:
        return None
    parsed = parse_iso(text, zone, date_only_utc=True)
    if parsed is not None:
        return parsed
    try:
        parsed = parsedate_to_datetime(text)
        if parsed is not None:
            return parsed if parsed.tzinfo else localize(parsed, zone)
    except (TypeError, ValueError, IndexError):
        pass
    try:
        from dateutil import parser as du_parser

        parsed = du_parser.parse(text)
    except (ValueError, OverflowError, TypeError):
        return None
    return parsed if parsed.tzinfo else localize(parsed, zone)


_SQL_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?: (\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?))?(?: ?(Z|[+-]\d{2}(?::?\d{2})?))?$")


def luxon_parse_any(value: Any, zone: Any) -> datetime | None:
    """n8n's tryToParseDateTime: ISO, HTTP, RFC 2822, SQL, then Date.parse."""
    if isinstance(value, datetime):
        return value
    text = js_string(value).strip()
    parsed = parse_iso(text, zone, require_t=True) if text else None
    if parsed is not None:
        return parsed
    try:
        parsed = parsedate_to_datetime(text)
        if parsed is not None:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (TypeError, ValueError, IndexError):
        pass
    sql = _SQL_RE.match(text)
    if sql:
        return parse_iso(f"{sql.group(1)}T{sql.group(2) or '00:00'}{sql.group(3) or ''}", zone)
    return js_date_parse(text, zone)


def to_millis(moment: datetime) -> int:
    return int(round(moment.timestamp() * 1000))


# --------------------------------------------------------------------------- n8n type validation (validateFieldType)


class TypeInvalid(Exception):
    """validateFieldType said no."""


def value_description(value: Any) -> str:
    """n8n's getValueDescription."""
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    if value is None:
        return "'null'"
    return f"'{js_string(value)}'"


def parse_boolean(value: Any) -> bool:
    """n8n's tryToParseBoolean."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not (isinstance(value, str) and value.strip() == ""):
        number = js_number(value)
        if number == 0 and not is_nan(number):
            return False
        if number == 1:
            return True
    raise TypeInvalid("Failed to parse value as boolean")


def parse_array(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    text = js_string(value)
    for candidate in (text, text.replace("'", '"')):
        try:
            parsed = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(parsed, list):
            return parsed
        break
    raise TypeInvalid("Value is not a valid array")


def parse_js_object_text(text: str) -> Any:
    """n8n's jsonParse with ``acceptJSObject``: JSON, or a JS object literal with bare keys/single quotes."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    recovered = re.sub(r"'([^'\\]*(?:\\.[^'\\]*)*)'", lambda m: json.dumps(m.group(1)), text)
    recovered = re.sub(r"([{,]\s*)([A-Za-z_$][\w$]*)\s*:", r'\1"\2":', recovered)
    recovered = re.sub(r",\s*([\]}])", r"\1", recovered)
    return json.loads(recovered)


def parse_object(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    try:
        parsed = parse_js_object_text(js_string(value))
    except ValueError as exc:
        raise TypeInvalid("Value is not a valid object") from exc
    if not isinstance(parsed, dict):
        raise TypeInvalid("Value is not a valid object")
    return parsed


def validate_field_type(name: str, value: Any, type_: str, *, strict: bool = False, parse_strings: bool = False,
                        zone: Any = UTC) -> tuple[bool, Any, str]:
    """n8n's validateFieldType -> (valid, newValue, errorMessage). None counts as null/undefined."""
    if value is None:
        return True, None, ""
    message = f"'{name}' expects a {type_} but we got {value_description(value)}"
    kind = type_.lower()
    try:
        if kind == "string":
            if not parse_strings:
                return True, value, ""
            if strict and not isinstance(value, str):
                return False, None, message
            return True, json_stringify(value) if isinstance(value, (dict, list)) else js_string(value), ""
        if kind == "number":
            if strict and js_typeof(value) != "number":
                return False, None, message
            number = js_number(value)
            if is_nan(number):
                return False, None, message
            return True, normalize_number(number), ""
        if kind == "boolean":
            if strict and not isinstance(value, bool):
                return False, None, message
            return True, parse_boolean(value), ""
        if kind == "datetime":
            parsed = luxon_parse_any(value, zone)
            if parsed is None:
                return False, None, message
            return True, parsed, ""
        if kind == "time":
            if not re.fullmatch(r"\d{2}:\d{2}(:\d{2})?((-|\+)\d{4})?((-|\+)\d{1,2}(:\d{2})?)?", js_string(value), re.S):
                return False, None, f"'{name}' expects time (hh:mm:(:ss)) but we got {value_description(value)}."
            return True, js_string(value), ""
        if kind == "object":
            if strict and not isinstance(value, (dict, list)):
                return False, None, message
            return True, parse_object(value), ""
        if kind == "array":
            if strict and not isinstance(value, list):
                return False, None, message
            return True, parse_array(value), ""
    except TypeInvalid:
        return False, None, message
    return True, value, ""


# --------------------------------------------------------------------------- the "filter" parameter type

ENABLE_LESS_STRICT = ("Try changing the type of comparison. Alternatively you can enable 'Convert types where required'.")


def _article(noun: str) -> str:
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


def _parse_single(value: Any, type_: str, strict: bool, version: int, zone: Any) -> tuple[bool, Any]:
    if type_ == "any" or value is None:
        return True, value
    if type_ == "boolean" and not strict:
        if version >= 2:
            valid, parsed, _ = validate_field_type("filter", value, "boolean")
            if valid:
                return True, parsed
        return True, js_truthy(value)
    if type_ == "number":
        if is_nan(value):
            return True, value
        empty = (isinstance(value, str) and value.strip() == "") or (isinstance(value, list) and not value)
        if empty and version >= 3:
            return True, None
    valid, parsed, _ = validate_field_type("filter", value, type_, strict=strict, parse_strings=True, zone=zone)
    return valid, parsed


_SINGLE_VALUE_OPERATIONS = {"exists", "notExists", "empty", "notEmpty", "true", "false"}


def _implied_right_type(type_: str, operation: str) -> str:
    """The editor stores ``rightType`` for operators whose right side differs; infer it when absent."""
    if type_ == "array":
        return "any" if operation in ("contains", "notContains") else "number"
    return type_


def _type_description(type_: str, from_type: str, position: str, strict: bool) -> str:
    conversion = {"string": ".toString()", "number": ".toNumber()", "boolean": ".toBoolean()"}.get(type_, "")
    if strict and conversion:
        return (f"Try either: 1. Enabling 'Convert types where required' 2. Converting the {position} field to "
                f"{_article(type_)} by adding {conversion}")
    return ENABLE_LESS_STRICT if strict else "Try changing the type of the comparison."


def _parse_condition_values(condition: dict[str, Any], options: dict[str, Any], index: int, item_index: int,
                            zone: Any) -> tuple[Any, Any]:
    strict = options.get("typeValidation") == "strict"
    version = int(js_number(options.get("version") or 1) or 1)
    operator = condition.get("operator") or {}
    type_ = str(operator.get("type") or "string")
    right_type = str(operator.get("rightType") or _implied_right_type(type_, str(operator.get("operation") or "")))
    left, right = condition.get("leftValue"), condition.get("rightValue")
    left_ok, left_value = _parse_single(left, type_, strict, version, zone)
    right_ok, right_value = _parse_single(right, right_type, strict, version, zone)
    single = operator.get("singleValue")
    if single is None:  # the editor stores it; hand-written operators may leave it out
        single = str(operator.get("operation") or "") in _SINGLE_VALUE_OPERATIONS
    right_ok = right_ok or bool(single)
    suffix = f"[condition {index}, item {item_index}]"

    def invalid(expected: str, value: Any) -> str:
        from_type = js_typeof(value)
        if strict:
            return f"Wrong type: '{js_string(value)}' is {_article(from_type)} but was expecting {_article(expected)} {suffix}"
        return f"Conversion error: the {from_type} '{js_string(value)}' can't be converted to {_article(expected)} {suffix}"

    if not left_ok and not right_ok and js_typeof(left) == js_typeof(right):
        raise NodeError(f"Comparison type expects {_article(type_)} but both fields are {_article(js_typeof(left))}",
                        description=ENABLE_LESS_STRICT if strict else "Try changing the type of the comparison.",
                        item_index=item_index)
    if not left_ok:
        raise NodeError(invalid(type_, left), description=_type_description(type_, js_typeof(left), "first", strict),
                        item_index=item_index)
    if not right_ok:
        raise NodeError(invalid(right_type, right),
                        description=_type_description(right_type, js_typeof(right), "second", strict), item_index=item_index)
    return (left_value if left_ok else None), (right_value if right_ok else None)


def _array_contains(array: list[Any], value: Any, ignore_case: bool) -> bool:
    if ignore_case and isinstance(value, str):
        return any(isinstance(item, str) and item.lower() == value.lower() for item in array)
    return any(js_strict_equal(item, value) or (is_nan(item) and is_nan(value)) for item in array)


def execute_filter_condition(condition: dict[str, Any], options: dict[str, Any], *, index: int = 0, item_index: int = 0,
                             zone: Any = UTC) -> bool:
    """n8n's executeFilterCondition for one resolved condition."""
    ignore_case = not options.get("caseSensitive")
    operator = condition.get("operator") or {}
    operation = str(operator.get("operation") or "")
    type_ = str(operator.get("type") or "string")
    left, right = _parse_condition_values(condition, options, index, item_index, zone)
    exists = left is not None and not is_nan(left)
    if operation == "exists":
        return exists
    if operation == "notExists":
        return not exists

    if type_ == "string":
        regex_op = operation in ("regex", "notRegex")
        if ignore_case and not regex_op:
            left = left.lower() if isinstance(left, str) else left
            right = right.lower() if isinstance(right, str) else right
        lhs = left if left is not None else ""
        rhs = right if right is not None else ""
        lhs_s, rhs_s = js_string(lhs), js_string(rhs)
        string_ops = {
            "empty": lambda: len(lhs_s) == 0,
            "notEmpty": lambda: len(lhs_s) != 0,
            "equals": lambda: js_strict_equal(lhs, rhs),
            "notEquals": lambda: not js_strict_equal(lhs, rhs),
            "contains": lambda: rhs_s in lhs_s,
            "notContains": lambda: rhs_s not in lhs_s,
            "startsWith": lambda: lhs_s.startswith(rhs_s),
            "notStartsWith": lambda: not lhs_s.startswith(rhs_s),
            "endsWith": lambda: lhs_s.endswith(rhs_s),
            "notEndsWith": lambda: not lhs_s.endswith(rhs_s),
            "regex": lambda: parse_regex_pattern(rhs_s, ignore_case).search(lhs_s) is not None,
            "notRegex": lambda: parse_regex_pattern(rhs_s, ignore_case).search(lhs_s) is None,
        }
        if operation in string_ops:
            return bool(string_ops[operation]())
    elif type_ == "number":
        number_ops = {
            "empty": lambda: not exists,
            "notEmpty": lambda: exists,
            "equals": lambda: js_strict_equal(left, right),
            "notEquals": lambda: not js_strict_equal(left, right),
            "gt": lambda: left is not None and right is not None and js_compare(left, right, ">"),
            "lt": lambda: left is not None and right is not None and js_compare(left, right, "<"),
            "gte": lambda: js_compare(left, right, ">="),
            "lte": lambda: js_compare(left, right, "<="),
        }
        if operation in number_ops:
            return bool(number_ops[operation]())
    elif type_ == "dateTime":
        if operation == "empty":
            return not exists
        if operation == "notEmpty":
            return exists
        if not isinstance(left, datetime) or not isinstance(right, datetime):
            return False
        lm, rm = to_millis(left), to_millis(right)
        date_ops = {"equals": lm == rm, "notEquals": lm != rm, "after": lm > rm, "before": lm < rm,
                    "afterOrEquals": lm >= rm, "beforeOrEquals": lm <= rm}
        if operation in date_ops:
            return date_ops[operation]
    elif type_ == "boolean":
        bool_ops = {
            "empty": lambda: not exists,
            "notEmpty": lambda: exists,
            "true": lambda: js_truthy(left),
            "false": lambda: not js_truthy(left),
            "equals": lambda: js_strict_equal(left, right),
            "notEquals": lambda: not js_strict_equal(left, right),
        }
        if operation in bool_ops:
            return bool(bool_ops[operation]())
    elif type_ == "array":
        items = left if isinstance(left, list) else []
        size = len(items)
        array_ops = {
            "contains": lambda: _array_contains(items, right, ignore_case),
            "notContains": lambda: not _array_contains(items, right, ignore_case),
            "lengthEquals": lambda: js_strict_equal(size, right),
            "lengthNotEquals": lambda: not js_strict_equal(size, right),
            "lengthGt": lambda: js_compare(size, right, ">"),
            "lengthLt": lambda: js_compare(size, right, "<"),
            "lengthGte": lambda: js_compare(size, right, ">="),
            "lengthLte": lambda: js_compare(size, right, "<="),
            "empty": lambda: size == 0,
            "notEmpty": lambda: size != 0,
        }
        if operation in array_ops:
            return bool(array_ops[operation]())
    elif type_ == "object":
        if operation == "empty":
            return not left or (isinstance(left, dict) and len(left) == 0)
        if operation == "notEmpty":
            return bool(left) and not (isinstance(left, dict) and len(left) == 0)
    return False


KNOWN_OPERATIONS: dict[str, set[str]] = {
    "string": {"exists", "notExists", "empty", "notEmpty", "equals", "notEquals", "contains", "notContains", "startsWith",
               "notStartsWith", "endsWith", "notEndsWith", "regex", "notRegex"},
    "number": {"exists", "notExists", "empty", "notEmpty", "equals", "notEquals", "gt", "lt", "gte", "lte"},
    "dateTime": {"exists", "notExists", "empty", "notEmpty", "equals", "notEquals", "after", "before", "afterOrEquals",
                 "beforeOrEquals"},
    "boolean": {"exists", "notExists", "empty", "notEmpty", "true", "false", "equals", "notEquals"},
    "array": {"exists", "notExists", "empty", "notEmpty", "contains", "notContains", "lengthEquals", "lengthNotEquals",
              "lengthGt", "lengthLt", "lengthGte", "lengthLte"},
    "object": {"exists", "notExists", "empty", "notEmpty"},
    "any": {"exists", "notExists"},
}


def validate_filter_value(node: NodeSpec, value: Any, parameter: str) -> list[ValidationIssue]:
    """Static check of a filter parameter: shape, combinator and operators."""
    if value is MISSING or value is None or (isinstance(value, str) and value.startswith("=")):
        return []
    if not isinstance(value, dict):
        return [ValidationIssue("must be a filter object with 'conditions'", node.name, parameter)]
    issues = []
    combinator = value.get("combinator", "and")
    if combinator not in ("and", "or"):
        issues.append(ValidationIssue(f"unknown combinator '{combinator}' (expected 'and' or 'or')", node.name, parameter))
    conditions = value.get("conditions", [])
    if not isinstance(conditions, list):
        return [*issues, ValidationIssue("'conditions' must be a list", node.name, parameter)]
    for index, condition in enumerate(conditions):
        operator = condition.get("operator") if isinstance(condition, dict) else None
        if not isinstance(operator, dict):
            issues.append(ValidationIssue(f"condition {index} has no operator", node.name, f"{parameter}.conditions.{index}"))
            continue
        type_, operation = operator.get("type"), operator.get("operation")
        if type_ not in KNOWN_OPERATIONS:
            issues.append(ValidationIssue(f"condition {index}: unknown operator type '{type_}'", node.name,
                                          f"{parameter}.conditions.{index}"))
        elif operation not in KNOWN_OPERATIONS[type_]:
            issues.append(ValidationIssue(f"condition {index}: unknown {type_} operation '{operation}'", node.name,
                                          f"{parameter}.conditions.{index}"))
    return issues


def filter_options(ctx: NodeContext, value: dict[str, Any], item_index: int, *, loose_since: float,
                   version_two_since: float) -> dict[str, Any]:
    """The effective filter options: the stored ones, completed from the node's own settings.

    n8n's editor writes ``caseSensitive``/``typeValidation``/``version`` into the filter value from
    the node's options (ignoreCase, looseTypeValidation); hand-written workflows may omit them.
    """
    options = dict(value.get("options") or {})
    node_options = ctx.param("options", item_index, {}) or {}
    version = float(ctx.node.type_version)
    if version < loose_since:
        loose = bool(node_options.get("looseTypeValidation"))
    else:
        loose = bool(ctx.param("looseTypeValidation", item_index, False))
    if loose:
        options["typeValidation"] = "loose"
    elif "typeValidation" not in options:
        options["typeValidation"] = "strict"
    if "caseSensitive" not in options:
        options["caseSensitive"] = not node_options.get("ignoreCase", True)
    if "version" not in options:
        options["version"] = 2 if version >= version_two_since else 1
    return options


def execute_filter(ctx: NodeContext, value: Any, item_index: int, *, loose_since: float, version_two_since: float,
                   path: str = "conditions") -> bool:
    """Evaluate a resolved filter parameter value for one item (n8n's extractValue: true)."""
    if value is None or value == "":
        value = {}
    if not isinstance(value, dict):
        raise NodeError(f"parameter '{path}' must be a filter object", item_index=item_index)
    options = filter_options(ctx, value, item_index, loose_since=loose_since, version_two_since=version_two_since)
    zone = get_zone(workflow_timezone(ctx))
    conditions = value.get("conditions") or []
    combinator = value.get("combinator", "and")
    results = (execute_filter_condition(c, options, index=i, item_index=item_index, zone=zone) for i, c in enumerate(conditions))
    if combinator == "and":
        return all(results)
    if combinator == "or":
        return any(results)
    return False


# --------------------------------------------------------------------------- legacy (v1) comparisons


def _is_empty(value: Any) -> bool:
    if value is None or value == "" or is_nan(value):
        return True
    if isinstance(value, (dict, list)):
        return len(value) == 0
    return False


def _regex_match(value1: Any, value2: Any) -> bool:
    pattern = js_string(js_or(value2, ""))
    match = _REGEX_LITERAL.match(pattern)
    regex = js_regex(match.group(1), match.group(2)) if match else js_regex(pattern)
    return regex.search(js_string(js_or(value1, ""))) is not None


def _as_str(value: Any) -> str:
    return value if isinstance(value, str) else js_string(value)


LEGACY_OPERATIONS: dict[str, Any] = {
    "after": lambda a, b: js_compare(js_or(a, 0), js_or(b, 0), ">"),
    "before": lambda a, b: js_compare(js_or(a, 0), js_or(b, 0), "<"),
    "contains": lambda a, b: js_string(js_or(b, "")) in js_string(js_or(a, "")),
    "notContains": lambda a, b: js_string(js_or(b, "")) not in js_string(js_or(a, "")),
    "endsWith": lambda a, b: _as_str(a).endswith(_as_str(b)),
    "notEndsWith": lambda a, b: not _as_str(a).endswith(_as_str(b)),
    "equal": js_strict_equal,
    "notEqual": lambda a, b: not js_strict_equal(a, b),
    "larger": lambda a, b: js_compare(js_or(a, 0), js_or(b, 0), ">"),
    "largerEqual": lambda a, b: js_compare(js_or(a, 0), js_or(b, 0), ">="),
    "smaller": lambda a, b: js_compare(js_or(a, 0), js_or(b, 0), "<"),
    "smallerEqual": lambda a, b: js_compare(js_or(a, 0), js_or(b, 0), "<="),
    "startsWith": lambda a, b: _as_str(a).startswith(_as_str(b)),
    "notStartsWith": lambda a, b: not _as_str(a).startswith(_as_str(b)),
    "isEmpty": lambda a, b: _is_empty(a),
    "isNotEmpty": lambda a, b: not _is_empty(a),
    "regex": _regex_match,
    "notRegex": lambda a, b: not _regex_match(a, b),
}

LEGACY_TYPES: dict[str, dict[str, Any]] = {
    # data type -> defaults of value1, operation, value2 (n8n's fixedCollection defaults)
    "boolean": {"value1": False, "operation": "equal", "value2": False},
    "dateTime": {"value1": "", "operation": "after", "value2": ""},
    "number": {"value1": 0, "operation": "smaller", "value2": 0},
    "string": {"value1": "", "operation": "equal", "value2": ""},
}
LEGACY_ALLOWED = {
    "boolean": {"equal", "notEqual"},
    "dateTime": {"after", "before"},
    "number": {"smaller", "smallerEqual", "equal", "notEqual", "larger", "largerEqual", "isEmpty", "isNotEmpty"},
    "string": {"contains", "notContains", "endsWith", "notEndsWith", "equal", "notEqual", "regex", "notRegex", "startsWith",
               "notStartsWith", "isEmpty", "isNotEmpty"},
}


def convert_datetime(value: Any, zone: Any, item_index: int) -> Any:
    """Legacy If/Switch/Filter: strings through ``new Date()``, numbers as they are."""
    result: Any = None
    if isinstance(value, str):
        parsed = js_date_parse(value, zone)
        result = to_millis(parsed) if parsed is not None else None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        result = None if is_nan(value) else value
    if result is None:
        raise NodeError(f'The value "{js_string(value)}" is not a valid DateTime.', item_index=item_index)
    return result


def legacy_compare(data_type: str, entry: dict[str, Any], zone: Any, item_index: int, value1: Any = MISSING) -> bool:
    defaults = LEGACY_TYPES[data_type]
    v1 = entry.get("value1", defaults["value1"]) if value1 is MISSING else value1
    v2 = entry.get("value2", defaults["value2"])
    operation = entry.get("operation", defaults["operation"])
    if operation not in LEGACY_OPERATIONS:
        raise NodeError(f"Unknown comparison operation '{operation}'", item_index=item_index)
    if data_type == "dateTime":
        v1 = convert_datetime(v1, zone, item_index)
        v2 = convert_datetime(v2, zone, item_index)
    return bool(LEGACY_OPERATIONS[operation](v1, v2))


def validate_legacy_conditions(node: NodeSpec, conditions: Any, parameter: str) -> list[ValidationIssue]:
    issues: list[ValidationIssue] = []
    if not isinstance(conditions, dict):
        return issues
    for data_type, entries in conditions.items():
        if data_type not in LEGACY_TYPES:
            issues.append(ValidationIssue(f"unknown condition type '{data_type}'", node.name, f"{parameter}.{data_type}"))
            continue
        for index, entry in enumerate(entries if isinstance(entries, list) else []):
            operation = entry.get("operation", LEGACY_TYPES[data_type]["operation"]) if isinstance(entry, dict) else None
            if operation not in LEGACY_ALLOWED[data_type]:
                issues.append(ValidationIssue(f"unknown {data_type} operation '{operation}'", node.name,
                                              f"{parameter}.{data_type}.{index}.operation"))
    return issues


def _legacy_pass(ctx: NodeContext, item_index: int, combine_all: bool, zone: Any) -> bool:
    for data_type in ("boolean", "dateTime", "number", "string"):
        entries = ctx.param(f"conditions.{data_type}", item_index, []) or []
        for entry in entries:
            result = legacy_compare(data_type, entry or {}, zone, item_index)
            if result and not combine_all:
                return True
            if not result and combine_all:
                return False
    return combine_all


def _paired(item: Item, index: int) -> Item:
    if item.get("pairedItem") is None:
        item["pairedItem"] = {"item": index}
    return item


# --------------------------------------------------------------------------- If


@register
class IfNode(Node):
    """If: route each item to output 0 (true) or 1 (false)."""

    type = "n8n-nodes-base.if"
    versions = (1, 2, 2.1, 2.2)

    def output_count(self, node: NodeSpec) -> int:
        return 2

    def validate(self, node: NodeSpec) -> list[ValidationIssue]:
        issues = super().validate(node)
        conditions = node.parameters.get("conditions", MISSING)
        if float(node.type_version) < 2:
            issues += validate_legacy_conditions(node, conditions, "conditions")
            combine = node.parameters.get("combineOperation", "all")
            if combine not in ("all", "any") and not str(combine).startswith("="):
                issues.append(ValidationIssue(f"unknown combineOperation '{combine}'", node.name, "combineOperation"))
        else:
            issues += validate_filter_value(node, conditions, "conditions")
        return issues

    def execute(self, ctx: NodeContext) -> Outputs:
        items = ctx.input_items(0)
        true_items: list[Item] = []
        false_items: list[Item] = []
        zone = get_zone(workflow_timezone(ctx))
        legacy = float(ctx.node.type_version) < 2
        for index, item in enumerate(items):
            if legacy:
                combine = ctx.param("combineOperation", index, "all")
                passed = _legacy_pass(ctx, index, combine == "all", zone)
            else:
                passed = execute_filter(ctx, ctx.param("conditions", index, {}), index, loose_since=2.1,
                                        version_two_since=2.2)
                _paired(item, index)
            (true_items if passed else false_items).append(item)
        return [true_items, false_items]


# --------------------------------------------------------------------------- Filter


@register
class FilterNode(Node):
    """Filter: keep the items that match the conditions."""

    type = "n8n-nodes-base.filter"
    versions = (1, 2, 2.1, 2.2)

    def validate(self, node: NodeSpec) -> list[ValidationIssue]:
        issues = super().validate(node)
        conditions = node.parameters.get("conditions", MISSING)
        if float(node.type_version) < 2:
            issues += validate_legacy_conditions(node, conditions, "conditions")
            combine = node.parameters.get("combineConditions", "AND")
            if combine not in ("AND", "OR") and not str(combine).startswith("="):
                issues.append(ValidationIssue(f"unknown combineConditions '{combine}'", node.name, "combineConditions"))
        else:
            issues += validate_filter_value(node, conditions, "conditions")
        return issues

    def execute(self, ctx: NodeContext) -> Outputs:
        kept: list[Item] = []
        zone = get_zone(workflow_timezone(ctx))
        legacy = float(ctx.node.type_version) < 2
        for index, item in enumerate(ctx.input_items(0)):
            if legacy:
                combine = ctx.param("combineConditions", index, "AND")
                passed = _legacy_pass(ctx, index, combine == "AND", zone)
                if item.get("pairedItem") is None:
                    item["pairedItem"] = [{"item": index}]
            else:
                passed = execute_filter(ctx, ctx.param("conditions", index, {}), index, loose_since=2.1,
                                        version_two_since=2.2)
                _paired(item, index)
            if passed:
                kept.append(item)
        return [kept]


# --------------------------------------------------------------------------- Switch


def _static_int(value: Any, default: int) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str) and not value.startswith("="):
        number = js_number(value)
        return default if is_nan(number) else int(number)
    return default


@register
class SwitchNode(Node):
    """Switch: route items to one (or every matching) output by rules or an expression."""

    type = "n8n-nodes-base.switch"
    versions = (1, 2, 3, 3.1, 3.2)

    def output_count(self, node: NodeSpec) -> int:
        params = node.parameters
        version = float(node.type_version)
        mode = params.get("mode", "rules")
        if version < 2:
            return 4
        if version < 3:
            if mode == "expression":
                return max(_static_int(params.get("outputsAmount", 4), 4), 0)
            rules = (params.get("rules") or {}).get("rules") or []
            return len(rules) if isinstance(rules, list) else 0
        if mode == "expression":
            return max(_static_int(params.get("numberOutputs", 4), 4), 0)
        rules = (params.get("rules") or {}).get("values") or []
        count = len(rules) if isinstance(rules, list) else 0
        if (params.get("options") or {}).get("fallbackOutput") == "extra":
            count += 1
        return max(count, 1)

    def validate(self, node: NodeSpec) -> list[ValidationIssue]:
        issues = super().validate(node)
        params = node.parameters
        version = float(node.type_version)
        mode = params.get("mode", "rules")
        if mode not in ("rules", "expression"):
            return [*issues, ValidationIssue(f"unknown mode '{mode}' (expected 'rules' or 'expression')", node.name, "mode")]
        if mode == "expression":
            return issues
        if version < 3:
            data_type = params.get("dataType", "number")
            if data_type not in LEGACY_TYPES:
                return [*issues, ValidationIssue(f"unknown dataType '{data_type}'", node.name, "dataType")]
            for index, rule in enumerate((params.get("rules") or {}).get("rules") or []):
                operation = (rule or {}).get("operation", LEGACY_TYPES[data_type]["operation"])
                allowed = LEGACY_ALLOWED[data_type] - {"isEmpty", "isNotEmpty"}
                if operation not in allowed:
                    issues.append(ValidationIssue(f"unknown {data_type} operation '{operation}'", node.name,
                                                  f"rules.rules.{index}.operation"))
            return issues
        rules = (params.get("rules") or {}).get("values") or []
        for index, rule in enumerate(rules):
            issues += validate_filter_value(node, (rule or {}).get("conditions", MISSING), f"rules.values.{index}.conditions")
        fallback = (params.get("options") or {}).get("fallbackOutput", "none")
        if fallback not in ("none", "extra") and not isinstance(fallback, (int, float)) and not str(fallback).startswith("="):
            issues.append(ValidationIssue(f"unknown fallbackOutput '{fallback}'", node.name, "options.fallbackOutput"))
        return issues

    def execute(self, ctx: NodeContext) -> Outputs:
        version = float(ctx.node.type_version)
        if version < 3:
            return self._execute_legacy(ctx, version)
        return self._execute_v3(ctx)

    @staticmethod
    def _output_index(value: Any, item_index: int) -> int:
        number = js_number(value) if not isinstance(value, (int, float)) or isinstance(value, bool) else value
        if value is None or value == "" or is_nan(number) or not float(number).is_integer():
            raise NodeError(f"The output index '{js_string(value)}' is not a number", item_index=item_index,
                            description="The 'Output Index' expression must return a whole number")
        return int(number)

    def _execute_v3(self, ctx: NodeContext) -> Outputs:
        items = ctx.input_items(0)
        mode = ctx.param("mode", 0, "rules")
        outputs: list[list[Item]] = [[] for _ in range(self.output_count(ctx.node))]

        def check_range(index: int, item_index: int) -> None:
            if index == len(outputs):
                raise NodeError(f"The ouput {index} is not allowed. ", item_index=item_index,
                                description=f"Output indexes are zero based, if you want to use the extra output use {index - 1}")
            if index < 0 or index > len(outputs):
                raise NodeError(f"The ouput {index} is not allowed", item_index=item_index,
                                description=f"It has to be between 0 and {len(outputs) - 1}")

        for index, item in enumerate(items):
            item["pairedItem"] = {"item": index}
            if mode == "expression":
                number_outputs = int(js_number(ctx.param("numberOutputs", index, 4)))
                if index == 0 and number_outputs != len(outputs):
                    outputs = [[] for _ in range(max(number_outputs, 0))]
                target = self._output_index(ctx.param("output", index), index)
                check_range(target, index)
                outputs[target].append(item)
                continue
            rules = ctx.raw_param("rules.values", []) or []
            if not rules:
                continue
            options = ctx.param("options", index, {}) or {}
            fallback = options.get("fallbackOutput", "none")
            matched = False
            for rule_index in range(len(rules)):
                raw_conditions = (rules[rule_index] or {}).get("conditions", {})
                passed = execute_filter(ctx, ctx.evaluate(raw_conditions, index), index, loose_since=3.1,
                                        version_two_since=3.2, path=f"rules.values.{rule_index}.conditions")
                if passed:
                    matched = True
                    outputs[rule_index].append(item)
                    if not options.get("allMatchingOutputs"):
                        break
            if matched or fallback in (None, "none"):
                continue
            if fallback == "extra":
                outputs[-1].append(item)
                continue
            target = self._output_index(fallback, index)
            check_range(target, index)
            outputs[target].append(item)
        return outputs if outputs else [[]]

    def _execute_legacy(self, ctx: NodeContext, version: float) -> Outputs:
        items = ctx.input_items(0)
        outputs: list[list[Item]] = [[] for _ in range(self.output_count(ctx.node))]
        zone = get_zone(workflow_timezone(ctx))

        def check_range(index: Any, item_index: int) -> None:
            if not isinstance(index, int) or index < 0 or index >= len(outputs):
                raise NodeError(f"The ouput {js_string(index)} is not allowed. It has to be between 0 and {len(outputs) - 1}!",
                                item_index=item_index)

        for index, item in enumerate(items):
            item["pairedItem"] = {"item": index}
            mode = ctx.param("mode", index, "rules")
            if mode == "expression":
                if version >= 2 and index == 0:
                    amount = int(js_number(ctx.param("outputsAmount", index, 4)))
                    outputs = [[] for _ in range(max(amount, 0))]
                target = self._output_index(ctx.param("output", index), index)
                check_range(target, index)
                outputs[target].append(item)
                continue
            data_type = ctx.param("dataType", 0, "number")
            rules = ctx.param("rules.rules", index, []) or []
            value1 = ctx.param("value1", index, LEGACY_TYPES[data_type]["value1"])
            if data_type == "dateTime":
                value1 = convert_datetime(value1, zone, index)
            routed = False
            for rule_index, rule in enumerate(rules):
                rule = rule or {}
                if data_type == "dateTime":
                    rule = {**rule, "value2": convert_datetime(rule.get("value2", 0), zone, index)}
                    passed = bool(LEGACY_OPERATIONS[rule.get("operation", "after")](value1, rule["value2"]))
                else:
                    passed = legacy_compare(data_type, rule, zone, index, value1=value1)
                if passed:
                    target = rule_index
                    if version < 2:
                        target = self._output_index(rule.get("output", 0), index)
                        check_range(target, index)
                    outputs[target].append(item)
                    routed = True
                    break
            if routed:
                continue
            fallback = ctx.param("fallbackOutput", index, -1)
            fallback_index = self._output_index(fallback, index)
            if fallback_index != -1:
                check_range(fallback_index, index)
                outputs[fallback_index].append(item)
        return outputs


__all__ = [
    "IfNode", "FilterNode", "SwitchNode", "execute_filter", "execute_filter_condition", "js_number", "js_string",
    "js_strict_equal", "js_truthy", "json_stringify", "path_get", "path_set", "path_unset",
    "validate_field_type", "parse_regex_pattern", "js_regex", "js_replacement", "get_zone", "workflow_timezone",
]
