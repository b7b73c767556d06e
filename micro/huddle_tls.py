# TLS contexts for huddle_http's connections (https manifests, mqtts), in a module of its own
# so that a device that never uses TLS never compiles nor keeps it; main.py compiles it at boot
# when the config uses TLS.
import ssl
import huddle_http

# the context `True` stands for, kept for every connection: the one huddle_start made from
# the config's `ca` file (main.py sets it; it verifies the server against those CAs and its
# name), else the default one made on first use
default = None


def context(ctx):
    # the TLS context for a connection: True gives the default one (with no `ca`, CPython
    # verifies against the system CAs; a board has no CA store, so it encrypts, and integrity
    # comes from the manifest key and SHA-256s), a context object is used as it is
    global default
    if hasattr(ssl, "SSLWantReadError"):  # CPython: its "not yet" errors for huddle_http
        huddle_http._want = (ssl.SSLWantReadError, ssl.SSLWantWriteError)
    if ctx is not True:
        return ctx
    if default is None:
        if hasattr(ssl, "create_default_context"):
            default = ssl.create_default_context()
        else:
            default = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            default.verify_mode = ssl.CERT_NONE
    return default
