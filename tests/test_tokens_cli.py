"""``dishtracker token`` and the URLs the box prints, in the shell as an operator runs them.

The commands run through ``edge.cli.main`` on a site config whose
``storage.dir`` is in ``tmp_path``; what they write is read back by the
keyring the daemon uses (:func:`edge.web.access.load_keyring`). The URL list
is checked against the kernel's own table of local addresses
(``/proc/net/fib_trie``) and by opening every URL on a real server bound to
``0.0.0.0``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import os
import re
import socket
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from test_webrtc_support import TOKEN

from edge.cli import main
from edge.config import ServerConfig, StorageConfig
from edge.daemon import start_line
from edge.web.access import AccessToken, load_keyring
from edge.web.addresses import browse_urls
from edge.web.tokens import TokenFileError, TokenStore, write_private

URL = re.compile(r"https?://\S+#token=(\S+)")


def site(tmp_path: Path, port: int = 8080) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(f'[server]\nport = {port}\n[storage]\ndir = "{tmp_path / "var"}"\n')
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def identify(tmp_path: Path, token: str) -> tuple[str, str] | None:
    keyring = load_keyring(ServerConfig(), StorageConfig(dir=tmp_path / "var"))[1]
    actor = keyring.identify(token)
    return (actor.name, actor.role) if actor is not None else None


def test_create_list_rotate_revoke_round_trip(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    config = str(site(tmp_path))
    code, out, _ = run(capsys, "token", "create", "--config", config, "--role", "cashier",
                       "--name", "till-1")
    assert code == 0
    links = URL.findall(out)
    assert links and len(set(links)) == 1  # one token, in every link
    token = links[0]
    assert token in out.splitlines()[1]  # shown once, on a line of its own as well
    assert identify(tmp_path, token) == ("till-1", "cashier")
    assert (tmp_path / "var" / "tokens.json").stat().st_mode & 0o777 == 0o600

    code, _, err = run(capsys, "token", "create", "--config", config, "--role", "manager",
                       "--name", "till-1")
    assert code == 2 and "a token named 'till-1' exists" in err
    code, _, err = run(capsys, "token", "create", "--config", config, "--role", "cashier",
                       "--name", "owner")
    assert code == 2 and "'owner' is the token file's token" in err

    code, out, _ = run(capsys, "token", "list", "--config", config)
    assert code == 0
    rows = [line.split() for line in out.splitlines()]
    assert [r[:2] for r in rows] == [["NAME", "ROLE"], ["owner", "manager"],
                                     ["till-1", "cashier"]]
    owner = (tmp_path / "var" / "token").read_text().strip()
    stored = json.loads((tmp_path / "var" / "tokens.json").read_text())["tokens"][0]["sha256"]
    for secret in (token, owner, stored):
        assert secret not in out

    code, out, _ = run(capsys, "token", "rotate", "--config", config, "--name", "till-1")
    assert code == 0
    rotated = URL.findall(out)[0]
    assert rotated != token
    assert identify(tmp_path, token) is None
    assert identify(tmp_path, rotated) == ("till-1", "cashier")

    code, out, _ = run(capsys, "token", "revoke", "--config", config, "--name", "till-1")
    assert code == 0 and "Revoked the token 'till-1' (cashier)" in out
    assert identify(tmp_path, rotated) is None
    code, _, err = run(capsys, "token", "revoke", "--config", config, "--name", "till-1")
    assert code == 2 and "no token named 'till-1'" in err
    code, _, err = run(capsys, "token", "revoke", "--config", config, "--name", "owner")
    assert code == 2 and "cannot be revoked" in err


def test_show_prints_the_owner_links_and_refuses_hashed_tokens(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(site(tmp_path, port=8123))
    code, _, err = run(capsys, "token", "show", "--config", config)
    assert code == 2 and "no token file at" in err  # show never invents a token
    code, out, _ = run(capsys, "token", "rotate", "--config", config)
    assert code == 0
    owner = (tmp_path / "var" / "token").read_text().strip()
    assert identify(tmp_path, owner) == ("owner", "manager")
    code, out, _ = run(capsys, "token", "show", "--config", config)
    assert code == 0
    urls = [line.strip() for line in out.splitlines() if "#token=" in line]
    assert urls == [f"{u}#token={owner}" for u in browse_urls("0.0.0.0", 8123)]
    run(capsys, "token", "create", "--config", config, "--role", "labeller", "--name", "lab")
    code, out, err = run(capsys, "token", "show", "--config", config, "--name", "lab")
    assert code == 2 and "stored hashed" in err and "token rotate --name lab" in err
    assert "#token=" not in out


def test_a_bad_name_or_a_loose_store_is_refused(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    config = str(site(tmp_path))
    code, _, err = run(capsys, "token", "create", "--config", config, "--role", "cashier",
                       "--name", "till 1")
    assert code == 2 and "--name: 'till 1' is not a token name" in err
    run(capsys, "token", "create", "--config", config, "--role", "cashier", "--name", "t")
    store = tmp_path / "var" / "tokens.json"
    store.chmod(0o644)
    code, _, err = run(capsys, "token", "list", "--config", config)
    assert code == 2 and f"the token store {store} has mode 0644" in err


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_root_writes_the_store_as_the_folder_owner(tmp_path: Path) -> None:
    folder = tmp_path / "var"
    folder.mkdir(mode=0o700)
    os.chown(folder, 65534, 65534)  # the daemon's user, as systemd's StateDirectory makes it
    store = TokenStore(folder / "tokens.json")
    token = store.create("till-9", "cashier")
    assert store.path.stat().st_uid == 65534  # the daemon (uid 65534) may read it
    assert [t.name for t in store.entries()] == ["till-9"]  # and root, the folder's owner
    write_private(folder / "token", b"x" * 20)
    assert (folder / "token").stat().st_uid == 65534
    other = tmp_path / "theirs"
    other.mkdir(mode=0o700)  # root's folder: a file of another user is not trusted
    write_private(other / "tokens.json", (folder / "tokens.json").read_bytes())
    os.chown(other / "tokens.json", 65534, 65534)
    with pytest.raises(TokenFileError, match="belongs to uid 65534"):
        TokenStore(other / "tokens.json").entries()
    assert token


def _kernel_local_ipv4() -> set[str]:
    """Local IPv4 addresses from the kernel's routing table (an oracle independent
    of the ioctl the code uses)."""
    found: set[str] = set()
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        return found
    for prev, line in itertools.pairwise(lines):
        if line.strip() == "/32 host LOCAL":
            found.add(prev.strip().removeprefix("|-- "))
    return {a for a in found if not ipaddress.IPv4Address(a).is_loopback}


def test_a_wildcard_bind_lists_every_interface_address_and_the_host_name() -> None:
    urls = browse_urls("0.0.0.0", 8080)
    assert urls[0] == "http://127.0.0.1:8080/"
    listed = {u.split("//")[1].rsplit(":", 1)[0] for u in urls}
    assert _kernel_local_ipv4() <= listed
    assert f"http://{socket.gethostname()}:8080/" in urls
    assert browse_urls("::", 8443, tls=True) == [u.replace("http:", "https:").replace(
        ":8080/", ":8443/") for u in urls]
    assert browse_urls("192.0.2.7", 80) == ["http://192.0.2.7:80/"]
    assert browse_urls("::1", 80) == ["http://[::1]:80/"]


@pytest.mark.skipif(not _kernel_local_ipv4(), reason="no address besides loopback")
def test_every_listed_address_reaches_a_server_bound_to_every_interface() -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/", hello)
        runner = web.AppRunner(app)
        await runner.setup()
        site_ = web.TCPSite(runner, "0.0.0.0", 0)
        await site_.start()
        port = runner.addresses[0][1]
        try:
            urls = [u for u in browse_urls("0.0.0.0", port)
                    if u.split("//")[1][0].isdigit()]  # addresses: the name may need DNS
            assert len(urls) >= 2
            async with aiohttp.ClientSession() as http:
                for url in urls:
                    async with http.get(url) as resp:
                        assert resp.status == 200, url
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_the_start_line_lists_every_url(tmp_path: Path) -> None:
    urls = ["http://127.0.0.1:8080/", "http://192.0.2.2:8080/", "http://box:8080/"]
    kept = AccessToken(TOKEN, tmp_path / "token", created=False)
    lines = start_line(urls, kept, interactive=True).splitlines()
    assert lines == [f"DishTracker is running: open {urls[0]}#token={TOKEN}",
                     f"  or {urls[1]}#token={TOKEN}", f"  or {urls[2]}#token={TOKEN}"]
    journal = start_line(urls, kept, interactive=False)  # a later start under systemd
    assert TOKEN not in journal
    assert "dishtracker token show" in journal and str(tmp_path / "token") in journal
    assert journal.splitlines()[0] == \
        f"DishTracker is running: open {urls[0]} (access token: {tmp_path / 'token'})"
    assert [line.split()[-1] for line in journal.splitlines()[1:3]] == urls[1:]
