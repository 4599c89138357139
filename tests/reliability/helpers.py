"""Helpers shared by the reliability tests."""
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
GALBRIDGE = os.environ.get("GALBRIDGE") or os.path.join(ROOT, "galbridge")


def configure(env, kind):
    """Make env's link of `kind`: "guest" (as Env writes it) or
    "mailcontact" (its target with exchange = yes)."""
    text = open(env.conf).read()
    if kind == "mailcontact":
        text = text.replace("object = guest", "object = mailcontact")
        text = text.replace("[tenant fabrikam]\n",
                            "[tenant fabrikam]\nexchange = yes\n")
    with open(env.conf, "w") as f:
        f.write(text)


def run_faulty(env, shim, args, trigger, errno="ENOSPC", popen=False,
               timeout=300):
    """Run galbridge with fsfault.so on env's state directory: faulty while
    `trigger` exists."""
    e = dict(os.environ, LD_PRELOAD=shim, FSFAULT_DIR=env.state_dir,
             FSFAULT_TRIGGER=trigger, FSFAULT_ERRNO=errno,
             # An ASan build wants its runtime first; the shim goes first.
             ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") +
             ":verify_asan_link_order=0")
    cmd = [GALBRIDGE, "-c", env.conf] + list(args)
    if popen:
        return subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=e, capture_output=True, text=True,
                          timeout=timeout)
