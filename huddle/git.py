"""git over its command line, for one app's working tree.

Every call goes through the command runner with its own timeout, stdin from /dev/null and an
environment in which git can never prompt (no terminal prompt, no askpass, ssh in batch mode),
so a dead or password-protected remote is an error with git's stderr, never a hang. Change
detection is one round trip: `ls-remote` of the one branch, compared with the deployed commit;
only a commit the clone lacks is fetched. Updating is `checkout --force -B`: tracked edits are
discarded as any deploy must, untracked files are left alone (there is no `git clean` here).
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Mapping, Optional, Sequence

from huddle.errors import GitError
from huddle.runner import CommandResult, CommandRunner, run_command

SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")
DEFAULT_TIMEOUT_S = 60.0
CLONE_TIMEOUT_S = 600.0


def git_environment(base: Optional[Mapping[str, str]] = None) -> dict:
    """The environment of every git call: never prompt, stable messages."""
    env = dict(os.environ if base is None else base)
    for key in ("GIT_ASKPASS", "SSH_ASKPASS", "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        env.pop(key, None)
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GCM_INTERACTIVE"] = "never"
    env["LC_ALL"] = "C"
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes -o ConnectTimeout=20")
    return env


def redact(text: str) -> str:
    """Hide the user:password (or token) part of any URL: git errors end up in state.json,
    `huddle status` and MQTT status, none of which may carry credentials."""
    return _URL_USERINFO.sub(r"\1***@", text)


def _redacted(exc: GitError) -> GitError:
    return GitError([redact(a) for a in exc.argv], redact(exc.reason), redact(exc.stderr),
                    exc.returncode)


def check_ref_name(kind: str, name: str) -> str:
    """Refuse a branch or remote name git could read as an option or a revision expression."""
    if not name or name.startswith("-") or any(c in name for c in " ~^:?*[\\\x7f") \
            or ".." in name or "@{" in name or name.endswith((".", "/", ".lock")) \
            or any(ord(c) < 32 for c in name) or "//" in name or name.startswith("/"):
        raise GitError(["git"], f"refuses {kind} name {name!r}")
    return name


class GitRepo:
    """One working tree and the git executable used for it."""

    def __init__(self, local_path: Path, executable: str = "git",
                 runner: CommandRunner = run_command, timeout_s: float = DEFAULT_TIMEOUT_S,
                 env: Optional[Mapping[str, str]] = None) -> None:
        self.path = Path(local_path)
        self.executable = executable
        self.runner = runner
        self.timeout_s = timeout_s
        self.env = git_environment(env)

    async def _git(self, args: Sequence[str], *, cwd: Optional[Path] = None,
                   timeout_s: Optional[float] = None, check: bool = True) -> CommandResult:
        try:
            return await self.runner([self.executable, *args],
                                     cwd=str(cwd if cwd is not None else self.path),
                                     env=self.env, timeout_s=timeout_s or self.timeout_s,
                                     check=check, error_class=GitError)
        except GitError as exc:
            raise _redacted(exc) from None

    def is_clone(self) -> bool:
        return (self.path / ".git").exists()

    async def clone(self, url: str, remote: str, branch: str) -> None:
        """Clone into a sibling temporary directory, then rename: a clone killed halfway
        never leaves a directory that looks like a working tree."""
        check_ref_name("remote", remote)
        check_ref_name("branch", branch)
        if url.startswith("-"):
            raise GitError(["git", "clone"], f"refuses remote path {redact(url)!r}")
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise GitError(["git", "clone"],
                           f"cannot clone: {self.path} exists and is not a git working tree")
        parent = self.path.parent
        parent.mkdir(parents=True, exist_ok=True)
        temp = parent / f".{self.path.name}.huddle-clone"
        shutil.rmtree(temp, ignore_errors=True)
        try:
            await self._git(["clone", "--origin", remote, "--branch", branch, "--no-tags",
                             "--", url, str(temp)], cwd=parent, timeout_s=CLONE_TIMEOUT_S)
            if (temp / ".gitmodules").exists():
                await self._git(["submodule", "update", "--init", "--recursive"], cwd=temp,
                                timeout_s=CLONE_TIMEOUT_S)
            if self.path.exists():
                self.path.rmdir()  # checked empty above
            os.rename(temp, self.path)
        finally:
            shutil.rmtree(temp, ignore_errors=True)

    async def adoption_problem(self, remote: str, url: str, branch: str) -> Optional[str]:
        """Why an existing clone that huddle never deployed from must not be taken over
        (its remote differs, or it holds work that a deploy would discard), or None."""
        where = str(self.path)
        if url:
            current = await self._git(["remote", "get-url", "--", remote], check=False)
            if current.returncode == 0 and current.stdout.strip() != url:
                return (f"{where} is a clone of {redact(current.stdout.strip())}, not of "
                        f"{redact(url)}: refusing to take it over")
        status = await self._git(["status", "--porcelain", "--untracked-files=no"],
                                 check=False)
        if status.stdout.strip():
            return (f"{where} has uncommitted changes to tracked files: refusing to take it "
                    "over (a deploy would discard them)")
        local = await self._git(["rev-list", "--count", "HEAD", "--not", "--remotes"],
                                check=False)
        if local.returncode == 0 and local.stdout.strip() not in ("", "0"):
            return (f"{where} has {local.stdout.strip()} commit(s) on no remote: refusing to "
                    "take it over (a deploy would leave them behind)")
        return None

    async def ensure_remote(self, remote: str, url: str) -> None:
        """Point `remote` at url; with an empty url the clone must already have `remote`."""
        check_ref_name("remote", remote)
        current = await self._git(["remote", "get-url", "--", remote], check=False)
        if not url:
            if current.returncode != 0:
                raise GitError(["git", "remote", "get-url", remote],
                               f"remote {remote!r} is not configured in {self.path} and "
                               "`remote path` is empty", current.stderr)
            return
        if url.startswith("-"):
            raise GitError(["git", "remote"], f"refuses remote path {redact(url)!r}")
        if current.returncode != 0:
            await self._git(["remote", "add", "--", remote, url])
        elif current.stdout.strip() != url:
            await self._git(["remote", "set-url", "--", remote, url])

    async def remote_head(self, remote: str, branch: str) -> str:
        """The branch's commit on the remote: one round trip, nothing downloaded."""
        check_ref_name("branch", branch)
        ref = f"refs/heads/{branch}"
        # --heads makes protocol v2 ask the server for refs/heads/ only (a bare pattern is
        # matched on the client, after every ref, tags included, has been sent)
        result = await self._git(["ls-remote", "--exit-code", "--heads", remote, ref],
                                 check=False)
        if result.returncode == 2:
            raise _redacted(GitError(result.argv, f"branch {branch!r} does not exist on the "
                                     "remote", result.stderr, 2))
        if result.returncode != 0:
            raise _redacted(GitError(result.argv, f"exited with status {result.returncode}",
                                     result.stderr, result.returncode))
        for line in result.stdout.splitlines():
            sha, _, name = line.partition("\t")
            if name == ref and SHA_RE.match(sha):
                return sha
        raise GitError(result.argv, "gave no commit for the branch", result.stdout)

    async def head(self) -> Optional[str]:
        result = await self._git(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"],
                                 check=False)
        sha = result.stdout.strip()
        return sha if result.returncode == 0 and SHA_RE.match(sha) else None

    async def has_commit(self, sha: str) -> bool:
        result = await self._git(["cat-file", "-e", f"{sha}^{{commit}}"], check=False)
        return result.returncode == 0

    async def fetch(self, remote: str, branch: str) -> str:
        """Fetch only the followed branch; return the commit it brought."""
        check_ref_name("branch", branch)
        tracking = f"refs/remotes/{remote}/{branch}"
        await self._git(["fetch", "--no-tags", "--no-recurse-submodules", remote,
                         f"+refs/heads/{branch}:{tracking}"])
        result = await self._git(["rev-parse", "--verify", f"{tracking}^{{commit}}"])
        return result.stdout.strip()

    async def checkout(self, sha: str, branch: str) -> None:
        """Move the working tree and the local branch to sha, keeping untracked files."""
        if not SHA_RE.match(sha):
            raise GitError(["git", "checkout"], f"refuses to check out {sha!r}: not a commit id")
        check_ref_name("branch", branch)
        await self._git(["checkout", "--quiet", "--force", "-B", branch, sha, "--"])
        if (self.path / ".gitmodules").exists():
            await self._git(["submodule", "sync", "--recursive", "--quiet"])
            await self._git(["submodule", "update", "--init", "--recursive", "--force"],
                            timeout_s=CLONE_TIMEOUT_S)
