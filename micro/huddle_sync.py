# Reading the rest of a published manifest, as a stream, once huddle_poll.head has found a new
# commit in its first two lines.
#
# Loaded for that step only (huddle_os.call). `manifest` goes on with
# head's open response, never holding the manifest whole in RAM: every record is checked (each
# line bounded, the file bounded in lines and bytes, so a manifest that never ends is cut off;
# paths are relative, use "/", and have no empty, "." or ".." segment, no backslash and no
# control character, so no record can write outside the staging directory), the HMAC
# (huddle_hmac, loaded for this step when a key is configured) is computed over every byte
# before the `hmac` line as it goes, and the lines are copied to a file on flash for
# huddle_stage.
from huddle_http import MAX_MANIFEST
from huddle_os import call
from huddle_poll import HEX


async def manifest(a, resp, commit, dest):
    # the rest of the manifest, checked (its HMAC too with a key), copied to `dest`; -> (branch,
    # seq or None, total bytes of files). A verified manifest is still refused when it is for
    # another branch than the config's, or older than what was installed: a replayed manifest
    # (its seq not above the installed one's, or none once the device has seen one) would be a
    # downgrade
    key, want, last = a.cfg["key"], a.cfg["branch"], a.state["seq"]
    mac = call("huddle_hmac", "begin", key) if key else None  # only with a key, and only now
    branch, seq, total, sig = await records(resp, mac, commit, dest)
    if mac:
        call("huddle_hmac", "verify", mac, sig)
    if want and branch != want:
        raise ValueError("manifest is for branch %s, not %s" % (branch, want))
    if last is not None and (seq is None or seq <= last):
        raise ValueError("manifest seq %s is not above the installed %d (a replay?)" % (seq, last))
    return branch, seq, total


async def records(resp, mac, commit, dest):
    # the records after head's two lines, each checked, copied to `dest` and fed to the inner
    # hash of `mac` (huddle_hmac.begin) if given; -> (branch, seq or None, total bytes of files,
    # the hmac line's hex or None)
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
                total += file_size(line)
            line += b"\n"
    if n < 3:
        raise ValueError("manifest cut after %d lines" % n)
    return branch, seq, total, sig


def file_size(line):
    # a `file SHA256 SIZE PATH` record, checked -> SIZE. (A function of its own: the loader
    # then needs no single block as large as records' bytecode would be with it, and a heap
    # fragmented beside the app had none: 453 B)
    fields = line.split(b" ", 3)
    if (
        len(fields) != 4
        or fields[0] != b"file"
        or len(fields[1]) != 64
        or fields[1].strip(HEX)
        or not fields[2].isdigit()
    ):
        raise ValueError("bad file record %r" % line[:80])
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
    return int(fields[2])
