"""The pages' words, English and Simplified Chinese, from `i18n/<language>/*.json` (one file
per area: common, site, console, ...; every file holds flat "area.key": "text" pairs). A
word missing in either language fails a test (tests/unit/test_web_i18n.py), and a page
asking for a key that does not exist fails loudly rather than showing the key."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from dynoyard.domain.messages import language_of

LANGUAGES = ("en", "zh-CN")
LANG_COOKIE = "dynoyard_lang"
LANG_COOKIE_DAYS = 365  # how long the language switch is remembered
I18N_DIR = Path(__file__).parent / "i18n"


@cache
def catalog(language: str) -> dict[str, str]:
    """Every string of `language`, keyed "area.key"."""
    words: dict[str, str] = {}
    for file in sorted((I18N_DIR / language).glob("*.json")):
        for key, text in json.loads(file.read_text(encoding="utf-8")).items():
            if key in words:
                raise ValueError(f"{file.name}: {key} is defined twice")
            words[key] = text
    return words


def area(language: str, *prefixes: str) -> dict[str, str]:
    """The strings whose keys start with one of `prefixes` (what a page's script needs)."""
    return {k: v for k, v in catalog(language).items() if k.startswith(prefixes)}


class Translator:
    """`t("site.title")`, `t("usage.rows", count=3)`: the text in one language, with
    `{name}` placeholders filled."""

    def __init__(self, language: str) -> None:
        self.language = language
        self.words = catalog(language)

    def __call__(self, key: str, **values: object) -> str:
        text = self.words[key]  # KeyError: a page names a key no file defines
        return text.format(**values) if values else text


def choose_language(forced: str | None, cookie: str | None, accept_language: str | None) -> str:
    """`?lang=` first (the switch), then the remembered choice, then the browser's languages."""
    for choice in (forced, cookie):
        if choice in LANGUAGES:
            return choice
    return language_of(accept_language)
