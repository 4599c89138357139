"""Exchange-only data of directory users: what a mailbox or a mail user
carries that Graph never shows.

user.mailbox holds what was set (None until something is): ExchangeGuid,
ArchiveGuid, LegacyExchangeDN (fixed the first time it is shown, from
the alias of that moment), x500 (X500 proxy addresses: Exchange lists
them in EmailAddresses, Graph leaves them out of proxyAddresses), the
hold flags and InPlaceHolds, PersistedCapabilities, IsDirSynced,
PreviousRecipientTypeDetails and SKUAssigned.  A value never set reads
as its default: a UserMailbox's ExchangeGuid is the uuid5 of NAMESPACE
and "mbx:" + its id (stable across restarts and seeds), anybody else's
the zero GUID; no archive; no hold; not synchronised.  user.changed_at
is WhenChanged: Graph and admin PATCHes (Tenant.patch_user) and touch()
move it.

user_kind() names the kind of recipient a user is; the *_fields()
functions add this data to exchange.py's recipient view of a user; the
admin_*() functions read and validate what the admin API sets.  Nothing
here answers a request.
"""

import datetime
import time
import uuid

from .wire import iso_ms


ZERO_GUID = "00000000-0000-0000-0000-000000000000"
NAMESPACE = uuid.UUID("f10e1128-9b0b-50b4-95ad-0101262ab3fb")
LEGACY_DN_PREFIX = ("/o=ExchangeLabs/ou=Exchange Administrative Group "
                    "(FYDIBOHF23SPDLT)/cn=Recipients/cn=")
HOLD_FLAGS = ("LitigationHoldEnabled", "DelayHoldApplied",
              "DelayReleaseHoldApplied", "ComplianceTagHoldApplied")
T2T_CAPABILITY = "ExchangeT2TMbxMove"
LIST = "#Collection(String)"


def user_kind(user):
    """RecipientTypeDetails of a directory user as Exchange sees it."""
    props = user.props
    if user.exo and user.exo.get("kind") == "MailUser":
        return "MailUser"
    if not props.get("mail"):
        return "User"
    if props.get("userType") == "Guest":
        return "GuestMailUser"
    return "UserMailbox"


def when(ts):
    """An Exchange date as fakecloud writes them (WhenCreated's form:
    ISO 8601, whole seconds, UTC)."""
    return iso_ms(ts)[:-5] + "Z"


def data(user):
    """What was set on the user (read-only use)."""
    return user.mailbox or {}


def writable(user):
    """user.mailbox, made if the user has none yet."""
    if user.mailbox is None:
        user.mailbox = {}
    return user.mailbox


def touch(user):
    """The user's Exchange data changed: WhenChanged is now."""
    user.changed_at = time.time()


def stable_guid(prefix, user_id):
    """uuid5 of NAMESPACE and prefix + id: the same on every start."""
    return str(uuid.uuid5(NAMESPACE, prefix + user_id))


def exchange_guid(user, kind=None):
    """ExchangeGuid: as set, else a mailbox's stable one, else zero."""
    value = data(user).get("ExchangeGuid")
    if value:
        return value
    if (kind or user_kind(user)) == "UserMailbox":
        return stable_guid("mbx:", user.id)
    return ZERO_GUID


def archive_guid(user):
    """ArchiveGuid: as set, else the zero GUID (no archive)."""
    return data(user).get("ArchiveGuid") or ZERO_GUID


def alias_of(user):
    """The alias Exchange shows (exchange.recipient_view's rule)."""
    props = user.props
    mail = props.get("mail")
    return props.get("mailNickname") or \
        (mail.split("@")[0] if mail else None) or \
        (user.exo or {}).get("Name") or user.id


def legacy_dn(user, alias=None):
    """LegacyExchangeDN: /o=ExchangeLabs/.../cn=Recipients/cn=<32 hex>-
    <alias>.  The hex is a GUID of its own, not the ExchangeGuid (the
    cross-tenant migration doc's examples show both and they differ); it
    is fixed the first time it is asked for."""
    box = writable(user)
    if "LegacyExchangeDN" not in box:
        box["LegacyExchangeDN"] = (
            LEGACY_DN_PREFIX + uuid.UUID(stable_guid("dn:", user.id)).hex
            + "-" + (alias or alias_of(user)))
    return box["LegacyExchangeDN"]


def x500s(user):
    """The user's X500 proxy addresses, as set (prefix case kept)."""
    return list(data(user).get("x500") or [])


def in_place_holds(user):
    """InPlaceHolds: hold ids (mbx…, cld…, UniH…, skp…, 32-character
    legacy ones)."""
    return list(data(user).get("InPlaceHolds") or [])


def on_hold(user):
    """True if any hold applies (the four flags or an in-place hold)."""
    box = data(user)
    return any(box.get(f) for f in HOLD_FLAGS) or bool(in_place_holds(user))


def persisted_capabilities(user):
    """PersistedCapabilities (ExchangeT2TMbxMove once the Cross Tenant
    User Data Migration licence is assigned)."""
    return list(data(user).get("PersistedCapabilities") or [])


def has_move_licence(user):
    """The check Microsoft's validator makes: PersistedCapabilities
    -match 'ExchangeT2TMbxMove' (case-insensitive)."""
    return any(T2T_CAPABILITY.lower() in str(c).lower()
               for c in persisted_capabilities(user))


def is_dir_synced(user):
    """IsDirSynced: synchronised from on-premises (Exchange refuses to
    change such an object)."""
    return bool(data(user).get("IsDirSynced", False))


# -- what the cmdlets show ---------------------------------------------------

def base_fields(user, view):
    """What every Exchange view of a user gains: its X500 proxies in
    EmailAddresses, WhenChanged(UTC) and, for a recipient,
    LegacyExchangeDN."""
    view["EmailAddresses"] = list(view["EmailAddresses"]) + x500s(user)
    view["WhenChanged"] = view["WhenChangedUTC"] = when(user.changed_at)
    if view["RecipientTypeDetails"] != "User":
        view["LegacyExchangeDN"] = legacy_dn(user, view["Alias"])
    return view


def mail_user_fields(user, view):
    """Get-MailUser: a mail user's GUIDs (zero until set), IsDirSynced,
    PersistedCapabilities."""
    view["ExchangeGuid"] = exchange_guid(user, view["RecipientTypeDetails"])
    view["ArchiveGuid"] = archive_guid(user)
    view["IsDirSynced"] = is_dir_synced(user)
    view["PersistedCapabilities@odata.type"] = LIST
    view["PersistedCapabilities"] = persisted_capabilities(user)
    return view


def mailbox_fields(user, view):
    """Get-Mailbox: mail_user_fields() plus the archive's status, the
    holds and SKUAssigned."""
    mail_user_fields(user, view)
    box = data(user)
    view["ArchiveStatus"] = "Active" if view["ArchiveGuid"] != ZERO_GUID \
        else "None"
    for name in HOLD_FLAGS:
        view[name] = bool(box.get(name, False))
    view["InPlaceHolds@odata.type"] = LIST
    view["InPlaceHolds"] = in_place_holds(user)
    view["SKUAssigned"] = bool(box.get("SKUAssigned", False))
    return view


def user_fields(user, view):
    """Get-User: PreviousRecipientTypeDetails, SKUAssigned, IsDirSynced."""
    box = data(user)
    view["PreviousRecipientTypeDetails"] = box.get(
        "PreviousRecipientTypeDetails", "None")
    view["SKUAssigned"] = bool(box.get("SKUAssigned", False))
    view["IsDirSynced"] = is_dir_synced(user)
    return view


# -- the admin API -----------------------------------------------------------

ADMIN_FLAGS = HOLD_FLAGS + ("IsDirSynced", "SKUAssigned")
ADMIN_LISTS = ("x500", "InPlaceHolds", "PersistedCapabilities")
ADMIN_KEYS = set(ADMIN_FLAGS + ADMIN_LISTS) | {
    "archive", "PreviousRecipientTypeDetails", "WhenChangedUTC"}


def admin_view(user):
    """GET /admin/tenants/{t}/mailboxes/{user}: the Exchange-only data."""
    kind = user_kind(user)
    box = data(user)
    view = {"id": user.id, "RecipientTypeDetails": kind,
            "ExchangeGuid": exchange_guid(user, kind),
            "ArchiveGuid": archive_guid(user)}
    view["ArchiveStatus"] = "Active" if view["ArchiveGuid"] != ZERO_GUID \
        else "None"
    view["LegacyExchangeDN"] = legacy_dn(user) if kind != "User" else None
    view["x500"] = x500s(user)
    for name in ADMIN_FLAGS:
        view[name] = bool(box.get(name, False))
    view["InPlaceHolds"] = in_place_holds(user)
    view["PersistedCapabilities"] = persisted_capabilities(user)
    view["PreviousRecipientTypeDetails"] = box.get(
        "PreviousRecipientTypeDetails", "None")
    view["WhenChanged"] = view["WhenChangedUTC"] = when(user.changed_at)
    return view


def admin_time(value):
    """WhenChangedUTC as the admin API takes it (ISO 8601, UTC) in
    seconds since the epoch; ValueError."""
    if not isinstance(value, str):
        raise ValueError("'WhenChangedUTC' must be an ISO 8601 time")
    try:
        ts = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("'WhenChangedUTC' must be an ISO 8601 time") \
            from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=datetime.timezone.utc)
    return ts.timestamp()


def admin_changes(body):
    """The admin PATCH body checked: {key: value}; ValueError."""
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    unknown = set(body) - ADMIN_KEYS
    if unknown:
        raise ValueError(f"unknown mailbox field(s) {sorted(unknown)}; "
                         f"known: {', '.join(sorted(ADMIN_KEYS))}")
    for name in ADMIN_FLAGS + ("archive",):
        if name in body and not isinstance(body[name], bool):
            raise ValueError(f"'{name}' must be true or false")
    for name in ADMIN_LISTS:
        if name in body and not (isinstance(body[name], list) and all(
                isinstance(v, str) and v for v in body[name])):
            raise ValueError(f"'{name}' must be a list of strings")
    for value in body.get("x500", []):
        if value[:5].lower() != "x500:" or len(value) == 5:
            raise ValueError(f"'{value}' is not an X500 address "
                             f"(X500:/o=…)")
    previous = body.get("PreviousRecipientTypeDetails", "None")
    if not isinstance(previous, str) or not previous:
        raise ValueError("'PreviousRecipientTypeDetails' must be a name")
    changes = dict(body)
    if "WhenChangedUTC" in body:
        changes["WhenChangedUTC"] = admin_time(body["WhenChangedUTC"])
    return changes


def admin_apply(user, changes):
    """Set what admin_changes() let through (but WhenChangedUTC, which
    the caller sets last); WhenChanged moves to now."""
    box = writable(user)
    if "archive" in changes:
        box["ArchiveGuid"] = stable_guid("arc:", user.id) \
            if changes["archive"] else ZERO_GUID
    for name in ADMIN_FLAGS + ADMIN_LISTS + ("PreviousRecipientTypeDetails",):
        if name in changes:
            box[name] = list(changes[name]) \
                if isinstance(changes[name], list) else changes[name]
    touch(user)
