"""The condition language shared by scoring rules and assignment routing.

A condition is data: ``{"field": "signals.timeline", "op": "lte", "value": "90d"}``.
A list of conditions is joined by ``all`` (every one must hold) or ``any``
(at least one). :func:`evaluate` answers yes or no *and* says why, in words an
admin can read ("timeline 2027-02-15 is within 90 days").

Fields (see :data:`LEAD_FIELDS`)
    the lead's own columns (``name``, ``email``, ``title``, ``domain_class``,
    ``inquiry_count`` ...), ``custom.KEY`` (form fields), ``signals.KEY`` and
    deeper (``signals.budget.amount``), ``organisation.KEY`` and
    ``contact.KEY`` (the linked rows), and ``text`` (subject and message).
    A signal stored as a table (``{"date": ..., "text": ...}``) compares by
    its main value: the first of ``value``, ``date``, ``amount``, ``count``,
    ``text``, ``name``.

Operators (:data:`OPERATORS`)
    ``eq``/``ne`` and ``in``/``not_in`` compare text case- and
    accent-insensitively (and numbers as numbers); ``contains`` looks for any
    of a list of whole words or phrases, case- and accent-insensitively;
    ``matches`` is a regular expression (case-insensitive), checked when it
    is saved: nested or overlapping quantifiers and back-references are
    refused, and it reads at most :data:`MAX_MATCH_INPUT` characters, so its
    cost is bounded; ``gt``/``gte``/``lt``/``lte`` compare numbers, or dates
    when the value is a date (``2027-01-31``) or a duration from the lead's
    latest inquiry (``90d``, ``-30d``, ``12w``, ``3m`` = three calendar months, ``1y``);
    ``exists``/``missing`` ask whether a value is given at all.

A missing value (absent, ``None``, empty text or list) satisfies only
``missing``, ``ne`` and ``not_in``.

Durations count from the lead's latest inquiry, not from the clock, so a
score depends on the lead alone and rescoring later gives the same answer.

The compact text form used by the CLI (``--when``) is parsed by
:func:`parse_condition`: ``signals.timeline within 90d``,
``domain_class = free``, ``title contains cto, ceo, head``,
``inquiry_count >= 2``, ``subject matches ^re:``, ``phone exists``.
:func:`format_condition` writes data back in that form.
"""

import datetime
import difflib
import json
import operator
import re
import re._constants as _sre
import re._parser as _sre_parse
import weakref
from decimal import Decimal

from leadflow.errors import LeadflowError
from leadflow.intake.normalise import fold

OPERATORS = ("eq", "ne", "in", "not_in", "contains", "matches",
             "gt", "gte", "lt", "lte", "exists", "missing")
MATCH_MODES = ("all", "any")

MAX_PATTERN_LENGTH = 256
MAX_MATCH_INPUT = 4096
MAX_LIST_ITEMS = 200

# The lead's own columns that conditions may read.
LEAD_FIELDS = (
    "name", "email", "phone", "company", "title", "website", "country",
    "subject", "message", "channel", "form", "source", "submitted_by", "status",
    "inquiry_count", "domain_class", "email_domain", "needs_review",
    "created_at", "first_inquiry_at", "last_inquiry_at", "text", "score",
)
# Read by routing, never by scoring rules (a score cannot depend on itself).
NOT_FOR_SCORING = frozenset({"score"})
ORGANISATION_FIELDS = ("name", "domain", "website", "size", "employees", "sector", "needs",
                       "country")
CONTACT_FIELDS = ("name", "email", "phone", "title")
OPEN_PREFIXES = ("custom.", "signals.")

_WORD_RE = re.compile(r"\w+")
_ASCII_NON_WORD = {i: " " for i in range(128) if not re.match(r"\w", chr(i))}
_PRIMARY_KEYS = ("value", "date", "amount", "count", "text", "name")


def _fold(text):
    """:func:`fold`, with a fast path for plain ASCII (where it only lower-cases)."""
    if text.isascii():
        return " ".join(text.lower().split())
    return fold(text)


class ConditionError(LeadflowError):
    """A condition (as data) is not valid; ``where`` names the part."""

    def __init__(self, where, problem):
        super().__init__(where, problem)
        self.where = where
        self.problem = problem

    def __str__(self):
        return f"{self.where}: {self.problem}" if self.where else self.problem


class ConditionSyntaxError(ConditionError):
    """A condition in the compact text form cannot be read; points at the column."""

    def __init__(self, text, column, problem):
        super().__init__("", problem)
        self.text = text
        self.column = column

    def __str__(self):
        return f"{self.problem}\n  {self.text}\n  {' ' * self.column}^"


# ---------------------------------------------------------------------------
# fields

def check_field(field):
    """Raise ConditionError unless ``field`` names something a lead has."""
    if not isinstance(field, str) or not field:
        raise ConditionError("field", "must be a field name such as 'title' or 'signals.budget'")
    if field in LEAD_FIELDS:
        return field
    for prefix in OPEN_PREFIXES:
        if field.startswith(prefix) and len(field) > len(prefix):
            if not re.fullmatch(r"[\w-]+(\.[\w-]+)*", field[len(prefix):]):
                raise ConditionError("field", f"{field!r} is not a valid field path")
            return field
    for prefix, names in (("organisation.", ORGANISATION_FIELDS), ("contact.", CONTACT_FIELDS)):
        if field.startswith(prefix):
            if field[len(prefix):] in names:
                return field
            raise ConditionError("field", f"unknown field {field!r}; {prefix[:-1]} has "
                                          + ", ".join(names))
    known = list(LEAD_FIELDS) + [f"organisation.{n}" for n in ORGANISATION_FIELDS] + \
        [f"contact.{n}" for n in CONTACT_FIELDS]
    close = difflib.get_close_matches(field, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConditionError("field", f"unknown field {field!r}{hint}; use a lead field, "
                                  "custom.KEY, signals.KEY, organisation.KEY or contact.KEY")


def label(field):
    """How a field is named in reasons: ``signals.timeline`` -> ``timeline``."""
    return field[len("signals."):] if field.startswith("signals.") else field


class LeadView:
    """Attribute lookup over a lead, its contact and its organisation.

    ``lead`` is a Lead (saved or not) or a dict of its columns (as read by a
    batch). ``contact`` / ``organisation`` may be given to avoid a query; else
    they are read through the lead's foreign keys. Values are cached per view.
    """

    __slots__ = ("lead", "_contact", "_organisation", "_cache", "_reference")

    _UNSET = object()

    def __init__(self, lead, contact=_UNSET, organisation=_UNSET, reference=None):
        self.lead = lead
        self._contact = contact
        self._organisation = organisation
        self._cache = {}  # field -> value; (kind, field) -> derived (folded, words, ...)
        self._reference = reference

    def _own(self, name):
        lead = self.lead
        if isinstance(lead, dict):
            return lead.get(name)
        return getattr(lead, name, None)

    def _related(self, kind):
        value = self._contact if kind == "contact" else self._organisation
        if value is LeadView._UNSET:
            value = None
            lead = self.lead
            if not isinstance(lead, dict):
                try:
                    value = getattr(lead, kind)
                except Exception:  # a dangling key reads as no row  # noqa: BLE001
                    value = None
            if kind == "contact":
                self._contact = value
            else:
                self._organisation = value
        return value

    @property
    def reference(self):
        """The date durations count from: the lead's latest inquiry (else today)."""
        if self._reference is None:
            when = self._own("last_inquiry_at") or self._own("created_at")
            self._reference = to_date(when) or datetime.datetime.now(datetime.timezone.utc).date()
        return self._reference

    def get(self, field):
        """The value of ``field``, or None when the lead has none."""
        try:
            return self._cache[field]
        except KeyError:
            pass
        value = self._cache[field] = _clean(self._lookup(field))
        return value

    def keys(self, field):
        """The value's comparison keys (a frozenset; one per list item), for eq and in."""
        try:
            return self._cache[("keys", field)]
        except KeyError:
            pass
        value = self.get(field)
        keys = frozenset() if value is None else frozenset(_eq_key(v) for v in _items(value))
        self._cache[("keys", field)] = keys
        return keys

    def number(self, field):
        try:
            return self._cache[("number", field)]
        except KeyError:
            number = self._cache[("number", field)] = to_number(self.get(field))
            return number

    def date(self, field):
        try:
            return self._cache[("date", field)]
        except KeyError:
            date = self._cache[("date", field)] = to_date(self.get(field))
            return date

    def words(self, field):
        """The set of words of the folded value (empty when missing)."""
        try:
            return self._cache[("words", field)]
        except KeyError:
            pass
        value = self.get(field)
        raw = None if value is None or isinstance(value, (list, tuple)) else str(value)
        if raw is not None and raw.isascii():
            # the same words as \w+ on the folded text, without a regex
            words = frozenset(raw.lower().translate(_ASCII_NON_WORD).split())
        else:
            text = self.folded(field)
            words = frozenset(_WORD_RE.findall(text)) if text else frozenset()
        self._cache[("words", field)] = words
        return words

    def lowered(self, field):
        """The value as text to look single words up in (see :func:`_lowered`)."""
        try:
            return self._cache[("lowered", field)]
        except KeyError:
            value = self.get(field)
            text = self._cache[("lowered", field)] = None if value is None else _lowered(value)
            return text

    def folded(self, field):
        """The value as folded text (lists joined), for word matching."""
        try:
            return self._cache[("folded", field)]
        except KeyError:
            pass
        text = self._cache[("folded", field)] = _folded(self.get(field))
        return text

    def _lookup(self, field):
        try:
            kind, head, parts = _FIELD_KINDS[field]
        except KeyError:
            kind, head, parts = _FIELD_KINDS.setdefault(field, _field_kind(field))
        if kind == "own":
            lead = self.lead
            return lead.get(field) if type(lead) is dict else getattr(lead, field, None)
        if kind == "text":
            subject, message = self._own("subject"), self._own("message")
            return "\n".join(p for p in (subject, message) if p) or None
        if kind == "related":
            row = self._related(head)
            if row is None:
                return None
            return row.get(parts) if isinstance(row, dict) else getattr(row, parts, None)
        return _dig(self._own(head), parts)


def _folded(value):
    """A value as folded text (list items joined), for word matching; None stays None."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return _fold(" \n ".join(str(v) for v in value))
    return _fold(str(value))


def _lowered(value):
    """Text in which the single words of ``contains`` are looked for: plain ASCII text only
    lower-cased (folding would only also squeeze its white space, which changes no whole
    word), anything else folded."""
    if value.__class__ is str and value.isascii():
        return value.lower()
    return _folded(value)


def _keys_of(value):
    return frozenset() if value is None else frozenset(_eq_key(v) for v in _items(value))


def _tag(value):
    """A memo key for a value: itself for text, else tagged with its type (1, 1.0 and
    True answer differently); unhashable for a table (not memoised)."""
    cls = value.__class__
    if cls is list or cls is tuple:
        return (list, tuple([v if v.__class__ is str else _tag(v) for v in value]))
    return (cls, value)


# values that are their own memo key: none of them equals a value of another of these types
_PLAIN_KEYS = frozenset({str, int, type(None), datetime.datetime, datetime.date})


def memo_keys(values):
    """Memo keys for a column of values: a value itself when no value of another type can
    equal it (text, whole numbers, times), else :func:`_tag`."""
    plain = _PLAIN_KEYS
    return [v if v.__class__ in plain else _tag(v) for v in values]


_MISS = object()


class _Memo:
    """Derived values remembered per distinct value, while that pays: a field whose values
    hardly repeat (message text) stops being memoised after a trial."""

    __slots__ = ("table", "lookups", "misses")

    TRIAL = 4096
    SIZE = 8192

    def __init__(self):
        self.table = {}
        self.lookups = self.misses = 0

    def map(self, fn, values):
        """``[fn(v) for v in values]``, each distinct value computed once."""
        table = self.table
        get = table.get
        out = []
        append = out.append
        misses = 0
        for value, key in zip(values, memo_keys(values)):
            try:
                got = get(key, _MISS)
            except TypeError:  # a table: not hashable
                append(fn(value))
                continue
            if got is _MISS:
                misses += 1
                got = table[key] = fn(value)
            append(got)
        self.lookups += len(values)
        self.misses += misses
        if len(table) > self.SIZE or (misses * 10 > len(values) * 9 and len(values) >= 100):
            table.clear()  # too many, or nearly all new (texts): they would only be held
            if misses * 10 > len(values) * 9:
                self.lookups = self.misses = self.TRIAL  # it does not pay
        return out

    @property
    def pays(self):
        return self.lookups < self.TRIAL or self.misses * 2 < self.lookups


class LeadColumns:
    """A batch of leads field by field: each field a list with one value per lead.

    Made from rows read straight from the database (:meth:`from_rows`) or from
    :class:`LeadView` s (:meth:`from_views`). Each field is read once for the
    batch, however many rules look at it, and what conditions derive from it
    (comparison keys, numbers, dates, folded text) once per field, shared by
    every condition, and per distinct value while values repeat (titles,
    countries, dates). ``memos`` (a dict) may be shared by the batches of one
    run. :meth:`view` gives one lead as a :class:`LeadView` over the same values,
    for the reasons of a hit. The values are those :meth:`LeadView.get` gives.
    """

    __slots__ = ("size", "_read", "_reference_dates", "_make_view", "_values", "derived",
                 "_views", "_references", "memos", "__weakref__")

    def __init__(self, size, read, references, make_view=None, memos=None):
        self.size = size
        self._read = read
        self._reference_dates = references
        self._make_view = make_view
        self._values = {}
        self.derived = {}
        self._views = {}
        self._references = None
        self.memos = memos if memos is not None else {}

    @classmethod
    def from_views(cls, views, memos=None):
        views = list(views)
        return cls(len(views), lambda field: [v.get(field) for v in views],
                   lambda: [v.reference for v in views], views.__getitem__, memos)

    @classmethod
    def from_rows(cls, column, memos=None):
        """Leads as columns: ``column(name)`` gives a Lead column's values for the batch
        (as a Lead attribute would hold them), and for ``organisation.NAME`` and
        ``contact.NAME`` the linked row's (None where there is no row)."""
        size = len(column("id"))

        def read(field):
            kind, head, parts = field_kind(field)
            if kind == "own":
                return column(field)
            if kind == "text":
                return [s + "\n" + m if s and m else (s or m or None)
                        for s, m in zip(column("subject"), column("message"))]
            if kind == "related":
                return column(field)
            return _dig_column(column(head), parts)

        def references():
            today, out = None, []
            for last, created in zip(column("last_inquiry_at"), column("created_at")):
                date = to_date(last or created)
                if date is None:
                    today = today or datetime.datetime.now(datetime.timezone.utc).date()
                    date = today
                out.append(date)
            return out

        return cls(size, read, references, None, memos)

    def values(self, field):
        """The field's value for every lead (None where there is none)."""
        try:
            return self._values[field]
        except KeyError:
            values = self._values[field] = [v if v else _clean(v) for v in self._read(field)]
            return values

    def references(self):
        """The date durations count from, for every lead (see :attr:`LeadView.reference`)."""
        if self._references is None:
            self._references = self._reference_dates()
        return self._references

    def _derive(self, kind, field, fn):
        try:
            return self.derived[(kind, field)]
        except KeyError:
            pass
        if fn is None:  # memo keys
            values = self.values(field)
            keys = memo_keys(values)
            if kind == "days":
                keys = [v.date() if isinstance(v, datetime.datetime) else k
                        for v, k in zip(values, keys)]
            self.derived[(kind, field)] = keys
            return keys
        memo = self.memos.get((kind, field), _MISS)
        if memo is _MISS:
            memo = self.memos[(kind, field)] = _Memo()
        values = self.values(field)
        if memo is None:
            out = [fn(v) for v in values]
        else:
            out = memo.map(fn, values)
            if not memo.pays:
                self.memos[(kind, field)] = None
        self.derived[(kind, field)] = out
        return out

    def keys(self, field):
        return self._derive("keys", field, _keys_of)

    def numbers(self, field):
        return self._derive("number", field, to_number)

    def dates(self, field):
        return self._derive("date", field, to_date)

    def folded(self, field):
        return self._derive("folded", field, _folded)

    def lowered(self, field):
        return self._derive("lowered", field,
                            lambda v: None if v is None else _lowered(v))

    def tagged(self, field):
        """The values as memo keys (see :func:`memo_keys`)."""
        return self._derive("tagged", field, None)

    def days(self, field):
        """Memo keys for a field that is only compared as a date: a time counts by its
        day (the day is all such a comparison and its reason look at)."""
        return self._derive("days", field, None)

    def view(self, index):
        """Lead number ``index`` as a :class:`LeadView` (made once per batch)."""
        try:
            return self._views[index]
        except KeyError:
            view = self._views[index] = (self._make_view(index) if self._make_view
                                         else _ColumnView(self, index))
            return view


class _ColumnView(LeadView):
    """One lead of a :class:`LeadColumns`, read from its columns (which keep their views:
    a weak reference back, so that a batch is freed as soon as it is done with)."""

    __slots__ = ("_columns", "_index")

    def __init__(self, columns, index):
        super().__init__(None, None, None, reference=columns.references()[index])
        self._columns = weakref.proxy(columns)
        self._index = index

    def get(self, field):
        return self._columns.values(field)[self._index]

    def keys(self, field):
        return self._columns.keys(field)[self._index]

    def number(self, field):
        return self._columns.numbers(field)[self._index]

    def date(self, field):
        return self._columns.dates(field)[self._index]

    def folded(self, field):
        return self._columns.folded(field)[self._index]

    def lowered(self, field):
        return self._columns.lowered(field)[self._index]


def _clean(value):
    """A looked-up value as conditions see it: "", [] and {} are no value (None); 0 and
    False are values."""
    if value is not None and not value and not isinstance(value, (int, float)):
        return None
    return value


def _dig(value, parts):
    """``parts`` looked up in a JSON column's value (signals, custom); a table found at
    the end gives its main value (see the module's docstring)."""
    value = value or {}
    for part in parts:
        if isinstance(value, dict):
            value = value.get(part)
        else:
            return None
    if isinstance(value, dict):
        for key in _PRIMARY_KEYS:
            if value.get(key) not in (None, ""):
                return value[key]
        return None if not value else value
    return value


def _dig_column(values, parts):
    """:func:`_dig` for a column of values."""
    if len(parts) != 1:
        return [_dig(v, parts) for v in values]
    part, out = parts[0], []
    for value in values:
        if isinstance(value, dict):
            value = value.get(part)
            if isinstance(value, dict):
                value = _dig(value, ())
        else:
            value = None
        out.append(value)
    return out


_FIELD_KINDS = {}


def field_kind(field):
    """How a field is read: ``(kind, head, parts)``, kind one of own, text, related, nested."""
    try:
        return _FIELD_KINDS[field]
    except KeyError:
        return _FIELD_KINDS.setdefault(field, _field_kind(field))


def _field_kind(field):
    """How to read a field: ("own", ...), ("text", ...), ("related", head, name) or
    ("nested", head, parts)."""
    if field == "text":
        return ("text", None, None)
    head, _, rest = field.partition(".")
    if not rest:
        return ("own", field, None)
    if head in ("contact", "organisation"):
        return ("related", head, rest)
    if head in ("signals", "custom"):
        return ("nested", head, tuple(rest.split(".")))
    return ("own", field, None)


# ---------------------------------------------------------------------------
# values: numbers, dates, durations

_DURATION_RE = re.compile(
    r"^\s*([+-]?\d{1,5})\s*(d|days?|w|weeks?|m|mo|months?|y|years?)\s*$", re.IGNORECASE)
_UNITS = {"d": (1, "days"), "w": (7, "days"), "m": (1, "months"), "y": (12, "months")}
_NUMBER_RE = re.compile(r"[-+]?\d[\d,._' ]*")


class Duration(tuple):
    """A signed amount of ``days`` or calendar ``months`` from a reference date."""

    __slots__ = ()

    def __new__(cls, amount, unit):
        return super().__new__(cls, (amount, unit))

    @property
    def amount(self):
        return self[0]

    @property
    def unit(self):
        return self[1]

    def shift(self, date):
        """``date`` moved by this duration; months keep the day, clamped to the month's end."""
        if self.unit == "days":
            return date + datetime.timedelta(days=self.amount)
        month = date.month - 1 + self.amount
        year, month = date.year + month // 12, month % 12 + 1
        last = (datetime.date(year + month // 12, month % 12 + 1, 1) - datetime.timedelta(days=1)).day
        return datetime.date(year, month, min(date.day, last))

    def words(self):
        """``90 days``, ``3 months``, ``1 month`` (absolute amount)."""
        n = abs(self.amount)
        return f"{n} {self.unit if n != 1 else self.unit[:-1]}"


def parse_duration(value):
    """``"90d"`` -> 90 days, ``"-30 days"``, ``"12w"`` -> 84 days, ``"3m"`` -> 3 calendar
    months, ``"1y"`` -> 12 months; None if ``value`` is not a duration."""
    if not isinstance(value, str):
        return None
    m = _DURATION_RE.match(value)
    if not m:
        return None
    unit = m.group(2).lower()
    unit = "m" if unit.startswith("mo") or unit == "m" else unit[0]
    factor, kind = _UNITS[unit]
    return Duration(int(m.group(1)) * factor, kind)


def to_date(value):
    """A date from a date, datetime or ISO text (``2027-02``, ``2027-02-15``...); else None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, datetime.date):
        return value
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d{4}-\d{2}", text):
            text += "-01"
        try:
            return datetime.date.fromisoformat(text[:10]) if len(text) >= 10 else None
        except ValueError:
            return None
    return None


def to_number(value):
    """A number from a number or text ("40", "12,000", "40 users"); else None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, str):
        m = _NUMBER_RE.search(value)
        if not m:
            return None
        digits = m.group(0).strip().replace(" ", "").replace("'", "").replace("_", "")
        # 12,000 and 12.000 are thousands; 12,5 and 12.5 a fraction
        if re.fullmatch(r"[-+]?\d{1,3}([,.]\d{3})+", digits):
            digits = digits.replace(",", "").replace(".", "")
        else:
            digits = digits.replace(",", ".")
            if digits.count(".") > 1:
                return None
        try:
            number = float(digits.rstrip("."))
        except ValueError:
            return None
        return int(number) if number.is_integer() else number
    return None


def _is_date_value(value):
    return isinstance(value, str) and (parse_duration(value) is not None or to_date(value) is not None)


def _show(value):
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(_show(v) for v in value)
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()[:10]
    text = str(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------------
# regular expressions: checked when saved, bounded when run

_ALPHABET = "".join(chr(i) for i in range(32, 127)) + "\t\n\r\u00a0\u00e9\u00fc\u00df\u0416\u4e2d\u0660"
_ALL = frozenset(_ALPHABET)
_CATEGORY = {}
for _name, _pattern in (("DIGIT", r"\d"), ("NOT_DIGIT", r"\D"), ("SPACE", r"\s"),
                        ("NOT_SPACE", r"\S"), ("WORD", r"\w"), ("NOT_WORD", r"\W")):
    _CATEGORY[getattr(_sre, "CATEGORY_" + _name)] = frozenset(
        c for c in _ALPHABET if re.match(_pattern, c))


def _case(c):
    return {x for x in (c, c.lower(), c.upper()) if len(x) == 1}


def _charset(op, av):
    """The sample characters a single-character item can match (conservative)."""
    if op == _sre.LITERAL:
        return frozenset(_case(chr(av)))
    if op == _sre.NOT_LITERAL:
        return _ALL - _case(chr(av))
    if op == _sre.ANY:
        return _ALL
    if op == _sre.CATEGORY:
        return _CATEGORY.get(av, _ALL)
    if op == _sre.IN:
        chars, negate = set(), False
        for item_op, item_av in av:
            if item_op == _sre.NEGATE:
                negate = True
            elif item_op == _sre.LITERAL:
                chars |= _case(chr(item_av))
            elif item_op == _sre.RANGE:
                lo, hi = item_av
                for c in _ALPHABET:
                    if any(lo <= ord(x) <= hi for x in _case(c)):
                        chars.add(c)
            elif item_op == _sre.CATEGORY:
                chars |= _CATEGORY.get(item_av, _ALL)
            else:
                return _ALL
        return frozenset(_ALL - chars if negate else chars)
    return None


def _chars(items):
    """Every sample character anything in ``items`` may match (conservative)."""
    out = set()
    for op, av in items:
        single = _charset(op, av)
        if single is not None:
            out |= single
        elif op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT):
            out |= _chars(av[2])
        elif op == _sre.SUBPATTERN:
            out |= _chars(av[3])
        elif op == _sre.BRANCH:
            for alt in av[1]:
                out |= _chars(alt)
        elif op == _sre.ATOMIC_GROUP:
            out |= _chars(av)
        elif op in (_sre.AT, _sre.ASSERT, _sre.ASSERT_NOT):
            continue
        else:
            return set(_ALL)
    return out


def _first_chars(items):
    """Sample characters the sequence ``items`` can start with (conservative)."""
    out = set()
    for op, av in items:
        single = _charset(op, av)
        if single is not None:
            return out | single
        if op in (_sre.AT, _sre.ASSERT, _sre.ASSERT_NOT):
            continue
        if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT):
            out |= _first_chars(av[2])
            if av[0] > 0:
                return out
            continue
        if op == _sre.SUBPATTERN:
            return out | _first_chars(av[3])
        return out | _ALL
    return out | _ALL  # may be empty: anything may follow


def _variable(op, av):
    return op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT) and av[1] != av[0]


def _walk_regex(items, pending):
    """Check a sequence; ``pending`` are char sets of unbounded repeats that may
    still be backtracking into the text that follows. Returns the new pending."""
    for op, av in items:
        if op in (_sre.GROUPREF, _sre.GROUPREF_EXISTS):
            raise ConditionError("value", "back-references are not allowed in a rule's pattern")
        if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT):
            lo, hi, body = av
            if hi > 1:
                if _has_variable_repeat(body):
                    raise ConditionError(
                        "value", "nested quantifiers such as (a+)+ can take forever; "
                                 "write the pattern without a quantifier inside a quantifier")
                _check_branches(body)
            _walk_regex(body, [])
            if hi == _sre.MAXREPEAT or hi > 16:
                chars = _chars(body)
                if any(chars & prev for prev in pending):
                    raise ConditionError(
                        "value", "two quantifiers here can match the same text (like '.*.*' or "
                                 "'.*x.*'); a pattern is searched anywhere, so drop a leading or "
                                 "trailing '.*' or make the parts distinct")
                pending = pending + [frozenset(chars)] if lo == 0 else [frozenset(chars)] + [
                    p for p in pending if p & chars]
            continue
        if op == _sre.POSSESSIVE_REPEAT:
            _walk_regex(av[2], [])
            continue
        if op == _sre.ATOMIC_GROUP:
            _walk_regex(av, [])
            continue
        if op == _sre.SUBPATTERN:
            pending = _walk_regex(av[3], pending)
            continue
        if op == _sre.BRANCH:
            merged = []
            for alt in av[1]:
                for p in _walk_regex(alt, list(pending)):
                    if p not in merged:
                        merged.append(p)
            pending = merged
            continue
        if op in (_sre.ASSERT, _sre.ASSERT_NOT):
            _walk_regex(av[1], [])
            continue
        single = _charset(op, av)
        if single is not None:
            pending = [p for p in pending if p & single]
    return pending


def _has_variable_repeat(items):
    for op, av in items:
        if _variable(op, av):
            return True
        # possessive repeats and atomic groups never backtrack into themselves
        if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT) and _has_variable_repeat(av[2]):
            return True
        if op == _sre.SUBPATTERN and _has_variable_repeat(av[3]):
            return True
        if op == _sre.BRANCH and any(_has_variable_repeat(alt) for alt in av[1]):
            return True
    return False


def _check_branches(items):
    """Alternatives under a quantifier must not start alike: (a|ab)* backtracks badly."""
    for op, av in items:
        if op == _sre.SUBPATTERN:
            _check_branches(av[3])
        elif op == _sre.BRANCH:
            seen = set()
            for alt in av[1]:
                first = _first_chars(alt)
                if first & seen or not alt:
                    raise ConditionError(
                        "value", "alternatives inside a quantifier overlap (like (a|ab)*); "
                                 "make each alternative start differently")
                seen |= first


def compile_pattern(pattern):
    """Check a rule's regular expression and compile it (case-insensitive).

    Refuses what could take super-linear time on a long input: nested
    quantifiers, overlapping alternatives or neighbouring quantifiers,
    back-references; and patterns longer than :data:`MAX_PATTERN_LENGTH`.
    """
    if not isinstance(pattern, str) or not pattern:
        raise ConditionError("value", "must be a non-empty regular expression")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ConditionError("value", f"pattern is longer than {MAX_PATTERN_LENGTH} characters")
    try:
        parsed = _sre_parse.parse(pattern, re.IGNORECASE)
        compiled = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ConditionError("value", f"not a valid regular expression: {exc}") from None
    _walk_regex(list(parsed), [])
    return compiled


def required_text(pattern):
    """Lower-case ASCII strings one of which any match of ``pattern`` (case-insensitive)
    must contain, or None when no such set is known. Plain ASCII text without any of
    them cannot match, so it need not be searched (the regex runs on all other text)."""
    try:
        parsed = _sre_parse.parse(pattern, re.IGNORECASE)
    except re.error:
        return None
    needs = _required(list(parsed))
    return tuple(sorted(set(needs))) if needs else None


def _required(items):
    """For a sequence: the best set of strings one of which must occur (None: none)."""
    best, run = None, []

    def better(a, b):
        if b is None or not all(b):
            return a
        if a is None or min(map(len, b)) > min(map(len, a)):
            return b
        return a

    for op, av in items:
        if op == _sre.LITERAL and av < 128:
            run.append(chr(av).lower())
            continue
        best = better(best, ["".join(run)] if run else None)
        run = []
        if op == _sre.SUBPATTERN:
            best = better(best, _required(list(av[3])))
        elif op == _sre.BRANCH:
            alternatives = [_required(list(alt)) for alt in av[1]]
            if all(alternatives):
                best = better(best, [s for alt in alternatives for s in alt])
        elif op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT) and av[0] >= 1:
            best = better(best, _required(list(av[2])))
        elif op == _sre.ATOMIC_GROUP:
            best = better(best, _required(list(av)))
    return better(best, ["".join(run)] if run else None)


# ---------------------------------------------------------------------------
# validation: data in, canonical data out

def normalise_condition(condition, where="condition"):
    """Validate one condition; return it in canonical form (keys field, op[, value])."""
    if not isinstance(condition, dict):
        raise ConditionError(where, "must be a table with field, op and value")
    unknown = sorted(set(condition) - {"field", "op", "value"})
    if unknown:
        raise ConditionError(f"{where}.{unknown[0]}", "unknown key; a condition has field, op, value")
    field = condition.get("field")
    try:
        check_field(field)
    except ConditionError as exc:
        raise ConditionError(f"{where}.field", exc.problem) from None
    op = condition.get("op")
    if op not in OPERATORS:
        close = difflib.get_close_matches(str(op), OPERATORS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConditionError(f"{where}.op", f"unknown operator {op!r}{hint}; expected one of "
                                            + ", ".join(OPERATORS))
    out = {"field": field, "op": op}
    value = condition.get("value")
    vwhere = f"{where}.value"
    if op in ("exists", "missing"):
        if value is not None:
            raise ConditionError(vwhere, f"'{op}' takes no value")
        return out
    if value is None:
        raise ConditionError(vwhere, f"'{op}' needs a value")
    if op in ("in", "not_in", "contains"):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list) or not value:
            raise ConditionError(vwhere, "must be a non-empty list")
        if len(value) > MAX_LIST_ITEMS:
            raise ConditionError(vwhere, f"at most {MAX_LIST_ITEMS} items")
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                raise ConditionError(f"{vwhere}[{i}]", f"{item!r} is not a word or number")
            if op == "contains" and not fold(str(item)):
                raise ConditionError(f"{vwhere}[{i}]", "an empty word matches nothing")
        out["value"] = list(value)
        return out
    if op == "matches":
        try:
            compile_pattern(value)
        except ConditionError as exc:
            raise ConditionError(vwhere, exc.problem) from None
        out["value"] = value
        return out
    if op in ("gt", "gte", "lt", "lte"):
        if isinstance(value, bool) or not (isinstance(value, (int, float)) or _is_date_value(value)):
            raise ConditionError(vwhere, f"{value!r} is not a number, a date (2027-01-31) "
                                         "or a duration (90d, -30d, 12w, 3m, 1y)")
        out["value"] = value
        return out
    # eq, ne
    if not isinstance(value, (str, int, float, bool)):
        raise ConditionError(vwhere, f"{value!r} is not a single text, number or true/false")
    out["value"] = value
    return out


def normalise_conditions(conditions, match="all", where="conditions"):
    """Validate a list of conditions and the way they join; return canonical copies."""
    if match not in MATCH_MODES:
        raise ConditionError("match", f"{match!r} is not 'all' or 'any'")
    if not isinstance(conditions, list) or not conditions:
        raise ConditionError(where, "at least one condition is needed")
    return [normalise_condition(c, f"{where}[{i}]") for i, c in enumerate(conditions)]


# ---------------------------------------------------------------------------
# evaluation

def _eq_key(value):
    number = to_number(value) if not isinstance(value, str) or _NUMERIC_TEXT.fullmatch(value) else None
    if number is not None:
        return ("n", float(number))
    if isinstance(value, bool):
        return ("t", "true" if value else "false")
    return ("t", _fold(str(value)))


_NUMERIC_TEXT = re.compile(r"\s*[-+]?\d+(\.\d+)?\s*")


def _items(value):
    return value if isinstance(value, (list, tuple)) else (value,)


class Check:
    """One compiled condition: ``test(view)`` -> bool, ``explain(view)`` -> reason."""

    __slots__ = ("condition", "field", "op", "value", "test", "column", "_label", "_regex",
                 "_reasons", "_relative", "_duration", "_within", "_bounded", "_hit_reasons",
                 "_needs")

    def __init__(self, condition):
        self.condition = condition = normalise_condition(condition)
        self.field = field = condition["field"]
        self.op = op = condition["op"]
        self.value = value = condition.get("value")
        self._label = label(field)
        self._reasons = {}
        self._hit_reasons = {}
        self._duration = parse_duration(value) if isinstance(value, str) else None
        self._relative = self._duration is not None
        amount = self._duration.amount if self._relative else 0
        self._within = self._relative and ((op in ("lte", "lt") and amount >= 0)
                                           or (op in ("gte", "gt") and amount <= 0))
        self._needs = None
        self.test = getattr(self, "_make_" + op)(field, value)
        self.column = getattr(self, "_column_" + op)(field, value)

    @property
    def dates(self):
        """True when only the value's date matters (a comparison with a date or duration)."""
        return self.op in _COMPARE_WORDS and isinstance(self.value, str)

    # each _make_OP returns a fast function view -> bool
    def _make_exists(self, field, value):
        return lambda view: view.get(field) is not None

    def _make_missing(self, field, value):
        return lambda view: view.get(field) is None

    def _make_eq(self, field, value):
        key = _eq_key(value)
        return lambda view: key in view.keys(field)

    def _make_ne(self, field, value):
        eq = self._make_eq(field, value)
        return lambda view: not eq(view)

    def _make_in(self, field, value):
        keys = frozenset(_eq_key(v) for v in value)
        return lambda view: not keys.isdisjoint(view.keys(field))

    def _make_not_in(self, field, value):
        inn = self._make_in(field, value)
        return lambda view: not inn(view)

    def _make_contains(self, field, value):
        # single words are looked up in the set of the text's words (one scan of
        # the text per lead for every rule); phrases ("vice president") need a regex
        words = list(dict.fromkeys(_fold(str(w)) for w in value))
        singles = frozenset(w for w in words if _WORD_RE.fullmatch(w))
        phrases = sorted((w for w in words if w not in singles), key=lambda w: (-len(w), w))
        regex = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(w) for w in phrases) + r")(?!\w)") \
            if phrases else None
        self._regex = (words, singles, regex)
        # each word as a whole word, for the reason and for whole columns of text
        self._bounded = [(w, re.compile(r"(?<!\w)" + re.escape(w) + r"(?!\w)"), w in singles)
                         for w in words]

        def test(view):
            tokens = view.words(field)
            if not tokens:
                return False
            if not singles.isdisjoint(tokens):
                return True
            return regex is not None and regex.search(view.folded(field)) is not None
        return test

    def _make_matches(self, field, value):
        regex = compile_pattern(value)
        self._regex = regex
        self._needs = required_text(value)

        def test(view):
            got = view.get(field)
            if got is None:
                return False
            return any(regex.search(str(v)[:MAX_MATCH_INPUT]) is not None for v in _items(got))
        return test

    def _compare(self, field, value, cmp):
        days = parse_duration(value) if isinstance(value, str) else None
        if isinstance(value, str):
            fixed = None if days is not None else to_date(value)
            shifted = {}

            def bound_for(reference):
                try:
                    return shifted[reference]
                except KeyError:
                    shifted[reference] = result = days.shift(reference)
                    return result

            def test(view):
                got = view.date(field)
                if got is None:
                    return False
                bound = fixed if days is None else bound_for(view.reference)
                return cmp(got, bound)
            return test

        def test(view):
            got = view.number(field)
            return got is not None and cmp(got, value)
        return test

    def _make_gt(self, field, value):
        return self._compare(field, value, lambda a, b: a > b)

    def _make_gte(self, field, value):
        return self._compare(field, value, lambda a, b: a >= b)

    def _make_lt(self, field, value):
        return self._compare(field, value, lambda a, b: a < b)

    def _make_lte(self, field, value):
        return self._compare(field, value, lambda a, b: a <= b)

    def _first_word(self, lowered, folded):
        """The first of the words (in the rule's order) that the text holds as a whole
        word, else None: the same answer as looking the words up in the text's set of
        words, without splitting the text (most words are not there at all). Single
        words are looked for in ``lowered`` (see :func:`_lowered`), phrases in the
        folded text, which ``folded()`` gives."""
        if lowered is None:
            return None
        for word, bounded, single in self._bounded:
            text = lowered if single else folded()
            if word in text and bounded.search(text):
                return word
        return None

    def reasons(self, cols, indices):
        """``explain(view, True)`` for the leads at ``indices`` of a :class:`LeadColumns`,
        where this condition holds: remembered per value (and reference date when the
        reason names a date counted from it)."""
        op, name = self.op, self._label
        if op == "exists":
            return [f"{name} is given"] * len(indices)
        if op == "missing":
            return [f"{name} is missing"] * len(indices)
        if op == "contains":
            found = self._found(cols)
            return [f"{name} contains {found[i]!r}" for i in indices]
        if op == "matches":
            return [self.explain(cols.view(i), True) for i in indices]
        keys = cols.days(self.field) if self.dates else cols.tagged(self.field)
        references = cols.references() if self._relative and not self._within else None
        known = self._hit_reasons
        if len(known) > 4096:
            known.clear()
        out = []
        for i in indices:
            key = keys[i] if references is None else (keys[i], references[i])
            try:
                reason = known[key]
            except KeyError:
                reason = known[key] = self._explain(cols.view(i), True)
            except TypeError:  # a table: not hashable
                reason = self._explain(cols.view(i), True)
            out.append(reason)
        return out

    # each _column_OP returns a function LeadColumns -> [bool], one per lead, that
    # answers as test() would on each lead's view
    def _column_exists(self, field, value):
        return lambda cols: [v is not None for v in cols.values(field)]

    def _column_missing(self, field, value):
        return lambda cols: [v is None for v in cols.values(field)]

    def _column_eq(self, field, value):
        key = _eq_key(value)
        return lambda cols: [key in keys for keys in cols.keys(field)]

    def _column_ne(self, field, value):
        key = _eq_key(value)
        return lambda cols: [key not in keys for keys in cols.keys(field)]

    def _column_in(self, field, value):
        wanted = frozenset(_eq_key(v) for v in value)
        return lambda cols: [not wanted.isdisjoint(keys) for keys in cols.keys(field)]

    def _column_not_in(self, field, value):
        wanted = frozenset(_eq_key(v) for v in value)
        return lambda cols: [wanted.isdisjoint(keys) for keys in cols.keys(field)]

    def _column_contains(self, field, value):
        def column(cols):
            return [word is not None for word in self._found(cols)]
        return column

    def _found(self, cols):
        """For each lead of ``cols``: the word :meth:`explain` names (the first found, see
        :meth:`_first_word`), or None when the condition does not hold; made once per
        batch, for the test and the reasons."""
        key = ("found", self)
        try:
            return cols.derived[key]
        except KeyError:
            pass
        lowered = cols.lowered(self.field)
        if self._regex[2] is None:  # single words only
            singles = [(w, bounded) for w, bounded, _single in self._bounded]

            def first(text):
                for word, bounded in singles:
                    if word in text and bounded.search(text):
                        return word
                return None
            found = [None if t is None else first(t) for t in lowered]
        else:
            folded = cols.folded(self.field)
            found = []
            for t, f in zip(lowered, folded):
                word = self._first_word(t, lambda f=f: f)
                # test() says no for a text without any word, whatever phrases it holds
                if word is not None and not _WORD_RE.fullmatch(word) and not _WORD_RE.search(f):
                    word = None
                found.append(word)
        cols.derived[key] = found
        return found

    def _column_matches(self, field, value):
        search = self._regex.search
        needs = self._needs  # the pattern cannot match plain ASCII text without one of these

        def found(v):
            if v.__class__ is str:
                if needs and v.isascii():
                    lowered = v.lower()
                    for need in needs:
                        if need in lowered:
                            break
                    else:
                        return False
                return search(v[:MAX_MATCH_INPUT]) is not None
            return any(search(str(x)[:MAX_MATCH_INPUT]) is not None for x in _items(v))

        return lambda cols: [v is not None and found(v) for v in cols.values(field)]

    def _column_compare(self, field, value, cmp):
        if isinstance(value, str):
            days = parse_duration(value)
            if days is None:
                fixed = to_date(value)
                return lambda cols: [d is not None and cmp(d, fixed) for d in cols.dates(field)]
            shifted = {}

            def column(cols):
                out = []
                for got, reference in zip(cols.dates(field), cols.references()):
                    if got is None:
                        out.append(False)
                        continue
                    try:
                        bound = shifted[reference]
                    except KeyError:
                        bound = shifted[reference] = days.shift(reference)
                    out.append(cmp(got, bound))
                return out
            return column
        return lambda cols: [n is not None and cmp(n, value) for n in cols.numbers(field)]

    def _column_gt(self, field, value):
        return self._column_compare(field, value, operator.gt)

    def _column_gte(self, field, value):
        return self._column_compare(field, value, operator.ge)

    def _column_lt(self, field, value):
        return self._column_compare(field, value, operator.lt)

    def _column_lte(self, field, value):
        return self._column_compare(field, value, operator.le)

    # reasons
    def explain(self, view, hit=None):
        """A readable sentence on why this condition holds (or does not) for ``view``."""
        if hit is None:
            hit = self.test(view)
        got = view.get(self.field)
        if self.op in ("contains", "matches") or isinstance(got, (list, dict)):
            return self._explain(view, hit)
        key = (type(got), got, hit, view.reference if self._relative else None)
        if self._relative and self._within:
            key = (type(got), got, hit, None)  # "is within 3 months": the same from any date
        try:
            return self._reasons[key]
        except KeyError:
            pass
        reason = self._explain(view, hit)
        if len(self._reasons) > 4096:
            self._reasons.clear()
        self._reasons[key] = reason
        return reason

    def _explain(self, view, hit):
        name, op, value = self._label, self.op, self.value
        got = view.get(self.field)
        if op == "exists":
            return f"{name} is given" if hit else f"{name} is missing"
        if op == "missing":
            return f"{name} is missing" if hit else f"{name} is given"
        if got is None:
            return f"{name} is missing"
        shown = _show(got)
        if op in ("eq", "ne"):
            differs = hit if op == "ne" else not hit
            return f"{name} is {shown!r}" + (f", not {_show(value)!r}" if differs else "")
        if op in ("in", "not_in"):
            inside = (op == "in") == hit
            return f"{name} {shown!r} is {'' if inside else 'not '}one of {_show(value)}"
        if op == "contains":
            word = self._first_word(view.lowered(self.field), lambda: view.folded(self.field))
            return f"{name} contains {word!r}" if word else f"{name} has none of {_show(value)}"
        if op == "matches":
            for v in _items(got):
                m = self._regex.search(str(v)[:MAX_MATCH_INPUT])
                if m:
                    return f"{name} matches /{value}/ ({_show(m.group(0))!r})"
            return f"{name} does not match /{value}/"
        return self._explain_compare(view, got, hit)

    def _explain_compare(self, view, got, hit):
        name, op, value = self._label, self.op, self.value
        words = _COMPARE_WORDS[op]
        if isinstance(value, str):
            if view.date(self.field) is None:
                return f"{name} {_show(got)!r} is not a date"
            days = self._duration
            shown = _show(got)
            if days is not None:
                if op in ("lte", "lt") and days.amount >= 0:
                    phrase = f"within {days.words()}" if hit else f"not within {days.words()}"
                elif op in ("gte", "gt") and days.amount <= 0:
                    phrase = f"within the last {days.words()}" if hit else \
                        f"more than {days.words()} ago"
                else:
                    bound = days.shift(view.reference)
                    phrase = f"{'' if hit else 'not '}{words[0]} {bound.isoformat()}"
                return f"{name} {shown} is {phrase}"
            return f"{name} {shown} is {'' if hit else 'not '}{words[0]} {value}"
        number = to_number(got)
        if number is None:
            return f"{name} {_show(got)!r} is not a number"
        sign = words[1] if hit else {"gt": "<=", "gte": "<", "lt": ">=", "lte": ">"}[op]
        return f"{name} {_show(number)} {sign} {_show(value)}"


_COMPARE_WORDS = {"gt": ("after", ">"), "gte": ("on or after", ">="),
                  "lt": ("before", "<"), "lte": ("on or before", "<=")}


class Matcher:
    """Compiled conditions joined by ``all`` or ``any``."""

    __slots__ = ("checks", "match", "_tests", "_any", "fields", "relative", "presence_only",
                 "relative_stable")

    def __init__(self, conditions, match="all"):
        normalised = normalise_conditions(conditions, match)
        self.checks = [Check(c) for c in normalised]
        self.match = match
        self._tests = [c.test for c in self.checks]
        self._any = match == "any"
        # what the answer depends on: these fields' values (and the reference
        # date when a duration is involved); lets a caller memoise answers
        self.fields = tuple(dict.fromkeys(c.field for c in self.checks))
        self.relative = any(c._relative for c in self.checks)
        # only whether values are there matters (and is all the reasons say)
        self.presence_only = all(c.op in ("exists", "missing") for c in self.checks)
        # durations phrased "within N days": the reasons do not depend on the date
        # counted from, only whether the rule holds does
        # (with "any", which conditions held could differ: not stable)
        self.relative_stable = (self.relative and (match == "all" or len(self.checks) == 1)
                                and all(c._within for c in self.checks if c._relative))

    def test(self, view):
        """True when the conditions hold for ``view`` (no reasons: the fast path)."""
        if self._any:
            for t in self._tests:
                if t(view):
                    return True
            return False
        for t in self._tests:
            if not t(view):
                return False
        return True

    def column(self, cols):
        """:meth:`test` for every lead of a :class:`LeadColumns`: a list of bools."""
        return self.combine([c.column(cols) for c in self.checks])

    def combine(self, columns):
        """Each check's column of answers joined into the matcher's."""
        if len(columns) == 1:
            return columns[0]
        return list(map(any if self._any else all, zip(*columns)))

    def reasons_column(self, cols, indices, columns=None):
        """:meth:`reasons_for_hit` for the leads at ``indices`` (all hits); ``columns``
        are the checks' answers when known (needed with ``any``)."""
        checks = self.checks
        if len(checks) == 1:
            return [[r] for r in checks[0].reasons(cols, indices)]
        if not self._any:
            return [list(t) for t in zip(*[c.reasons(cols, indices) for c in checks])]
        if columns is None:
            columns = [c.column(cols) for c in checks]
        out = [[] for _ in indices]
        for check, answers in zip(checks, columns):
            held = [n for n, i in enumerate(indices) if answers[i]]
            for n, reason in zip(held, check.reasons(cols, [indices[n] for n in held])):
                out[n].append(reason)
        return out

    def reasons_for_hit(self, view):
        """The reasons of a known hit (cheaper than :meth:`explain`)."""
        if self._any:
            return [c.explain(view, True) for c in self.checks if c.test(view)]
        return [c.explain(view, True) for c in self.checks]

    def explain(self, view):
        """``(hit, reasons)``: for a hit the conditions that made it; for a miss why not."""
        results = [(c, c.test(view)) for c in self.checks]
        if self._any:
            hit = any(r for _, r in results)
            chosen = [(c, r) for c, r in results if r] if hit else results
        else:
            hit = all(r for _, r in results)
            chosen = results if hit else [(c, r) for c, r in results if not r][:1]
        return hit, [c.explain(view, r) for c, r in chosen]


def evaluate(conditions, match, view):
    """Evaluate conditions on a :class:`LeadView` (or a Lead): ``(bool, reasons)``."""
    if not isinstance(view, LeadView):
        view = LeadView(view)
    return Matcher(conditions, match).explain(view)


# ---------------------------------------------------------------------------
# the compact text form

_SYMBOLS = (">=", "<=", "!=", "==", "=", ">", "<", "~")
_SYMBOL_OPS = {">=": "gte", "<=": "lte", "!=": "ne", "==": "eq", "=": "eq", ">": "gt",
               "<": "lt", "~": "matches"}
_WORD_OPS = {
    "eq": "eq", "is": "eq", "ne": "ne", "in": "in", "not_in": "not_in", "contains": "contains",
    "matches": "matches", "gt": "gt", "gte": "gte", "lt": "lt", "lte": "lte",
    "exists": "exists", "missing": "missing", "within": "within", "before": "lt",
    "after": "gt",
}
_TWO_WORD_OPS = {("not", "in"): "not_in", ("is", "not"): "ne"}
_FIELD_RE = re.compile(r"\s*([A-Za-z_][\w.-]*)")
_NUMBER_LITERAL = re.compile(r"[-+]?\d+(\.\d+)?")


def _scalar(token):
    """A bare word in the text form: numbers become numbers, true/false booleans."""
    if _NUMBER_LITERAL.fullmatch(token):
        return float(token) if "." in token else int(token)
    if token.lower() in ("true", "false"):
        return token.lower() == "true"
    return token


def _read_value(text, start, as_list):
    """Read a value (or comma list) from ``text[start:]``; quoted items stay text."""
    items, i, n = [], start, len(text)
    while True:
        while i < n and text[i] == " ":
            i += 1
        item_start = i
        if i < n and text[i] in "\"'":
            quote, i, buf = text[i], i + 1, []
            while i < n and text[i] != quote:
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(text[i])
                i += 1
            if i >= n:
                raise ConditionSyntaxError(text, item_start, "this quote is never closed")
            i += 1
            items.append("".join(buf))
            while i < n and text[i] == " ":
                i += 1
        else:
            end = text.find(",", i) if as_list else -1
            end = n if end < 0 else end
            token = text[i:end].strip()
            if not token:
                raise ConditionSyntaxError(text, item_start, "a value is missing here")
            items.append(_scalar(token))
            i = end
        if i < n and text[i] == "," and as_list:
            i += 1
            continue
        if i < n:
            raise ConditionSyntaxError(text, i, "unexpected text after the value"
                                       + ("" if as_list else " (quote it if it is part of it)"))
        return items


def parse_condition(text):
    """Parse ``"FIELD OP [VALUE]"`` into condition data; errors point at the column."""
    if not isinstance(text, str) or not text.strip():
        raise ConditionSyntaxError(text or "", 0, "empty condition; write e.g. 'title contains cto'")
    m = _FIELD_RE.match(text)
    if not m:
        raise ConditionSyntaxError(text, len(text) - len(text.lstrip()), "a field name must come first")
    field = m.group(1)
    try:
        check_field(field)
    except ConditionError as exc:
        raise ConditionSyntaxError(text, m.start(1), exc.problem) from None
    i = m.end()
    while i < len(text) and text[i] == " ":
        i += 1
    op_start = i
    op = None
    for sym in _SYMBOLS:
        if text.startswith(sym, i):
            op, i = _SYMBOL_OPS[sym], i + len(sym)
            break
    if op is None:
        wm = re.compile(r"([A-Za-z_]+)").match(text, i)
        if not wm:
            raise ConditionSyntaxError(text, op_start, "an operator is missing here (=, !=, in, "
                                                       "contains, matches, >, within, exists...)")
        word = wm.group(1).lower()
        i = wm.end()
        nm = re.compile(r"\s+([A-Za-z_]+)").match(text, i)
        if nm and (word, nm.group(1).lower()) in _TWO_WORD_OPS:
            op, i = _TWO_WORD_OPS[(word, nm.group(1).lower())], nm.end()
        elif word in _WORD_OPS:
            op = _WORD_OPS[word]
        else:
            close = difflib.get_close_matches(word, list(_WORD_OPS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConditionSyntaxError(text, op_start, f"unknown operator {wm.group(1)!r}{hint}")
    value_start = i
    rest = text[i:].strip()
    if op in ("exists", "missing"):
        if rest:
            raise ConditionSyntaxError(text, value_start + (len(text[i:]) - len(text[i:].lstrip())),
                                       f"'{op}' takes no value")
        return {"field": field, "op": op}
    if not rest:
        raise ConditionSyntaxError(text, len(text), "a value is missing here")
    if op == "within":
        days = parse_duration(rest)
        if days is None:
            raise ConditionSyntaxError(text, value_start + 1,
                                       "'within' needs a duration such as 90d, 12w, 3m or -30d")
        op = "lte" if days.amount >= 0 else "gte"
        value = rest
    elif op == "matches":
        value = rest
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "/\"'":
            value = value[1:-1]
    else:
        as_list = op in ("in", "not_in", "contains")
        items = _read_value(text, value_start, as_list)
        value = items if as_list else items[0]
    condition = {"field": field, "op": op, "value": value}
    try:
        return normalise_condition(condition)
    except ConditionError as exc:
        column = value_start + (len(text[value_start:]) - len(text[value_start:].lstrip()))
        raise ConditionSyntaxError(text, column, exc.problem) from None


def _format_scalar(value, in_list=False):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    bare_ok = (text == text.strip() and text and text[0] not in "\"'"
               and not (in_list and "," in text)
               and _scalar(text) == text and "\\" not in text)
    if bare_ok:
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_OP_TEXT = {"eq": "=", "ne": "!=", "in": "in", "not_in": "not in", "contains": "contains",
            "matches": "matches", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def format_condition(condition):
    """Condition data in the compact text form (the inverse of :func:`parse_condition`)."""
    field, op, value = condition["field"], condition["op"], condition.get("value")
    if op in ("exists", "missing"):
        return f"{field} {op}"
    if op in ("lte", "gte") and isinstance(value, str) and parse_duration(value) is not None:
        days = parse_duration(value)
        if (op == "lte") == (days.amount >= 0) and value == value.strip():
            return f"{field} within {value}"
    if op == "matches":
        return f"{field} matches /{value}/"
    if op in ("in", "not_in", "contains"):
        return f"{field} {_OP_TEXT[op]} " + ", ".join(_format_scalar(v, True) for v in value)
    return f"{field} {_OP_TEXT[op]} {_format_scalar(value)}"


def round_trips(condition):
    """True when the text form reads back as exactly this condition."""
    try:
        again = parse_condition(format_condition(condition))
    except ConditionError:
        return False
    return json.dumps(again, sort_keys=True) == json.dumps(condition, sort_keys=True)
