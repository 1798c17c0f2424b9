"""Roles on the daemon's own application: who gets 403, whoami, and live token changes.

The app is ``edge.daemon._web_app`` (control plane, WebRTC, bills API, page) on
a real aiohttp server on 127.0.0.1, guarded by the keyring ``dishtracker run``
builds (:func:`edge.web.access.load_keyring`): the owner's token file plus a
real ``tokens.json`` in ``tmp_path``, changed through the same
:class:`edge.web.tokens.TokenStore` the shell uses while the server runs.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from test_security import daemon_app
from test_webrtc_support import TOKEN, write_token_file

from edge.config import ServerConfig, StorageConfig
from edge.web import access
from edge.web.access import Keyring, TokenFileError, load_keyring
from edge.web.openapi import build_spec
from edge.web.roles import CAPABILITIES, ROLES, route_roles
from edge.web.tokens import TOKENS_FILE, TokenStore

Client = TestClient[Any, Any]

OWNER = {"Authorization": f"Bearer {TOKEN}"}
CORRECTION = "/api/bills/cam1-1-1/corrections"
SNAPSHOT = "/api/bills/cam1-1-1/snapshot.jpg"
OFFER = "/api/streams/cam1/webrtc"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Box:
    """The daemon's tokens on ``folder``: the owner's file and the store."""

    def __init__(self, folder: Path) -> None:
        storage = folder / "var"
        storage.mkdir(mode=0o700)
        write_token_file(storage / "token")
        self.server, self.storage = ServerConfig(), StorageConfig(dir=storage)
        self.store = TokenStore(storage / TOKENS_FILE)

    def keyring(self) -> Keyring:
        return load_keyring(self.server, self.storage)[1]


def serving(box: Box) -> AbstractAsyncContextManager[Client]:
    """The daemon's application guarded by ``box``'s keyring, one bill with a photo."""
    return daemon_app(box.storage.dir, token=box.keyring())


async def _status(client: Client, method: str, path: str, headers: dict[str, str],
                  body: Any = None) -> tuple[int, Any]:
    async with client.request(method, path, json=body, headers=headers) as resp:
        data = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, data


def test_a_cashier_gets_403_from_manager_routes_and_works_on_its_own(tmp_path: Path) -> None:
    box = Box(tmp_path)
    cashier = box.store.create("till-1", "cashier")

    async def main() -> None:
        async with serving(box) as client:
            for method, path in (("PUT", "/api/config"), ("GET", "/api/config")):
                async with client.request(method, path, json={},
                                          headers=bearer(cashier)) as resp:
                    assert resp.status == 403, (method, path)
                    assert (await resp.json())["error"].startswith(
                        "this needs the manager role; your token is a cashier's")
                    assert 'error="insufficient_scope"' in resp.headers["WWW-Authenticate"]
                status, _ = await _status(client, method, path, OWNER, {})
                assert status in (200, 422), (method, path)  # the manager passes the check
            status, bill = await _status(client, "POST", CORRECTION, bearer(cashier),
                                         {"action": "confirm", "line": 2})
            assert status == 200
            assert [c["action"] for c in bill["corrections"]] == ["confirm"]
            status, body = await _status(client, "POST", CORRECTION, bearer(cashier),
                                         {"action": "nonsense"})
            assert status == 422 and body["errors"]  # past the role check, refused by validation
            async with client.get(SNAPSHOT, headers=bearer(cashier)) as resp:
                assert resp.status == 200 and (await resp.read())[:2] == b"\xff\xd8"
            async with client.head(SNAPSHOT, headers=bearer(cashier)) as resp:
                assert resp.status == 200  # HEAD follows GET's roles
            status, _ = await _status(client, "POST", OFFER, bearer(cashier), {})
            assert status not in (401, 403)

    asyncio.run(main())


def test_a_labeller_gets_403_from_the_till_and_401_stays_for_no_or_a_wrong_token(
        tmp_path: Path) -> None:
    box = Box(tmp_path)
    labeller = box.store.create("lab-1", "labeller")

    async def main() -> None:
        async with serving(box) as client:
            for method, path in (("POST", CORRECTION), ("GET", SNAPSHOT), ("POST", OFFER),
                                 ("PUT", "/api/config")):
                status, body = await _status(client, method, path, bearer(labeller), {})
                assert status == 403, (method, path)
                assert "your token is a labeller's" in body["error"]
                for headers in ({}, bearer("x" * len(labeller))):
                    status, _ = await _status(client, method, path, headers, {})
                    assert status == 401, (method, path, headers)
            status, bill = await _status(client, "GET", "/api/bills/cam1-1-1", {})
            assert status == 200 and bill["corrections"] == []  # nothing got through

    asyncio.run(main())


def test_whoami_names_the_holder_and_what_the_role_may_do(tmp_path: Path) -> None:
    box = Box(tmp_path)
    tokens = {role: box.store.create(f"{role}-1", role) for role in ROLES}

    async def main() -> None:
        async with serving(box) as client:
            for headers in ({}, bearer("y" * 43)):
                async with client.get("/api/whoami", headers=headers) as resp:
                    assert resp.status == 401
            assert await _status(client, "GET", "/api/whoami", OWNER) == (200, {
                "name": "owner", "role": "manager", "may": list(CAPABILITIES["manager"])})
            for role, token in tokens.items():
                status, body = await _status(client, "GET", "/api/whoami", bearer(token))
                assert status == 200
                assert body == {"name": f"{role}-1", "role": role,
                                "may": list(CAPABILITIES[role])}
    asyncio.run(main())
    assert CAPABILITIES["cashier"] == ("watch", "correct", "void", "handover", "report")
    assert set(CAPABILITIES["manager"]) == set(CAPABILITIES["cashier"]) | {
        "menu", "config", "models", "label", "train"}
    assert CAPABILITIES["labeller"] == ("label",)


def test_created_revoked_and_rotated_tokens_count_from_the_next_request(
        tmp_path: Path) -> None:
    box = Box(tmp_path)

    async def main() -> None:
        async with serving(box) as client:
            token = box.store.create("till-2", "cashier")  # while the server runs
            assert (await _status(client, "GET", "/api/whoami", bearer(token)))[0] == 200
            entry, rotated = box.store.rotate("till-2")
            assert entry.role == "cashier"
            assert (await _status(client, "GET", "/api/whoami", bearer(token)))[0] == 401
            assert (await _status(client, "GET", "/api/whoami", bearer(rotated)))[0] == 200
            box.store.revoke("till-2")
            status, body = await _status(client, "POST", CORRECTION, bearer(rotated),
                                         {"action": "confirm", "line": 2})
            assert status == 401 and body["error"] == "wrong access token"
            # the owner's file rewritten by `dishtracker token rotate`
            write_token_file(box.storage.dir / "token", "new-owner-token-0123456789")
            assert (await _status(client, "GET", "/api/whoami", OWNER))[0] == 401
            status, _ = await _status(client, "GET", "/api/whoami",
                                      bearer("new-owner-token-0123456789"))
            assert status == 200

    asyncio.run(main())


def test_the_store_is_owner_only_and_a_loose_one_is_refused(tmp_path: Path) -> None:
    box = Box(tmp_path)
    token = box.store.create("till-3", "cashier")
    path = box.store.path
    assert path.stat().st_mode & 0o777 == 0o600
    assert token not in path.read_text()  # the hash only
    assert json.loads(path.read_text())["tokens"][0]["role"] == "cashier"
    keyring = box.keyring()
    assert keyring.identify(token) is not None
    path.chmod(0o644)
    with pytest.raises(TokenFileError, match=rf"token store {re.escape(str(path))} has mode 0644"):
        load_keyring(box.server, box.storage)  # the daemon does not start
    assert keyring.identify(token) is None  # a running one stops trusting the store
    assert keyring.identify(TOKEN) is not None  # the owner's file is still fine
    path.chmod(0o600)
    assert keyring.identify(token) is not None
    path.write_text('{"version": 1, "tokens": [{"name": "x", "role": "boss"}]}')
    with pytest.raises(TokenFileError, match=r"tokens\.0\.role"):
        box.store.entries()
    assert keyring.identify(token) is None


def test_every_stored_token_is_compared_in_constant_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    box = Box(tmp_path)
    made = [box.store.create(f"t{i}", "cashier") for i in range(3)]
    keyring = box.keyring()
    calls: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    actor = keyring.identify(made[0])  # the first stored one: the rest are compared still
    assert actor is not None and actor.name == "t0"
    assert len(calls) == 1 + len(made)  # the owner's token, then every stored hash


def test_every_guarded_route_names_its_roles_in_the_description(tmp_path: Path) -> None:
    box = Box(tmp_path)
    labeller = box.store.create("lab-2", "labeller")

    async def main() -> None:
        async with serving(box) as client:
            app = client.app
            assert isinstance(app, web.Application)
            spec = build_spec(app)
            for canonical, ops in spec["paths"].items():
                for method, op in ops.items():
                    roles = route_roles(app, method, canonical)
                    if "security" not in op:
                        assert "x-roles" not in op
                        continue
                    assert op["x-roles"] == [r for r in ROLES if r in roles]
                    path = re.sub(r"\{(\w+)[^}]*\}", lambda m: {
                        "bill_id": "cam1-1-1", "id": "cam1"}.get(m.group(1), "x"), canonical)
                    status, _ = await _status(client, method.upper(), path, bearer(labeller),
                                              {} if method != "get" else None)
                    assert (status == 403) == ("labeller" not in roles), (method, canonical)
                    assert ("403" in op["responses"]) == (roles != set(ROLES))
            assert spec["paths"]["/api/whoami"]["get"]["x-roles"] == list(ROLES)
            assert spec["paths"]["/api/config"]["put"]["x-roles"] == ["manager"]
            assert spec["paths"][CORRECTION.replace("cam1-1-1", "{bill_id}")]["post"][
                "x-roles"] == ["cashier", "manager"]

    asyncio.run(main())


def test_an_event_stream_with_any_role_uses_the_token_holders_share(tmp_path: Path) -> None:
    box = Box(tmp_path)
    labeller = box.store.create("lab-3", "labeller")

    async def main() -> None:
        async with serving(box) as client, aiohttp.ClientSession() as http:
            url = str(client.make_url("/api/events"))
            anonymous = [await http.get(url) for _ in range(8)]
            assert {r.status for r in anonymous[-2:]} == {429}  # the address's share is used
            tokened = await http.get(url, headers=bearer(labeller))
            assert tokened.status == 200
            for r in [*anonymous, tokened]:
                r.close()

    asyncio.run(main())


def test_a_single_token_app_keeps_the_owner_as_manager(tmp_path: Path) -> None:
    app = web.Application()
    access.protect(app, TOKEN)

    async def seen(request: web.Request) -> web.Response:
        return web.json_response({"carries": access.carries_token(request)})

    app.router.add_put("/x", seen)
    app.router.add_get("/open", seen)

    async def main() -> None:
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            assert await _status(client, "PUT", "/x", OWNER) == (200, {"carries": True})
            assert (await _status(client, "PUT", "/x", {}))[0] == 401
            assert await _status(client, "GET", "/open", {}) == (200, {"carries": False})
            assert await _status(client, "GET", "/open", bearer("z" * 40)) == \
                (200, {"carries": False})

    asyncio.run(main())
