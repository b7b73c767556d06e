"""git over its command line, for one app's working tree.

Every call goes through the command runner with its own timeout, stdin from /dev/null and an
environment in which git can never prompt (no terminal prompt, no askpass, ssh in batch mode)
and which carries none of the agent's own `HUDDLE_*` settings, so a dead or password-protected
remote is an error with git's stderr, never a hang. Credentials in `remote path` never reach
argv or the clone's config: see `huddle.credentials`.

Change detection is one round trip: `ls-remote` of the one branch, compared with the deployed
commit. Everything else is the deploy path, and guards what it does there:
- a commit counts as present only when it is complete (its tree and every blob), so a fetch
  interrupted after the commit object arrived is fetched again rather than believed;
- `checkout` refuses, before touching anything, a commit that would overwrite or remove an
  untracked or ignored path (`TreeConflictError`), discards tracked edits as any deploy
  must, and if the move fails halfway puts the tree back at the commit it was on;
- a lock or temporary file left by a killed git is removed, and corrupt objects are moved
  aside and fetched again (`gitrepair`), so none of these needs a person.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from huddle import gitrepair
from huddle.config.types import ref_name_problem
from huddle.credentials import Credentials, save_private, split_credentials
from huddle.credentials import redact as _redact_text
from huddle.errors import GitError, TreeConflictError
from huddle.gitadopt import adoption_problem
from huddle.runner import CommandResult, CommandRunner, run_command

log = logging.getLogger("huddle.git")

SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
DEFAULT_TIMEOUT_S = 60.0
CLONE_TIMEOUT_S = 600.0
_LITERAL_PATHSPECS_MAX = 200  # more paths in question than this: list all untracked instead


def git_environment(base: Mapping[str, str] | None = None) -> dict:
    """The environment of every git call: never prompt, stable messages, none of the agent's
    own settings (`HUDDLE_MQTT` may hold a password; git and its hooks have no use for it)."""
    env = {
        k: v
        for k, v in (os.environ if base is None else base).items()
        if not k.startswith("HUDDLE_")
    }
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
    return _redact_text(text)


def check_ref_name(kind: str, name: str) -> str:
    """Refuse a branch or remote name git would refuse or read as an option (the config
    checker's rules: one validator)."""
    problem = ref_name_problem(name)
    if problem:
        raise GitError(["git"], f"refuses {kind} name: {problem}")
    return name


class GitRepo:
    """One working tree and the git executable used for it."""

    def __init__(
        self,
        local_path: Path,
        executable: str = "git",
        runner: CommandRunner = run_command,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(local_path)
        self.executable = executable
        self.runner = runner
        self.timeout_s = timeout_s
        self._base_env = git_environment(env)
        self.env = dict(self._base_env)
        self.credentials: Credentials | None = None
        self.remote: str | None = None  # last remote and branch used: for repairs
        self.branch: str | None = None
        self._running: dict = {}  # in-flight git calls: token -> wall start
        self._complete: set = set()  # commits verified complete (objects stay)

    @property
    def gitdir(self) -> Path:
        return self.path / ".git"

    # -- running git ---------------------------------------------------------------------
    def redacted(self, text: str) -> str:
        return _redact_text(text, self.credentials.secrets if self.credentials else ())

    def _redacted(self, exc: GitError) -> GitError:
        return GitError(
            [self.redacted(a) for a in exc.argv],
            self.redacted(exc.reason),
            self.redacted(exc.stderr),
            exc.returncode,
        )

    def oldest_running(self) -> float:
        """Wall-clock start of the oldest git process of ours now running on this tree (now
        when none is): files of git's older than this are leftovers of a killed git."""
        return min(self._running.values(), default=time.time())

    async def run_git(
        self,
        args: Sequence[str],
        *,
        cwd: Path | None = None,
        timeout_s: float | None = None,
        check: bool = True,
        heal_lock: bool = True,
    ) -> CommandResult:
        token = object()
        started = self._running[token] = time.time()
        try:
            result = await self.runner(
                [self.executable, *args],
                cwd=str(cwd if cwd is not None else self.path),
                env=self.env,
                timeout_s=timeout_s or self.timeout_s,
                check=check,
                error_class=GitError,
            )
        except GitError as exc:
            failure: GitError | None = exc
            stderr = exc.stderr
        else:
            failure, stderr = None, result.stderr if result.returncode else ""
        finally:
            del self._running[token]
        lock = gitrepair.lock_in_message(stderr) if stderr and heal_lock else None
        if lock and gitrepair.remove_stale_lock(
            self.gitdir, lock, min(started, self.oldest_running())
        ):
            return await self.run_git(
                args, cwd=cwd, timeout_s=timeout_s, check=check, heal_lock=False
            )
        if lock and failure is not None:
            failure = GitError(
                [self.executable, *args],
                f"could not lock {lock}: it exists "
                "and is newer than our git (another git is working in this "
                "tree?)",
                stderr,
                failure.returncode if failure else None,
            )
        if failure is not None:
            raise self._redacted(failure) from None
        return result

    def use_url(self, url: str) -> str:
        """Keep url's credentials for git's environment; returns the URL without them."""
        clean, credentials = split_credentials(url)
        if credentials is not None or url:
            self.credentials = credentials
            self.env = dict(self._base_env)
            if credentials is not None:
                credentials.add_to(self.env)
        return clean

    # -- the clone and its remote ----------------------------------------------------------
    def is_clone(self) -> bool:
        return self.gitdir.exists()

    async def clone(self, url: str, remote: str, branch: str) -> None:
        """Clone into a sibling temporary directory, then rename: a clone killed halfway
        never leaves a directory that looks like a working tree."""
        check_ref_name("remote", remote)
        check_ref_name("branch", branch)
        if url.startswith("-"):
            raise GitError(["git", "clone"], f"refuses remote path {self.redacted(url)!r}")
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise GitError(
                ["git", "clone"], f"cannot clone: {self.path} exists and is not a git working tree"
            )
        clean = self.use_url(url)
        self.remote, self.branch = remote, branch
        parent = self.path.parent
        parent.mkdir(parents=True, exist_ok=True)
        temp = parent / f".{self.path.name}.huddle-clone"
        shutil.rmtree(temp, ignore_errors=True)
        try:
            await self.run_git(
                [
                    "clone",
                    "--origin",
                    remote,
                    "--branch",
                    branch,
                    "--no-tags",
                    "--",
                    clean,
                    str(temp),
                ],
                cwd=parent,
                timeout_s=CLONE_TIMEOUT_S,
            )
            if (temp / ".gitmodules").exists():
                await self.run_git(
                    ["submodule", "update", "--init", "--recursive"],
                    cwd=temp,
                    timeout_s=CLONE_TIMEOUT_S,
                )
            if self.path.exists():
                self.path.rmdir()  # checked empty above
            os.rename(temp, self.path)
        finally:
            shutil.rmtree(temp, ignore_errors=True)

    async def remote_url(self, remote: str) -> str | None:
        current = await self.run_git(["remote", "get-url", "--", remote], check=False)
        return current.stdout.strip() if current.returncode == 0 else None

    async def ensure_remote(self, remote: str, url: str) -> None:
        """Point `remote` at url (its credentials kept in git's environment, never in the
        config); with an empty url the clone must already have `remote`. A config that still
        holds credentials (written by an older huddle or by hand) is cleaned either way."""
        check_ref_name("remote", remote)
        self.remote = remote
        current = await self.remote_url(remote)
        if not url:
            if current is None:
                raise GitError(
                    ["git", "remote", "get-url", remote],
                    f"remote {remote!r} is not configured in {self.path} and "
                    "`remote path` is empty",
                )
            url = self._kept_url(current)
        if url.startswith("-"):
            raise GitError(["git", "remote"], f"refuses remote path {self.redacted(url)!r}")
        clean = self.use_url(url)
        if current is None:
            await self.run_git(["remote", "add", "--", remote, clean])
        elif current != clean:
            await self.run_git(["remote", "set-url", "--", remote, clean])

    def _kept_url(self, current: str) -> str:
        """With `remote path` empty the clone's config is the only place the credentials
        were written: they move to .git/huddle-remote-url (0600, read by huddle, never by
        git) and are read back from there once the config is clean."""
        kept = self.gitdir / "huddle-remote-url"
        if split_credentials(current)[1] is not None:
            save_private(kept, current)
            return current
        try:
            saved = kept.read_text(encoding="utf-8").strip()
        except OSError:
            return current  # nothing kept: the remote needs no credentials
        return saved if split_credentials(saved)[0] == current else current

    async def adoption_problem(self, remote: str, url: str, branch: str) -> str | None:
        """Why taking over this existing clone would lose work, or None. For a clone huddle
        did not make or deploy (call it before `ensure_remote`, while the state records no
        deploy from this tree): its `remote` points elsewhere than `remote path`, it has
        changes to tracked files, or commits (on `branch` or a detached HEAD) that are not on
        the remote. Fetches `branch` to know what the remote has; raises GitError if that
        fails (retry later). See docs/config.md, "Adopting an existing clone"."""
        check_ref_name("remote", remote)
        check_ref_name("branch", branch)
        return await adoption_problem(self, remote, url, branch)

    # -- change detection (the poll: one call) ---------------------------------------------
    async def remote_head(self, remote: str, branch: str) -> str:
        """The branch's commit on the remote: one round trip, nothing downloaded."""
        check_ref_name("branch", branch)
        ref = f"refs/heads/{branch}"
        # --heads makes protocol v2 ask the server for refs/heads/ only (a bare pattern is
        # matched on the client, after every ref, tags included, has been sent)
        result = await self.run_git(
            ["ls-remote", "--exit-code", "--heads", remote, ref], check=False
        )
        if result.returncode == 2:
            raise self._redacted(
                GitError(
                    result.argv, f"branch {branch!r} does not exist on the remote", result.stderr, 2
                )
            )
        if result.returncode != 0:
            raise self._redacted(
                GitError(
                    result.argv,
                    f"exited with status {result.returncode}",
                    result.stderr,
                    result.returncode,
                )
            )
        for line in result.stdout.splitlines():
            sha, _, name = line.partition("\t")
            if name == ref and SHA_RE.match(sha):
                return sha
        raise GitError(result.argv, "gave no commit for the branch", result.stdout)

    async def head(self) -> str | None:
        result = await self.run_git(
            ["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], check=False
        )
        sha = result.stdout.strip()
        return sha if result.returncode == 0 and SHA_RE.match(sha) else None

    # -- the deploy path -------------------------------------------------------------------
    async def has_commit(self, sha: str) -> bool:
        """True when sha is a commit whose tree and blobs are all here: a fetch interrupted
        after the commit object arrived leaves it present but unusable. One `rev-list` walk
        of the tree, existence checks only (no blob is read), remembered once true."""
        if sha in self._complete:
            return True
        if not SHA_RE.match(sha):
            return False
        result = await self.run_git(
            ["rev-list", "--quiet", "--objects", "--no-walk", f"{sha}^{{commit}}", "--"],
            check=False,
        )
        if result.returncode == 0:
            self._complete.add(sha)
        return result.returncode == 0

    async def fetch(self, remote: str, branch: str) -> str:
        """Fetch only the followed branch; return the commit it brought, complete.

        Temporary files of an interrupted fetch are removed first (on a full disk they hold
        the space the retry needs) and after a failure. A plain fetch also repairs a commit
        left without its tree: no ref names that commit, so git asks for it again. When the
        branch tip itself lacks objects (lost or corrupt after a fetch), git believes it has
        them and only `--refetch` (git >= 2.36) asks for everything again; corrupt object
        files are moved aside first (`repair`)."""
        check_ref_name("remote", remote)
        check_ref_name("branch", branch)
        self.remote, self.branch = remote, branch
        gitrepair.remove_temp_objects(self.gitdir, self.oldest_running())
        try:
            await self._fetch(remote, branch)
        except GitError as exc:
            gitrepair.remove_temp_objects(self.gitdir, self.oldest_running())
            if not gitrepair.looks_corrupt(exc.stderr):
                raise
            await self.repair(remote, branch, exc.stderr)
        sha = (
            await self.run_git(
                ["rev-parse", "--verify", "--quiet", f"refs/remotes/{remote}/{branch}^{{commit}}"]
            )
        ).stdout.strip()
        if not await self.has_commit(sha):
            log.warning(
                "%s: %s is incomplete after a fetch; fetching everything again", self.path, sha[:12]
            )
            await self.repair(remote, branch, "")
            if not await self.has_commit(sha):
                raise GitError(
                    ["git", "fetch", remote], f"left {sha[:12]} incomplete even after --refetch"
                )
        return sha

    async def _fetch(self, remote: str, branch: str, *extra: str) -> None:
        await self.run_git(
            [
                "fetch",
                "--no-tags",
                "--no-recurse-submodules",
                *extra,
                remote,
                f"+refs/heads/{branch}:refs/remotes/{remote}/{branch}",
            ],
            timeout_s=CLONE_TIMEOUT_S if extra else None,
        )

    async def repair(self, remote: str, branch: str, message: str) -> None:
        """Heal a clone whose objects or index are damaged, keeping every untracked file:
        corrupt object files (named by git in `message`, or by `fsck`) are moved aside into
        .git/huddle-corrupt/, the branch is fetched again whole (`--refetch`), a corrupt
        index is rebuilt from HEAD. Failure path only: fsck reads every object."""
        log.warning(
            "%s: repairing the git clone (%s)",
            self.path,
            self.redacted(message.strip().splitlines()[-1])
            if message.strip()
            else "objects missing",
        )
        bad = gitrepair.corrupt_object_files(self.gitdir, message)
        if not bad:
            fsck = await self.run_git(
                ["fsck", "--no-dangling", "--no-progress", "--no-reflogs"],
                check=False,
                timeout_s=CLONE_TIMEOUT_S,
            )
            bad = gitrepair.corrupt_object_files(self.gitdir, fsck.stdout + fsck.stderr)
        gitrepair.move_aside(self.gitdir, bad)
        if gitrepair.index_corrupt(message):
            gitrepair.move_aside_index(self.gitdir)
        gitrepair.remove_temp_objects(self.gitdir, self.oldest_running())
        await self._fetch(remote, branch, "--refetch")
        if not (self.gitdir / "index").exists() and await self.head():
            await self.run_git(["read-tree", "HEAD"])  # index only: the files stay as they are

    async def tree_conflicts(self, previous: str | None, target: str) -> list:
        """Untracked or ignored paths that checking out target over previous would overwrite
        or remove, relative to the tree. Usually one `git diff` (the new paths) and lstat
        calls; `ls-files --others` only when something is in the way on disk."""
        if previous:
            diff = await self.run_git(
                [
                    "diff",
                    "--name-only",
                    "-z",
                    "--no-renames",
                    "--diff-filter=A",
                    previous,
                    target,
                    "--",
                ]
            )
        else:
            diff = await self.run_git(["ls-tree", "-r", "-z", "--name-only", target, "--"])
        new = [p for p in diff.stdout.split("\0") if p]
        in_the_way = gitrepair.paths_in_the_way(self.path, new)
        if not in_the_way:
            return []
        # no --exclude-standard: ignored files are as precious as untracked ones
        args = ["ls-files", "-z", "--others", "--directory", "--no-empty-directory", "--"]
        literal = len(in_the_way) <= _LITERAL_PATHSPECS_MAX
        if literal:
            args += [f":(literal){p}" for p in in_the_way]
        others = [p.rstrip("/") for p in (await self.run_git(args)).stdout.split("\0") if p]
        if literal:
            return others
        wanted = set(in_the_way)
        return [p for p in others if any(p == w or p.startswith(w + "/") for w in wanted)]

    async def checkout(self, sha: str, branch: str) -> None:
        """Move the working tree and the local branch to sha. Tracked edits are discarded,
        untracked and ignored files are kept: a commit that would overwrite or remove one is
        refused (TreeConflictError) before anything moves. sha must be complete
        (`has_commit`). If the checkout or the submodule update fails, the tree is put back
        at the commit it was on before the error is raised; corrupt objects are repaired and
        the checkout tried once more first (when a fetch has told which remote to use)."""
        if not SHA_RE.match(sha):
            raise GitError(["git", "checkout"], f"refuses to check out {sha!r}: not a commit id")
        check_ref_name("branch", branch)
        if not await self.has_commit(sha):
            raise GitError(
                ["git", "checkout", sha],
                "refused: the commit is missing or incomplete in the clone (fetch it first)",
            )
        previous = await self.head()
        if previous != sha:
            conflicts = await self.tree_conflicts(previous, sha)
            if conflicts:
                raise TreeConflictError(["git", "checkout", sha[:12]], conflicts)
        try:
            await self._move(sha, branch)
        except GitError as exc:
            if gitrepair.lock_in_message(exc.stderr):
                raise  # git takes its locks before it touches anything: nothing moved
            if not (gitrepair.looks_corrupt(exc.stderr) and self.remote and self.branch):
                await self._restore(previous, sha, branch, exc)
                raise
            try:
                await self.repair(self.remote, self.branch, exc.stderr)
                await self._move(sha, branch)
            except GitError as again:
                await self._restore(previous, sha, branch, again)
                raise again from None

    async def _move(self, sha: str, branch: str) -> None:
        await self.run_git(["checkout", "--quiet", "--force", "-B", branch, sha, "--"])
        if (self.path / ".gitmodules").exists():
            await self.run_git(["submodule", "sync", "--recursive", "--quiet"])
            await self.run_git(
                ["submodule", "update", "--init", "--recursive", "--force"],
                timeout_s=CLONE_TIMEOUT_S,
            )

    async def _restore(self, previous: str | None, sha: str, branch: str, cause: GitError) -> None:
        """Put the tree back at previous after a failed move; raise if even that fails."""
        if not previous or previous == sha:
            return
        try:
            await self._move(previous, branch)
        except GitError as exc:
            raise GitError(
                cause.argv,
                f"{cause.reason}, and putting the tree back at {previous[:12]} failed too: {exc}",
                cause.stderr,
                cause.returncode,
            ) from None
        log.warning("%s: checkout failed; the tree is back at %s", self.path, previous[:12])
