"""The git and hook work on one app's working tree, run in child tasks of its state machine.

Each method is one unit of work whose result the machine receives as a `TreeReady` event:
`prepare` (clone or adopt the tree at start, repair a tree a killed agent left mid-deploy),
`deploy` (pre-pull hooks, fetch, checkout, post-pull hooks, install: everything a new commit
needs before its process may start) and `switch` (move to a known commit for a rollback or a
retry, with its install). None of them starts or stops a process, and none decides policy.

One promise holds whatever fails: the tree is left at the commit that runs. A `deploy` or
`switch` that fails after the tree moved puts it back at `running` before raising, so a later
crash restart never runs code that was not deployed.

With trusted signers configured (huddle/signatures.py), a second one holds: the tree never
moves to, installs or runs the hooks of a commit no trusted key signed. `deploy` and `switch`
verify before the checkout and raise `SignatureError` (a `RefusedError`); `prepare` verifies
the head of a fresh clone or an adopted tree before its first install, and with an untrusted
head prepares nothing to run (`Prepared(None, ...)`), so the app waits for a trusted commit.
A commit the state already records as deployed is not checked again at an agent restart:
it ran before, and keeps running until the branch brings a trusted one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from huddle.config import AppConfig
from huddle.errors import HuddleError, SignatureError
from huddle.git import GitRepo, redact
from huddle.hooks import HOOK_TIMEOUT_S, run_hooks
from huddle.signatures import Signers, names_signers
from huddle.state import AppState

log = logging.getLogger("huddle.app")


@dataclass(frozen=True)
class Prepared:
    commit: str | None  # what the app should run from this tree (None: nothing yet)
    first: bool  # never deployed from this tree: it got its hooks and install
    refused: SignatureError | None = None  # the head no trusted key signed: nothing runs


class Tree:
    def __init__(
        self,
        config: AppConfig,
        git: GitRepo,
        *,
        log_path: Path,
        env_for: Callable[[str | None], Mapping[str, str]],
    ) -> None:
        self.config = config
        self.git = git
        self.log_path = log_path
        self.env_for = env_for  # the hooks' environment for a commit

    @property
    def branch(self) -> str:
        return self.config.repository.branch

    def signers(self) -> Signers | None:
        """The app's trusted keys (None: any commit is deployed); read from the config at
        each use, so a reloaded config counts at once."""
        if not names_signers(self.config.repository):
            return None
        return Signers.of(self.config.repository, self.git.runner)

    async def verify(self, commit: str) -> None:
        """Raise SignatureError unless a trusted key signed `commit` (present locally)."""
        signers = self.signers()
        if signers is None:
            return
        signature = await signers.require(self.git.path, commit)
        log.info("%s: %s is %s", self.config.name, commit[:12], signature.describe())

    async def hooks(
        self,
        commands: Sequence[tuple],
        what: str,
        commit: str | None,
        timeout_s: float = HOOK_TIMEOUT_S,
    ) -> None:
        await run_hooks(
            commands,
            what,
            cwd=self.config.repository.local_path,
            env=self.env_for(commit),
            log_path=self.log_path,
            timeout_s=timeout_s,
        )

    async def install(self, commit: str, *, post_pull: bool = True) -> None:
        """What a commit needs after checkout: post-pull hooks, then `install`."""
        if post_pull and self.config.scripts.post_pull:
            await self.hooks(self.config.scripts.post_pull, "post-pull", commit)
        app = self.config.application
        if app is not None and app.install:
            await self.hooks([app.install], "install", commit, app.install_timeout_s)

    async def prepare(self, state: AppState) -> Prepared:
        """Clone or adopt the tree and say which commit to run from it."""
        repo = self.config.repository
        cloned = False
        if not self.git.is_clone():
            if not repo.remote_path:
                raise HuddleError(
                    f"{repo.local_path} is not a git clone and `remote path` "
                    "is empty: nothing to clone from"
                )
            log.info(
                "%s: cloning %s into %s",
                self.config.name,
                redact(repo.remote_path),
                repo.local_path,
            )
            await self.git.clone(repo.remote_path, repo.remote, repo.branch)
            cloned = True
        elif state.commit is None:
            # a clone huddle never deployed from: a developer's work must not be lost
            problem = await self.git.adoption_problem(repo.remote, repo.remote_path, repo.branch)
            if problem:
                raise HuddleError(problem)
        await self.git.ensure_remote(repo.remote, repo.remote_path)
        head = await self.git.head()
        target = state.commit or head
        if target and target in state.bad and state.good:
            target = state.good  # a banned commit never runs again, even from its own tree
        if not cloned and target and head != target and await self.git.has_commit(target):
            # killed mid-deploy (or the tree was moved by hand): it must match what runs
            await self.git.checkout(target, repo.branch)
            head = target
        if head is None:
            return Prepared(None, False)
        if state.commit != head:
            # never deployed from this tree (fresh clone, or a clone made by hand): it gets
            # its hooks and install like any deploy, once its signature is trusted
            try:
                await self.verify(head)
            except SignatureError as exc:
                log.error(
                    "%s: %s; nothing runs until a commit signed by a trusted key arrives",
                    self.config.name,
                    exc,
                )
                return Prepared(None, False, exc)
            await self.install(head)
            return Prepared(head, True)
        return Prepared(head, False)

    async def deploy(self, commit: str, running: str | None) -> str:
        """Fetch `commit` (or whatever the branch holds by then), move the tree to it and
        install it; returns the commit the tree is now at. On failure the tree is back at
        `running` before the error propagates."""
        repo = self.config.repository
        # with signers, a tree that runs nothing may hold the files of a refused clone:
        # a hook run there could run them
        if self.config.scripts.pre_pull and (running or self.signers() is None):
            await self.hooks(self.config.scripts.pre_pull, "pre-pull", running)
        if not await self.git.has_commit(commit):
            commit = await self.git.fetch(repo.remote, repo.branch)
        await self._verify_for(commit, running)  # before the tree moves
        await self._move(commit, running, post_pull=True)
        return commit

    async def switch(self, commit: str, running: str | None) -> None:
        """Move the tree to a commit that was deployed before (a rollback or a retry); it
        must still be trusted (a key may have been removed since)."""
        await self._verify_for(commit, running)
        if await self.git.head() == commit:
            return  # already there (a retry of the commit that failed)
        await self._move(commit, running, post_pull=False)

    async def _verify_for(self, commit: str, running: str | None) -> None:
        try:
            await self.verify(commit)
        except SignatureError as exc:
            if running:
                raise
            raise SignatureError(
                exc.commit,
                exc.who,
                exc.status,
                f"{exc}; nothing runs until a commit signed by a trusted key arrives",
            ) from None

    async def _move(self, commit: str, running: str | None, *, post_pull: bool) -> None:
        await self.git.checkout(commit, self.branch)
        try:
            await self.install(commit, post_pull=post_pull)
        except BaseException:
            await self.restore(running)
            raise

    async def restore(self, running: str | None) -> None:
        """Put the tree back at the running commit; a failure here is logged, not raised,
        so the error that made us restore is the one reported."""
        if not running:
            return
        try:
            await self.git.checkout(running, self.branch)
        except HuddleError as exc:
            log.error("%s: cannot put the tree back at %s: %s", self.config.name, running[:12], exc)
