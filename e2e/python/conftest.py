"""Shared helpers for the end-to-end tests: they drive a running platform
(started by scripts/e2e.sh) the way a user and a real MCP client do."""

from __future__ import annotations

import html.parser
import os
import time
import urllib.parse

import httpx
import pytest


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run these tests through scripts/e2e.sh")
    return value


class _Forms(html.parser.HTMLParser):
    """Collects <form>s with their inputs and submit buttons."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "method": (a.get("method") or "get").lower(), "fields": {}, "buttons": []})
        elif self.forms and tag in ("input", "button"):
            kind = (a.get("type") or ("submit" if tag == "button" else "text")).lower()
            if kind == "submit":
                self.forms[-1]["buttons"].append((a.get("name"), a.get("value") or ""))
            elif a.get("name"):
                self.forms[-1]["fields"][a["name"]] = a.get("value") or ""


def forms(page: str) -> list[dict]:
    p = _Forms()
    p.feed(page)
    return p.forms


def submit(client: httpx.Client, page_url: str, page: str, button_value: str | None = None) -> httpx.Response:
    """Submit the first POST form of a page, pressing the button whose value
    (or name) contains `button_value` when given."""
    posts = [f for f in forms(page) if f["method"] == "post"]
    assert posts, f"no form on {page_url}:\n{page[:2000]}"
    form = posts[0]
    data = dict(form["fields"])
    if form["buttons"]:
        chosen = form["buttons"][0]
        if button_value:
            for name, value in form["buttons"]:
                if button_value in (value or "") or button_value in (name or ""):
                    chosen = (name, value)
                    break
        if chosen[0]:
            data[chosen[0]] = chosen[1]
    action = urllib.parse.urljoin(page_url, form["action"] or page_url)
    return client.post(action, data=data, follow_redirects=False)


def sign_in(client: httpx.Client, magic_link: str) -> None:
    """Follow a magic link the way a browser does (confirming it if the page asks)."""
    r = client.get(magic_link, follow_redirects=False)
    if r.status_code == 200 and "<form" in r.text:
        r = submit(client, magic_link, r.text)
    assert r.status_code in (302, 303), f"magic link did not sign in: {r.status_code} {r.text[:500]}"
    assert any(c.name == "bmm_session" for c in client.cookies.jar), "no session cookie after the magic link"


class Api:
    def __init__(self, base: str, key: str) -> None:
        self.base = base.rstrip("/")
        self.http = httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=120)

    def gql(self, query: str, **variables):
        r = self.http.post(f"{self.base}/graphql", json={"query": query, "variables": variables})
        body = r.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def build_server(self, description: str, name: str) -> dict:
        preview = self.gql(
            "mutation($d: String!) { previewServer(input: {description: $d}) { id tools { name } credentials { key } } }",
            d=description,
        )["previewServer"]
        created = self.gql(
            "mutation($p: ID!, $n: String!) { createServer(input: {previewId: $p, name: $n, credentials: []}) "
            "{ server { id slug url } build { id } } }",
            p=preview["id"],
            n=name,
        )["createServer"]
        build_id = created["build"]["id"]
        deadline = time.time() + 600
        status = None
        while time.time() < deadline:
            status = self.gql("query($id: ID!) { build(id: $id) { status } }", id=build_id)["build"]["status"]
            if status in ("SUCCEEDED", "FAILED", "CANCELLED"):
                break
            time.sleep(1)
        if status != "SUCCEEDED":
            events = self.gql(
                "query($id: ID!) { build(id: $id) { events(after: 0, limit: 500) { seq step kind message } } }", id=build_id
            )["build"]["events"]
            pytest.fail(f"build {build_id} ended {status}: " + "\n".join(f"{e['seq']} {e['step']} {e['kind']} {e['message']}" for e in events))
        return {**created["server"], "build_id": build_id, "tools": [t["name"] for t in preview["tools"]]}


@pytest.fixture(scope="session")
def api() -> Api:
    return Api(env("BMM_URL"), env("BMM_API_KEY"))


@pytest.fixture(scope="session")
def echo_server(api: Api) -> dict:
    return api.build_server("A server with an echo tool that repeats the text it is given.", f"e2e echo {int(time.time())}")
