"""Credentials out of HTTP answers, and back into a config sent back with them masked.

Beside the control plane (``edge.web.app``): ``GET /api/streams`` is open on
the LAN and ``GET /api/config`` goes to whoever holds the token, a browser
tab or a script that prints it; neither answers a camera password. Stream
URLs and error texts pass :mod:`edge.sources.credentials` (user info,
query, path parameters, NVR path styles); a TURN ``credential`` becomes
:data:`~edge.sources.credentials.MASK`.

``GET /api/config`` still answers what ``PUT /api/config`` accepts back: a
masked stream URL sent back for the same stream id, equal to the mask of the
URL in force, means "keep this stream's URL" and gets its credentials back
(:func:`unmask_config`); any other URL holding the mask is refused, so a
literal ``***`` never becomes a camera's password.
"""

from __future__ import annotations

from typing import Any

from edge.config import SiteConfig
from edge.sources.credentials import MASK, has_mask, mask_text, mask_url


def masked_status(streams: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``GET /api/streams`` entries with ``url`` and ``last_error`` masked."""
    out = []
    for given in streams:
        entry = dict(given)
        for key, mask in (("url", mask_url), ("last_error", mask_text)):
            if isinstance(entry.get(key), str):
                entry[key] = mask(entry[key])
        out.append(entry)
    return out


def masked_config(config: SiteConfig) -> dict[str, Any]:
    """``config`` as JSON with stream URLs and TURN credentials masked."""
    data = config.model_dump(mode="json")
    for stream in data.get("streams", []):
        stream["url"] = mask_url(stream["url"])
    for server in data.get("server", {}).get("ice_servers", []):
        server["urls"] = [mask_url(u) for u in server["urls"]]
        if server.get("credential") is not None:
            server["credential"] = MASK
    return data


def unmask_config(data: dict[str, Any], current: SiteConfig) -> list[str]:
    """Put the credentials in force back into a ``PUT /api/config`` body, in place.

    Parameters
    ----------
    data
        The decoded JSON body (not yet validated).
    current
        The config in force.

    Returns
    -------
    list of str
        ``field.path: reason`` lines for masked values that match nothing in
        force (empty when every mask was restored or there was none).
    """
    errors: list[str] = []
    in_force = {s.id: s.url for s in current.streams}
    for n, stream in enumerate(_objects(data.get("streams"))):
        url = stream.get("url")
        if not isinstance(url, str) or not has_mask(url):
            continue
        old = in_force.get(stream.get("id"))  # type: ignore[arg-type]
        if old is not None and mask_url(old) == url:
            stream["url"] = old
        else:
            errors.append(f"streams.{n}.url: holds {MASK} where GET /api/config masked a "
                          "credential, and no stream in force with this id has that URL; "
                          "send the real URL")
    server = data.get("server")
    ice = _objects(server.get("ice_servers") if isinstance(server, dict) else None)
    for n, entry in enumerate(ice):
        urls = entry.get("urls")
        masked_urls = isinstance(urls, list) and any(isinstance(u, str) and has_mask(u)
                                                     for u in urls)
        if not masked_urls and entry.get("credential") != MASK:
            continue
        known = next((s for s in current.server.ice_servers
                      if [mask_url(u) for u in s.urls] == urls), None)
        if known is None:
            errors.append(f"server.ice_servers.{n}: holds {MASK} where GET /api/config masked "
                          "a credential, and no ICE server in force has these urls; send the "
                          "real values")
            continue
        entry["urls"] = list(known.urls)
        if entry.get("credential") == MASK:
            entry["credential"] = known.credential
    return errors


def _objects(value: Any) -> list[dict[str, Any]]:
    """The JSON objects of a list (what is not one is left to validation)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
