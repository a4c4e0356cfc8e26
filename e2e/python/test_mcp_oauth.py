"""The official Python MCP client connects to a deployed server the way Claude
or Cursor would: discovery → dynamic registration → authorize (signed-in user
approves consent) → token (PKCE) → tools/list and tools/call through the
gateway. Then the refusals a client can meet."""

from __future__ import annotations

import urllib.parse

import anyio
import httpx
import httpx2
import pytest
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from conftest import env, sign_in, submit

REDIRECT = "http://127.0.0.1:53682/callback"


class MemoryStorage(TokenStorage):
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, client_info):
        self.client = client_info


class Browser:
    """The user's browser: signed in through a magic link, approves consent."""

    def __init__(self, magic_link: str) -> None:
        self.http = httpx.Client(timeout=30)
        sign_in(self.http, magic_link)
        self.result: AuthorizationCodeResult | None = None
        self.consent_page: str = ""

    async def redirect(self, authorize_url: str) -> None:
        def approve() -> AuthorizationCodeResult:
            r = self.http.get(authorize_url, follow_redirects=False)
            assert r.status_code == 200, f"authorize answered {r.status_code}: {r.text[:500]}"
            self.consent_page = r.text
            r = submit(self.http, authorize_url, r.text, "approve")
            assert r.status_code in (302, 303), f"consent answered {r.status_code}: {r.text[:500]}"
            location = r.headers["location"]
            assert location.startswith(REDIRECT), location
            q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
            assert "code" in q, f"no code in {location}"
            return AuthorizationCodeResult(code=q["code"], state=q.get("state"), iss=q.get("iss"))

        self.result = await anyio.to_thread.run_sync(approve)

    async def callback(self) -> AuthorizationCodeResult:
        assert self.result is not None
        return self.result


def provider(url: str, browser: Browser, storage: MemoryStorage) -> OAuthClientProvider:
    return OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="bmm e2e (python mcp)",
            redirect_uris=[REDIRECT],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=browser.redirect,
        callback_handler=browser.callback,
    )


async def connect_and_call(url: str, auth: OAuthClientProvider, tool: str, args: dict):
    async with httpx2.AsyncClient(auth=auth, timeout=60) as http:
        async with streamable_http_client(url, http_client=http) as (read, write, *_):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                result = await session.call_tool(tool, args)
                return [t.name for t in tools.tools], result


def test_official_client_connects_with_oauth_and_calls_a_tool(echo_server):
    browser = Browser(env("BMM_MAGIC_LINK"))
    storage = MemoryStorage()
    names, result = anyio.run(connect_and_call, echo_server["url"], provider(echo_server["url"], browser, storage), "echo", {"text": "hello from python"})
    assert sorted(names) == sorted(echo_server["tools"])
    assert not result.is_error, result
    assert "hello from python" in " ".join(getattr(c, "text", "") for c in result.content)
    # The consent page named the server the client asked for.
    assert echo_server["slug"] in browser.consent_page or echo_server["url"] in browser.consent_page
    # The token is bound to this server exactly (RFC 8707 audience).
    assert storage.tokens is not None and storage.client is not None


def test_token_for_one_server_is_refused_by_another(api, echo_server):
    other = api.build_server("An echo tool, second server.", f"e2e other {echo_server['slug']}")
    browser = Browser(env("BMM_MAGIC_LINK_2"))
    storage = MemoryStorage()
    anyio.run(connect_and_call, echo_server["url"], provider(echo_server["url"], browser, storage), "echo", {"text": "x"})
    token = storage.tokens.access_token
    r = httpx.post(
        other["url"],
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream", "Content-Type": "application/json"},
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
    )
    assert r.status_code == 401, r.text
    challenge = r.headers.get("www-authenticate", "")
    assert challenge.startswith("Bearer") and "resource_metadata=" in challenge, challenge


def test_unauthenticated_request_gets_a_discoverable_challenge(echo_server):
    r = httpx.post(echo_server["url"], json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers={"Accept": "application/json, text/event-stream"})
    assert r.status_code == 401
    challenge = r.headers["www-authenticate"]
    metadata_url = challenge.split('resource_metadata="', 1)[1].split('"', 1)[0]
    meta = httpx.get(metadata_url).json()
    assert meta["resource"] == echo_server["url"]
    issuer = meta["authorization_servers"][0]
    as_meta = httpx.get(issuer.rstrip("/") + "/.well-known/oauth-authorization-server").json()
    assert as_meta["code_challenge_methods_supported"] == ["S256"]
    # The MCP endpoint never redirects, not even for a trailing slash.
    r = httpx.post(echo_server["url"] + "/", json={}, follow_redirects=False)
    assert r.status_code not in (301, 302, 307, 308), r.status_code
