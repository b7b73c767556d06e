# The default TLS context of huddle_http's connections (https manifests, mqtts brokers) when
# the config has no `ca`, in a module of its own so that a device that never uses TLS never
# compiles nor keeps it; huddle_start has it compiled at boot when the config uses TLS.
import ssl

_default = None


def context(ca):
    # the TLS context for a connection: `ca` (the context huddle_start made from the config's
    # `ca` file, which verifies the server and its name) when given, else the default one,
    # made on first use (CPython verifies against the system CAs; a board has no CA store, so
    # it encrypts, and integrity comes from the manifest key and SHA-256s)
    global _default
    if ca is not None:
        return ca
    if _default is None:
        if hasattr(ssl, "create_default_context"):
            _default = ssl.create_default_context()
        else:
            _default = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            _default.verify_mode = ssl.CERT_NONE
    return _default
