"""The mapping language's functions end to end (issue 19, point 4): a
guest link whose mapping uses Not, Mid, Split, Word, NormalizeDiacritics,
StripSpaces, ToTitleCase, FormatDateTime, IsNullOrEmpty and
SelectUniqueValue, written over continued config lines, synced by the
real galbridge against fakecloud; the values fakecloud holds afterwards
are checked one by one. SelectUniqueValue takes the second candidate when
another object of the target holds the first, and a person whose every
candidate is taken fails alone, with the reason, nothing written for
them."""

DOMAIN = "partner.example"

# Continued lines (a '\' at the end) and one long line, as
# galbridge.conf(5) describes them.
MAPPING = """\
mail = SelectUniqueValue( \\
    Join("@", ToLower(NormalizeDiacritics(StripSpaces( \\
        Join(".", givenName, surname)))), "%(d)s"), \\
    Join("@", ToLower(NormalizeDiacritics(StripSpaces( \\
        Join(".", Mid(givenName, 1, 1), surname)))), "%(d)s"))
displayName = ToTitleCase(displayName)
jobTitle = Word(jobTitle, 1, ",;")
department = IIF(IsNullOrEmpty(department), "none", department)
otherMails = Split(onPremisesExtensionAttributes/extensionAttribute1, ";")
employeeId = FormatDateTime(onPremisesExtensionAttributes/extensionAttribute2\
, , "yyyyMMddHHmmss.fZ", "yyyy-MM-dd")
employeeType = IIF(Not(IsPresent(mobilePhone)), "no mobile", "mobile")
city = %(long)s
""" % {"d": DOMAIN,
       "long": "Coalesce(" + ", ".join(["city"] * 800) + ", 'nowhere')"}


def person(given, surname, **more):
    u = {"displayName": more.pop("displayName", "%s %s" % (given, surname)),
         "givenName": given, "surname": surname,
         "mail": "%s.%s@contoso.onmicrosoft.com" % (given[:1].lower(),
                                                   surname.lower()),
         "userType": "Member", "accountEnabled": True}
    u.update(more)
    return u


def target_user(env, mail, name):
    """A user of the target that galbridge did not make."""
    return env.cloud.create_user(env.tenants["fabrikam"]["id"], {
        "displayName": name, "mail": mail,
        "userPrincipalName": "%s@fabrikam.onmicrosoft.com" % name.lower(),
        "userType": "Member", "accountEnabled": True})


def test_new_functions_sync_and_select_unique_value(make_env):
    env = make_env(users=0)
    src = env.source["id"]
    zoe = env.cloud.create_user(src, person(
        "Zoë", "Van Der Berg", displayName="zoë van der berg",
        jobTitle="Engineer, Platform; Team", businessPhones=[],
        onPremisesExtensionAttributes={
            "extensionAttribute1": "zoe@old.example; zvdb@old.example;",
            "extensionAttribute2": "20150123105347.1Z"}))
    ana = env.cloud.create_user(src, person(
        "Ana", "Núñez", department="Sales", mobilePhone="+1 555 0100",
        jobTitle="Manager"))
    # Both of Tom's candidates are held in the target already.
    tom = env.cloud.create_user(src, person("Tom", "Lee"))
    # Someone else holds Zoë's first candidate, and both of Tom's.
    taken = target_user(env, "zoe.vanderberg@%s" % DOMAIN, "Other1")
    target_user(env, "tom.lee@%s" % DOMAIN, "Other2")
    target_user(env, "t.lee@%s" % DOMAIN, "Other3")

    env.write_config(link_extra="mapping = m\n",
                     extra="[mapping m]\n" + MAPPING)
    r = env.run("check-config")
    assert r.returncode == 0, r.stderr

    r = env.run("sync")
    # Tom fails alone, with the reason; the others are made. A refused
    # object makes the round's exit status 1, as any failed object does.
    assert r.returncode == 1, r.stderr
    reason = ("cannot map 'mail': SelectUniqueValue(): every candidate (2) "
              "is taken in the target by another object")
    assert ('object not synced link=contoso-to-fabrikam source_id=%s '
            'reason="%s"' % (tom["id"], reason)) in r.stderr
    copies = env.copies()
    assert set(copies) == {zoe["id"], ana["id"]}
    st = env.status()["links"][0]
    assert st["objects"] == 2 and st["failed"] == 1
    p = env.run("plan")
    assert p.returncode == 0, p.stderr
    assert "fail     %s" % tom["id"] in p.stdout
    assert reason in p.stdout

    z = copies[zoe["id"]][0]
    assert z["mail"] == "z.vanderberg@%s" % DOMAIN     # the second one
    assert z["displayName"] == "Zoë Van Der Berg"
    assert z["jobTitle"] == "Engineer"
    assert z["department"] == "none"
    assert z["otherMails"] == ["zoe@old.example", "zvdb@old.example"]
    assert z["employeeId"] == "2015-01-23"
    assert z["employeeType"] == "no mobile"
    assert z["city"] == "nowhere"

    a = copies[ana["id"]][0]
    assert a["mail"] == "ana.nunez@%s" % DOMAIN       # the first one
    assert a["displayName"] == "Ana Núñez"
    assert a["jobTitle"] == "Manager"
    assert a["department"] == "Sales"
    assert a["employeeType"] == "mobile"
    assert not a.get("employeeId")

    # The user that held the first candidate is untouched.
    after = env.cloud.user(env.tenants["fabrikam"]["id"], taken["id"])
    assert after["mail"] == taken["mail"]
    assert after["displayName"] == "Other1"

    # A second round keeps Zoë's address: her own copy does not take it
    # from her, the other user still holds the first; nothing is written.
    before = env.writes()
    r = env.run("sync")
    assert env.writes()["patches"] == before["patches"], r.stderr
    assert env.copies()[zoe["id"]][0]["mail"] == "z.vanderberg@%s" % DOMAIN

    # The first candidate comes free, and Zoë changes job: her copy is
    # weighed again, takes the new title and keeps the address it was
    # given (Microsoft applies SelectUniqueValue when an object is made).
    env.cloud.delete_user(env.tenants["fabrikam"]["id"], taken["id"])
    env.cloud.patch_user(src, zoe["id"], {"jobTitle": "Architect"})
    r = env.run("sync")
    z = env.copies()[zoe["id"]][0]
    assert z["jobTitle"] == "Architect", r.stderr
    assert z["mail"] == "z.vanderberg@%s" % DOMAIN


def test_long_expression_errors_name_line_and_column(make_env):
    env = make_env(users=0)
    # Exactly 10,000 characters checks; one more is an error with the
    # line of the key and the column of the first character too many.
    body = "x" * (10000 - 2)
    env.write_config(link_extra="mapping = m\n",
                     extra="[mapping m]\njobTitle = '%s'\n" % body)
    r = env.run("check-config")
    assert r.returncode == 0, r.stderr
    env.write_config(link_extra="mapping = m\n",
                     extra="[mapping m]\njobTitle = \\\n  '%s '\n" % body)
    r = env.run("check-config")
    assert r.returncode == 78
    line = open(env.conf).read().split("\n").index("jobTitle = \\") + 1
    assert r.stderr.strip().endswith(
        "galbridge.conf:%d: column 10001: expression longer than 10000 "
        "characters (10001)" % line), r.stderr


def test_select_unique_value_only_where_unique(make_env):
    env = make_env(users=0)
    env.write_config(link_extra="mapping = m\n",
                     extra="[mapping m]\ndisplayName = \\\n"
                           "  SelectUniqueValue(displayName, mail)\n")
    r = env.run("check-config")
    assert r.returncode == 78
    assert "SelectUniqueValue() picks a value no other object holds, " \
           "which only means something for an attribute the target keeps " \
           "unique (mail); 'displayName' is not one" in r.stderr


def test_long_scope_filter_over_continued_lines(make_env):
    env = make_env(users=0)
    src = env.source["id"]
    sales = env.cloud.create_user(src, person("Ann", "Sale",
                                              department="Sales"))
    other = env.cloud.create_user(src, person("Bob", "Other",
                                              department="Legal"))
    # About 5,800 bytes of filter (SCOPE_FILTER_MAX is 8192), 201 lines: far past libinih's 198.
    terms = ["department eq 'Dept %03d'" % i for i in range(200)]
    terms.append("department eq 'Sales'")
    text = " \\\n    or ".join(terms)
    assert len(" or ".join(terms)) > 5500
    env.write_config(link_extra="scope_filter = %s\n" % text)
    r = env.run("check-config")
    assert r.returncode == 0, r.stderr
    assert "scope_filter = department eq 'Dept 000' or department eq " \
           "'Dept 001' or" in r.stdout
    continued = r.stdout
    # The same filter on one line reads the same.
    env.write_config(link_extra="scope_filter = %s\n" % " or ".join(terms))
    r = env.run("check-config")
    assert r.returncode == 0, r.stderr
    assert r.stdout == continued
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    assert set(env.copies()) == {sales["id"]}
    assert other["id"] not in env.copies()
