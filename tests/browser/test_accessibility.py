"""Every page, in both languages, for people using a keyboard or assistive technology: no
serious or critical axe-core violation, and the keyboard alone reaches everything: the
first Tab lands on the skip link (Enter on it moves focus to the main content), every link,
button and field can be reached by Tab, and wherever focus lands it is on screen with a
visible focus style. And at a phone's 390 px nothing makes the page scroll sideways.

The pages come from dynoyard.web.pages (PAGE_PATHS signed out, CONSOLE_PAGES signed in):
a new page is covered as it lands. One sign-up per language for all console pages."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from dynoyard.web.pages import CONSOLE_PAGES, PAGE_PATHS
from tests.browser.conftest import Site, axe_violations, sign_up

LOCALES = {"en": "en-US", "zh-CN": "zh-CN"}
# Real names are long: the organization is named after its owner ("…'s organization").
NAMES = {"en": "Augusta Ada King, Countess of Lovelace", "zh-CN": "欧阳娜娜"}
PUBLIC = list(PAGE_PATHS)
CONSOLE = [f"/console/{name}" for name in CONSOLE_PAGES]

# Marks every element Tab should reach (what is focusable, shown, enabled and not
# tabindex=-1) with data-a11y="<n>", and answers their descriptions and unfocused styles.
MARK_FOCUSABLE = """() => {
  const selector = 'a[href], area[href], button, input, select, textarea, summary, iframe,'
    + ' [tabindex], [contenteditable="true"], [contenteditable=""]';
  const shown = (el) => {
    if (el.closest('[inert], [hidden], details:not([open]) > :not(summary)')) return false;
    const style = getComputedStyle(el);
    return el.getClientRects().length > 0 && style.visibility !== 'hidden'
      && style.display !== 'none';
  };
  const reachable = [...document.querySelectorAll(selector)].filter((el) =>
    !el.matches(':disabled') && el.tabIndex >= 0 && el.type !== 'hidden' && shown(el));
  // A radio group is one Tab stop (arrows move within it): its checked radio, or its first.
  const seenGroups = new Set();
  const stops = reachable.filter((el) => {
    if (el.type !== 'radio' || !el.name) return true;
    const group = (el.form ? el.form.id : '') + '|' + el.name;
    if (seenGroups.has(group)) return false;
    seenGroups.add(group);
    return true;
  });
  return stops.map((el, i) => {
    el.setAttribute('data-a11y', String(i));
    return {
      n: i,
      group: el.type === 'radio' ? el.name : null,
      what: window.__describe(el),
      style: window.__focusStyle(el),
    };
  });
}"""
HELPERS = """() => {
  window.__describe = (el) => {
    const text = (el.getAttribute('aria-label') || el.textContent || el.value || '')
      .trim().replace(/\\s+/g, ' ').slice(0, 40);
    return `<${el.tagName.toLowerCase()}${el.id ? '#' + el.id : ''}> ${text}`;
  };
  window.__focusStyle = (el) => {
    const s = getComputedStyle(el);
    return {
      outlineStyle: s.outlineStyle, outlineWidth: s.outlineWidth, outlineColor: s.outlineColor,
      boxShadow: s.boxShadow, borderColor: s.borderColor, borderWidth: s.borderWidth,
      backgroundColor: s.backgroundColor, color: s.color,
      textDecorationLine: s.textDecorationLine,
    };
  };
}"""
FOCUSED = """() => {
  const el = document.activeElement;
  if (!el || el === document.body || el === document.documentElement) return null;
  const r = el.getBoundingClientRect();
  return {
    n: el.hasAttribute('data-a11y') ? Number(el.getAttribute('data-a11y')) : null,
    group: el.type === 'radio' ? el.name : null,
    what: window.__describe(el),
    width: r.width, height: r.height,
    onScreen: r.bottom > 0 && r.right > 0 && r.top < innerHeight && r.left < innerWidth,
    style: window.__focusStyle(el),
    skipLink: el.classList.contains('skip-link'),
  };
}"""


def focus_is_visible(before: dict[str, str], focused: dict[str, str]) -> bool:
    """Focus shows: an outline appears or changes, or another drawn property changes."""
    changed = {k for k in focused if focused[k] != before.get(k)}
    outline = focused["outlineStyle"] != "none" and float(focused["outlineWidth"][:-2]) > 0
    if changed & {"outlineStyle", "outlineWidth", "outlineColor"} and outline:
        return True
    return bool(changed - {"outlineStyle", "outlineWidth", "outlineColor"})


# -- pages in both languages -----------------------------------------------------------


@pytest.fixture(scope="module")
def contexts(browser: Browser, site: Site) -> Iterator[dict[tuple[str, bool], BrowserContext]]:
    """(language, signed in) → a browser context; the signed-in ones signed up once."""
    made: dict[tuple[str, bool], BrowserContext] = {}
    for language, locale in LOCALES.items():
        made[(language, False)] = browser.new_context(locale=locale)
        signed_in = browser.new_context(locale=locale)
        page = signed_in.new_page()
        page.set_default_timeout(15_000)
        sign_up(page, site, name=NAMES[language])
        page.close()
        made[(language, True)] = signed_in
    yield made
    for context in made.values():
        context.close()


def open_page(
    contexts: dict[tuple[str, bool], BrowserContext], site: Site, language: str, path: str
) -> Page:
    console = path.startswith("/console")
    page = contexts[(language, console)].new_page()
    page.set_default_timeout(15_000)
    answer = page.goto(site.url(path))
    assert answer is not None and answer.status == 200, f"{path}: {answer and answer.status}"
    assert page.evaluate("document.documentElement.lang") == language, path
    if console:
        page.wait_for_selector("#app[aria-busy=false]", state="attached")
    else:
        page.wait_for_load_state("networkidle")
    return page


PAGES = [
    pytest.param(language, path, id=f"{language}{path}")
    for language in LOCALES
    for path in PUBLIC + CONSOLE
]


@pytest.mark.parametrize(("language", "path"), PAGES)
def test_no_serious_axe_violation(contexts: Any, site: Site, language: str, path: str) -> None:
    page = open_page(contexts, site, language, path)
    try:
        violations = axe_violations(page)
        assert not violations, "\n".join([f"{path}:", *map(str, violations)])
    finally:
        page.close()


@pytest.mark.parametrize(("language", "path"), PAGES)
def test_the_keyboard_reaches_everything(
    contexts: Any, site: Site, language: str, path: str
) -> None:
    page = open_page(contexts, site, language, path)
    try:
        page.evaluate(HELPERS)
        stops = page.evaluate(MARK_FOCUSABLE)
        assert stops, f"{path}: nothing to focus"
        reached: list[dict[str, Any]] = []
        problems: list[str] = []
        # More presses than stops: a date field takes one per part, the browser adds stops.
        for _ in range(3 * len(stops) + 10):
            page.keyboard.press("Tab")
            focused = page.evaluate(FOCUSED)
            if focused is None:  # past the last stop: focus left the page
                break
            if reached and focused["n"] is not None and focused["n"] == reached[0]["n"]:
                break  # around again
            reached.append(focused)
            if focused["width"] <= 0 or focused["height"] <= 0 or not focused["onScreen"]:
                problems.append(f"not visible when focused: {focused['what']}")
            before = stops[focused["n"]]["style"] if focused["n"] is not None else None
            if before is not None and not focus_is_visible(before, focused["style"]):
                inner = len(reached) > 1 and reached[-2]["n"] == focused["n"]
                where = " (a part inside it, e.g. a date field's calendar button)" if inner else ""
                problems.append(f"no visible focus style: {focused['what']}{where}")
        assert reached, f"{path}: Tab focuses nothing"
        assert reached[0]["skipLink"], f"{path}: the first Tab is {reached[0]['what']}"
        got = {f["n"] for f in reached if f["n"] is not None}
        got_groups = {f["group"] for f in reached if f["group"]}
        missed = [
            s["what"]
            for s in stops
            if s["n"] not in got and not (s["group"] and s["group"] in got_groups)
        ]
        assert not missed, "\n".join([f"{path}: Tab never reaches these:", *missed])
        assert not problems, "\n".join([f"{path}:", *problems])
    finally:
        page.close()


@pytest.mark.parametrize(("language", "path"), PAGES)
def test_enter_on_the_skip_link_moves_focus_to_the_main_content(
    contexts: Any, site: Site, language: str, path: str
) -> None:
    page = open_page(contexts, site, language, path)
    try:
        page.evaluate(HELPERS)
        assert page.evaluate(MARK_FOCUSABLE)
        main_has_stops = page.evaluate("!!document.querySelector('main [data-a11y]')")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.classList.contains('skip-link')"), path
        page.keyboard.press("Enter")
        page.wait_for_function("document.activeElement && document.activeElement.id === 'main'")
        assert re.search(r"#main$", page.url), page.url
        # The next Tab goes on from the main content, past the header's links.
        page.keyboard.press("Tab")
        inside = page.evaluate("document.getElementById('main').contains(document.activeElement)")
        assert inside or not main_has_stops, f"{path}: the Tab after the skip link left main"
    finally:
        page.close()


@pytest.mark.parametrize(("language", "path"), PAGES)
def test_the_page_fits_a_phone_screen(contexts: Any, site: Site, language: str, path: str) -> None:
    """Reflow (WCAG 1.4.10): at 390 px wide nothing makes the page scroll sideways (a wide
    table scrolls inside its own box)."""
    page = open_page(contexts, site, language, path)
    try:
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_function("innerWidth === 390")
        too_wide = page.evaluate(
            """() => {
              const limit = document.documentElement.clientWidth;
              if (document.documentElement.scrollWidth <= limit) return [];
              return [...document.querySelectorAll('body *')]
                .filter((el) => el.getBoundingClientRect().right > limit + 1)
                .filter((el) => !el.parentElement
                  || el.parentElement.getBoundingClientRect().right <= limit + 1)
                .slice(0, 8)
                .map((el) => `<${el.tagName.toLowerCase()}${el.id ? '#' + el.id : ''}`
                  + `${el.className ? '.' + String(el.className).split(' ')[0] : ''}>`
                  + ` ends at ${Math.round(el.getBoundingClientRect().right)}px`);
            }"""
        )
        assert not too_wide, "\n".join([f"{path}: wider than 390 px:", *too_wide])
    finally:
        page.close()
