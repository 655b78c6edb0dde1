"""Date & Time (``n8n-nodes-base.dateTime``) v1 (Moment formats) and v2 (Luxon operations).

n8n implements v1 with moment-timezone and v2 with Luxon; both are reproduced here on
``datetime``/``zoneinfo``: parsing rules, the Moment and Luxon format tokens, timezone
conversion, calendar arithmetic (month-end clamping, DST-aware days) and Luxon's
``toString()`` (ISO with milliseconds and offset).
"""
from __future__ import annotations

import calendar
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from dateutil.relativedelta import relativedelta

from workflows.engine.contract import Item, Node, NodeContext, NodeError, NodeSpec, Outputs, ValidationIssue, register
from workflows.nodes.conditions import (
    deep_copy,
    get_zone,
    is_nan,
    js_date_parse,
    js_number,
    js_string,
    localize,
    normalize_number,
    parse_iso,
    path_set,
    workflow_timezone,
)

MONTHS = list(calendar.month_name)[1:]
MONTHS_SHORT = list(calendar.month_abbr)[1:]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
WEEKDAYS_SHORT = [d[:3] for d in WEEKDAYS]
WEEKDAYS_MIN = [d[:2] for d in WEEKDAYS]

CALENDAR_UNITS = ("years", "quarters", "months", "weeks", "days")
TIME_UNITS = {"hours": 3_600_000, "minutes": 60_000, "seconds": 1000, "milliseconds": 1}
UNIT_ALIASES = {
    "year": "years", "years": "years", "y": "years", "quarter": "quarters", "quarters": "quarters", "Q": "quarters",
    "month": "months", "months": "months", "M": "months", "week": "weeks", "weeks": "weeks", "w": "weeks",
    "day": "days", "days": "days", "d": "days", "hour": "hours", "hours": "hours", "h": "hours",
    "minute": "minutes", "minutes": "minutes", "m": "minutes", "second": "seconds", "seconds": "seconds", "s": "seconds",
    "millisecond": "milliseconds", "milliseconds": "milliseconds", "ms": "milliseconds",
}


# --------------------------------------------------------------------------- arithmetic


def shift(moment: datetime, unit: str, amount: float) -> datetime:
    """Add ``amount`` of ``unit``: calendar units on the wall clock (month-end clamped), time units on the timeline."""
    key = UNIT_ALIASES.get(unit, unit)
    zone = moment.tzinfo or UTC
    if key in TIME_UNITS:
        return (moment.astimezone(UTC) + timedelta(milliseconds=amount * TIME_UNITS[key])).astimezone(zone)
    if key not in CALENDAR_UNITS:
        raise NodeError(f"Unknown time unit '{unit}'")
    whole = int(amount)
    fraction = amount - whole
    wall = moment.replace(tzinfo=None)
    if key == "years":
        wall += relativedelta(years=whole)
    elif key == "quarters":
        wall += relativedelta(months=3 * whole)
    elif key == "months":
        wall += relativedelta(months=whole)
    elif key == "weeks":
        wall += timedelta(days=7 * whole)
    else:
        wall += timedelta(days=whole)
    result = localize(wall, zone)
    if fraction:
        days = {"years": 365, "quarters": 91, "months": 30, "weeks": 7, "days": 1}[key] * fraction
        result = (result.astimezone(UTC) + timedelta(days=days)).astimezone(zone)
    return result


def start_of(moment: datetime, unit: str) -> datetime:
    """Luxon ``startOf(unit)`` (weeks start on Monday)."""
    key = UNIT_ALIASES.get(unit, unit)
    wall = moment.replace(tzinfo=None)
    if key == "years":
        wall = wall.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    elif key == "quarters":
        wall = wall.replace(month=(wall.month - 1) // 3 * 3 + 1, day=1, hour=0, minute=0, second=0, microsecond=0)
    elif key == "months":
        wall = wall.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    elif key == "weeks":
        wall = (wall - timedelta(days=wall.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    elif key == "days":
        wall = wall.replace(hour=0, minute=0, second=0, microsecond=0)
    elif key == "hours":
        wall = wall.replace(minute=0, second=0, microsecond=0)
    elif key == "minutes":
        wall = wall.replace(second=0, microsecond=0)
    elif key == "seconds":
        wall = wall.replace(microsecond=0)
    elif key != "milliseconds":
        raise NodeError(f"Unknown time unit '{unit}'")
    else:
        wall = wall.replace(microsecond=wall.microsecond // 1000 * 1000)
    return localize(wall, moment.tzinfo or UTC)


# --------------------------------------------------------------------------- formatting helpers


def _offset(moment: datetime, sep: str = ":") -> str:
    total = int((moment.utcoffset() or timedelta()).total_seconds() // 60)
    sign = "+" if total >= 0 else "-"
    hours, minutes = divmod(abs(total), 60)
    return f"{sign}{hours:02d}{sep}{minutes:02d}"


def _ordinal(number: int) -> str:
    if 10 <= number % 100 <= 20:
        return f"{number}th"
    return f"{number}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(number % 10, 'th') }"


def _millis(moment: datetime) -> int:
    return moment.microsecond // 1000


def unix_ms(moment: datetime) -> int:
    return math.floor(moment.timestamp() * 1000 + 1e-6)


def _hour12(moment: datetime) -> int:
    return moment.hour % 12 or 12


def _zone_abbr(moment: datetime) -> str:
    return moment.tzname() or _offset(moment)


def _zone_name(moment: datetime) -> str:
    zone = moment.tzinfo
    key = getattr(zone, "key", None)
    if key:
        return key
    return "UTC" if (moment.utcoffset() or timedelta()) == timedelta() else f"UTC{_offset(moment)}"


def _is_universal_zero(moment: datetime) -> bool:
    return isinstance(moment.tzinfo, timezone) and (moment.utcoffset() or timedelta()) == timedelta()


def luxon_iso(moment: datetime) -> str:
    """Luxon ``toISO()`` / ``toString()``: milliseconds always, ``Z`` only for the fixed UTC zone."""
    base = moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{_millis(moment):03d}"
    if moment.year < 0 or moment.year > 9999:
        base = f"{moment.year:+07d}" + base[4:]
    return base + ("Z" if _is_universal_zero(moment) else _offset(moment))


# --------------------------------------------------------------------------- Moment format (v1)

_MOMENT_LOCALE = {
    "LTS": "h:mm:ss A", "LT": "h:mm A", "LLLL": "dddd, MMMM D, YYYY h:mm A", "LLL": "MMMM D, YYYY h:mm A",
    "LL": "MMMM D, YYYY", "L": "MM/DD/YYYY", "llll": "ddd, MMM D, YYYY h:mm A", "lll": "MMM D, YYYY h:mm A",
    "ll": "MMM D, YYYY", "l": "M/D/YYYY",
}
_MOMENT_TOKENS = re.compile(
    r"\[[^\]]*\]|LTS|LT|LLLL|LLL|LL|L|llll|lll|ll|l|YYYYYY|YYYY|YY|Y|Qo|Q|MMMM|MMM|Mo|MM|M|DDDD|DDDo|DDD|Do|DD|D|"
    r"dddd|ddd|do|dd|d|E|e|wo|ww|w|Wo|WW|W|GGGG|GG|gggg|gg|HH|H|hh|h|kk|k|mm|m|ss|s|S{1,9}|A|a|ZZ|Z|zz|z|X|x"
)


def _moment_token(moment: datetime, token: str) -> str:
    iso_year, iso_week, iso_day = moment.isocalendar()
    day_of_year = moment.timetuple().tm_yday
    # locale (en) week: weeks start Sunday, week 1 contains Jan 1
    sunday_week = _locale_week(moment)
    values: dict[str, Callable[[], str]] = {
        "YYYYYY": lambda: f"{moment.year:+07d}", "YYYY": lambda: f"{moment.year:04d}", "YY": lambda: f"{moment.year % 100:02d}",
        "Y": lambda: str(moment.year), "Q": lambda: str((moment.month - 1) // 3 + 1),
        "Qo": lambda: _ordinal((moment.month - 1) // 3 + 1),
        "MMMM": lambda: MONTHS[moment.month - 1], "MMM": lambda: MONTHS_SHORT[moment.month - 1],
        "MM": lambda: f"{moment.month:02d}", "M": lambda: str(moment.month), "Mo": lambda: _ordinal(moment.month),
        "DDDD": lambda: f"{day_of_year:03d}", "DDD": lambda: str(day_of_year), "DDDo": lambda: _ordinal(day_of_year),
        "DD": lambda: f"{moment.day:02d}", "D": lambda: str(moment.day), "Do": lambda: _ordinal(moment.day),
        "dddd": lambda: WEEKDAYS[moment.weekday()], "ddd": lambda: WEEKDAYS_SHORT[moment.weekday()],
        "dd": lambda: WEEKDAYS_MIN[moment.weekday()], "d": lambda: str((moment.weekday() + 1) % 7),
        "do": lambda: _ordinal((moment.weekday() + 1) % 7), "e": lambda: str((moment.weekday() + 1) % 7),
        "E": lambda: str(iso_day), "w": lambda: str(sunday_week), "ww": lambda: f"{sunday_week:02d}",
        "wo": lambda: _ordinal(sunday_week), "W": lambda: str(iso_week), "WW": lambda: f"{iso_week:02d}",
        "Wo": lambda: _ordinal(iso_week), "GGGG": lambda: f"{iso_year:04d}", "GG": lambda: f"{iso_year % 100:02d}",
        "gggg": lambda: f"{moment.year:04d}", "gg": lambda: f"{moment.year % 100:02d}",
        "HH": lambda: f"{moment.hour:02d}", "H": lambda: str(moment.hour), "hh": lambda: f"{_hour12(moment):02d}",
        "h": lambda: str(_hour12(moment)), "kk": lambda: f"{moment.hour or 24:02d}", "k": lambda: str(moment.hour or 24),
        "mm": lambda: f"{moment.minute:02d}", "m": lambda: str(moment.minute), "ss": lambda: f"{moment.second:02d}",
        "s": lambda: str(moment.second), "A": lambda: "AM" if moment.hour < 12 else "PM",
        "a": lambda: "am" if moment.hour < 12 else "pm", "ZZ": lambda: _offset(moment, ""), "Z": lambda: _offset(moment),
        "zz": lambda: _zone_abbr(moment), "z": lambda: _zone_abbr(moment),
        "X": lambda: str(math.floor(unix_ms(moment) / 1000)), "x": lambda: str(unix_ms(moment)),
    }
    if token.startswith("S"):
        return f"{moment.microsecond:06d}000"[: len(token)]
    return values[token]()


def _locale_week(moment: datetime) -> int:
    jan1 = moment.replace(month=1, day=1)
    offset = (jan1.weekday() + 1) % 7  # days since Sunday
    return (moment.timetuple().tm_yday + offset - 1) // 7 + 1


def moment_format(moment: datetime, fmt: str) -> str:
    """moment's ``format(fmt)``; an empty format is moment's default ISO-with-offset."""
    if not fmt:
        fmt = "YYYY-MM-DDTHH:mm:ssZ"

    def expand(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in _MOMENT_LOCALE:
            return _MOMENT_TOKENS.sub(expand, _MOMENT_LOCALE[token])
        if token.startswith("["):
            return token[1:-1]
        return _moment_token(moment, token)

    return _MOMENT_TOKENS.sub(expand, fmt)


# --------------------------------------------------------------------------- Luxon format (v2)

_LUXON_MACROS = {
    "D": "L/d/yyyy", "DD": "LLL d, yyyy", "DDD": "LLLL d, yyyy", "DDDD": "EEEE, LLLL d, yyyy",
    "t": "h:mm a", "tt": "h:mm:ss a", "ttt": "h:mm:ss a ZZZZ", "tttt": "h:mm:ss a ZZZZZ",
    "T": "HH:mm", "TT": "HH:mm:ss", "TTT": "HH:mm:ss ZZZZ", "TTTT": "HH:mm:ss ZZZZZ",
    "f": "L/d/yyyy, h:mm a", "ff": "LLL d, yyyy, h:mm a", "fff": "LLLL d, yyyy 'at' h:mm a ZZZZ",
    "ffff": "EEEE, LLLL d, yyyy 'at' h:mm a ZZZZZ", "F": "L/d/yyyy, h:mm:ss a", "FF": "LLL d, yyyy, h:mm:ss a",
    "FFF": "LLLL d, yyyy 'at' h:mm:ss a ZZZZ", "FFFF": "EEEE, LLLL d, yyyy 'at' h:mm:ss a ZZZZZ",
}


def _luxon_lex(fmt: str) -> list[tuple[bool, str]]:
    """Luxon's tokenizer: runs of one letter are tokens, 'quoted' text is literal."""
    tokens: list[tuple[bool, str]] = []
    i = 0
    while i < len(fmt):
        ch = fmt[i]
        if ch == "'":
            end = fmt.find("'", i + 1)
            if end == i + 1:
                tokens.append((True, "'"))
                i += 2
                continue
            end = len(fmt) if end == -1 else end
            tokens.append((True, fmt[i + 1: end]))
            i = end + 1
            continue
        j = i
        while j < len(fmt) and fmt[j] == ch:
            j += 1
        tokens.append((not ch.isalpha(), fmt[i:j]))
        i = j
    return tokens


def _luxon_token(moment: datetime, token: str) -> str | None:
    iso_year, iso_week, iso_day = moment.isocalendar()
    offset_minutes = int((moment.utcoffset() or timedelta()).total_seconds() // 60)
    short_offset = ("+" if offset_minutes >= 0 else "-") + str(abs(offset_minutes) // 60) + (
        f":{abs(offset_minutes) % 60:02d}" if offset_minutes % 60 else "")
    table: dict[str, Callable[[], str]] = {
        "S": lambda: str(_millis(moment)), "SSS": lambda: f"{_millis(moment):03d}", "u": lambda: f"{_millis(moment):03d}",
        "uu": lambda: f"{_millis(moment) // 10:02d}", "uuu": lambda: str(_millis(moment) // 100),
        "s": lambda: str(moment.second), "ss": lambda: f"{moment.second:02d}",
        "m": lambda: str(moment.minute), "mm": lambda: f"{moment.minute:02d}",
        "h": lambda: str(_hour12(moment)), "hh": lambda: f"{_hour12(moment):02d}",
        "H": lambda: str(moment.hour), "HH": lambda: f"{moment.hour:02d}",
        "Z": lambda: "+0" if _is_universal_zero(moment) and False else short_offset, "ZZ": lambda: _offset(moment),
        "ZZZ": lambda: _offset(moment, ""), "ZZZZ": lambda: _zone_abbr(moment), "ZZZZZ": lambda: _zone_name(moment),
        "z": lambda: _zone_name(moment), "a": lambda: "AM" if moment.hour < 12 else "PM",
        "d": lambda: str(moment.day), "dd": lambda: f"{moment.day:02d}",
        "c": lambda: str(iso_day), "E": lambda: str(iso_day), "ccc": lambda: WEEKDAYS_SHORT[moment.weekday()],
        "EEE": lambda: WEEKDAYS_SHORT[moment.weekday()], "cccc": lambda: WEEKDAYS[moment.weekday()],
        "EEEE": lambda: WEEKDAYS[moment.weekday()], "ccccc": lambda: WEEKDAYS[moment.weekday()][0],
        "EEEEE": lambda: WEEKDAYS[moment.weekday()][0],
        "L": lambda: str(moment.month), "M": lambda: str(moment.month), "LL": lambda: f"{moment.month:02d}",
        "MM": lambda: f"{moment.month:02d}", "LLL": lambda: MONTHS_SHORT[moment.month - 1],
        "MMM": lambda: MONTHS_SHORT[moment.month - 1], "LLLL": lambda: MONTHS[moment.month - 1],
        "MMMM": lambda: MONTHS[moment.month - 1], "LLLLL": lambda: MONTHS[moment.month - 1][0],
        "MMMMM": lambda: MONTHS[moment.month - 1][0],
        "y": lambda: str(moment.year), "yy": lambda: f"{moment.year % 100:02d}", "yyyy": lambda: f"{moment.year:04d}",
        "yyyyyy": lambda: f"{moment.year:06d}", "G": lambda: "AD", "GG": lambda: "Anno Domini", "GGGGG": lambda: "A",
        "kk": lambda: f"{iso_year % 100:02d}", "kkkk": lambda: f"{iso_year:04d}", "W": lambda: str(iso_week),
        "WW": lambda: f"{iso_week:02d}", "n": lambda: str(_locale_week(moment)), "nn": lambda: f"{_locale_week(moment):02d}",
        "ii": lambda: f"{moment.year % 100:02d}", "iiii": lambda: f"{moment.year:04d}",
        "o": lambda: str(moment.timetuple().tm_yday), "ooo": lambda: f"{moment.timetuple().tm_yday:03d}",
        "q": lambda: str((moment.month - 1) // 3 + 1), "qq": lambda: f"{(moment.month - 1) // 3 + 1:02d}",
        "X": lambda: str(math.floor(unix_ms(moment) / 1000)), "x": lambda: str(unix_ms(moment)),
    }
    if token in table:
        return table[token]()
    return None


def luxon_format(moment: datetime, fmt: str) -> str:
    """Luxon's ``toFormat(fmt)`` (en-US)."""
    out: list[str] = []
    for literal, token in _luxon_lex(fmt):
        if literal:
            out.append(token)
        elif token in _LUXON_MACROS:
            out.append(luxon_format(moment, _LUXON_MACROS[token]))
        else:
            value = _luxon_token(moment, token)
            out.append(token if value is None else value)
    return "".join(out)


# --------------------------------------------------------------------------- parsing with a format

_MONTH_LOOKUP = {name.lower(): i + 1 for i, name in enumerate(MONTHS)} | {
    name.lower(): i + 1 for i, name in enumerate(MONTHS_SHORT)}
_MONTH_RE = "(" + "|".join(sorted(_MONTH_LOOKUP, key=len, reverse=True)) + ")"
_DAY_RE = "(" + "|".join(sorted([d.lower() for d in WEEKDAYS + WEEKDAYS_SHORT + WEEKDAYS_MIN], key=len, reverse=True)) + ")"
_OFFSET_RE = r"(Z|[+-]\d{1,2}(?::?\d{2})?)"

# field name, regex, strict regex
_MOMENT_PARSE = {
    "YYYYYY": ("year", r"([+-]?\d{1,6})", r"([+-]\d{6})"), "YYYY": ("year", r"([+-]?\d{1,4})", r"(\d{4})"),
    "YY": ("year2", r"(\d{1,2})", r"(\d{2})"), "Y": ("year", r"([+-]?\d+)", r"([+-]?\d+)"),
    "MMMM": ("monthname", _MONTH_RE, _MONTH_RE), "MMM": ("monthname", _MONTH_RE, _MONTH_RE),
    "MM": ("month", r"(\d{1,2})", r"(\d{2})"), "M": ("month", r"(\d{1,2})", r"(\d{1,2})"),
    "Mo": ("month", r"(\d{1,2})(?:st|nd|rd|th)", r"(\d{1,2})(?:st|nd|rd|th)"),
    "DDDD": ("yday", r"(\d{1,3})", r"(\d{3})"), "DDD": ("yday", r"(\d{1,3})", r"(\d{1,3})"),
    "DD": ("day", r"(\d{1,2})", r"(\d{2})"), "D": ("day", r"(\d{1,2})", r"(\d{1,2})"),
    "Do": ("day", r"(\d{1,2})(?:st|nd|rd|th)", r"(\d{1,2})(?:st|nd|rd|th)"),
    "dddd": ("skip", _DAY_RE, _DAY_RE), "ddd": ("skip", _DAY_RE, _DAY_RE), "dd": ("skip", _DAY_RE, _DAY_RE),
    "d": ("skip", r"(\d)", r"(\d)"), "E": ("skip", r"(\d)", r"(\d)"), "e": ("skip", r"(\d)", r"(\d)"),
    "HH": ("hour", r"(\d{1,2})", r"(\d{2})"), "H": ("hour", r"(\d{1,2})", r"(\d{1,2})"),
    "hh": ("hour12", r"(\d{1,2})", r"(\d{2})"), "h": ("hour12", r"(\d{1,2})", r"(\d{1,2})"),
    "kk": ("hour", r"(\d{1,2})", r"(\d{2})"), "k": ("hour", r"(\d{1,2})", r"(\d{1,2})"),
    "mm": ("minute", r"(\d{1,2})", r"(\d{2})"), "m": ("minute", r"(\d{1,2})", r"(\d{1,2})"),
    "ss": ("second", r"(\d{1,2})", r"(\d{2})"), "s": ("second", r"(\d{1,2})", r"(\d{1,2})"),
    "A": ("ampm", r"(am|pm|a\.m\.|p\.m\.)", r"(am|pm)"), "a": ("ampm", r"(am|pm|a\.m\.|p\.m\.)", r"(am|pm)"),
    "ZZ": ("offset", _OFFSET_RE, _OFFSET_RE), "Z": ("offset", _OFFSET_RE, _OFFSET_RE),
    "X": ("unix", r"([+-]?\d+(?:\.\d+)?)", r"([+-]?\d+(?:\.\d+)?)"), "x": ("unixms", r"([+-]?\d+)", r"([+-]?\d+)"),
    "Q": ("quarter", r"([1-4])", r"([1-4])"),
}
_LUXON_PARSE = {
    "yyyyyy": ("year", r"([+-]?\d{6})"), "yyyy": ("year", r"(\d{4})"), "yy": ("year2", r"(\d{2})"), "y": ("year", r"(\d{1,6})"),
    "MMMM": ("monthname", _MONTH_RE), "MMM": ("monthname", _MONTH_RE), "LLLL": ("monthname", _MONTH_RE),
    "LLL": ("monthname", _MONTH_RE), "MM": ("month", r"(\d{2})"), "LL": ("month", r"(\d{2})"), "M": ("month", r"(\d{1,2})"),
    "L": ("month", r"(\d{1,2})"), "dd": ("day", r"(\d{2})"), "d": ("day", r"(\d{1,2})"), "ooo": ("yday", r"(\d{3})"),
    "o": ("yday", r"(\d{1,3})"), "HH": ("hour", r"(\d{2})"), "H": ("hour", r"(\d{1,2})"), "hh": ("hour12", r"(\d{2})"),
    "h": ("hour12", r"(\d{1,2})"), "mm": ("minute", r"(\d{2})"), "m": ("minute", r"(\d{1,2})"), "ss": ("second", r"(\d{2})"),
    "s": ("second", r"(\d{1,2})"), "SSS": ("millis", r"(\d{3})"), "S": ("millis", r"(\d{1,3})"), "u": ("fraction", r"(\d+)"),
    "a": ("ampm", r"(am|pm)"), "ZZZ": ("offset", _OFFSET_RE), "ZZ": ("offset", _OFFSET_RE), "Z": ("offset", _OFFSET_RE),
    "z": ("zone", r"([A-Za-z_]+(?:/[A-Za-z_+-]+)*)"), "EEEE": ("skip", _DAY_RE), "EEE": ("skip", _DAY_RE),
    "cccc": ("skip", _DAY_RE), "ccc": ("skip", _DAY_RE), "E": ("skip", r"(\d)"), "c": ("skip", r"(\d)"),
    "X": ("unix", r"([+-]?\d+(?:\.\d+)?)"), "x": ("unixms", r"([+-]?\d+)"), "q": ("quarter", r"([1-4])"),
}


def _build(fields: list[tuple[str, str]]) -> dict[str, str]:
    return dict(fields)


def _assemble(fields: dict[str, str], zone: Any) -> datetime | None:
    """Turn parsed fields into an aware datetime (missing parts default like moment/Luxon)."""
    if "unixms" in fields:
        return datetime.fromtimestamp(int(fields["unixms"]) / 1000, UTC).astimezone(zone)
    if "unix" in fields:
        return datetime.fromtimestamp(float(fields["unix"]), UTC).astimezone(zone)
    now = datetime.now(zone)
    year = int(fields["year"]) if "year" in fields else now.year
    if "year2" in fields:
        two = int(fields["year2"])
        year = 2000 + two if two <= 68 else 1900 + two
    month = int(fields.get("month", 0)) or _MONTH_LOOKUP.get(fields.get("monthname", "").lower(), 0)
    if not month and "quarter" in fields:
        month = (int(fields["quarter"]) - 1) * 3 + 1
    if not month:
        month = 1 if any(k in fields for k in ("year", "year2")) else now.month
    hour = int(fields.get("hour", fields.get("hour12", 0)))
    if "hour12" in fields:
        hour = hour % 12
    if fields.get("ampm", "").lower().startswith("p"):
        hour = hour % 12 + 12
    elif fields.get("ampm", "").lower().startswith("a"):
        hour = hour % 12
    micro = int(fields.get("millis", "0").ljust(3, "0")[:3]) * 1000 if "millis" in fields else 0
    if "fraction" in fields:
        micro = int(fields["fraction"].ljust(6, "0")[:6])
    try:
        if "yday" in fields and "day" not in fields:
            base = datetime(year, 1, 1) + timedelta(days=int(fields["yday"]) - 1)
            naive = base.replace(hour=hour if hour != 24 else 0, minute=int(fields.get("minute", 0)),
                                 second=int(fields.get("second", 0)), microsecond=micro)
        else:
            day = int(fields.get("day", 1))
            naive = datetime(year, month, day, hour if hour != 24 else 0, int(fields.get("minute", 0)),
                             int(fields.get("second", 0)), micro)
    except ValueError:
        return None
    if "offset" in fields:
        text = fields["offset"]
        if text.upper() == "Z":
            return naive.replace(tzinfo=UTC)
        sign = 1 if text[0] == "+" else -1
        digits = text[1:].replace(":", "")
        hours = int(digits[:-2]) if len(digits) > 2 else int(digits)
        minutes = int(digits[-2:]) if len(digits) > 2 else 0
        return naive.replace(tzinfo=timezone(sign * timedelta(hours=hours, minutes=minutes)))
    if "zone" in fields:
        try:
            return localize(naive, get_zone(fields["zone"]))
        except NodeError:
            return None
    return localize(naive, zone)


def moment_parse(text: str, fmt: str, zone: Any, *, strict: bool = False) -> datetime | None:
    """moment(text, fmt[, strict]) in ``zone``."""
    pattern: list[str] = []
    names: list[str] = []
    pos = 0
    expanded = fmt
    for key, value in _MOMENT_LOCALE.items():
        expanded = re.sub(rf"(?<![A-Za-z\[]){key}(?![A-Za-z])", value, expanded)
    for match in _MOMENT_TOKENS.finditer(expanded):
        literal = expanded[pos: match.start()]
        pattern.append(_literal_re(literal, strict))
        token = match.group(0)
        pos = match.end()
        if token.startswith("["):
            pattern.append(re.escape(token[1:-1]) if strict else r"\W*" + re.escape(token[1:-1]) + "?")
            continue
        if token.startswith("S"):
            names.append("fraction")
            pattern.append(rf"(\d{{{len(token)}}})" if strict else r"(\d+)")
            continue
        if token not in _MOMENT_PARSE:
            names.append("skip")
            pattern.append(r"(\S+?)")
            continue
        name, loose, exact = _MOMENT_PARSE[token]
        names.append(name)
        pattern.append(exact if strict else loose)
    pattern.append(_literal_re(expanded[pos:], strict))
    regex = "^" + "".join(pattern) + ("$" if strict else "")
    match = re.match(regex, text.strip(), re.IGNORECASE)
    if not match:
        return None
    fields = {name: value for name, value in zip(names, match.groups(), strict=False) if value is not None and name != "skip"}
    return _assemble(fields, zone)


def _literal_re(literal: str, strict: bool) -> str:
    if not literal:
        return ""
    if strict:
        return re.escape(literal)
    return "".join(r"[^A-Za-z0-9]*?" if not ch.isalnum() else re.escape(ch) + "?" for ch in literal)


def luxon_from_format(text: str, fmt: str, zone: Any) -> datetime | None:
    """Luxon ``DateTime.fromFormat(text, fmt, {zone})``."""
    pattern: list[str] = []
    names: list[str] = []
    for literal, token in _luxon_lex(fmt):
        if literal:
            pattern.append(re.escape(token))
        elif token in _LUXON_PARSE:
            name, regex = _LUXON_PARSE[token]
            names.append(name)
            pattern.append(regex)
        else:
            pattern.append(re.escape(token))
    match = re.fullmatch("".join(pattern), text.strip(), re.IGNORECASE)
    if not match:
        return None
    fields = {name: value for name, value in zip(names, match.groups(), strict=False) if value is not None and name != "skip"}
    return _assemble(fields, zone)


# --------------------------------------------------------------------------- moment(value) and n8n's parseDate


def _is_number_like(value: Any) -> bool:
    return not isinstance(value, (dict, list)) and not is_nan(js_number(value))


def moment_default(value: Any, zone: Any) -> datetime | None:
    """``moment(value)``: numbers are epoch ms, strings ISO 8601 (local when naive), RFC 2822, else Date parsing."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if is_nan(value) or math.isinf(value):
            return None
        return datetime.fromtimestamp(value / 1000, UTC).astimezone(zone)
    if not isinstance(value, str):
        return None
    text = value.strip()
    parsed = parse_iso(text, zone)
    if parsed is not None:
        return parsed.astimezone(zone)
    parsed = js_date_parse(text, zone)
    return parsed.astimezone(zone) if parsed is not None else None


def numeric_date(number: float | int) -> datetime:
    """n8n's timestamp rule: integers shorter than 12 characters are seconds, longer ones milliseconds."""
    if float(number).is_integer():
        whole = int(number)
        if len(str(whole)) < 12:
            return datetime.fromtimestamp(whole, UTC)
        return datetime.fromtimestamp(whole / 1000, UTC)
    return datetime.fromtimestamp(number / 1000, UTC)


def to_number_input(value: Any) -> Any:
    """Number-looking inputs become numbers; non-integer numbers are seconds and become milliseconds."""
    if value is None or isinstance(value, bool) or not _is_number_like(value):
        return value
    if isinstance(value, str) and value.strip() == "":
        return value
    number = js_number(value)
    if not float(number).is_integer():
        number = number * 1000
        if abs(number - round(number)) < 1e-3:
            number = round(number)
    return normalize_number(number)


def parse_date_v2(value: Any, zone_name: str | None, item_index: int, from_format: str | None = None) -> datetime:
    """n8n DateTime v2's parseDate."""
    target = get_zone(zone_name or "Etc/UTC")
    if isinstance(value, datetime):
        return value.astimezone(target)
    if from_format:
        parsed = luxon_from_format(js_string(value), from_format, target)
        if parsed is None:
            raise NodeError("Invalid date format", item_index=item_index,
                            description=f"'{js_string(value)}' does not match the format '{from_format}'")
        return parsed
    number = to_number_input(value)
    if isinstance(number, (int, float)) and not isinstance(number, bool):
        return numeric_date(number).astimezone(target)
    text = js_string(value) if value is not None else ""
    if not zone_name and "+" in text:
        digits = text.split("+")[1][:2]
        offset = js_number(digits)
        if not is_nan(offset):
            target = get_zone(f"Etc/GMT-{int(offset)}") if int(offset) else get_zone("Etc/GMT")
    parsed = moment_default(text, get_zone("UTC"))
    if parsed is None:
        raise NodeError("Invalid date format", item_index=item_index)
    return parsed.astimezone(target)


def luxon_diff(start: datetime, end: datetime, units: list[str]) -> dict[str, float | int]:
    """Luxon ``end.diff(start, units).toObject()``: whole calendar units, remainder spread over time units."""
    order = ["years", "quarters", "months", "weeks", "days", "hours", "minutes", "seconds", "milliseconds"]
    wanted = [u for u in order if u in {UNIT_ALIASES.get(x, x) for x in units}] or ["milliseconds"]
    result: dict[str, float | int] = {}
    cursor = start
    sign = 1 if end >= start else -1
    for unit in wanted:
        if unit not in CALENDAR_UNITS:
            break
        count = 0
        while True:
            candidate = shift(cursor, unit, sign * (count + 1))
            if (sign > 0 and candidate <= end) or (sign < 0 and candidate >= end):
                count += 1
                continue
            break
        cursor = shift(cursor, unit, sign * count)
        result[unit] = sign * count
    remaining = (end.astimezone(UTC) - cursor.astimezone(UTC)) / timedelta(milliseconds=1)
    time_units = [u for u in wanted if u in TIME_UNITS]
    for unit in time_units:
        size = TIME_UNITS[unit]
        if unit == time_units[-1]:
            result[unit] = normalize_number(remaining / size)
            remaining = 0
        else:
            whole = math.trunc(remaining / size)
            result[unit] = whole
            remaining -= whole * size
    if not time_units and remaining:
        last = [u for u in wanted if u in CALENDAR_UNITS][-1]
        span = (shift(cursor, last, sign) - cursor) / timedelta(milliseconds=1)
        result[last] = normalize_number(result[last] + remaining / abs(span) * sign * sign if span else result[last])
    for key, value in result.items():
        result[key] = normalize_number(value) if isinstance(value, float) else value
    return result


def iso_duration(values: dict[str, float | int]) -> str:
    """Luxon ``Duration.toISO()``."""
    parts = {"years": "Y", "quarters": "Q", "months": "M", "weeks": "W", "days": "D"}
    date = ""
    for unit, letter in parts.items():
        if unit in values:
            amount = values[unit] * 3 if unit == "quarters" else values[unit]
            date += f"{js_string(normalize_number(amount))}{'M' if unit == 'quarters' else letter}"
    time = ""
    seconds = values.get("seconds", 0) + values.get("milliseconds", 0) / 1000
    if "hours" in values:
        time += f"{js_string(values['hours'])}H"
    if "minutes" in values:
        time += f"{js_string(values['minutes'])}M"
    if "seconds" in values or "milliseconds" in values:
        time += f"{js_string(normalize_number(round(seconds, 3)))}S"
    text = "P" + date + (f"T{time}" if time else "")
    return "PT0S" if text == "P" else text


# --------------------------------------------------------------------------- the node

V2_OPERATIONS = ("getCurrentDate", "addToDate", "subtractFromDate", "formatDate", "roundDate", "getTimeBetweenDates",
                 "extractDate")
V2_DEFAULT_FIELD = {"getCurrentDate": "currentDate", "addToDate": "newDate", "subtractFromDate": "newDate",
                    "formatDate": "formattedDate", "roundDate": "roundedDate", "getTimeBetweenDates": "timeDifference",
                    "extractDate": "datePart"}
EXTRACT_PARTS = ("year", "quarter", "month", "week", "day", "hour", "minute", "second")


@register
class DateTimeNode(Node):
    """Date & Time."""

    type = "n8n-nodes-base.dateTime"
    versions = (1, 2)

    def validate(self, node: NodeSpec) -> list[ValidationIssue]:
        issues = super().validate(node)
        params = node.parameters
        if float(node.type_version) < 2:
            action = params.get("action", "format")
            if action not in ("format", "calculate"):
                return [*issues, ValidationIssue(f"unknown action '{action}' (expected 'format' or 'calculate')", node.name,
                                                 "action")]
            if action == "calculate":
                operation = params.get("operation", "add")
                if operation not in ("add", "subtract"):
                    issues.append(ValidationIssue(f"unknown operation '{operation}'", node.name, "operation"))
                unit = params.get("timeUnit", "days")
                if isinstance(unit, str) and not unit.startswith("=") and unit not in UNIT_ALIASES:
                    issues.append(ValidationIssue(f"unknown time unit '{unit}'", node.name, "timeUnit"))
            return issues
        operation = params.get("operation", "getCurrentDate")
        if operation not in V2_OPERATIONS:
            return [*issues, ValidationIssue(f"unknown operation '{operation}' (expected one of {', '.join(V2_OPERATIONS)})",
                                             node.name, "operation")]
        if operation in ("addToDate", "subtractFromDate"):
            unit = params.get("timeUnit", "days")
            if isinstance(unit, str) and not unit.startswith("=") and unit not in UNIT_ALIASES:
                issues.append(ValidationIssue(f"unknown time unit '{unit}'", node.name, "timeUnit"))
        if operation == "roundDate":
            mode = params.get("mode", "roundDown")
            if mode not in ("roundDown", "roundUp"):
                issues.append(ValidationIssue(f"unknown mode '{mode}'", node.name, "mode"))
        if operation == "extractDate":
            part = params.get("part", "month")
            if isinstance(part, str) and not part.startswith("=") and part not in EXTRACT_PARTS:
                issues.append(ValidationIssue(f"unknown part '{part}'", node.name, "part"))
        return issues

    def execute(self, ctx: NodeContext) -> Outputs:
        zone_name = workflow_timezone(ctx)
        if float(ctx.node.type_version) < 2:
            return [self._execute_v1(ctx, zone_name)]
        return [self._execute_v2(ctx, zone_name)]

    # ---------------------------------------------------------------- v1 (moment)

    def _execute_v1(self, ctx: NodeContext, zone_name: str) -> list[Item]:
        local = get_zone(zone_name)
        action = ctx.param("action", 0, "format")
        result: list[Item] = []
        for index, item in enumerate(ctx.input_items(0)):
            property_name = js_string(ctx.param("dataPropertyName", index, "data"))
            if action == "format":
                value = self._v1_format(ctx, index, local, zone_name)
                if value is None:
                    continue
            elif action == "calculate":
                value = self._v1_calculate(ctx, index, local)
            else:
                raise NodeError(f"Unknown action '{action}'", item_index=index)
            json_data = deep_copy(item.get("json") or {}) if "." in property_name else dict(item.get("json") or {})
            json_data[property_name] = value
            new_item: Item = {"json": json_data, "pairedItem": {"item": index}}
            if item.get("binary") is not None:
                new_item["binary"] = item["binary"]
            result.append(new_item)
        return result

    @staticmethod
    def _v1_format(ctx: NodeContext, index: int, local: Any, zone_name: str) -> str | None:
        current = ctx.param("value", index, "")
        to_format = js_string(ctx.param("toFormat", index, "MM/DD/YYYY"))
        options = ctx.param("options", index, {}) or {}
        if isinstance(current, datetime):
            current = current.isoformat()
        current = to_number_input(current)
        if current is None:
            return None
        from_format = options.get("fromFormat")
        if from_format is None and moment_default(current, local) is None:
            raise NodeError('The date input format could not be recognized. Please set the "From Format" field',
                            item_index=index)
        from_tz, to_tz = options.get("fromTimezone"), options.get("toTimezone")
        moment: datetime | None
        if isinstance(current, (int, float)) and not isinstance(current, bool) and float(current).is_integer():
            moment = numeric_date(current).astimezone(local)
        elif from_tz or to_tz:
            source_zone = get_zone(from_tz or zone_name)
            if from_format:
                moment = moment_parse(js_string(current), js_string(from_format), source_zone)
            else:
                moment = moment_default(current, source_zone)
        elif from_format:
            moment = moment_parse(js_string(current), js_string(from_format), local)
        else:
            moment = moment_default(current, local)
        if moment is None:
            return "Invalid date"
        if from_tz or to_tz:
            moment = moment.astimezone(get_zone(to_tz or zone_name))
        return moment_format(moment, to_format)

    @staticmethod
    def _v1_calculate(ctx: NodeContext, index: int, local: Any) -> str:
        value = ctx.param("value", index, "")
        operation = ctx.param("operation", index, "add")
        duration = js_number(ctx.param("duration", index, 0))
        unit = js_string(ctx.param("timeUnit", index, "days"))
        from_format = (ctx.param("options", index, {}) or {}).get("fromFormat")
        if is_nan(duration):
            raise NodeError("The duration must be a number", item_index=index)
        if from_format:
            moment = moment_parse(js_string(value), js_string(from_format), local, strict=True)
            if moment is None:
                raise NodeError('Date input cannot be parsed. Please recheck the value and the "From Format" field.',
                                item_index=index)
        else:
            moment = js_date_parse(value, local)
            if moment is None:
                raise NodeError('Unrecognized date input. Please specify a format in the "From Format" field.',
                                item_index=index)
            moment = moment.astimezone(local)
        if unit not in UNIT_ALIASES:
            raise NodeError(f"Unknown time unit '{unit}'", item_index=index)
        moved = shift(moment, unit, duration if operation == "add" else -duration)
        utc = moved.astimezone(UTC)
        return utc.strftime("%Y-%m-%dT%H:%M:%S") + f".{_millis(utc):03d}Z"

    # ---------------------------------------------------------------- v2 (Luxon)

    def _execute_v2(self, ctx: NodeContext, zone_name: str) -> list[Item]:
        operation = ctx.param("operation", 0, "getCurrentDate")
        if operation not in V2_OPERATIONS:
            raise NodeError(f"Unknown operation '{operation}'")
        result: list[Item] = []
        for index, item in enumerate(ctx.input_items(0)):
            options = ctx.param("options", index, {}) or {}
            field = js_string(ctx.param("outputFieldName", index, V2_DEFAULT_FIELD[operation]))
            value = self._v2_value(ctx, operation, index, options, zone_name)
            json_data = dict(item.get("json") or {}) if options.get("includeInputFields") else {}
            if "." in field and options.get("includeInputFields"):
                json_data = deep_copy(item.get("json") or {})
                path_set(json_data, field, value)
            else:
                json_data[field] = value
            result.append({"json": json_data, "pairedItem": {"item": index}})
        return result

    @staticmethod
    def _v2_value(ctx: NodeContext, operation: str, index: int, options: dict[str, Any], zone_name: str) -> Any:
        if operation == "getCurrentDate":
            include_time = ctx.param("includeTime", index, True)
            zone = get_zone(options.get("timezone") or zone_name)
            now = datetime.now(UTC).astimezone(zone)
            return luxon_iso(now if include_time else start_of(now, "days"))
        if operation in ("addToDate", "subtractFromDate"):
            date = parse_date_v2(ctx.param("magnitude", index, ""), zone_name, index)
            unit = js_string(ctx.param("timeUnit", index, "days"))
            duration = js_number(ctx.param("duration", index, 0))
            if unit not in UNIT_ALIASES:
                raise NodeError(f"Unknown time unit '{unit}'", item_index=index)
            if is_nan(duration):
                raise NodeError("The duration must be a number", item_index=index)
            return luxon_iso(shift(date, unit, duration if operation == "addToDate" else -duration))
        if operation == "formatDate":
            raw = ctx.param("date", index, "")
            fmt = js_string(ctx.param("format", index, "MM/dd/yyyy"))
            if fmt == "custom":
                fmt = js_string(ctx.param("customFormat", index, ""))
            from_format = options.get("fromFormat")
            date = parse_date_v2(raw, zone_name if options.get("timezone") else None, index,
                                 js_string(from_format) if from_format else None)
            return luxon_format(date, fmt)
        if operation == "roundDate":
            date = parse_date_v2(ctx.param("date", index, ""), zone_name, index)
            mode = ctx.param("mode", index, "roundDown")
            if mode == "roundDown":
                return luxon_iso(start_of(date, js_string(ctx.param("toNearest", index, "month"))))
            if mode == "roundUp":
                unit = js_string(ctx.param("to", index, "month"))
                return luxon_iso(start_of(shift(date, unit, 1), unit))
            raise NodeError(f"Unknown mode '{mode}'", item_index=index)
        if operation == "getTimeBetweenDates":
            start = parse_date_v2(ctx.param("startDate", index, ""), zone_name, index)
            end = parse_date_v2(ctx.param("endDate", index, ""), zone_name, index)
            units = ctx.param("units", index, ["day"]) or ["day"]
            units = [units] if isinstance(units, str) else units
            diff = luxon_diff(start, end, [js_string(u) for u in units])
            return iso_duration(diff) if options.get("isoString") else diff
        date = parse_date_v2(ctx.param("date", index, ""), zone_name, index)
        part = js_string(ctx.param("part", index, "month"))
        parts = {"year": date.year, "quarter": (date.month - 1) // 3 + 1, "month": date.month,
                 "week": date.isocalendar()[1], "day": date.day, "hour": date.hour, "minute": date.minute,
                 "second": date.second, "millisecond": _millis(date), "weekday": date.isoweekday(),
                 "weekNumber": date.isocalendar()[1], "ordinal": date.timetuple().tm_yday}
        if part not in parts:
            raise NodeError(f"Unknown date part '{part}'", item_index=index)
        return parts[part]
