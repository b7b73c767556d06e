# The manifest's HMAC-SHA256 (MicroPython has no `hmac` module), computed by huddle_sync over
# every byte before the `hmac` line as the manifest streams in. A module of its own so that a
# device without a key never loads it, and one with a key only while it reads a manifest
# (huddle_os.call).
from binascii import hexlify
from hashlib import sha256


def begin(key):
    # (inner, outer) hashes, keyed; the caller feeds the inner one
    k = key.encode()
    if len(k) > 64:
        k = sha256(k).digest()
    k += bytes(64 - len(k))
    return sha256(bytes(b ^ 0x36 for b in k)), sha256(bytes(b ^ 0x5C for b in k))


def verify(mac, sig):
    # ValueError unless `sig` (the hmac line's hex) is the HMAC of what the inner hash was fed
    if sig is None:
        raise ValueError("manifest not signed (key set)")
    mac[1].update(mac[0].digest())
    good = hexlify(mac[1].digest())
    diff = len(good) != len(sig)
    # no early exit at the first difference (MicroPython's zip has no `strict`)
    for x, y in zip(good, sig):  # noqa: B905
        diff |= x ^ y
    if diff:
        raise ValueError("manifest hmac does not match")
