# HMAC-SHA256 of a manifest, for devices configured with a key (the `hmac` module is absent on
# MicroPython). Loaded by huddle_manifest only when a key is set.
import hashlib


def new(key):
    # (inner, outer) SHA-256 objects; feed the data to the inner one
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key + bytes(64 - len(key))
    return (hashlib.sha256(bytes(b ^ 0x36 for b in key)),
            hashlib.sha256(bytes(b ^ 0x5C for b in key)))


def matches(mac, signature):
    # compares the hex digest with the `hmac` line without stopping at a difference
    import binascii
    mac[1].update(mac[0].digest())
    good = binascii.hexlify(mac[1].digest()).decode()
    diff = len(good) != len(signature)
    for x, y in zip(good, signature):
        diff |= ord(x) ^ ord(y)
    return not diff
