# One `file <sha256> <size> <path>` record of a manifest, checked (part of the sync stack).
#
# A path is relative, uses "/", and has no empty, "." or ".." segment, no backslash and no
# control character, so no record can write outside the staging directory.
HEX = "0123456789abcdef"


def record(line):
    # the record's size; ValueError when the record or its path is not acceptable
    p = line.split(b" ", 3)
    if len(p) != 4 or p[0] != b"file" or len(p[1]) != 64 or not p[2].isdigit() or \
            [c for c in p[1].decode() if c not in HEX]:
        raise ValueError("bad file record %r" % line[:80])
    try:
        text = p[3].decode()
    except UnicodeError:
        raise ValueError("file name is not UTF-8")
    if not text or text[0] == "/" or "\\" in text or [c for c in text if ord(c) < 32] or \
            [s for s in text.split("/") if s in ("", ".", "..")]:
        raise ValueError("unsafe path %r" % text)
    return int(p[2])
