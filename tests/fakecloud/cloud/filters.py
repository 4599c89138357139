"""Graph $filter on users (and, through objects.ObjectFilterParser, on org
contacts and groups).

FilterParser turns the subset of OData that galbridge and its tests need
into a tree, and notes which parts need the advanced query parameters
(ConsistencyLevel: eventual and $count=true); it refuses what the service
refuses, with the service's codes and texts.  filter_match() evaluates a
tree on one user; filter_candidates() asks the tenant's index first when
the filter lets it.
"""

import re

from .graph import EXTENSION_NAMES, USER_PROPERTIES


ADVANCED_HINT = (" is not supported because the required parameters might "
                 "be missing. Try adding $count=true query parameter and "
                 "ConsistencyLevel:eventual header. Refer to "
                 "https://aka.ms/graph-docs/advanced-queries for more "
                 "information")

# $filter support on user properties (includes/filter-directory-objects.md):
# "default" works without advanced query parameters, "advanced" needs
# ConsistencyLevel: eventual and $count=true.
FILTER_EQ = {
    "default": ["accountEnabled", "ageGroup", "city", "country",
                "creationType", "department", "displayName", "employeeId",
                "externalUserState", "givenName", "id", "jobTitle", "mail",
                "mailNickname", "state", "surname", "usageLocation",
                "userPrincipalName", "userType"],
    "advanced": ["companyName", "employeeType", "mobilePhone",
                 "officeLocation", "postalCode", "preferredLanguage",
                 "streetAddress", "showInAddressList"],
}
FILTER_STARTSWITH = {
    "default": ["city", "country", "department", "displayName",
                "employeeId", "givenName", "mail", "mailNickname", "state",
                "surname", "usageLocation", "userPrincipalName"],
    "advanced": ["companyName", "employeeType", "mobilePhone",
                 "officeLocation", "postalCode", "preferredLanguage",
                 "streetAddress"],
}
FILTER_COLLECTIONS = ["otherMails", "proxyAddresses", "businessPhones",
                      "imAddresses"]
FILTER_ENDSWITH = ["mail", "otherMails", "userPrincipalName",
                   "proxyAddresses"]
FILTER_BOOLEANS = {"accountEnabled", "showInAddressList"}
OPERATOR_NAMES = {"eq": "Equal", "ne": "NotEqualsMatch",
                  "gt": "GreaterThan", "ge": "GreaterThanEquals",
                  "lt": "LessThan", "le": "LessThanEquals"}

FILTER_TOKEN = re.compile(r"""\s*(?:
    (?P<str>'(?:[^']|'')*')
  | (?P<punct>[(),:])
  | (?P<num>-?\d+(?:\.\d+)?)
  | (?P<word>[A-Za-z_$][A-Za-z0-9_./$]*)
  )""", re.X)


class FilterError(Exception):
    """status, code, message of the answer to give."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def unsupported(message):
    return FilterError(400, "Request_UnsupportedQuery", message)


class FilterParser:
    """OData $filter on users, the subset galbridge and its tests need:
    eq/ne with string/bool/null literals ('' doubles a quote), startswith,
    endswith, contains (refused like the service), any() lambdas on string
    collections, and/or/not, parentheses.  parse() returns a tree and
    whether it needs advanced query parameters; the tree is checked as
    the service checks it (unknown property, operator not supported by
    default, incompatible types)."""

    def __init__(self, text):
        self.text = text
        self.tokens = []
        pos = 0
        text = text.rstrip()
        while pos < len(text):
            match = FILTER_TOKEN.match(text, pos)
            if match is None or match.end() == pos:
                raise FilterError(400, "BadRequest",
                                  f"Invalid filter clause: syntax error at "
                                  f"position {pos} in '{self.text}'.")
            kind = match.lastgroup
            value = match.group(kind)
            if kind == "str":
                value = value[1:-1].replace("''", "'")
            elif kind == "num":
                value = float(value) if "." in value else int(value)
            self.tokens.append((kind, value, match.start(kind)))
            pos = match.end()
        self.i = 0
        self.advanced = []        # operators/properties needing AQP

    def syntax(self):
        pos = self.tokens[self.i][2] if self.i < len(self.tokens) \
            else len(self.text)
        return FilterError(400, "BadRequest",
                           f"Invalid filter clause: syntax error at "
                           f"position {pos} in '{self.text}'.")

    def peek(self, kind=None, word=None):
        if self.i >= len(self.tokens):
            return None
        tok = self.tokens[self.i]
        if kind and tok[0] != kind:
            return None
        if word is not None and (tok[0] != "word"
                                 or str(tok[1]).lower() != word):
            return None
        return tok

    def take(self, kind=None, word=None):
        tok = self.peek(kind, word)
        if tok is None:
            raise self.syntax()
        self.i += 1
        return tok

    def parse(self):
        if not self.tokens:
            raise self.syntax()
        tree = self.or_expr()
        if self.i != len(self.tokens):
            raise self.syntax()
        return tree

    def or_expr(self):
        node = self.and_expr()
        while self.peek("word", "or"):
            self.i += 1
            node = ("or", node, self.and_expr())
        return node

    def and_expr(self):
        node = self.unary()
        while self.peek("word", "and"):
            self.i += 1
            node = ("and", node, self.unary())
        return node

    def unary(self):
        if self.peek("word", "not"):
            self.i += 1
            self.advanced.append(("operator", "not"))
            return ("not", self.unary())
        if self.peek("punct") and self.peek()[1] == "(":
            self.i += 1
            node = self.or_expr()
            if self.take("punct")[1] != ")":
                raise self.syntax()
            return node
        return self.primary(None)

    def literal(self):
        tok = self.take()
        if tok[0] == "str":
            return tok[1]
        if tok[0] == "num":
            return tok[1]
        if tok[0] == "word" and tok[1].lower() in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[
                tok[1].lower()]
        raise self.syntax()

    def primary(self, var):
        """A comparison or function call; var is the lambda variable when
        inside any(), whose operand is then that variable."""
        tok = self.take("word")
        name = tok[1]
        low = name.lower()
        if self.peek("punct") and self.peek()[1] == "(":
            if low in ("startswith", "endswith", "contains"):
                self.i += 1
                operand = self.take("word")[1]
                if self.take("punct")[1] != ",":
                    raise self.syntax()
                value = self.literal()
                if self.take("punct")[1] != ")":
                    raise self.syntax()
                prop = self.operand(operand, var)
                return self.function(low, prop, value, var)
            if low.endswith("/any"):
                prop = self.property(name[:-4])
                if prop not in FILTER_COLLECTIONS:
                    raise unsupported(
                        f"Unsupported or invalid query filter clause "
                        f"specified for property '{prop}' of resource "
                        f"'User'.")
                self.i += 1
                lvar = self.take("word")[1]
                if self.take("punct")[1] != ":":
                    raise self.syntax()
                inner = self.primary(lvar)
                if self.take("punct")[1] != ")":
                    raise self.syntax()
                return ("any", prop, inner)
            raise unsupported("Unsupported query.")
        op = self.take("word")[1].lower()
        if op not in OPERATOR_NAMES:
            raise self.syntax()
        value = self.literal()
        prop = self.operand(name, var)
        return self.comparison(prop, op, value, var)

    def operand(self, name, var):
        if var is not None:
            if name != var:
                raise self.syntax()
            return None                   # the lambda variable
        return self.property(name)

    @staticmethod
    def property(name):
        known = {p.lower(): p for p in
                 FILTER_EQ["default"] + FILTER_EQ["advanced"]
                 + FILTER_STARTSWITH["advanced"] + FILTER_COLLECTIONS}
        low = name.lower()
        if low.startswith("onpremisesextensionattributes/"):
            leaf = name.split("/", 1)[1]
            canon = {e.lower(): e for e in EXTENSION_NAMES}.get(leaf.lower())
            if canon is None:
                raise unsupported(f"Property '{leaf}' does not exist as a "
                                  f"declared property or extension "
                                  f"property.")
            return "onPremisesExtensionAttributes/" + canon
        if low in known:
            return known[low]
        if low in {p.lower() for p in USER_PROPERTIES}:
            raise unsupported(f"Unsupported or invalid query filter clause "
                              f"specified for property '{name}' of "
                              f"resource 'User'.")
        raise unsupported(f"Property '{name.split('/')[-1]}' does not exist "
                          f"as a declared property or extension property.")

    def comparison(self, prop, op, value, var):
        if op not in ("eq", "ne"):
            raise unsupported(f"Unsupported property filter clause "
                              f"operator '{OPERATOR_NAMES[op]}'.")
        if op == "ne":
            self.advanced.append(("ne", prop))
        if prop is not None:
            if prop in FILTER_COLLECTIONS:
                raise unsupported(f"Unsupported or invalid query filter "
                                  f"clause specified for property '{prop}' "
                                  f"of resource 'User'.")
            if prop.startswith("onPremisesExtensionAttributes/"):
                self.advanced.append(("extension", prop))
            elif prop in FILTER_EQ["advanced"]:
                self.advanced.append(("property", prop))
            elif value is None:
                self.advanced.append(("null", prop))
            self.check_type(prop, value, op)
        elif not isinstance(value, str):
            self.check_type("", value, op)
        return ("cmp", prop, op, value)

    def function(self, name, prop, value, var):
        label = {"startswith": "startsWith", "endswith": "endsWith",
                 "contains": "Contains"}[name]
        if name == "contains":
            raise unsupported("Unsupported property filter clause operator "
                              "'Contains'.")
        if not isinstance(value, str):
            raise FilterError(400, "BadRequest",
                              f"A binary operator with incompatible types "
                              f"was detected. Found operand types "
                              f"'Edm.String' and '{edm_type(value)}' for "
                              f"operator kind '{label}'.")
        target = prop
        if prop is None:
            target = None
        elif name == "startswith" and prop in FILTER_STARTSWITH["advanced"]:
            self.advanced.append(("property", prop))
        elif name == "startswith" and \
                prop not in FILTER_STARTSWITH["default"]:
            raise unsupported(f"Unsupported or invalid query filter clause "
                              f"specified for property '{prop}' of "
                              f"resource 'User'.")
        if name == "endswith":
            if prop is not None and prop not in FILTER_ENDSWITH:
                raise unsupported(f"Unsupported or invalid query filter "
                                  f"clause specified for property '{prop}' "
                                  f"of resource 'User'.")
            self.advanced.append(("operator", "endsWith"))
        return ("fn", name, target, value)

    @staticmethod
    def check_type(prop, value, op):
        want_bool = prop in FILTER_BOOLEANS
        if value is None:
            return
        if isinstance(value, bool) != want_bool or \
                (not want_bool and not isinstance(value, str)):
            found = edm_type(value)
            expected = "Edm.Boolean" if want_bool else "Edm.String"
            raise FilterError(400, "BadRequest",
                              f"A binary operator with incompatible types "
                              f"was detected. Found operand types "
                              f"'{expected}' and '{found}' for operator "
                              f"kind '{OPERATOR_NAMES[op]}'.")


def edm_type(value):
    if isinstance(value, bool):
        return "Edm.Boolean"
    if isinstance(value, int):
        return "Edm.Int32"
    if isinstance(value, float):
        return "Edm.Double"
    return "Edm.String"


def advanced_refusal(reason):
    """The answer when a filter needs ConsistencyLevel: eventual and
    $count=true but lacks them."""
    kind, what = reason
    if kind == "extension":
        # Observed (msgraph-sdk-php#329) for extensionAttributeN without
        # the advanced query parameters.
        leaf = what.split("/")[-1]
        return unsupported(f"Property '{leaf}' does not exist as a declared "
                           f"property or extension property.")
    if kind == "ne":
        # Observed (microsoft-graph-docs-contrib#3042, #1726).
        return unsupported("Unsupported property filter clause operator "
                           "'NotEqualsMatch'.")
    if kind == "operator":
        # aad-advanced-queries.md, "Error handling" (endsWith example).
        return unsupported(f"Operator '{what}'" + ADVANCED_HINT)
    return unsupported(f"Unsupported or invalid query filter clause "
                       f"specified for property '{what}' of resource "
                       f"'User'.")


def fold(value):
    return value.casefold() if isinstance(value, str) else value


def prop_value(user, prop):
    if prop == "id":
        return user.id
    if prop.startswith("onPremisesExtensionAttributes/"):
        ext = user.props.get("onPremisesExtensionAttributes") or {}
        return ext.get(prop.split("/", 1)[1])
    return user.props.get(prop)


def filter_match(node, user, current=None):
    kind = node[0]
    if kind == "or":
        return filter_match(node[1], user, current) or \
            filter_match(node[2], user, current)
    if kind == "and":
        return filter_match(node[1], user, current) and \
            filter_match(node[2], user, current)
    if kind == "not":
        return not filter_match(node[1], user, current)
    if kind == "any":
        values = user.props.get(node[1]) or []
        return any(filter_match(node[2], user, v) for v in values)
    if kind == "cmp":
        _, prop, op, value = node
        actual = current if prop is None else prop_value(user, prop)
        equal = fold(actual) == fold(value)
        return equal if op == "eq" else not equal
    _, name, prop, value = node
    actual = current if prop is None else prop_value(user, prop)
    if not isinstance(actual, str):
        return False
    actual, value = actual.casefold(), value.casefold()
    return actual.startswith(value) if name == "startswith" \
        else actual.endswith(value)


INDEXED_FILTER_PROPS = ("mail", "userPrincipalName")


def indexed_clause(tenant, node):
    """Users an indexed clause can match (a set of ids), or None when the
    clause is not one the index answers: `prop eq 'v'` on an indexed
    property, an address in otherMails/proxyAddresses any(x: x eq 'v'),
    an `or` of such clauses, an `and` with one."""
    if node is None:
        return None
    if node[0] == "or":
        left = indexed_clause(tenant, node[1])
        right = indexed_clause(tenant, node[2])
        return None if left is None or right is None else left | right
    if node[0] == "and":
        left = indexed_clause(tenant, node[1])
        return left if left is not None else indexed_clause(tenant, node[2])
    if node[0] == "cmp" and node[2] == "eq" and isinstance(node[3], str) \
            and node[1] is not None and \
            (node[1] in INDEXED_FILTER_PROPS or
             node[1].startswith("onPremisesExtensionAttributes/")):
        return {u.id for u in tenant.indexed(node[1], node[3])}
    if node[0] == "any" and node[1] in ("otherMails", "proxyAddresses") and \
            node[2][0] == "cmp" and node[2][2] == "eq" and \
            isinstance(node[2][3], str):
        value = node[2][3]
        if node[1] == "proxyAddresses":
            if value[:5].lower() != "smtp:":
                return None
            value = value[5:]
        return {u.id for u in tenant.indexed("@", value)}
    return None


def filter_candidates(tenant, tree):
    """The users a filter can match: those the index names when it can
    answer the filter (see indexed_clause), else every user.
    filter_match still decides."""
    ids = indexed_clause(tenant, tree)
    if ids is None:
        return list(tenant.users.values())
    return sorted((tenant.users[i] for i in ids if i in tenant.users),
                  key=lambda u: u.created_seq)
