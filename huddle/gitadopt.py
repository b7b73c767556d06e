"""Whether an existing clone can be taken over without losing anyone's work.

huddle deploys with `checkout --force -B BRANCH`: tracked edits are discarded and the local
branch is moved, so a developer's clone adopted at `local path` would lose its uncommitted
edits and its unpushed commits, and `ensure_remote` would repoint its remote. This check runs
once, before the first deploy from a tree huddle did not make, and names what would be lost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from huddle.credentials import split_credentials

if TYPE_CHECKING:
    from huddle.git import GitRepo


async def adoption_problem(repo: GitRepo, remote: str, url: str, branch: str) -> str | None:
    """See GitRepo.adoption_problem (which has checked the names)."""
    current = await repo.remote_url(remote)
    if url and current is not None:
        clean, mine = split_credentials(url)[0], split_credentials(current)[0]
        if clean != mine:
            return (
                f"{repo.path} is a clone whose remote {remote!r} is "
                f"{repo.redacted(mine)}, not `remote path` {repo.redacted(clean)}; "
                "huddle will not repoint it"
            )
    status = await repo.run_git(["status", "--porcelain", "-z", "--untracked-files=no"])
    changed = [entry[3:] for entry in status.stdout.split("\0") if len(entry) > 3]
    if changed:
        return (
            f"{repo.path} has uncommitted changes to tracked files "
            f"({', '.join(changed[:5])}{', ...' if len(changed) > 5 else ''}); "
            "commit and push them, or discard them"
        )
    if current is None and not url:
        return None  # ensure_remote will refuse: no remote to compare with
    if current is None:
        repo.use_url(url)
    source = remote if current is not None else split_credentials(url)[0]
    await repo.run_git(
        [
            "fetch",
            "--no-tags",
            "--no-recurse-submodules",
            source,
            f"+refs/heads/{branch}:refs/remotes/{remote}/{branch}",
        ]
    )
    detached = await repo.run_git(["symbolic-ref", "--quiet", "HEAD"], check=False)
    tips = [f"refs/heads/{branch}"] + (["HEAD"] if detached.returncode else [])
    local = await repo.run_git(
        [
            "rev-list",
            "--ignore-missing",
            "--max-count=6",
            *tips,
            "--not",
            f"--remotes={remote}",
            "--",
        ]
    )
    commits = local.stdout.split()
    if commits:
        return (
            f"{repo.path} has commits that are not on {remote}/{branch} "
            f"({', '.join(c[:12] for c in commits[:5])}"
            f"{', ...' if len(commits) > 5 else ''}); push them first"
        )
    return None
