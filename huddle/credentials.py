"""Credentials in a `remote path`, kept out of argv, files and messages.

A token written into `remote path` (`https://user:TOKEN@host/x.git`) would otherwise land in
the clone's world-readable `.git/config` and in the argv of `git-remote-https`, which `ps`
shows to every user. So the URL is split once: git only ever sees the URL without its userinfo
(in argv and in the clone's config), and the user name and password reach git through its
environment (readable by the same user only): `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/
`GIT_CONFIG_VALUE_n` install a `credential.<scheme://host>.helper` that is a shell function
printing two environment variables. The helper is scoped to the remote's scheme and host, so a
submodule on another host never receives the token, and the helper list is reset first, so a
user's `credential.helper=store` cannot write the token to disk.

`redact` hides userinfo in any URL in a text (git errors end up in state.json, `huddle status`
and MQTT), including a raw `@` inside a password, which makes git print part of the password
as if it were the user name.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

# scheme://userinfo@ where userinfo runs to the LAST '@' before the end of the authority:
# a raw '@' in a password (`https://u:p@ss@host/`) is still all hidden
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s'\"<>?#]*@")
_SPLIT = re.compile(r"(?i)^([a-z][a-z0-9+.-]*://)([^/?#]*)(.*)$", re.S)
USER_VAR = "GIT_HUDDLE_USERNAME"  # not HUDDLE_*: those are stripped from git's environment
PASSWORD_VAR = "GIT_HUDDLE_PASSWORD"
# `get` prints the pair; `store`/`erase` do nothing (the secret lives in the config file)
_HELPER = (
    '!f() { test "$1" = get && printf "username=%s\\npassword=%s\\n" '
    f'"${USER_VAR}" "${PASSWORD_VAR}"; }}; f'
)


@dataclass(frozen=True)
class Credentials:
    """The user name and password (or token) taken out of a URL; `scope` is scheme://host."""

    scope: str
    username: str
    password: str

    @property
    def secrets(self) -> tuple:
        """Every form in which a secret may appear in text (raw and percent-encoded)."""
        found = []
        for value in (self.password, self.username if not self.password else ""):
            if len(value) >= 3:  # shorter would redact ordinary words; a token is longer
                found += [value, quote(value, safe="")]
        return tuple(dict.fromkeys(found))

    def add_to(self, env: dict) -> None:
        """Make git answer an auth challenge for `scope` with these: two config entries
        appended after any `GIT_CONFIG_*` entries env already has, and the two variables."""
        try:
            n = int(env.get("GIT_CONFIG_COUNT", "0"))
        except ValueError:
            n = 0  # git would refuse the malformed count anyway; ours must work
        env.update(
            {
                f"GIT_CONFIG_KEY_{n}": "credential.helper",
                f"GIT_CONFIG_VALUE_{n}": "",
                f"GIT_CONFIG_KEY_{n + 1}": f"credential.{self.scope}.helper",
                f"GIT_CONFIG_VALUE_{n + 1}": _HELPER,
                "GIT_CONFIG_COUNT": str(n + 2),
                USER_VAR: self.username,
                PASSWORD_VAR: self.password,
            }
        )


def split_credentials(url: str) -> tuple:
    """(url without userinfo, Credentials or None). Only URLs with a scheme carry a password;
    scp-like `user@host:path` has just an ssh user name and is returned unchanged."""
    match = _SPLIT.match(url)
    if not match or "@" not in match.group(2):
        return url, None
    scheme, authority, rest = match.groups()
    userinfo, _, host = authority.rpartition("@")
    user, _, password = userinfo.partition(":")
    clean = f"{scheme}{host}{rest}"
    if scheme.lower() not in ("http://", "https://"):
        # ssh:// and git:// take no password from a URL: drop it, keep an ssh user name
        if not password:
            return url, None
        return f"{scheme}{user + '@' if user else ''}{host}{rest}", None
    return clean, Credentials(f"{scheme}{host}", unquote(user), unquote(password))


def redact(text: str, secrets: tuple = ()) -> str:
    """Hide the user:password part of any URL in text, and any known secret anywhere."""
    text = _URL_USERINFO.sub(r"\1***@", text)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def save_private(path: Path, text: str) -> None:
    """Write text to a file only its owner can read (mkstemp makes it 0600), atomically:
    where a `remote path` left empty keeps the credentials cleaned out of a clone's config."""
    fd, temp = tempfile.mkstemp(prefix=".huddle-", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # the temp file is gone; the first error matters
            os.unlink(temp)
        raise
