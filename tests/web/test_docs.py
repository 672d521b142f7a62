"""``/docs``: Swagger UI from this package's own files, under a CSP with no other origin.

A script from a CDN on callpop's origin could call the API as the logged-in user, and
the page could not load in an office without internet. Every asset the page names must
be same-origin and answer; the policy must allow no external origin and no inline
script beyond the one it names by hash.
"""

from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest

from tests.web.conftest import Live

pytestmark = pytest.mark.asyncio


class _Page(HTMLParser):
    """The URLs a page loads (script src, link href, img src) and its inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts: list[str] = []
        self._in_inline_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in ("src", "href"):
            if found.get(name):
                self.urls.append(str(found[name]))
        self._in_inline_script = tag == "script" and not found.get("src")
        if self._in_inline_script:
            self.inline_scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_inline_script = False

    def handle_data(self, data: str) -> None:
        if self._in_inline_script:
            self.inline_scripts[-1] += data


def _directives(csp: str) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for part in csp.split(";"):
        words = part.split()
        if words:
            parsed[words[0]] = words[1:]
    return parsed


async def test_docs_load_only_same_origin_assets_that_answer(live_web: Live) -> None:
    client = live_web.client()
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    page = _Page()
    page.feed(docs.text)
    assert page.urls, "the page names no assets"
    for url in page.urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, f"{url} is not same-origin"
        assert url.startswith("/"), url
    # The script and the style are there (not an empty page that passes by naming nothing).
    assert any(url.endswith("swagger-ui-bundle.js") for url in page.urls)
    assert any(url.endswith(".css") for url in page.urls)
    for url in page.urls:
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert asset.content, url
    bundle = await client.get(next(u for u in page.urls if u.endswith("swagger-ui-bundle.js")))
    assert "javascript" in bundle.headers["content-type"]
    # The spec the page loads is there too.
    openapi = re.search(r"url: '([^']+)'", docs.text)
    assert openapi is not None and openapi[1] == "/openapi.json"
    assert (await client.get(openapi[1])).status_code == 200


async def test_docs_csp_allows_no_other_origin_and_no_unsafe_inline(live_web: Live) -> None:
    client = live_web.client()
    docs = await client.get("/docs")
    csp = docs.headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "http:" not in csp and "https:" not in csp and "*" not in csp
    directives = _directives(csp)
    assert directives["default-src"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["object-src"] == ["'none'"]
    for name, sources in directives.items():
        for source in sources:
            assert source in ("'self'", "'none'", "data:") or source.startswith("'sha256-"), (
                f"{name} allows {source}"
            )
    # The one inline script, the Swagger UI start-up, is allowed by its hash, and
    # nothing else inline is.
    page = _Page()
    page.feed(docs.text)
    allowed = {s.strip("'") for s in directives["script-src"] if s.startswith("'sha256-")}
    assert page.inline_scripts
    for script in page.inline_scripts:
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"sha256-{digest}" in allowed
    assert len(allowed) == len(page.inline_scripts)


async def test_the_app_page_csp_is_unchanged_by_the_docs(live_web: Live) -> None:
    client = live_web.client()
    csp = (await client.get("/")).headers["content-security-policy"]
    assert "sha256-" not in csp
    assert _directives(csp)["default-src"] == ["'self'"]
    # The old CDN route is gone: no origin besides our own anywhere in either page.
    assert "jsdelivr" not in (await client.get("/docs")).text
