# The rest of a new manifest, read as a stream and never held whole in RAM (sync stack:
# loaded only when a poll saw a new commit, dropped afterwards).
#
# huddle_poll.head has read and checked the first two lines; `rest` goes on from there with the
# same open response: it checks every record (huddle_record; each line bounded, the file bounded
# in lines and bytes, so a manifest that never ends is cut off), computes the HMAC (huddle_hmac,
# loaded only with a key) over every byte before the `hmac` line as it goes, and copies the lines
# to a file on flash for huddle_stage. An unverified "same commit" never gets here (stopping
# early cannot install anything); anything that would be installed is verified first.
from huddle_record import record

MAX_FILES = 2000


async def rest(resp, key, commit, dest):
    # -> (branch, total bytes of the files); ValueError/OSError when anything is wrong
    from huddle_http import MAX_LINE, MAX_MANIFEST
    mac = None
    if key:
        from huddle_hmac import new, matches
        mac = new(key.encode())
    head = b"huddle-manifest 1\ncommit " + commit.encode() + b"\n"
    branch = signature = None
    n, total, nbytes = 2, 0, len(head)
    with open(dest, "wb") as out:
        line = head
        while True:
            if mac:
                mac[0].update(line)
            out.write(line)
            line = await resp.readline(MAX_LINE)
            if line is None:
                break
            n += 1
            nbytes += len(line) + 1
            if nbytes > MAX_MANIFEST or n > MAX_FILES + 4:
                raise ValueError("manifest too long (over %d bytes or %d files)"
                                 % (MAX_MANIFEST, MAX_FILES))
            if signature is not None:
                raise ValueError("data after the hmac line")
            if line.startswith(b"hmac "):
                signature = line[5:].decode()
                line = b""
                continue
            if n == 3:
                if not line.startswith(b"branch "):
                    raise ValueError("bad branch line %r" % line[:80])
                branch = line[7:].decode()
            else:
                total += record(line)
            line += b"\n"
    if n < 3:
        raise ValueError("manifest truncated after %d lines" % n)
    if mac:
        if signature is None:
            raise ValueError("manifest is not signed (no hmac line) but a key is configured")
        if not matches(mac, signature):
            raise ValueError("manifest hmac does not match the configured key")
    return branch, total
