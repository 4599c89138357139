"""The directory model: tenants and what they hold.

A Tenant keeps its apps (client ids with their secrets and certificates),
users, groups and org contacts, a change sequence (seq) that users/delta
rounds are cut by, and an index (addresses, mail, UPN, extension
attributes) so that lookups do not scan a tenant (benchmarks seed 100,000
users).  A user's props hold its current values: "never set" is a key
absent, cleared is None.  Token is an access token the login endpoint
issued; Link the server-side state behind an opaque $skiptoken or
$deltatoken.  text_length() and is_address() check values as the
directory counts them.

Nothing here answers requests; all of it is guarded by Cloud.lock.
"""

import collections
import hashlib
import re
import secrets
import time
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .limits import TenantLimits
from .wire import iso_ms


class App:
    def __init__(self, client_id, secrets_, certificates):
        self.client_id = client_id
        self.secrets = list(secrets_)
        self.certs = []
        for pem in certificates:
            cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
            der = cert.public_bytes(serialization.Encoding.DER)
            self.certs.append({
                "cert": cert,
                "sha1": hashlib.sha1(der).digest(),
                "sha256": hashlib.sha256(der).digest(),
            })


class User:
    """props: current values ("never set" = key absent, cleared = None).
    prop_seq: per property, the tenant seq of its last change."""

    __slots__ = ("id", "props", "prop_seq", "created_seq", "deleted",
                 "deleted_seq", "restored_seq", "deleted_at", "invited_at",
                 "exo", "mailbox", "changed_at", "manager",
                 "manager_removed")

    # Shown by the admin API even when never set (then null).
    ADMIN_KEYS = ("showInAddressList", "creationType", "externalUserState",
                  "onPremisesExtensionAttributes")

    def __init__(self, uid, props, seq):
        self.id = uid
        self.props = dict(props)
        self.prop_seq = {name: seq for name in props}
        self.created_seq = seq
        self.deleted = None          # None | "soft" | "hard"
        self.deleted_seq = 0
        self.restored_seq = 0
        self.deleted_at = None       # time.time() of the deletion
        self.invited_at = 0          # time.monotonic() of its invitation
        self.exo = None              # {"Name", ...} if made by New-MailUser
        # Exchange-only data (mailbox.py; Graph never shows it) and when
        # the object last changed (Exchange's WhenChanged).
        self.mailbox = None
        self.changed_at = time.time()
        # The manager relationship (managers.py): the manager's object
        # id, and the one last removed (users/delta's manager@delta).
        self.manager = None
        self.manager_removed = None

    def admin_view(self):
        view = {"id": self.id}
        view.update(self.props)
        for name in self.ADMIN_KEYS:
            view.setdefault(name, None)
        view["deleted"] = self.deleted
        return view


class Contact:
    """An organizational (mail) contact: holds addresses, nothing else
    matters to the fake (conflicts, Get-Recipient)."""

    def __init__(self, cid, props):
        self.id = cid
        self.props = dict(props)
        # When it was made (orgContact has no createdDateTime; Exchange
        # shows it as WhenCreated) and last changed (WhenChanged).
        self.created = iso_ms(time.time())[:-5] + "Z"
        self.changed_at = time.time()
        self.manager = None       # Set-Contact -Manager (managers.py)

    def admin_view(self):
        view = {"id": self.id}
        view.update(self.props)
        return view


def object_id(data, kind):
    """The id (lower case) of the `kind` that data, a seed's or the admin
    API's JSON, describes; a new one when it names none.  Raises
    ValueError when data is not a JSON object."""
    if not isinstance(data, dict):
        raise ValueError(f"a {kind} must be a JSON object")
    return str(data.get("id") or uuid.uuid4()).lower()


def smtp_addresses(values):
    """Lower-case SMTP addresses of a proxyAddresses list."""
    out = set()
    for value in values or []:
        if isinstance(value, str) and value[:5].lower() == "smtp:":
            out.add(value[5:].lower())
    return out


def user_addresses(props, other_mails=False):
    """The addresses an object holds: mail and SMTP proxyAddresses (the
    ones that must be unique in a tenant), plus otherMails if asked."""
    out = smtp_addresses(props.get("proxyAddresses"))
    if isinstance(props.get("mail"), str):
        out.add(props["mail"].lower())
    if other_mails:
        out.update(m.lower() for m in props.get("otherMails") or []
                   if isinstance(m, str))
    return out


class Group:
    """prop_seq: per property ("members" too), the tenant seq of its last
    change, for groups/delta (groups_delta.py); 0 when made outside a
    tenant's sequence."""

    def __init__(self, gid, props, members, seq=0):
        self.id = gid
        self.props = dict(props)
        self.members = list(dict.fromkeys(members))
        self.created_seq = seq
        self.prop_seq = {name: seq for name in props}
        self.prop_seq["members"] = seq

    def admin_view(self):
        view = {"id": self.id}
        view.update(self.props)
        view["members"] = list(self.members)
        return view


class Tenant:
    def __init__(self, tid, domain):
        self.id = tid
        self.domain = domain
        self.apps = {}
        self.users = {}
        self.groups = {}
        # groups deleted: id -> (reason "deleted"|"changed", seq), the
        # tombstones groups/delta reports (groups_delta.py)
        self.deleted_groups = {}
        self.seq = 0                 # tenant-wide change sequence
        self.contacts = {}
        self.extra_props = set()
        self.exo_window = (0, 0)     # (minute, requests) for Rate-Limit-*
        self.invitations = collections.deque()   # monotonic times, 5 s
        self.limits = TenantLimits()             # write windows, stats
        self.deletions = 0           # users deleted or restored, ever
        self.stats = {"invitations": 0, "patches": 0, "deletes": 0,
                      "restores": 0, "reads": 0, "exchange": {}}
        self.exo_calls = collections.deque()     # monotonic times, 1 s
        self.exo_in_progress = 0                 # guarded by Cloud.lock
        self.org = None      # orgconfig.Org: accepted domains, migration
        self.xtap = None     # policy.Xtap: cross-tenant access settings
        # (key, folded value) -> ids of users that held it when indexed:
        # a superset kept in step by add_user/patch_user, always checked
        # against the user itself, so lookups by mail, UPN, extension
        # attribute or address do not scan the tenant (benchmarks seed
        # 100,000 users).
        self.index = collections.defaultdict(set)

    def bump(self):
        self.seq += 1
        return self.seq

    def user_defaults(self, data):
        props = {k: v for k, v in data.items() if k != "id"}
        props.setdefault("userType", "Member")
        props.setdefault("accountEnabled", True)
        props.setdefault("creationType", None)
        # Every directory object has one (user.md: createdDateTime,
        # read-only); Exchange shows it as WhenCreated.
        props.setdefault("createdDateTime", iso_ms(time.time())[:-5] + "Z")
        if not props.get("userPrincipalName"):
            local = (props.get("mailNickname")
                     or (props.get("mail") or "").split("@")[0]
                     or re.sub(r"[^A-Za-z0-9]", "",
                               str(props.get("displayName") or ""))
                     or secrets.token_hex(4))
            props["userPrincipalName"] = f"{local}@{self.domain}"
        return props

    def add_user(self, data):
        uid = object_id(data, "user")
        if uid in self.users:
            raise KeyError(f"user {uid} already exists")
        props = self.user_defaults(data)
        self.extra_props.update(props)
        user = User(uid, props, self.bump())
        self.users[uid] = user
        self.index_user(user)
        return user

    @staticmethod
    def index_keys(user):
        props = user.props
        keys = {("@", a) for a in user_addresses(props, other_mails=True)}
        for name in ("mail", "userPrincipalName"):
            if isinstance(props.get(name), str):
                keys.add((name, props[name].casefold()))
        for name, value in (props.get("onPremisesExtensionAttributes")
                            or {}).items():
            if isinstance(value, str):
                keys.add(("onPremisesExtensionAttributes/" + name,
                          value.casefold()))
        return keys

    def index_user(self, user):
        for key in self.index_keys(user):
            self.index[key].add(user.id)

    def indexed(self, key, value):
        """Users that may hold `value` as `key` ("@" for an address):
        candidates to check, in creation order."""
        ids = self.index.get((key, value.casefold()), ())
        return sorted((self.users[i] for i in ids if i in self.users),
                      key=lambda u: u.created_seq)

    def find_directory_object(self, oid):
        """A live user or an org contact by object id, else None."""
        key = str(oid).lower()
        user = self.users.get(key)
        if user is not None and user.deleted is None:
            return user
        return self.contacts.get(key)

    def set_manager(self, obj, manager_id):
        """Set (or, None, clear) obj's manager; a user's change is a
        change of its "manager" for users/delta.  True when it changed."""
        old = obj.manager
        if old == manager_id:
            return False
        obj.manager = manager_id
        obj.changed_at = time.time()
        if isinstance(obj, User):
            obj.manager_removed = old if manager_id is None else None
            obj.prop_seq["manager"] = self.bump()
        return True

    def patch_user(self, user, data):
        changed = {}
        for name, value in data.items():
            if name in ("id", "deleted"):
                raise ValueError(f"'{name}' cannot be set")
            old = user.props.get(name)
            if (name == "onPremisesExtensionAttributes"
                    and isinstance(value, dict)):
                merged = dict(old or {})
                merged.update(value)
                value = merged
            if name not in user.props or old != value:
                changed[name] = value
        if changed:
            seq = self.bump()
            for name, value in changed.items():
                user.props[name] = value
                user.prop_seq[name] = seq
            user.changed_at = time.time()
            self.extra_props.update(changed)
            self.index_user(user)   # old keys stay: checked at lookup

    def delete_user(self, user, hard):
        if user.deleted is None:
            user.deleted_at = time.time()
        user.deleted = "hard" if hard else "soft"
        user.deleted_seq = self.bump()
        self.deletions += 1
        if hard:
            for group in self.groups.values():
                if user.id in group.members:
                    group.members.remove(user.id)

    def restore_user(self, user):
        user.deleted = None
        user.deleted_at = None
        user.restored_seq = self.bump()
        user.changed_at = time.time()
        self.deletions += 1

    def address_owner(self, address, exclude=None):
        """("User"|"Group"|"Contact", id) of the live object holding the
        address (mail or SMTP proxy address, case-insensitive), or None.
        Deleted users hold nothing: their addresses are free again (a
        restore reconciles, Restore-MsolUser -AutoReconcileProxyConflicts)."""
        address = address.lower()
        for user in self.indexed("@", address):
            if user.deleted is None and user.id != exclude and \
                    address in user_addresses(user.props):
                return "User", user.id
        for group in self.groups.values():
            if group.id != exclude and address in user_addresses(group.props):
                return "Group", group.id
        for contact in self.contacts.values():
            if contact.id != exclude and \
                    address in user_addresses(contact.props):
                return "Contact", contact.id
        return None

    def add_contact(self, data):
        cid = object_id(data, "contact")
        if cid in self.contacts:
            raise KeyError(f"contact {cid} already exists")
        props = {k: v for k, v in data.items() if k != "id"}
        mail = props.get("mail")
        if mail is not None and not isinstance(mail, str):
            raise ValueError("mail must be a string")
        if mail and "proxyAddresses" not in props:
            props["proxyAddresses"] = [f"SMTP:{mail}"]
        props.setdefault("displayName", mail or cid)
        contact = Contact(cid, props)
        self.contacts[cid] = contact
        return contact

    def find_user(self, key):
        """Live user by id or userPrincipalName, else None."""
        key = key.lower()
        user = self.users.get(key)
        if user is None:
            for candidate in self.indexed("userPrincipalName", key):
                upn = candidate.props.get("userPrincipalName") or ""
                if upn.lower() == key:
                    user = candidate
                    break
        if user is None or user.deleted:
            return None
        return user

    def check_members(self, members):
        for member in members:
            if member not in self.users and member not in self.groups:
                raise ValueError(f"member {member} is neither a user nor a "
                                 f"group of tenant {self.id}")

    def transitive_members(self, gid):
        """[(kind, id)] of the group's members, nested groups flattened
        (each nested group listed too), cycle-safe, deleted users left out."""
        out, seen = [], {gid}
        queue = list(self.groups[gid].members)
        for member in queue:
            if member in seen:
                continue
            seen.add(member)
            if member in self.groups:
                out.append(("group", member))
                queue.extend(self.groups[member].members)
            elif member in self.users and not self.users[member].deleted:
                out.append(("user", member))
        return out


class Token:
    __slots__ = ("serial", "tenant_id", "client_id", "kind", "resource",
                 "expires")

    def __init__(self, serial, tenant_id, client_id, kind, resource,
                 expires):
        self.serial = serial
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.kind = kind
        self.resource = resource
        self.expires = expires


class Link:
    """Server-side state behind an opaque $skiptoken / $deltatoken."""

    __slots__ = ("kind", "tenant_id", "gen", "data")

    def __init__(self, kind, tenant_id, gen, data):
        self.kind = kind
        self.tenant_id = tenant_id
        self.gen = gen
        self.data = data


def text_length(value):
    """Length as the directory counts it: UTF-16 code units, so an emoji
    counts 2 (a guess: .NET strings; see README.md)."""
    return len(value.encode("utf-16-le")) // 2


def is_address(value):
    return isinstance(value, str) and re.fullmatch(
        r"[^@\s]+@[^@\s]+\.[^@\s]+", value) is not None
