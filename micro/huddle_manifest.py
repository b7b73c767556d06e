"""Fetching and checking a manifest as a stream, never holding it whole in RAM.

`fetch` reads manifest.txt line by line (each line bounded, the whole file bounded in lines
and bytes, so a manifest that never ends is rejected), checks every record, computes the HMAC
as it goes and copies the lines to a file on flash; `entries` then replays that file. When the
`commit` line names the running commit (or one rolled back before) it stops right there,
without reading the rest, even when a key is configured: an unverified "nothing changed" can
only make the device do nothing, which anyone able to tamper with the manifest could achieve
anyway by blocking it, and verifying would cost a full download every poll. Anything that
would install something is verified (HMAC over every byte before the `hmac` line) first.
"""
import hashlib

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

MAGIC = b"huddle-manifest 1"
MAX_LINE = const(1024)
MAX_FILES = const(2000)
MAX_BYTES = const(262144)
HEX = "0123456789abcdef"


class ManifestError(ValueError):
    pass


class HmacSha256:
    """HMAC-SHA256 over hashlib (the `hmac` module is absent on MicroPython)."""

    def __init__(self, key):
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = key + bytes(64 - len(key))
        self.outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
        self.inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))

    def update(self, data):
        self.inner.update(data)

    def hexdigest(self):  # once only: MicroPython digests can be taken once
        self.outer.update(self.inner.digest())
        from huddle_os import hexlify
        return hexlify(self.outer.digest())


def is_hex(s, n):
    return len(s) == n and all(c in HEX for c in s)


def check_path(path):
    """The relative path as str, or ManifestError when it could escape or is ambiguous."""
    try:
        text = path.decode()
    except UnicodeError:
        raise ManifestError("file name is not UTF-8")
    if not text or text[0] == "/" or "\\" in text or any(ord(c) < 32 for c in text):
        raise ManifestError("unsafe path %r" % text)
    for seg in text.split("/"):
        if seg in ("", ".", ".."):
            raise ManifestError("unsafe path %r" % text)
    return text


def parse_file_line(line):
    """(sha256 hex, size, path) of a `file` record (bytes without the newline)."""
    parts = line.split(b" ", 3)
    if len(parts) != 4 or parts[0] != b"file":
        raise ManifestError("bad record %r" % line[:60])
    sha = parts[1].decode()
    if not is_hex(sha, 64) or not parts[2].isdigit():
        raise ManifestError("bad file record %r" % line[:80])
    return sha, int(parts[2]), check_path(parts[3])


async def fetch(url, timeout_s, key, known, dest):
    """Streams the manifest into `dest`. Returns (commit, branch, files, total bytes), with
    files = -1 when the commit is in `known` (running or bad) and reading stopped early."""
    from huddle_http import get
    resp = await get(url, timeout_s)
    try:
        if resp.status != 200:
            raise ManifestError("HTTP %d for %s" % (resp.status, url))
        if resp.length is not None and resp.length > MAX_BYTES:
            raise ManifestError("manifest larger than %d bytes" % MAX_BYTES)
        resp.set_deadline(resp.length or MAX_BYTES)
        return await _read(resp, key, known, dest)
    finally:
        await resp.close()


async def _read(resp, key, known, dest):
    mac = HmacSha256(key.encode()) if key else None
    commit = branch = None
    files = total = nbytes = 0
    signature = None
    with open(dest, "wb") as out:
        n = 0
        while True:
            line = await resp.readline(MAX_LINE)
            if line is None:
                break
            n += 1
            nbytes += len(line) + 1
            if nbytes > MAX_BYTES or n > MAX_FILES + 4:
                raise ManifestError("manifest too long (over %d bytes or %d files)"
                                    % (MAX_BYTES, MAX_FILES))
            if signature is not None:
                raise ManifestError("data after the hmac line")
            if line.startswith(b"hmac "):
                signature = line[5:].decode()
                continue
            if mac:
                mac.update(line)
                mac.update(b"\n")
            if n == 1:
                if line != MAGIC:
                    raise ManifestError("not a huddle manifest (first line %r)" % line[:40])
            elif n == 2:
                commit = line[7:].decode() if line.startswith(b"commit ") else ""
                if not (is_hex(commit, 40) or is_hex(commit, 64)):
                    raise ManifestError("bad commit line %r" % line[:80])
                if commit in known:
                    return commit, None, -1, 0
            elif n == 3:
                if not line.startswith(b"branch "):
                    raise ManifestError("bad branch line %r" % line[:80])
                branch = line[7:].decode()
            else:
                sha, size, _ = parse_file_line(line)
                files += 1
                total += size
            out.write(line)
            out.write(b"\n")
    if n < 3:
        raise ManifestError("manifest truncated after %d lines" % n)
    if mac:
        if signature is None:
            raise ManifestError("manifest is not signed (no hmac line) but a key is configured")
        if not _same(mac.hexdigest(), signature):
            raise ManifestError("manifest hmac does not match the configured key")
    return commit, branch, files, total


def _same(a, b):
    """Compares without stopping at the first difference."""
    if len(a) != len(b):
        return False
    diff = 0
    for x, y in zip(a, b):
        diff |= ord(x) ^ ord(y)
    return diff == 0


def entries(path):
    """Yields (sha256, size, path) from a manifest copy that `fetch` accepted."""
    with open(path, "rb") as f:
        while True:
            line = f.readline()
            if not line:
                return
            if line.startswith(b"file "):
                yield parse_file_line(line[:-1])
