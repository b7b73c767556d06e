"""Checking the trusted-signer files an app's `[repository]` names, before any deploy.

With `allowed signers` (an SSH allowed-signers file, git's `gpg.ssh.allowedSignersFile`
format) or `gpg home` (an OpenPGP keyring directory) set, only commits signed by those keys
are deployed; a file that cannot serve that purpose, or a missing `ssh-keygen` / `gpg`, must
stop the app at config time, never turn into a silent pass or a refusal of every commit.
Each function returns the problems it finds as reasons (no raising), for the checker to
record under the key. Keys are validated by `ssh-keygen -l` itself, not by a parser of ours:
it knows every key type the verifying `ssh-keygen -Y verify` will accept.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

MAX_SIGNERS_BYTES = 1024 * 1024
TOOL_TIMEOUT_S = 10.0
# the key types ssh-keygen knows (plain keys, security keys and certificates)
_KEY_TYPE = re.compile(
    r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|"
    r"sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com|"
    r"[a-z0-9-]+-cert-v01@openssh\.com)$"
)
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
_KEYRINGS = ("pubring.kbx", "pubring.gpg", "trustedkeys.kbx", "trustedkeys.gpg")


def _words(line: str) -> list[str]:
    """Whitespace-separated fields, a double-quoted part (an option's value) kept whole."""
    return re.findall(r'(?:[^\s"]|"[^"]*")+', line)


def allowed_signers_problems(path: Path) -> list[str]:
    """Why `path` is not a usable allowed-signers file (each line: principals, optional
    options, key type, base64 key, optional comment), one reason per problem."""
    if shutil.which("ssh-keygen") is None:
        return ["ssh-keygen is not on PATH; it is needed to verify SSH signatures"]
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            return [f"{path} is not a regular file"]
        if info.st_size > MAX_SIGNERS_BYTES:
            return [f"{path} is larger than {MAX_SIGNERS_BYTES // 1024} KB"]
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"]
    problems, keys = [], []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        words = _words(line)
        at = next((i for i, w in enumerate(words) if _KEY_TYPE.match(w)), None)
        if at is None or at == 0 or at + 1 >= len(words) or not _BASE64.match(words[at + 1]):
            problems.append(
                f"{path} line {number}: expected 'principals [options] key-type base64-key'"
            )
        else:
            keys.append((number, f"{words[at]} {words[at + 1]}"))
    if not keys and not problems:
        problems.append(f"{path} lists no signer")
    if keys and not _keys_parse([key for _, key in keys]):
        # one call for the whole file passed over a bad key: find which, one call each
        problems += [
            f"{path} line {number}: ssh-keygen does not accept this key"
            for number, key in keys
            if not _keys_parse([key])
        ]
    return problems


def _keys_parse(keys: list[str]) -> bool:
    """True when `ssh-keygen -l` reads every key (one per line) of `keys`."""
    with tempfile.NamedTemporaryFile("w", suffix=".pub", encoding="ascii") as fh:
        fh.write("\n".join(keys) + "\n")
        fh.flush()
        try:
            done = subprocess.run(
                ["ssh-keygen", "-l", "-f", fh.name],
                capture_output=True,
                text=True,
                timeout=TOOL_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
    return done.returncode == 0 and len(done.stdout.splitlines()) == len(keys)


def gpg_home_problems(path: Path) -> list[str]:
    """Why `path` is not an OpenPGP home with a public keyring."""
    if shutil.which("gpg") is None:
        return ["gpg is not on PATH; it is needed to verify OpenPGP signatures"]
    if not path.is_dir():
        return [f"{path} is not a directory" if path.exists() else f"{path} does not exist"]
    for name in _KEYRINGS:
        ring = path / name
        try:
            if ring.is_file() and ring.stat().st_size > 0 and os.access(ring, os.R_OK):
                return []
        except OSError:
            continue  # an unreadable entry is not a keyring; look at the next one
    return [f"{path} holds no public keyring ({', '.join(_KEYRINGS)})"]
