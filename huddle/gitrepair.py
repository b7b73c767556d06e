"""What a killed or broken git leaves in a clone, found and put right without git's help.

An unattended agent meets clones that a crash, a full disk or a bad disk has left behind:
lock files of a git that was killed (`index.lock`, a ref's `.lock`), temporary object and
pack files of an interrupted fetch (`tmp_obj_*`, `tmp_pack_*`: they can fill the very disk
the retry needs), and corrupt objects or a corrupt index. This module holds the plain file
work and the parsing of git's messages; `GitRepo` decides when to call it. A lock or temporary
file is only ever removed when it is older than every git process the agent runs on the tree,
so nothing a live git is writing is touched. Untracked files are never touched: corrupt files
are moved aside into `.git/huddle-corrupt/`, not deleted.

It also holds the path arithmetic of the untracked-file check (`paths_in_the_way`): which
paths on disk a checkout adding `new` paths would overwrite or remove.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import time
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("huddle.git")

_LOCK_MESSAGE = re.compile(r"Unable to create '([^']+\.lock)': File exists")
# what git says when an object or the index it needs is damaged (not merely absent from a
# commit: that is "incomplete", found by GitRepo.has_commit)
_CORRUPT = re.compile(
    r"(?i)is corrupt|corrupt or missing|unable to unpack|inflate|"
    r"header for \S+ too long|object file \S+ is empty|hash mismatch|"
    r"sha1 mismatch|does not match index|bad packed object|"
    r"packfile \S+ cannot be accessed|index file (?:corrupt|smaller)|"
    r"bad signature 0x|bad index file|unable to read (?:tree )?[0-9a-f]{40}|"
    r"missing (?:blob|tree|commit)|bad tree object|bad object|"
    r"did not send all necessary objects|unable to read sha1 file"
)
_INDEX_CORRUPT = re.compile(
    r"(?i)index file (?:corrupt|smaller)|bad signature 0x|"
    r"bad index file"
)
_OBJECT_FILE = re.compile(
    r"(?:^|[\s(:])((?:\S*/)?objects/(?:[0-9a-f]{2}/[0-9a-f]{38,62}|"
    r"pack/pack-[0-9a-f]+\.(?:pack|idx)))"
)
_TEMP_NAMES = ("tmp_obj_", "tmp_pack_", "tmp_idx_", "tmp_rev_", "tmp_mtimes_", ".tmp-")


# a pack damaged in transit (a flaky link) says "corrupt" too, but the clone is fine and a
# full --refetch over that link would only make things worse: the next fetch retries it
_IN_TRANSIT = re.compile(
    r"(?i)early EOF|RPC failed|remote end hung up|pack has bad object|"
    r"index-pack failed|unpack-objects failed|unexpected disconnect"
)


def looks_corrupt(message: str) -> bool:
    """Whether git failed because of damage in the clone (not in transit)."""
    if _OBJECT_FILE.search(message):
        return True  # git named a local object file
    return bool(_CORRUPT.search(message)) and not _IN_TRANSIT.search(message)


def index_corrupt(message: str) -> bool:
    return bool(_INDEX_CORRUPT.search(message))


def lock_in_message(message: str) -> str | None:
    """The lock file a git failed to create because it exists, if that is why it failed."""
    match = _LOCK_MESSAGE.search(message)
    return match.group(1) if match else None


def _older_than(path: Path, since: float) -> bool:
    try:
        return path.lstat().st_mtime < since
    except OSError:
        return False  # gone already: nothing to remove


def remove_stale_lock(gitdir: Path, lock: str, since: float) -> bool:
    """Remove `lock` (a path git printed) if it lies inside gitdir and is older than `since`,
    the start of the oldest git process of ours on this tree. True when it was removed."""
    path = Path(lock) if os.path.isabs(lock) else gitdir.parent / lock
    try:
        path.resolve().relative_to(gitdir.resolve())
    except (ValueError, OSError):
        return False  # not ours to touch
    if not path.name.endswith(".lock") or not _older_than(path, since):
        return False
    try:
        path.unlink()
    except OSError:
        return False  # it went away (or cannot go): git's next attempt will say which
    log.warning("removed stale git lock %s (left by a git process that was killed)", path)
    return True


def remove_temp_objects(gitdir: Path, since: float) -> int:
    """Remove temporary object and pack files older than `since`; returns bytes freed."""
    objects = gitdir / "objects"
    dirs = [objects, objects / "pack"]
    try:
        dirs += [
            Path(e.path)
            for e in os.scandir(objects)
            if len(e.name) == 2 and e.is_dir(follow_symlinks=False)
        ]
    except OSError:
        return 0  # no object store at all: nothing to clean
    freed, removed = 0, 0
    for folder in dirs:
        try:
            entries = [e for e in os.scandir(folder) if e.name.startswith(_TEMP_NAMES)]
        except OSError:
            continue  # a fan-out directory that vanished meanwhile
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
                if info.st_mtime >= since:
                    continue  # a live git may be writing it
                if stat.S_ISDIR(info.st_mode):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
            except OSError:
                continue  # gone meanwhile, or not removable: the next fetch tries again
            freed += info.st_size
            removed += 1
    if removed:
        log.warning(
            "removed %d temporary object file(s) (%d bytes) left by an interrupted git fetch in %s",
            removed,
            freed,
            gitdir,
        )
    return freed


def corrupt_object_files(gitdir: Path, fsck_output: str) -> list:
    """Object and pack files named in fsck's (or any git) output, that exist."""
    found = []
    for rel in dict.fromkeys(m.group(1) for m in _OBJECT_FILE.finditer(fsck_output)):
        tail = rel[rel.index("objects/") :]
        path = gitdir / tail
        if path.exists() and path not in found:
            found.append(path)
    return found


def move_aside(gitdir: Path, files: Iterable[Path]) -> list:
    """Move corrupt files into .git/huddle-corrupt/<time>/ (evidence, never data loss); a
    pack goes with its index and other companions. Returns what was moved."""
    target = gitdir / "huddle-corrupt" / time.strftime("%Y%m%d-%H%M%S")
    moved = []
    for path in files:
        group = [path]
        if path.parent.name == "pack":
            group = sorted(path.parent.glob(path.stem + ".*"))
        for item in group:
            if not item.exists():
                continue
            dest = target / item.relative_to(gitdir / "objects")
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(item, dest)
            moved.append(item)
    if moved:
        log.warning("moved %d corrupt git object file(s) aside into %s", len(moved), target)
    return moved


def paths_in_the_way(root: Path, new: Iterable[str]) -> list:
    """Paths on disk that a checkout adding the tracked paths `new` would overwrite or
    remove: a new path that exists already (file, or directory that git must replace by a
    file), or a file (or symlink) where a new path needs a directory. Whether each is
    untracked is for git to say; this only spares that question when nothing is in the way,
    the usual deploy, with lstat calls and no git process."""
    found: dict = {}
    seen_dirs: set = set()
    for rel in new:
        if os.path.lexists(root / rel):
            found[rel] = None
        parts = rel.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in seen_dirs:
                continue
            try:
                mode = os.lstat(root / prefix).st_mode
            except OSError:
                break  # absent: everything below it is absent too
            if not stat.S_ISDIR(mode):
                found[prefix] = None
                break
            seen_dirs.add(prefix)
    return list(found)


def move_aside_index(gitdir: Path) -> None:
    """Move a corrupt index aside; `git read-tree HEAD` then rebuilds it (the files in the
    tree are not touched, so untracked ones stay untracked)."""
    index = gitdir / "index"
    if index.exists():
        target = gitdir / "huddle-corrupt" / time.strftime("%Y%m%d-%H%M%S")
        target.mkdir(parents=True, exist_ok=True)
        os.replace(index, target / "index")
        log.warning("moved a corrupt git index aside into %s", target)
