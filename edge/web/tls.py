"""HTTPS for the control plane: the ``ssl.SSLContext`` from ``server.tls_cert``/``tls_key``.

Optional: on a LAN the token is what guards changes, but over plain HTTP
anyone who can sniff the network can read it (and the bills). With a
certificate the daemon serves HTTPS only; the page and its WebRTC offer then
travel encrypted (the media itself is always DTLS-SRTP).
"""

from __future__ import annotations

import os
import ssl

from edge.config import ServerConfig
from edge.errors import ConfigError


def server_ssl_context(server: ServerConfig) -> ssl.SSLContext | None:
    """The TLS context for ``server``, or ``None`` when no certificate is configured.

    TLS 1.2 at least, Python's default server ciphers, no client certificates.

    Raises
    ------
    ConfigError
        The certificate or key cannot be read, is not PEM, or the two do not
        belong together; the message names the field.
    """
    if server.tls_cert is None or server.tls_key is None:
        return None
    for field, path in (("tls_cert", server.tls_cert), ("tls_key", server.tls_key)):
        if not path.is_file():
            raise ConfigError(f"server.{field}: {path} is not a file")
        if not os.access(path, os.R_OK):
            raise ConfigError(f"server.{field}: {path} is not readable by the daemon's user")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(server.tls_cert, server.tls_key)
    except (ssl.SSLError, OSError) as err:
        raise ConfigError(f"server.tls_cert/tls_key: cannot load {server.tls_cert} with "
                          f"{server.tls_key}: {err} (PEM certificate and its private key "
                          "expected)") from err
    return context
