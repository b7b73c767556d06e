# TLS contexts for huddle_http's connections (https manifests, mqtts), in a module of its own
# so that a device that never uses TLS never compiles nor keeps it; the first https request or
# mqtts connect imports it.
import ssl
import huddle_http


def context(ctx):
    # the TLS context for a connection: True gives the default one (CPython verifies against
    # the system CAs; a board has no CA store, so it encrypts, and integrity comes from the
    # manifest key and SHA-256s), a context object (one that verifies) is used as it is
    if hasattr(ssl, "SSLWantReadError"):  # CPython: its "not yet" errors for huddle_http
        huddle_http._want = (ssl.SSLWantReadError, ssl.SSLWantWriteError)
    if ctx is True:
        if hasattr(ssl, "create_default_context"):
            return ssl.create_default_context()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
