"""Whether a commit is signed by a key this device trusts, asked of git itself.

An app whose `[repository]` names `allowed signers` (an SSH allowed-signers file) and/or
`gpg home` (an OpenPGP keyring directory) deploys only commits that git verifies against
exactly those keys. "Exactly" is the point of this module: git would otherwise read the
user's and the system's config (a permissive `gpg.ssh.allowedSignersFile` in ~/.gitconfig),
the tree's own .git/config (which a hook could write), `GIT_CONFIG_*` variables, and gpg
would read ~/.gnupg and its gpg.conf (where `auto-key-retrieve` fetches any signer's key
from a keyserver). So each check runs git with no global or system config, every setting
that decides trust given on the command line (which wins over any file), and GNUPGHOME set
to a fresh private directory holding copies of the configured keyrings and a gpg.conf of
ours (`trust-model always`: a key in the configured keyring is trusted by being there).
The copy is made per check, so a key added to or removed from the files counts at the next
deploy, with no reload; it also keeps gpg from writing into the operator's directory.

One `git log -1 --format=%G?...` call both verifies and says who signed; only git's `G`
(a good signature by a listed key: for SSH a principal of the allowed-signers file matched,
for OpenPGP a key of the keyring made it) is trusted. Signed tags are not followed: huddle
deploys a branch head, and it is the head commit's own signature that is checked.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from huddle.config import RepositoryConfig
from huddle.errors import GitError, SignatureError
from huddle.git import SHA_RE, git_environment
from huddle.runner import CommandRunner, run_command

VERIFY_TIMEOUT_S = 30.0
# NUL-separated: %G? status letter, signer (principal or UID), key, fingerprint, tool output
_FORMAT = "%G?%x00%GS%x00%GK%x00%GF%x00%GG"
_KEYRINGS = ("pubring.kbx", "pubring.gpg", "trustedkeys.kbx", "trustedkeys.gpg", "trustdb.gpg")
# keys a trusted key is in only because the operator put it in `gpg home`; nothing is fetched
_GPG_CONF = "trust-model always\nno-auto-key-retrieve\nno-autostart\n"
# settings that decide what verification means; the environment must not add any
_CONFIG_VARIABLES = (
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GNUPGHOME",
    "GIT_CONFIG_GLOBAL",
    "GIT_CONFIG_SYSTEM",
)

# why a status is refused; {who} is Signature.describe(), {where} the trusted keys' files
_REFUSALS = {
    "N": "is unsigned (no SSH or OpenPGP signature)",
    "B": "has a bad signature (the commit was changed after it was signed, or the signature "
    "is forged)",
    "U": "is {who}: that key is not in {where}",
    "E": "is {who}: the signature cannot be checked against {where}",
    "X": "is {who}, but the signature has expired",
    "Y": "is {who}, but the key has expired",
    "R": "is {who}, but the key is revoked",
}


def names_signers(repo: RepositoryConfig) -> bool:
    """Whether the app deploys only signed commits."""
    return repo.allowed_signers is not None or repo.gpg_home is not None


@dataclass(frozen=True)
class Signature:
    """What git says of one commit's signature."""

    commit: str
    status: str  # git's %G? letter: G good, B bad, U untrusted, E uncheckable, N none, ...
    signer: str  # the allowed-signers principal or the OpenPGP user id ('' if unknown)
    key: str  # the key's fingerprint (SSH) or id (OpenPGP), '' when there is none
    detail: str  # the last line of ssh-keygen's or gpg's own message

    @property
    def trusted(self) -> bool:
        return self.status == "G" and bool(self.signer)

    def describe(self) -> str:
        """Who signed, in words: `signed by alice@example.com (key SHA256:...)`,
        `unsigned`, `signed by an unknown signer (key SHA256:...)`, `badly signed`."""
        if self.status == "N":
            return "unsigned"
        if self.status == "B":
            return "badly signed" + (f" (claiming {self.signer})" if self.signer else "")
        who = self.signer or "an unknown signer"
        return f"signed by {who}" + (f" (key {self.key})" if self.key else "")


class Signers:
    """The trusted keys of one app, and the checks made against them."""

    def __init__(
        self,
        allowed_signers: Path | None,
        gpg_home: Path | None,
        *,
        executable: str = "git",
        runner: CommandRunner = run_command,
        timeout_s: float = VERIFY_TIMEOUT_S,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.allowed_signers = allowed_signers
        self.gpg_home = gpg_home
        self.executable = executable
        self.runner = runner
        self.timeout_s = timeout_s
        self.env = {
            k: v
            for k, v in git_environment(env).items()
            if k not in _CONFIG_VARIABLES
            and not k.startswith(("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_"))
        }
        self.env.update(GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1")

    @classmethod
    def of(cls, repo: RepositoryConfig, runner: CommandRunner = run_command) -> Signers | None:
        """The app's signers, or None when it names none (every commit is deployed)."""
        if not names_signers(repo):
            return None
        return cls(repo.allowed_signers, repo.gpg_home, executable=repo.executable, runner=runner)

    def where(self) -> str:
        """The trusted keys' files, for messages."""
        return " and ".join(str(p) for p in (self.allowed_signers, self.gpg_home) if p)

    async def check(self, tree: Path, commit: str) -> Signature:
        """Verify `commit` (present in the clone at `tree`); says who signed, never raises
        for an untrusted signature (only when git itself cannot run)."""
        if not SHA_RE.match(commit):
            raise GitError(["git", "log"], f"refuses to verify {commit!r}: not a commit id")
        home = tempfile.mkdtemp(prefix="huddle-gnupg-")  # mode 0700, as gpg insists
        try:
            self._fill_gpg_home(Path(home))
            argv = [
                self.executable,
                *self._options(tree),
                "log",
                "-1",
                "--no-walk",
                "--no-show-signature",
                f"--format={_FORMAT}",
                commit,
                "--",
            ]
            result = await self.runner(
                argv,
                cwd=str(tree),
                env={**self.env, "GNUPGHOME": home},
                timeout_s=self.timeout_s,
                error_class=GitError,
            )
        finally:
            shutil.rmtree(home, ignore_errors=True)
        fields = (result.stdout.rstrip("\n").split("\0") + [""] * 5)[:5]
        status, signer, key, fingerprint, output = fields
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        return Signature(
            commit, status or "N", signer.strip(), fingerprint or key, lines[-1] if lines else ""
        )

    async def require(self, tree: Path, commit: str) -> Signature:
        """Verify `commit`; raise SignatureError (a RefusedError) unless a trusted key
        signed it exactly as it stands."""
        signature = await self.check(tree, commit)
        if signature.trusted:
            return signature
        template = _REFUSALS.get(
            signature.status, f"is {{who}}: git's verdict is {signature.status}"
        )
        reason = template.format(who=signature.describe(), where=self.where())
        if signature.status in ("B", "E") and signature.detail:
            reason += f": {signature.detail}"
        raise SignatureError(
            commit, signature.describe(), signature.status, f"{commit[:12]} {reason}"
        )

    def _options(self, tree: Path) -> list[str]:
        """`-c` settings overriding every file git reads: what verifies, against what."""
        allowed = str(self.allowed_signers) if self.allowed_signers else "/dev/null"
        options = {
            "gpg.ssh.allowedSignersFile": allowed,
            "gpg.ssh.program": "ssh-keygen",
            "gpg.ssh.revocationFile": "/dev/null",
            "gpg.program": "gpg",
            "gpg.openpgp.program": "gpg",
            # X.509 (gpgsm) is not a signer kind huddle can be told to trust
            "gpg.x509.program": "false",
            "log.showSignature": "false",
            # the clone huddle already works in; global config is cut off just above
            "safe.directory": str(tree),
        }
        return [arg for key, value in options.items() for arg in ("-c", f"{key}={value}")]

    def _fill_gpg_home(self, home: Path) -> None:
        (home / "gpg.conf").write_text(_GPG_CONF)
        if self.gpg_home is None:
            return  # an empty keyring: no OpenPGP signature is trusted
        extra = []
        for name in _KEYRINGS:
            source = self.gpg_home / name
            if source.is_file():
                shutil.copyfile(source, home / name)
                if name.startswith("trustedkeys"):
                    extra.append(name)  # gpgv's keyring: gpg reads it only when named
        if extra:
            with open(home / "gpg.conf", "a", encoding="utf-8") as fh:
                fh.writelines(f"keyring {name}\n" for name in extra)
