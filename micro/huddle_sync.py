# Reading a published manifest: its head, then the rest as a stream.
#
# `head` reads only the manifest's first two lines, so "is the commit unchanged?" costs one
# request. For a new commit `manifest` goes on with the same open response, never holding the
# manifest whole in RAM: every record is checked (each line bounded, the file bounded in lines
# and bytes, so a manifest that never ends is cut off; paths are relative, use "/", and have no
# empty, "." or ".." segment, no backslash and no control character, so no record can write
# outside the staging directory), the HMAC (huddle_hmac, when a key is configured) is computed
# over every byte before the `hmac` line as it goes, and the lines are copied to a file on flash
# for huddle_stage. An unverified "same commit" stops at `head` and can only make the device do
# nothing; anything that would be installed is verified first.
from huddle_http import MAX_MANIFEST, get

HEX = b"0123456789abcdef"


async def head(url, timeout_s, ca, until):
    # (open response, commit) after the manifest's first two lines, which are checked; `ca`
    # and `until` as in huddle_http.get
    resp = await get(url, timeout_s, ca, until)
    try:
        if resp.status != 200:
            raise OSError("HTTP %d for %s" % (resp.status, url))
        if (resp.length or 0) > MAX_MANIFEST:
            raise ValueError("manifest too long")
        resp.due(resp.length or MAX_MANIFEST)
        line = await resp.readline()
        if line != b"huddle-manifest 1":
            raise ValueError("not a huddle manifest: %r" % (line or b"")[:40])
        line = await resp.readline() or b""
        if line[:7] != b"commit " or len(line) not in (47, 71) or line[7:].strip(HEX):
            raise ValueError("bad commit line %r" % line[:80])
        return resp, line[7:].decode()
    except BaseException:
        resp.close()
        raise


async def manifest(resp, key, commit, dest):
    # the rest of the manifest, checked, copied to `dest`; -> (branch, seq or None, total bytes
    # of files)
    mac = None
    if key:  # huddle_hmac is compiled at boot when the config has a key
        from huddle_hmac import begin, verify

        mac = begin(key)
    line = b"huddle-manifest 1\ncommit " + commit.encode() + b"\n"
    branch = seq = sig = None
    n, total, size = 2, 0, len(line)
    with open(dest, "wb") as out:
        while True:
            if mac:
                mac[0].update(line)
            out.write(line)
            line = await resp.readline()
            if line is None:
                break
            n += 1
            size += len(line) + 1
            if size > MAX_MANIFEST or n > 2004:
                raise ValueError("manifest too long (over %d B or 2000 files)" % MAX_MANIFEST)
            if sig is not None:
                raise ValueError("data after the hmac line")
            if line[:5] == b"hmac ":
                sig = line[5:]
                line = b""
                continue
            if n == 3:
                if line[:7] != b"branch ":
                    raise ValueError("bad branch line %r" % line[:80])
                branch = line[7:].decode()
            elif n == 4 and line[:4] == b"seq ":
                if not line[4:].isdigit():
                    raise ValueError("bad seq line %r" % line[:80])
                seq = int(line[4:])
            else:
                fields = line.split(b" ", 3)  # file SHA256 SIZE PATH
                if (
                    len(fields) != 4
                    or fields[0] != b"file"
                    or len(fields[1]) != 64
                    or fields[1].strip(HEX)
                    or not fields[2].isdigit()
                ):
                    raise ValueError("bad file record %r" % line[:80])
                total += int(fields[2])
                try:
                    path = fields[3].decode()
                except UnicodeError:
                    raise ValueError("file name is not UTF-8")
                if (
                    not path
                    or path[0] == "/"
                    or "\\" in path
                    or [c for c in path if c < " "]
                    or [s for s in path.split("/") if s in ("", ".", "..")]
                ):
                    raise ValueError("unsafe path %r" % path)
            line += b"\n"
    if n < 3:
        raise ValueError("manifest cut after %d lines" % n)
    if mac:
        verify(mac, sig)
    return branch, seq, total
