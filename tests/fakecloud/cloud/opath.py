"""OPATH, the language of the Exchange cmdlets' -Filter parameter.

opath_parse(text) turns a filter into a test(view) -> bool over the
recipient views the Get- cmdlets list.  Comparisons: -eq -ne -like
-notlike on any property of the view (case-insensitive, a list matches
if any element does, addresses without their "smtp:" prefix), and -gt
-ge -lt -le; on the date properties (WhenChanged, WhenChangedUTC,
WhenCreated, WhenCreatedUTC) every comparison is between dates.  Values
are 'quoted' ('' is a quote), "quoted" ("" is a quote), $null, $true,
$false or a bare word; -and -or -not and parentheses combine them.
A syntax error, an unknown property or a date that does not parse is
the ParameterBindingException Exchange answers for a bad filter.
"""

import datetime
import re

from .exchange import EXC_BINDING, exo_fail, strip_smtp


OPATH_TOKEN = re.compile(
    r"\s*(?:(?P<lp>\()|(?P<rp>\))|(?P<op>-(?:and|or|not|eq|ne|like|notlike"
    r"|gt|ge|lt|le)\b)|'(?P<sq>(?:[^']|'')*)'|\"(?P<dq>(?:[^\"]|\"\")*)\""
    r"|(?P<var>\$(?:null|true|false)\b)|(?P<word>[A-Za-z][A-Za-z0-9]*))",
    re.I)
ADDRESS_PROPS = {"emailaddresses", "externalemailaddress",
                 "primarysmtpaddress"}
DATE_PROPS = {"whenchanged", "whenchangedutc", "whencreated",
              "whencreatedutc"}
COMPARISONS = ("-eq", "-ne", "-like", "-notlike", "-gt", "-ge", "-lt",
               "-le")
ORDERED = {"-gt": lambda a, b: a > b, "-ge": lambda a, b: a >= b,
           "-lt": lambda a, b: a < b, "-le": lambda a, b: a <= b}

# Date literals.  Documented (filter-properties.md): US month/day/year
# with a 12-hour time, '8/1/2017 2:00:00 PM'.  Also taken (.NET's
# DateTime parsing under en-US takes them too; a guess that Exchange
# does): a 24-hour time ('12/07/2026 09:55:00'), no seconds, no time at
# all, and ISO 8601 ('2026-12-07T09:55:00Z').
US_DATE = re.compile(
    r"(\d{1,2})/(\d{1,2})/(\d{4})(?:\s+(\d{1,2}):(\d{2})(?::(\d{2}))?"
    r"(?:\s*([AaPp][Mm]))?)?")
ISO_DATE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?"
    r"(Z|[+-]00:00)?)?")


def opath_error(text, pos):
    """Exchange's answer to a filter it cannot parse."""
    exo_fail(400, "BadRequest", "Ex9E3C11", EXC_BINDING,
             f"Cannot bind parameter 'Filter' to the target. Exception "
             f"setting \"Filter\": \"Invalid filter syntax. For a "
             f"description of the filter parameter syntax see the command "
             f"help.\n\"{text}\" at position {pos + 1}.\"")


def opath_date_error(value):
    """The answer to a date literal that does not parse (the text is a
    guess, in the form of the other filter errors)."""
    exo_fail(400, "BadRequest", "Ex9E3C13", EXC_BINDING,
             f"Cannot bind parameter 'Filter' to the target. Exception "
             f"setting \"Filter\": \"The value \"{value}\" could not be "
             f"converted to type System.DateTime.\"")


def us_date(match):
    """datetime (UTC) of a US_DATE match, or None if out of range."""
    month, day, year, hour, minute, second, half = match.groups()
    hour, minute, second = int(hour or 0), int(minute or 0), \
        int(second or 0)
    if half is not None:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if half.lower() == "pm" else 0)
    try:
        return datetime.datetime(int(year), int(month), int(day), hour,
                                 minute, second,
                                 tzinfo=datetime.timezone.utc)
    except ValueError:
        return None


def iso_date(match):
    """datetime (UTC) of an ISO_DATE match, or None if out of range."""
    year, month, day, hour, minute, second, _ = match.groups()
    try:
        return datetime.datetime(int(year), int(month), int(day),
                                 int(hour or 0), int(minute or 0),
                                 int(second or 0),
                                 tzinfo=datetime.timezone.utc)
    except ValueError:
        return None


def parse_date(value):
    """A filter's date literal as a UTC datetime, or None.  Exchange
    Online's servers run in UTC, so WhenChanged and WhenChangedUTC read
    the same literal the same way (a guess)."""
    text = str(value).strip()
    match = US_DATE.fullmatch(text)
    if match is not None:
        return us_date(match)
    match = ISO_DATE.fullmatch(text)
    return iso_date(match) if match is not None else None


def view_date(value):
    """A view's date value (ISO 8601, 'Z') as a UTC datetime, or None."""
    if not isinstance(value, str):
        return None
    match = ISO_DATE.match(value)
    return iso_date(match) if match is not None else None


def tokenize(text):
    """[(kind, value, position)] of a filter; kinds lp, rp, op, var, str,
    word.  A character no token starts with is a syntax error."""
    tokens, pos = [], 0
    while pos < len(text):
        if not text[pos:].strip():
            break
        match = OPATH_TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            opath_error(text, pos)
        kind = match.lastgroup
        value = match.group(kind)
        if kind == "sq":
            kind, value = "str", value.replace("''", "'")
        elif kind == "dq":
            kind, value = "str", value.replace('""', '"')
        elif kind in ("op", "var"):
            value = value.lower()
        tokens.append((kind, value,
                       match.start(kind if kind != "str" else 0)))
        pos = match.end()
    return tokens


def view_property(view, prop):
    """The key of the view that names prop (case-insensitive, annotations
    left out); an unknown one is the filter error Exchange answers."""
    key = prop.lower()
    name = next((k for k in view if k.lower() == key and "@" not in k),
                None)
    if name is None:
        exo_fail(400, "BadRequest", "Ex9E3C12", EXC_BINDING,
                 f"Cannot bind parameter 'Filter' to the target. "
                 f"Exception setting \"Filter\": \"The property "
                 f"'{prop}' is not a recognized filterable property.\"")
    return name


def text_test(key, op, want, values):
    """-eq -ne -like -notlike -gt -ge -lt -le on text: any value
    matching (case-insensitive); the ordered ones compare the text
    (a guess: Exchange compares non-date values as it stores them)."""
    target = want.lower()
    if key in ADDRESS_PROPS:
        target = strip_smtp(target)
        values = [strip_smtp(h) for h in values]
    values = [str(h).lower() for h in values if h is not None]
    if op in ORDERED:
        return any(ORDERED[op](h, target) for h in values)
    if op in ("-like", "-notlike"):
        pattern = re.compile("^" + ".*".join(
            re.escape(p) for p in target.split("*")) + "$", re.S)
        hit = any(pattern.match(h) for h in values)
    else:
        hit = target in values
    return hit if op == "-like" or op == "-eq" else not hit


def date_test(op, want, have):
    """A comparison between a date property and a date literal (already
    parsed); a property without a value never matches."""
    if have is None:
        return op == "-ne"
    if op in ORDERED:
        return ORDERED[op](have, want)
    if op in ("-eq", "-like"):
        return have == want
    return have != want


def comparison(prop, op, val):
    """test(view) for one `prop op value` comparison."""
    key = prop.lower()
    if val[0] == "var":
        want = {"$null": None, "$true": True, "$false": False}[val[1]]
    else:
        want = val[1]
    when = None
    if key in DATE_PROPS and isinstance(want, str):
        when = parse_date(want)
        if when is None:
            opath_date_error(want)

    def test(view):
        have = view[view_property(view, prop)]
        values = have if isinstance(have, list) else [have]
        if when is not None:
            return date_test(op, when, view_date(have))
        if want is None:
            hit = all(h in (None, "") for h in values)
        elif isinstance(want, bool):
            hit = any(h is want or str(h).lower() == str(want).lower()
                      for h in values)
        else:
            return text_test(key, op, want, values)
        return hit if op in ("-eq", "-like") else not hit
    return test


class Parser:
    """Recursive descent over the tokens: or_expr := and_expr (-or
    and_expr)*; and_expr := unary (-and unary)*; unary := -not unary |
    ( or_expr ) | property op value."""

    def __init__(self, text, tokens):
        self.text = text
        self.tokens = tokens
        self.i = 0

    def peek(self):
        """The next token, or an end token."""
        if self.i < len(self.tokens):
            return self.tokens[self.i]
        return ("end", None, len(self.text))

    def take(self):
        """Consume and return the next token."""
        tok = self.peek()
        self.i += 1
        return tok

    def joined(self, op, term, combine):
        """term (op term)*, folded left with combine(a, b)."""
        left = term()
        while self.peek()[:2] == ("op", op):
            self.take()
            left = combine(left, term())
        return left

    def or_expr(self):
        """Alternatives joined by -or."""
        return self.joined("-or", self.and_expr,
                           lambda a, b: lambda v: a(v) or b(v))

    def and_expr(self):
        """Terms joined by -and."""
        return self.joined("-and", self.unary,
                           lambda a, b: lambda v: a(v) and b(v))

    def unary(self):
        """-not, a parenthesised expression or one comparison."""
        tok = self.peek()
        if tok[:2] == ("op", "-not"):
            self.take()
            inner = self.unary()
            return lambda v: not inner(v)
        if tok[0] == "lp":
            self.take()
            inner = self.or_expr()
            if self.take()[0] != "rp":
                opath_error(self.text, self.peek()[2])
            return inner
        if tok[0] != "word":
            opath_error(self.text, tok[2])
        prop = self.take()[1]
        op = self.take()
        if op[0] != "op" or op[1] not in COMPARISONS:
            opath_error(self.text, op[2])
        val = self.take()
        if val[0] not in ("str", "var", "word"):
            opath_error(self.text, val[2])
        return comparison(prop, op[1], val)


def opath_parse(text):
    """test(view) -> bool for an OPATH filter; raises Reply (400
    ParameterBindingException) on a bad one."""
    text = str(text)
    tokens = tokenize(text)
    if not tokens:
        opath_error(text, 0)
    parser = Parser(text, tokens)
    tree = parser.or_expr()
    if parser.peek()[0] != "end":
        opath_error(text, parser.peek()[2])
    return tree
