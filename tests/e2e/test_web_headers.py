"""The web pages over HTTP, without a browser: every page's security headers (a strict CSP,
no framing, no sniffing, HSTS on https), no inline script, hashed assets served immutable
(gzip when asked, plain when DYNOYARD_GZIP_ASSETS is off), no way out of the assets'
folder, the language (?lang=, the remembered switch, Accept-Language, <html lang>), the
console's pages behind the session, and the JavaScript budget of a page.

Every page comes from dynoyard.web.pages (PAGE_PATHS, its routes, CONSOLE_PAGES): a new page
is covered as it lands. Needs the built assets (`npm run build`) and DynamoDB Local:
`python -m dynoyard.local test -- tests/e2e/test_web_headers.py` (-s prints the budget)."""

from __future__ import annotations

import gzip
import json
import re
import uuid
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.routing import APIRoute
from starlette.testclient import TestClient

from dynoyard.console.app import create_console_app
from dynoyard.console.auth import SESSION_COOKIE
from dynoyard.web import assets, i18n, pages
from tests.conftest import Tables
from tests.e2e.test_console_auth import Mailbox, settings_for

LOCAL = "http://127.0.0.1:8080"
HTTPS = "https://console.example.com"
HASHED = re.compile(r"^/assets/[A-Za-z0-9_.-]+-[A-Z0-9]{8}\.(js|css)$")
BUDGET_BYTES = 150 * 1024  # gzip bytes of JavaScript a console page loads
CJK = re.compile(r"[\u3400-\u9fff]")


def signed_out_paths() -> list[str]:
    """The public pages: PAGE_PATHS and any other page route outside /console."""
    found = list(pages.PAGE_PATHS)
    for path in static_page_routes():
        if not path.startswith("/console") and path not in found:
            found.append(path)
    return found


def console_paths() -> list[str]:
    """/console, every /console/<page>, and any other page route under /console."""
    found = ["/console", *(f"/console/{page}" for page in pages.CONSOLE_PAGES)]
    found += [p for p in static_page_routes() if p.startswith("/console") and p not in found]
    return found


def static_page_routes() -> list[str]:
    return [
        route.path
        for route in pages.router.routes
        if isinstance(route, APIRoute) and "GET" in route.methods and "{" not in route.path
    ]


class Page(HTMLParser):
    """What a test reads in a page: <html lang>, scripts, stylesheets, attributes, text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.lang: str | None = None
        self.scripts: list[dict[str, str | None]] = []
        self.script_bodies: list[str] = []
        self.stylesheets: list[str] = []
        self.inline_handlers: list[str] = []
        self.style_attributes: list[str] = []
        self.text: list[str] = []
        self.in_script = False
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "html":
            self.lang = values.get("lang")
        if tag == "script":
            self.scripts.append(values)
            self.script_bodies.append("")
            self.in_script = True
        if tag == "link" and "stylesheet" in (values.get("rel") or "").split():
            self.stylesheets.append(values.get("href") or "")
        for name, _ in attrs:
            if name.startswith("on"):
                self.inline_handlers.append(f"<{tag} {name}>")
            if name == "style":
                self.style_attributes.append(f"<{tag} style>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self.in_script = False

    def handle_data(self, data: str) -> None:
        if self.in_script:
            self.script_bodies[-1] += data
        else:
            self.text.append(data)

    def script_sources(self) -> list[str]:
        return [str(s["src"]) for s in self.scripts if s.get("src")]


# -- the apps ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mailbox() -> Mailbox:
    return Mailbox()


@pytest.fixture(scope="module")
def make_client(tables: Tables, mailbox: Mailbox) -> Iterator[Callable[..., TestClient]]:
    """make_client(**settings): a TestClient of a console app with those settings (no
    cookies kept between clients)."""
    made: list[TestClient] = []

    def make(**changes: Any) -> TestClient:
        settings = settings_for(tables, **{"public_url": LOCAL, **changes})
        app = create_console_app(settings, email_sender=mailbox)
        client = TestClient(
            app,
            base_url="http://127.0.0.1",
            follow_redirects=False,
            client=("127.0.0.1", 50000),
            raise_server_exceptions=False,  # a page's 500 fails the test that names it
        )
        client.__enter__()  # one event loop for all its requests (the store's client)
        made.append(client)
        return client

    yield make
    for client in made:
        client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


@pytest.fixture(scope="module")
def session(client: TestClient, mailbox: Mailbox) -> str:
    """A real session (signed up by emailed link), for the console's pages."""
    email = f"web-{uuid.uuid4().hex[:10]}@example.com"
    answer = client.post(
        "/api/auth/email-link", json={"email": email, "name": "Ada", "accept_terms": True}
    )
    assert answer.status_code == 202, answer.text
    answer = client.get(f"/api/auth/email-link/callback?token={mailbox.token_for(email)}")
    assert answer.status_code == 303, answer.text
    token = answer.cookies.get(SESSION_COOKIE) or client.cookies.get(SESSION_COOKIE)
    client.cookies.clear()
    assert token
    return str(token)


def get(
    client: TestClient, path: str, session: str | None = None, **headers: str
) -> Any:  # httpx.Response
    client.cookies.clear()
    if session is not None:
        headers["cookie"] = f"{SESSION_COOKIE}={session}"
    return client.get(path, headers=headers)


def every_page(client: TestClient, session: str) -> Iterator[tuple[str, Any]]:
    """(path, answer) of every page: the public ones signed out, the console's signed in."""
    paths = [(p, None) for p in signed_out_paths()] + [(p, session) for p in console_paths()]
    for path, cookie in paths:
        answer = get(client, path, cookie)
        assert answer.status_code == 200, f"{path}: {answer.status_code} {answer.text[:200]}"
        yield path, answer


# -- headers -------------------------------------------------------------------------


def directives(policy: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in policy.split(";"):
        words = part.split()
        if words:
            out[words[0].lower()] = words[1:]
    return out


def assert_secure_headers(path: str, answer: Any) -> None:
    headers = answer.headers
    policy = headers.get("content-security-policy", "")
    found = directives(policy)
    assert found, f"{path}: no Content-Security-Policy"
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy, path
    assert found.get("script-src") == ["'self'"], f"{path}: script-src {found.get('script-src')}"
    assert found.get("style-src") == ["'self'"], f"{path}: style-src {found.get('style-src')}"
    assert found.get("frame-ancestors") == ["'none'"], path
    assert found.get("default-src") == ["'none'"], path
    assert found.get("base-uri") == ["'none'"], path
    assert headers.get("x-content-type-options") == "nosniff", path
    assert headers.get("x-frame-options") == "DENY", path
    assert headers.get("referrer-policy") in ("same-origin", "strict-origin", "no-referrer"), path


def test_every_page_answers_with_the_security_headers(client: TestClient, session: str) -> None:
    seen = []
    for path, answer in every_page(client, session):
        assert answer.headers["content-type"].startswith("text/html"), path
        assert answer.headers.get("cache-control") == "no-store", path
        assert_secure_headers(path, answer)
        assert "strict-transport-security" not in answer.headers, f"{path}: HSTS on http"
        seen.append(path)
    assert {"/sign-in", "/console/usage", "/console/account"} <= set(seen)


def test_the_headers_on_assets_api_answers_and_the_not_found_page(
    client: TestClient, session: str
) -> None:
    entry = assets.asset_url("console.js")
    for path, answer in (
        (entry, get(client, entry)),
        ("/api/me", get(client, "/api/me")),
        ("/console/no-such-page", get(client, "/console/no-such-page", session)),
        ("/assets/nope.js", get(client, "/assets/nope.js")),
    ):
        assert_secure_headers(path, answer)
    assert get(client, "/console/no-such-page", session).status_code == 404


def test_hsts_when_served_over_https(
    make_client: Callable[..., TestClient], client: TestClient, session: str
) -> None:
    secure = make_client(public_url=HTTPS)
    for path in [*signed_out_paths(), "/console/usage", assets.asset_url("styles.css")]:
        answer = get(secure, path, session if path.startswith("/console") else None)
        hsts = answer.headers.get("strict-transport-security", "")
        max_age = re.search(r"max-age=(\d+)", hsts)
        assert max_age and int(max_age.group(1)) >= 31_536_000, f"{path}: {hsts!r}"
        assert_secure_headers(path, answer)


# -- the markup: scripts and styles ----------------------------------------------------


def test_no_inline_script_handler_or_style(client: TestClient, session: str) -> None:
    files = assets.manifest()["files"]
    for path, answer in every_page(client, session):
        page = Page(answer.text)
        for attributes, body in zip(page.scripts, page.script_bodies, strict=True):
            if attributes.get("src"):
                assert attributes.get("type") == "module", f"{path}: {attributes}"
                assert not body.strip(), f"{path}: a script with src and a body"
            else:
                assert attributes.get("type") == "application/json", (
                    f"{path}: an inline <script> that is not a JSON data block: {attributes}"
                )
                json.loads(body)  # data, never code
        assert page.inline_handlers == [], f"{path}: {page.inline_handlers}"
        assert page.style_attributes == [], f"{path}: {page.style_attributes} (CSP refuses)"
        for url in page.script_sources() + page.stylesheets:
            assert HASHED.match(url), f"{path}: {url} is not a hashed /assets/ URL"
            assert url.removeprefix("/assets/") in files, f"{path}: {url} not in the manifest"
        assert page.stylesheets, f"{path}: no stylesheet"


def test_console_pages_load_the_console_script_and_public_pages_do_not(
    client: TestClient, session: str
) -> None:
    console_entry = assets.asset_url("console.js")
    for path, answer in every_page(client, session):
        sources = Page(answer.text).script_sources()
        if path.startswith("/console"):
            assert console_entry in sources, f"{path}: {sources}"
        else:
            assert console_entry not in sources, f"{path}: the console's script on a public page"


# -- the assets --------------------------------------------------------------------------


def test_assets_are_immutable_and_gzipped_when_asked(client: TestClient) -> None:
    files = assets.manifest()["files"]
    assert files
    for name in files:
        plain = get(client, f"/assets/{name}", **{"accept-encoding": "identity"})
        assert plain.status_code == 200, name
        assert plain.headers["cache-control"] == "public, max-age=31536000, immutable", name
        assert "content-encoding" not in plain.headers, name
        assert plain.content == (assets.STATIC_DIR / name).read_bytes(), name
        assert plain.headers["vary"].lower() == "accept-encoding", name
        zipped = get(client, f"/assets/{name}", **{"accept-encoding": "gzip, deflate, br"})
        assert zipped.headers["content-encoding"] == "gzip", name
        assert zipped.headers["cache-control"] == "public, max-age=31536000, immutable", name
        assert zipped.content == plain.content, name  # httpx decodes: the same bytes
        raw = (assets.STATIC_DIR / (name + ".gz")).read_bytes()
        assert gzip.decompress(raw) == plain.content, name
        assert int(zipped.headers["content-length"]) == len(raw) == files[name]["gzip_bytes"]
    for entry, content_type in (("console.js", "text/javascript"), ("styles.css", "text/css")):
        answer = get(client, assets.asset_url(entry))
        assert answer.headers["content-type"].startswith(content_type), entry


def test_assets_plain_when_gzip_is_off(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DYNOYARD_GZIP_ASSETS", "false")
    plain_only = make_client()
    assert plain_only.app.state.console.settings.gzip_assets is False  # type: ignore[attr-defined]
    for name in assets.manifest()["files"]:
        answer = get(plain_only, f"/assets/{name}", **{"accept-encoding": "gzip"})
        assert answer.status_code == 200
        assert "content-encoding" not in answer.headers, name
        assert answer.content == (assets.STATIC_DIR / name).read_bytes(), name


@pytest.mark.parametrize(
    "path",
    [
        "/assets/nope-ABCDEFGH.js",
        "/assets/manifest.json",
        "/assets/..%2Fmanifest.json",
        "/assets/..%2F..%2Fpages.py",
        "/assets/%2e%2e%2fi18n.py",
        "/assets/..%5Cmanifest.json",
        "/assets/%2Fetc%2Fpasswd",
        "/assets/",
    ],
)
def test_unknown_assets_and_paths_out_of_the_folder_are_refused(
    client: TestClient, path: str
) -> None:
    answer = get(client, path)
    assert answer.status_code == 404, f"{path}: {answer.status_code}"
    assert b'"entries"' not in answer.content and b"import" not in answer.content


def test_a_gz_twin_is_not_served_by_its_own_name(client: TestClient) -> None:
    name = next(iter(assets.manifest()["files"]))
    assert get(client, f"/assets/{name}.gz").status_code == 404


# -- languages -----------------------------------------------------------------------


def test_lang_query_is_remembered_by_a_cookie(make_client: Callable[..., TestClient]) -> None:
    browser = make_client()  # keeps its cookies, as a browser
    english = {"accept-language": "en-US,en;q=0.9"}
    first = browser.get("/sign-in?lang=zh-CN", headers=english)
    assert Page(first.text).lang == "zh-CN"
    cookie = first.headers["set-cookie"]
    assert cookie.startswith(f"{i18n.LANG_COOKIE}=zh-CN"), cookie
    assert "Path=/" in cookie and "SameSite=lax" in cookie and "Max-Age=31536000" in cookie
    assert "Secure" not in cookie  # http://127.0.0.1
    later = browser.get("/sign-in", headers=english)
    assert Page(later.text).lang == "zh-CN", "the switch is remembered over Accept-Language"
    assert "set-cookie" not in later.headers
    back = browser.get("/sign-in?lang=en", headers={"accept-language": "zh-CN"})
    assert Page(back.text).lang == "en"
    assert Page(browser.get("/sign-in", headers={"accept-language": "zh"}).text).lang == "en"
    ignored = browser.get("/sign-in?lang=fr")
    assert "set-cookie" not in ignored.headers and Page(ignored.text).lang == "en"


def test_the_language_switch_keeps_the_pages_query_but_never_a_token(
    client: TestClient, session: str
) -> None:
    query = "key_id=k_1&since=2026-11-01&lang=en&token=secret-invite"
    html = get(client, f"/console/usage?{query}", session).text
    switch = re.findall(r'<a href="([^"]+)" lang="zh-CN"', html)
    assert switch == ["/console/usage?key_id=k_1&amp;since=2026-11-01&amp;lang=zh-CN"]


def test_the_language_cookie_is_secure_on_https(make_client: Callable[..., TestClient]) -> None:
    answer = get(make_client(public_url=HTTPS), "/sign-in?lang=zh-CN")
    assert "Secure" in answer.headers["set-cookie"]


@pytest.mark.parametrize(
    ("accept_language", "expected"),
    [
        ("zh-TW,zh;q=0.9", "zh-CN"),
        ("zh", "zh-CN"),
        ("zh-Hant-HK", "zh-CN"),
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
        ("fr", "en"),
        ("fr-FR,fr;q=0.9", "en"),
        ("en-GB", "en"),
        ("", "en"),
    ],
)
def test_the_browsers_language_chooses(
    client: TestClient, session: str, accept_language: str, expected: str
) -> None:
    for path in ["/sign-in", *signed_out_paths()[:1], "/console/usage"]:
        answer = get(
            client,
            path,
            session if path.startswith("/console") else None,
            **{"accept-language": accept_language},
        )
        assert Page(answer.text).lang == expected, f"{path} for {accept_language!r}"


def test_every_page_in_both_languages(client: TestClient, session: str) -> None:
    paths = [(p, None) for p in signed_out_paths()] + [(p, session) for p in console_paths()]
    for path, cookie in paths:
        for language in i18n.LANGUAGES:
            answer = get(client, f"{path}?lang={language}", cookie)
            assert answer.status_code == 200, f"{path}?lang={language}"
            page = Page(answer.text)
            assert page.lang == language, path
            chinese = bool(CJK.search(" ".join(page.text)))
            assert chinese == (language == "zh-CN") or (
                language == "en" and chinese and all_chinese_is_the_switch(page)
            ), f"{path}?lang={language}: text in the other language"


def all_chinese_is_the_switch(page: Page) -> bool:
    """An English page's only Chinese is the language switch's own name (简体中文)."""
    chinese_name = i18n.catalog("en")["common.language_name_zh_CN"]
    return not CJK.search(" ".join(page.text).replace(chinese_name, ""))


# -- the console behind the session ------------------------------------------------------


def test_console_pages_without_a_session_go_to_sign_in(client: TestClient) -> None:
    for path in console_paths():
        answer = get(client, path)
        assert answer.status_code == 303, path
        assert urlsplit(answer.headers["location"]).path == "/sign-in", path
        assert answer.headers["location"].startswith("/"), "never another origin"


# -- the JavaScript budget -------------------------------------------------------------


def static_closure(entry_file: str, *, dynamic: bool = False) -> list[str]:
    """The files an entry loads before any choice of the visitor's, read from the built
    JavaScript itself: static imports (`import{…}from"./x.js"`), not `import("./x.js")`
    (unless `dynamic`: everything it may ever load)."""
    seen: list[str] = []
    pending = [entry_file]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.append(name)
        code = (assets.STATIC_DIR / name).read_text(encoding="utf-8")
        for match in re.finditer(r"""(import\s*\(\s*)?["']\./([A-Za-z0-9_.-]+\.js)["']""", code):
            if dynamic or match.group(1) is None:
                pending.append(match.group(2))
    return seen


def gzip_bytes(files: list[str]) -> int:
    sizes = assets.manifest()["files"]
    return sum(int(sizes[name]["gzip_bytes"]) for name in files)


def loaded_scripts(html: str) -> list[str]:
    """The script files a page loads at once: each <script src> and the chunks it imports
    statically (read from the built files; scripts_of must agree, a test below)."""
    loaded: list[str] = []
    for url in Page(html).script_sources():
        loaded += [f for f in static_closure(url.removeprefix("/assets/")) if f not in loaded]
    return loaded


def test_scripts_of_lists_what_loads_before_consent() -> None:
    """scripts_of (the budget's source) is what the entry imports statically: a chunk
    loaded by import() (analytics after consent) is not counted as loaded at once."""
    for entry, file in assets.manifest()["entries"].items():
        if entry.endswith(".js"):
            assert sorted(assets.scripts_of(entry)) == sorted(static_closure(file)), (
                f"{entry}: scripts_of follows dynamic imports too (web/build.mjs: keep only"
                " kind 'import-statement' in the manifest's imports)"
            )


def test_the_javascript_budget(client: TestClient, session: str) -> None:
    figures: dict[str, int] = {}
    for path, answer in every_page(client, session):
        figures[path] = gzip_bytes(loaded_scripts(answer.text))
    console = {p: b for p, b in figures.items() if p.startswith("/console")}
    public = {p: b for p, b in figures.items() if not p.startswith("/console")}
    styles = gzip_bytes([assets.manifest()["entries"]["styles.css"]])
    print("\nJavaScript a page loads at once (gzip bytes):")
    for path, size in figures.items():
        print(f"  {path:32} {size:>8,} ({size / 1024:.1f} KB)")
    print(f"  styles.css (every page)          {styles:>8,} ({styles / 1024:.1f} KB)")
    site_all = gzip_bytes(static_closure(assets.manifest()["entries"]["site.js"], dynamic=True))
    print(f"  a public page after consent      {site_all:>8,} ({site_all / 1024:.1f} KB)")
    assert max(console.values()) <= BUDGET_BYTES, console
    assert max(public.values()) < min(console.values()), (public, console)
