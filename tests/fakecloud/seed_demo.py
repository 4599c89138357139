#!/usr/bin/python3
"""Demo seed for fakecloud: two tenants, "contoso" and "fabrikam", with
realistic people (names, departments, titles, offices, phones), a few
disabled accounts, a few B2B guests (userType Guest, creationType
Invitation), a few users without mail, two groups with nested membership
and one app per tenant with a client secret.  Mailboxes carry migration
data (the "mailbox" key fakecloud takes): about 5% have an archive, about
10% one or two older X500 addresses, a few are on litigation hold; it is
drawn from its own random stream, so everything else is what it was
before it existed.

Everything but the client secrets is deterministic for a given --rng-seed;
the secrets are random unless given, and never printed.

CLI:  seed_demo.py --out FILE [--contoso N] [--fabrikam N] [--rng-seed N]
                   [--cert PEM] [--secrets-dir DIR]
  --cert PEM        register that certificate for an extra app in each tenant
  --secrets-dir DIR write DIR/contoso.secret and DIR/fabrikam.secret (0600)

Module: make_seed(contoso=3000, fabrikam=2000, ...) -> seed dict,
        make_users(tenant_domain, n, rng) -> list of user dicts,
        add_mailbox_data(users, rng) adds their "mailbox" keys.
"""

import argparse
import json
import os
import random
import secrets
import sys
import unicodedata
import uuid

FIRST_NAMES = [
    "Adele", "Alex", "Alice", "Amir", "Ana", "Andre", "Anika", "Ben",
    "Bianca", "Carlos", "Chen", "Chloe", "Christie", "Daniel", "Debra",
    "Diego", "Dmitri", "Elena", "Emily", "Enrico", "Farah", "Fatima",
    "Felix", "Fiona", "Gabriel", "Grady", "Hana", "Hannah", "Henrik",
    "Hiroshi", "Ines", "Irvin", "Isaiah", "Jakob", "James", "Jana",
    "Javier", "Jin", "Johanna", "Joni", "Jose", "Julia", "Karim", "Kenji",
    "Laura", "Lee", "Leila", "Lidia", "Lucas", "Lynne", "Malik", "Maria",
    "Mariam", "Marek", "Mateo", "Megan", "Mei", "Miriam", "Mohammed",
    "Nadia", "Nestor", "Nina", "Noah", "Oliver", "Olga", "Omar", "Patti",
    "Paulo", "Pradeep", "Priya", "Rafael", "Raj", "Rosa", "Ruth", "Sakura",
    "Samir", "Sara", "Sebastian", "Sofia", "Sven", "Tamara", "Tariq",
    "Thomas", "Ursula", "Valentina", "Victor", "Wei", "Yara", "Yusuf",
    "Zoe", "Zoltan", "Éloïse", "Björn", "Søren", "Łukasz", "Zoë",
]
LAST_NAMES = [
    "Abbott", "Adams", "Andersen", "Archie", "Bakker", "Banerjee", "Becker",
    "Bianchi", "Brown", "Castro", "Chen", "Cortez", "Dennis", "Diaz",
    "Dubois", "Eriksson", "Fernandez", "Fischer", "Garcia", "Gonzalez",
    "Gupta", "Haddad", "Hansen", "Hoang", "Holloway", "Hughes", "Ivanova",
    "Jensen", "Johnson", "Kaur", "Khan", "Kim", "Kowalski", "Kumar",
    "Larsen", "Lee", "Lopez", "Meyer", "Miller", "Moreau", "Müller",
    "Nakamura", "Nguyen", "Novak", "Okafor", "Olsen", "O'Brien", "Park",
    "Patel", "Petrov", "Popescu", "Rahman", "Rossi", "Sato", "Schmidt",
    "Sicilian", "Silva", "Singh", "Smith", "Suzuki", "Tanaka", "Taylor",
    "Torres", "Vance", "Wagner", "Wang", "White", "Wilson", "Wright",
    "Yamamoto", "Yilmaz", "Zhang", "García", "Åberg", "Ødegaard",
]
DEPARTMENTS = {
    "Sales": ["Account Executive", "Sales Manager", "Sales Representative",
              "Regional Sales Director", "Inside Sales Specialist"],
    "Marketing": ["Marketing Manager", "Product Marketing Manager",
                  "Content Strategist", "Brand Designer"],
    "Engineering": ["Software Engineer", "Senior Software Engineer",
                    "Engineering Manager", "QA Engineer", "DevOps Engineer",
                    "Principal Architect"],
    "Finance": ["Accountant", "Financial Analyst", "Controller",
                "Payroll Specialist"],
    "Human Resources": ["HR Generalist", "Recruiter", "HR Business Partner"],
    "Operations": ["Operations Manager", "Logistics Coordinator",
                   "Facilities Manager", "Procurement Specialist"],
    "Legal": ["Corporate Counsel", "Paralegal", "Compliance Officer"],
    "Customer Support": ["Support Engineer", "Customer Success Manager",
                         "Support Team Lead"],
    "IT": ["Systems Administrator", "Helpdesk Technician",
           "Identity Engineer", "IT Manager"],
    "Retail": ["Retail Manager", "Store Associate", "Merchandiser"],
}
# (city, state, country, usageLocation, postal code, phone prefix, language)
CITIES = [
    ("Redmond", "WA", "United States", "US", "98052", "+1 425 555", "en-US"),
    ("Seattle", "WA", "United States", "US", "98101", "+1 206 555", "en-US"),
    ("New York", "NY", "United States", "US", "10001", "+1 212 555",
     "en-US"),
    ("Chicago", "IL", "United States", "US", "60601", "+1 312 555", "en-US"),
    ("Toronto", "ON", "Canada", "CA", "M5H 2N2", "+1 416 555", "en-CA"),
    ("London", None, "United Kingdom", "GB", "EC2A 4BX", "+44 20 7946",
     "en-GB"),
    ("Dublin", None, "Ireland", "IE", "D02 X285", "+353 1 555", "en-IE"),
    ("Berlin", "Berlin", "Germany", "DE", "10115", "+49 30 5555",
     "de-DE"),
    ("Munich", "Bavaria", "Germany", "DE", "80331", "+49 89 5555", "de-DE"),
    ("Paris", None, "France", "FR", "75002", "+33 1 5555", "fr-FR"),
    ("Amsterdam", None, "Netherlands", "NL", "1012 AB", "+31 20 555",
     "nl-NL"),
    ("Stockholm", None, "Sweden", "SE", "111 22", "+46 8 555", "sv-SE"),
    ("Madrid", None, "Spain", "ES", "28013", "+34 91 555", "es-ES"),
    ("Milan", None, "Italy", "IT", "20121", "+39 02 5555", "it-IT"),
    ("Tokyo", None, "Japan", "JP", "100-0005", "+81 3 5555", "ja-JP"),
    ("Singapore", None, "Singapore", "SG", "018989", "+65 6555", "en-SG"),
    ("Sydney", "NSW", "Australia", "AU", "2000", "+61 2 5555", "en-AU"),
    ("São Paulo", "SP", "Brazil", "BR", "01310-100", "+55 11 5555",
     "pt-BR"),
]
STREETS = ["Main Street", "Oak Avenue", "Harbour Road", "Market Square",
           "Station Road", "Park Lane", "High Street", "Innovation Way",
           "Riverside Drive", "Church Street"]
GUEST_DOMAINS = ["northwind.example", "adatum.example", "litware.example",
                 "wingtiptoys.example", "tailspin.example"]

TENANTS = {
    "contoso": {"domain": "contoso.onmicrosoft.com",
                "company": "Contoso Ltd.", "employee_prefix": "C"},
    "fabrikam": {"domain": "fabrikam.onmicrosoft.com",
                 "company": "Fabrikam, Inc.", "employee_prefix": "F"},
}


def guid(rng):
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def ascii_slug(text):
    plain = unicodedata.normalize("NFKD", text)
    plain = plain.replace("ø", "o").replace("Ø", "O").replace("ł", "l") \
        .replace("Ł", "L").replace("ß", "ss")
    return "".join(c for c in plain if c.isascii() and c.isalnum()).lower()


def mail_domain(tenant_domain):
    """contoso.onmicrosoft.com -> contoso.com (the tenant's mail domain)."""
    if tenant_domain.endswith(".onmicrosoft.com"):
        return tenant_domain[:-len(".onmicrosoft.com")] + ".com"
    return tenant_domain


def make_users(tenant_domain, n, rng, company=None, employee_prefix="E"):
    """n user dicts in Graph's shape.  About 2% guests, 1.5% disabled,
    1.5% without mail; everyone else an enabled member with mail."""
    domain = mail_domain(tenant_domain)
    users, taken = [], set()
    departments = sorted(DEPARTMENTS)
    for i in range(n):
        first = rng.choice(FIRST_NAMES)
        last = rng.choice(LAST_NAMES)
        base = f"{ascii_slug(first)}.{ascii_slug(last)}"
        nick, k = base, 1
        while nick in taken:
            k += 1
            nick = f"{base}{k}"
        taken.add(nick)
        city, state, country, usage, postal, phone, lang = rng.choice(CITIES)
        dept = departments[rng.randrange(len(departments))]
        roll = rng.random()
        user = {
            "id": guid(rng),
            "displayName": f"{first} {last}",
            "givenName": first,
            "surname": last,
            "mailNickname": nick,
            "jobTitle": rng.choice(DEPARTMENTS[dept]),
            "department": dept,
            "companyName": company,
            "officeLocation":
                f"{rng.randint(1, 40)}/{rng.randint(1000, 4999)}",
            "businessPhones": [f"{phone} {rng.randint(1000, 9999)}"],
            "mobilePhone": f"{phone} {rng.randint(1000, 9999)}",
            "streetAddress": f"{rng.randint(1, 250)} {rng.choice(STREETS)}",
            "city": city,
            "state": state,
            "country": country,
            "postalCode": postal,
            "usageLocation": usage,
            "preferredLanguage": lang,
            "employeeId": f"{employee_prefix}{i + 1:06d}",
            "userType": "Member",
            "accountEnabled": True,
            "creationType": None,
            "onPremisesExtensionAttributes": {
                f"extensionAttribute{a}": None for a in range(1, 16)},
        }
        if roll < 0.02:
            # A B2B guest invited from another organisation.
            ext = rng.choice(GUEST_DOMAINS)
            mail = f"{nick}@{ext}"
            user.update({
                "userType": "Guest", "creationType": "Invitation",
                "mail": mail, "otherMails": [mail],
                "userPrincipalName": f"{nick}_{ext}#EXT#@{tenant_domain}",
                "proxyAddresses": [f"SMTP:{mail}"],
                "externalUserState": "Accepted",
                "companyName": None, "employeeId": None,
            })
        else:
            mail = f"{nick}@{domain}"
            user["userPrincipalName"] = mail
            if 0.035 <= roll < 0.05:
                # Service accounts and the like: no mailbox, no mail.
                user["proxyAddresses"] = []
            else:
                user["mail"] = mail
                user["proxyAddresses"] = [f"SMTP:{mail}"]
            if roll < 0.035:
                user["accountEnabled"] = False
        users.append(user)
    return users


# The X500 addresses of mailboxes that came from an older organisation (an
# on-premises Exchange, or Exchange Online before a rename).
OLD_LEGACY_DN = ("X500:/o=ExchangeLabs/ou=Exchange Administrative Group "
                 "(FYDIBOHF23SPDLT)/cn=Recipients/cn={hex}-{alias}")
ONPREM_LEGACY_DN = ("X500:/o={org}/ou=Exchange Administrative Group "
                    "(FYDIBOHF23SPDLT)/cn=Recipients/cn={alias}")


def add_mailbox_data(users, rng, org="First Organization"):
    """Migration data on the mailboxes (members with mail): about 5% with
    an archive, about 10% with one or two older X500 addresses, about
    1% on litigation hold.  rng: a stream of its own."""
    for user in users:
        if user["userType"] != "Member" or "mail" not in user:
            continue
        box = {}
        if rng.random() < 0.05:
            box["archive"] = True
        if rng.random() < 0.10:
            alias = user["mailNickname"]
            old = [OLD_LEGACY_DN.format(hex="%032x" % rng.getrandbits(128),
                                        alias=alias)]
            if rng.random() < 0.5:
                old.append(ONPREM_LEGACY_DN.format(org=org, alias=alias))
            box["x500"] = old
        if rng.random() < 0.01:
            box["LitigationHoldEnabled"] = True
        if box:
            user["mailbox"] = box
    return users


def make_groups(users, rng):
    """Two groups: a regional sales team nested inside a wider scope group
    that also holds Marketing and a few others."""
    members = [u for u in users if u["userType"] == "Member"]
    sales = [u["id"] for u in members if u["department"] == "Sales"]
    marketing = [u["id"] for u in members if u["department"] == "Marketing"]
    others = [u["id"] for u in members
              if u["department"] not in ("Sales", "Marketing")]
    sales_group = {"id": guid(rng), "displayName": "Sales Team",
                   "description": "Everyone in Sales", "mailEnabled": False,
                   "securityEnabled": True, "groupTypes": [],
                   "members": sales}
    scope_group = {"id": guid(rng), "displayName": "GAL Sync Scope",
                   "description": "People shared with partner tenants",
                   "mailEnabled": False, "securityEnabled": True,
                   "groupTypes": [],
                   "members": [sales_group["id"]] + marketing
                   + rng.sample(others, min(25, len(others)))}
    return [scope_group, sales_group]


def make_seed(contoso=3000, fabrikam=2000, rng_seed=20240601,
              client_secrets=None, cert_pem=None):
    """The demo seed dict.  client_secrets: {"contoso": ..., "fabrikam": ...}
    (random when absent).  cert_pem: register it for an extra app."""
    rng = random.Random(rng_seed)
    client_secrets = dict(client_secrets or {})
    extra_app = guid(rng)
    tenants = []
    for name, count in (("contoso", contoso), ("fabrikam", fabrikam)):
        info = TENANTS[name]
        tenant_id = guid(rng)
        client_id = guid(rng)
        secret = client_secrets.get(name) or secrets.token_urlsafe(30)
        apps = [{"client_id": client_id, "secrets": [secret],
                 "certificates": []}]
        if cert_pem:
            apps.append({"client_id": extra_app, "secrets": [],
                         "certificates": [cert_pem]})
        users = make_users(info["domain"], count, rng, info["company"],
                           info["employee_prefix"])
        add_mailbox_data(users, random.Random(f"{rng_seed}:mailbox:{name}"),
                         info["company"])
        # No cross-tenant access settings yet (the service defaults, no
        # partner entries): `galbridge doctor` on the demo shows what is
        # missing and `galbridge setup-trust` sets it.  fakecloud's
        # invitations do not depend on them, so the demo's guests come
        # all the same.
        tenants.append({"id": tenant_id, "domain": info["domain"],
                        "name": name, "apps": apps, "users": users,
                        "groups": make_groups(users, rng),
                        "crossTenantAccess": {"partners": []}})
    return {"tenants": tenants}


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="write fakecloud's demo seed (contoso + fabrikam)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--contoso", type=int, default=3000)
    parser.add_argument("--fabrikam", type=int, default=2000)
    parser.add_argument("--rng-seed", type=int, default=20240601)
    parser.add_argument("--cert", help="PEM certificate for an extra app")
    parser.add_argument("--secrets-dir",
                        help="write NAME.secret files here (mode 0600)")
    args = parser.parse_args(argv)

    cert_pem = None
    if args.cert:
        with open(args.cert, encoding="ascii") as f:
            text = f.read()
        start = text.index("-----BEGIN CERTIFICATE-----")
        end = text.index("-----END CERTIFICATE-----") + len(
            "-----END CERTIFICATE-----")
        cert_pem = text[start:end] + "\n"
    seed = make_seed(args.contoso, args.fabrikam, args.rng_seed,
                     cert_pem=cert_pem)

    # The seed holds client secrets: keep it private.
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(seed, f, ensure_ascii=False)
        f.write("\n")
    if args.secrets_dir:
        os.makedirs(args.secrets_dir, exist_ok=True)
        for tenant in seed["tenants"]:
            path = os.path.join(args.secrets_dir, tenant["name"] + ".secret")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(tenant["apps"][0]["secrets"][0] + "\n")
    for tenant in seed["tenants"]:
        apps = ", ".join(a["client_id"] for a in tenant["apps"])
        print(f"{tenant['name']}: tenant {tenant['id']} "
              f"({tenant['domain']}), {len(tenant['users'])} users, "
              f"{len(tenant['groups'])} groups, apps {apps}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
