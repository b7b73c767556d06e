# A prototype, measured by bench/bench_micro_ed25519.py (issue 14): pure-Python ed25519
# verification of an SSHSIG signature (`ssh-keygen -Y sign -n huddle-manifest -O hashalg=sha256`)
# for MicroPython, whose hashlib has only sha256: SHA-512, needed by ed25519 itself over
# R || A || the signed blob (about 140 bytes, two blocks), is computed here. The message is
# hashed with the port's own sha256, so a manifest of any size costs only its C hashing.
from binascii import a2b_base64
from hashlib import sha256

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
D2 = 2 * D % P
I = pow(2, (P - 1) // 4, P)
M64 = 0xFFFFFFFFFFFFFFFF

_K = b"B\x8a/\x98\xd7(\xae\"q7D\x91#\xefe\xcd\xb5\xc0\xfb\xcf\xecM;/\xe9\xb5\xdb\xa5\x81\x89\xdb\xbc9V\xc2[\xf3H\xb58Y\xf1\x11\xf1\xb6\x05\xd0\x19\x92?\x82\xa4\xaf\x19O\x9b\xab\x1c^\xd5\xdam\x81\x18\xd8\x07\xaa\x98\xa3\x03\x02B\x12\x83[\x01Epo\xbe$1\x85\xbeN\xe4\xb2\x8cU\x0c}\xc3\xd5\xff\xb4\xe2r\xbe]t\xf2{\x89o\x80\xde\xb1\xfe;\x16\x96\xb1\x9b\xdc\x06\xa7%\xc7\x125\xc1\x9b\xf1t\xcfi&\x94\xe4\x9bi\xc1\x9e\xf1J\xd2\xef\xbeG\x868O%\xe3\x0f\xc1\x9d\xc6\x8b\x8c\xd5\xb5$\x0c\xa1\xccw\xac\x9ce-\xe9,oY+\x02uJt\x84\xaan\xa6\xe4\x83\\\xb0\xa9\xdc\xbdA\xfb\xd4v\xf9\x88\xda\x83\x11S\xb5\x98>QR\xeef\xdf\xab\xa81\xc6m-\xb42\x10\xb0\x03'\xc8\x98\xfb!?\xbfY\x7f\xc7\xbe\xef\x0e\xe4\xc6\xe0\x0b\xf3=\xa8\x8f\xc2\xd5\xa7\x91G\x93\n\xa7%\x06\xcacQ\xe0\x03\x82o\x14))g\n\x0enp'\xb7\n\x85F\xd2/\xfc.\x1b!8\\&\xc9&M,m\xfcZ\xc4*\xedS8\r\x13\x9d\x95\xb3\xdfe\nsT\x8b\xafc\xdevj\n\xbb<w\xb2\xa8\x81\xc2\xc9.G\xed\xae\xe6\x92r,\x85\x14\x825;\xa2\xbf\xe8\xa1L\xf1\x03d\xa8\x1afK\xbcB0\x01\xc2K\x8bp\xd0\xf8\x97\x91\xc7lQ\xa3\x06T\xbe0\xd1\x92\xe8\x19\xd6\xefR\x18\xd6\x99\x06$Ue\xa9\x10\xf4\x0e5\x85Wq *\x10j\xa0p2\xbb\xd1\xb8\x19\xa4\xc1\x16\xb8\xd2\xd0\xc8\x1e7l\x08QA\xabS'HwL\xdf\x8e\xeb\x994\xb0\xbc\xb5\xe1\x9bH\xa89\x1c\x0c\xb3\xc5\xc9ZcN\xd8\xaaJ\xe3A\x8a\xcb[\x9c\xcaOwc\xe3sh.o\xf3\xd6\xb2\xb8\xa3t\x8f\x82\xee]\xef\xb2\xfcx\xa5coC\x17/`\x84\xc8x\x14\xa1\xf0\xabr\x8c\xc7\x02\x08\x1ad9\xec\x90\xbe\xff\xfa#c\x1e(\xa4Pl\xeb\xde\x82\xbd\xe9\xbe\xf9\xa3\xf7\xb2\xc6y\x15\xc6qx\xf2\xe3rS+\xca'>\xce\xea&a\x9c\xd1\x86\xb8\xc7!\xc0\xc2\x07\xea\xda}\xd6\xcd\xe0\xeb\x1e\xf5}O\x7f\xeen\xd1x\x06\xf0g\xaar\x17o\xba\nc}\xc5\xa2\xc8\x98\xa6\x11?\x98\x04\xbe\xf9\r\xae\x1bq\x0b5\x13\x1cG\x1b(\xdbw\xf5#\x04}\x842\xca\xab{@\xc7$\x93<\x9e\xbe\n\x15\xc9\xbe\xbcC\x1dg\xc4\x9c\x10\rLL\xc5\xd4\xbe\xcb>B\xb6Y\x7f)\x9c\xfce~*_\xcbo\xab:\xd6\xfa\xeclD\x19\x8cJGX\x17"
_H0 = b"j\t\xe6g\xf3\xbc\xc9\x08\xbbg\xae\x85\x84\xca\xa7;<n\xf3r\xfe\x94\xf8+\xa5O\xf5:_\x1d6\xf1Q\x0eR\x7f\xad\xe6\x82\xd1\x9b\x05h\x8c+>l\x1f\x1f\x83\xd9\xab\xfbA\xbdk[\xe0\xcd\x19\x13~!y"


def _rotr(x, n):
    return ((x >> n) | (x << (64 - n))) & M64


def sha512(msg):
    K = _K
    h = [int.from_bytes(_H0[i : i + 8], "big") for i in range(0, 64, 8)]
    ml = len(msg)
    msg = msg + b"\x80" + bytes((111 - ml) % 128) + (ml * 8).to_bytes(16, "big")
    for off in range(0, len(msg), 128):
        w = [0] * 80  # one block, allocated whole: no growth in a fragmented heap
        for i in range(16):
            w[i] = int.from_bytes(msg[off + 8 * i : off + 8 * i + 8], "big")
        for i in range(16, 80):
            a, b = w[i - 15], w[i - 2]
            s0 = _rotr(a, 1) ^ _rotr(a, 8) ^ (a >> 7)
            s1 = _rotr(b, 19) ^ _rotr(b, 61) ^ (b >> 6)
            w[i] = (w[i - 16] + s0 + w[i - 7] + s1) & M64
        a, b, c, d, e, f, g, hh = h
        for i in range(80):
            t1 = (
                hh
                + (_rotr(e, 14) ^ _rotr(e, 18) ^ _rotr(e, 41))
                + ((e & f) ^ (~e & g))
                + int.from_bytes(K[8 * i : 8 * i + 8], "big")
                + w[i]
            ) & M64
            t2 = (
                (_rotr(a, 28) ^ _rotr(a, 34) ^ _rotr(a, 39)) + ((a & b) ^ (a & c) ^ (b & c))
            ) & M64
            hh, g, f, e, d, c, b, a = g, f, e, (d + t1) & M64, c, b, a, (t1 + t2) & M64
        h = [(x + y) & M64 for x, y in zip(h, (a, b, c, d, e, f, g, hh))]
    return b"".join(x.to_bytes(8, "big") for x in h)


def _add(p, q):
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = t1 * D2 * t2 % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return e * f % P, g * h % P, f * g % P, e * h % P


def _point(s):
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= P:
        raise ValueError
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * I % P
    if (x * x - x2) % P or (x == 0 and sign):
        raise ValueError
    if x & 1 != sign:
        x = P - x
    return x, y, 1, x * y % P


BY = 4 * pow(5, P - 2, P) % P


def verify(pub, sig, msg):
    # True when sig (64 bytes) is pub's (32 bytes) ed25519 signature of msg
    # the hash first, while the heap is least fragmented (its schedule is one 320-byte list)
    k = int.from_bytes(sha512(sig[:32] + pub + msg), "little") % L
    try:
        a = _point(pub)
        r = _point(sig[:32])
    except ValueError:
        return False
    s = int.from_bytes(sig[32:], "little")
    if s >= L:
        return False
    b = _point(BY.to_bytes(32, "little"))  # B's x is even
    na = (P - a[0], a[1], 1, (P - a[3]) % P)  # -A
    both = _add(b, na)
    q = (0, 1, 1, 0)
    for i in range(252, -1, -1):  # s, k < L < 2**253
        q = _add(q, q)
        sb, kb = (s >> i) & 1, (k >> i) & 1
        if sb and kb:
            q = _add(q, both)
        elif sb:
            q = _add(q, b)
        elif kb:
            q = _add(q, na)
    # [s]B - [k]A == R, compared projectively
    return (q[0] - r[0] * q[2]) % P == 0 and (q[1] - r[1] * q[2]) % P == 0


def _str(b, i):
    n = int.from_bytes(b[i : i + 4], "big")
    return b[i + 4 : i + 4 + n], i + 4 + n


def verify_sshsig(pub, armored, data, namespace=b"huddle-manifest"):
    # pub: 32-byte ed25519 key; armored: the .sig file; data: the signed bytes
    lines = armored.split(b"\n")
    blob = a2b_base64(b"".join(x for x in lines if x and not x.startswith(b"-----")))
    if blob[:6] != b"SSHSIG":
        return False
    i = 10
    key, i = _str(blob, i)
    ns, i = _str(blob, i)
    _, i = _str(blob, i)
    alg, i = _str(blob, i)
    sig, i = _str(blob, i)
    kt, j = _str(key, 0)
    kk, j = _str(key, j)
    st, j = _str(sig, 0)
    ss, j = _str(sig, j)
    if kt != b"ssh-ed25519" or st != kt or kk != pub or ns != namespace or alg != b"sha256":
        return False

    def s(x):
        return len(x).to_bytes(4, "big") + x

    signed = b"SSHSIG" + s(ns) + s(b"") + s(alg) + s(sha256(data).digest())
    return verify(pub, ss, signed)
