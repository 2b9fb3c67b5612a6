"""The pages' words (no server): English and Simplified Chinese hold the same keys with the
same `{placeholders}`, nothing is left empty or in English, every key a template or a
script names exists, every error code the console API can answer has words, and no page
shows text that is not in the translation files.

How to fix a failure here:
- "missing in zh-CN" / "missing in en": add the key to web/i18n/<language>/<area>.json
  (the same file name in both languages).
- "left in English": translate it; a proper name that stays as is (a brand, "Google")
  goes in SAME_IN_BOTH below.
- "hard-coded text": put the words in the translation files and use `t('area.key')` in
  the template, `t("area.key")` in the script (a code sample belongs in <pre>/<code>).
- "no words for error code": add `errors.<code>` to web/i18n/<language>/errors.json.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

from dynoyard.domain.audit import AUDIT_ACTIONS
from dynoyard.domain.billing import MOVEMENT_KINDS
from dynoyard.domain.team import ROLES
from dynoyard.web import i18n
from dynoyard.web.pages import CONSOLE_PAGES

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "layers" / "dynoyard" / "dynoyard" / "web"
TEMPLATES = WEB / "templates"
CONSOLE_API = WEB.parent / "console"
SOURCES = ROOT / "web" / "src"
EN, ZH = i18n.LANGUAGES

# Words that stay the same in both languages: proper names and technical terms. A zh-CN
# string may be written with these alone (e.g. "Google"); any other Latin word needs a
# Chinese sentence around it.
SAME_IN_BOTH = {
    "Dynoyard",
    "Google",
    "Discord",
    "GitHub",
    "Stripe",
    "PostHog",
    "OpenAI",
    "English",
    "API",
    "ID",
    "JSON",
    "JSON Lines",
    "CSV",
    "USD",
    "UTC",
    "URL",
    "HTTP",
    "HTTPS",
    "SDK",
    "CLI",
    "Token",
    "Tokens",
    "KB",
    "MB",
    # Card brands, as the card shows them.
    "Visa",
    "Mastercard",
    "American Express",
    "JCB",
    "Discover",
    "Diners Club",
    "Cartes Bancaires",
}
# Placeholders and what is not a word (numbers, punctuation, `{name}`).
PLACEHOLDER = re.compile(r"\{(\w+)\}")
LATIN_WORD = re.compile(r"[A-Za-z]{2,}")
CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
LETTER = re.compile(r"[^\W\d_]")

# Dynamic keys (`t('console.page_' ~ page)`, `t("console.role_" + role)`): the suffixes
# the prefix must be defined for, by the prefix's last word.
KNOWN_SUFFIXES: dict[str, tuple[str, ...]] = {
    "page": tuple(CONSOLE_PAGES),
    "role": tuple(ROLES),
    "action": tuple(AUDIT_ACTIONS),
    "kind": tuple(sorted(MOVEMENT_KINDS)),
    "language_name": tuple(code.replace("-", "_") for code in i18n.LANGUAGES),
}
# api.js falls back to `errors.http_<status>` when an answer has no error code (a proxy,
# API Gateway): the statuses it may meet.
HTTP_FALLBACKS = (400, 401, 403, 404, 409, 413, 429, 500, 502, 503, 504)


def files_of(language: str) -> dict[str, dict[str, str]]:
    return {
        f.name: json.loads(f.read_text(encoding="utf-8"))
        for f in sorted((i18n.I18N_DIR / language).glob("*.json"))
    }


def templates() -> list[Path]:
    return sorted(TEMPLATES.rglob("*.html"))


def scripts() -> list[Path]:
    return sorted(SOURCES.rglob("*.js"))


def listing(what: str, problems: list[str]) -> str:
    """An assertion's message: every problem on its own line (pytest shortens lists)."""
    return "\n".join([f"{what} ({len(problems)}):" if what else f"{len(problems)}:", *problems])


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# -- the translation files -----------------------------------------------------------


def test_both_languages_load() -> None:
    """A key defined twice (in two files of one language) fails loading."""
    assert i18n.catalog(EN)
    assert i18n.catalog(ZH)


def test_both_languages_have_the_same_files_and_keys() -> None:
    en, zh = files_of(EN), files_of(ZH)
    assert sorted(en) == sorted(zh), "every area has a file in both languages"
    problems = []
    for name in sorted(en):
        for key in sorted(set(en[name]) - set(zh[name])):
            problems.append(f"{key}: missing in zh-CN/{name}")
        for key in sorted(set(zh[name]) - set(en[name])):
            problems.append(f"{key}: missing in en/{name}")
    assert not problems, listing("", problems)


def test_same_placeholders_in_both_languages() -> None:
    en, zh = i18n.catalog(EN), i18n.catalog(ZH)
    problems = [
        f"{key}: en {sorted(set(PLACEHOLDER.findall(en[key])))}"
        f" zh-CN {sorted(set(PLACEHOLDER.findall(zh[key])))}"
        for key in sorted(set(en) & set(zh))
        if set(PLACEHOLDER.findall(en[key])) != set(PLACEHOLDER.findall(zh[key]))
    ]
    assert not problems, listing("", problems)


def test_no_empty_value() -> None:
    """Nothing left blank (a separator may be a space)."""
    problems = [
        f"{language}: {key}"
        for language in i18n.LANGUAGES
        for key, text in i18n.catalog(language).items()
        if not isinstance(text, str) or text == ""
    ]
    assert not problems, listing("", problems)


def without_same_words(text: str) -> str:
    text = PLACEHOLDER.sub(" ", text)
    for word in sorted(SAME_IN_BOTH, key=len, reverse=True):
        text = re.sub(rf"\b{re.escape(word)}\b", " ", text)
    return text


def test_chinese_is_chinese() -> None:
    """A zh-CN string with words is a Chinese sentence (or proper names alone): a string
    left in English fails."""
    en, zh = i18n.catalog(EN), i18n.catalog(ZH)
    left = [
        f"{key}: {text!r}"
        for key, text in sorted(zh.items())
        if LATIN_WORD.search(without_same_words(text)) and not CJK.search(text)
    ]
    assert not left, listing("left in English (translate; a proper name: SAME_IN_BOTH)", left)
    same = [key for key in zh if key in en and zh[key] == en[key]]
    assert len(same) <= max(3, len(zh) // 20), f"most strings differ; the same: {same}"


def test_english_is_not_chinese() -> None:
    en = i18n.catalog(EN)
    chinese = [
        f"{key}: {text!r}"
        for key, text in sorted(en.items())
        if CJK.search(text) and not key.startswith("common.language_name_")
    ]
    assert not chinese, listing("Chinese in the English strings", chinese)


# -- the error codes of the console API ----------------------------------------------

# The console's error helpers: where their code argument sits, and its default.
ERROR_CALLS = {
    "ConsoleError": (2, None),
    "bad_request": (2, "invalid_request"),
    "forbidden": (1, "forbidden"),
    "not_found": (1, "not_found"),
    "oauth_failed": (1, "oauth_failed"),
}


def console_error_codes() -> dict[str, str]:
    """Every literal error code of the console API's modules → where it is raised."""
    found: dict[str, str] = {}
    for module in sorted(CONSOLE_API.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name not in ERROR_CALLS:
                continue
            position, default = ERROR_CALLS[name]
            code: ast.expr | None = next((k.value for k in node.keywords if k.arg == "code"), None)
            if code is None and len(node.args) > position:
                code = node.args[position]
            if isinstance(code, ast.Constant) and isinstance(code.value, str):
                found.setdefault(code.value, f"{module.name}:{node.lineno}")
            elif code is None and default:
                found.setdefault(default, f"{module.name}:{node.lineno}")
    return found


def test_the_scan_finds_the_console_error_codes() -> None:
    codes = console_error_codes()
    for code in ("not_signed_in", "csrf_failed", "insufficient_role", "too_many_links"):
        assert code in codes
    assert len(codes) >= 30


def test_every_console_error_code_has_words() -> None:
    catalog = i18n.catalog(EN)
    missing = [
        f"errors.{code} ({where})"
        for code, where in sorted(console_error_codes().items())
        if f"errors.{code}" not in catalog
    ]
    missing += [
        f"errors.http_{status} (api.js fallback)"
        for status in HTTP_FALLBACKS
        if f"errors.http_{status}" not in catalog
    ]
    assert not missing, listing("no words for error code", missing)


def test_the_common_errors_api_js_uses() -> None:
    catalog = i18n.catalog(EN)
    for key in ("common.error_generic", "common.error_network", "common.error_signed_out"):
        assert key in catalog


# -- keys named by templates and scripts ---------------------------------------------

JINJA_T_CALL = re.compile(r"""\bt\(\s*(['"])([^'"]*)\1\s*(~|\)|,)""")


@dataclass(frozen=True)
class KeyUse:
    where: str
    key: str
    dynamic: bool  # a prefix: the rest comes from a value


def template_keys() -> Iterator[KeyUse]:
    for path in templates():
        text = path.read_text(encoding="utf-8")
        for match in JINJA_T_CALL.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            yield KeyUse(f"{rel(path)}:{line}", match.group(2), match.group(3) == "~")


def check_keys(uses: list[KeyUse], available: dict[str, str]) -> list[str]:
    problems = []
    for use in uses:
        if not use.dynamic:
            if use.key not in available:
                problems.append(f"{use.where}: {use.key}")
            continue
        last = use.key.split(".", 1)[-1].rstrip("_.").rsplit(".", 1)[-1]
        suffixes = KNOWN_SUFFIXES.get(last)
        if suffixes is None:
            if not any(k.startswith(use.key) for k in available):
                problems.append(f"{use.where}: {use.key}… (no key starts so)")
            continue
        for suffix in suffixes:
            if use.key + suffix not in available:
                problems.append(f"{use.where}: {use.key}{suffix}")
    return problems


def test_template_keys_exist() -> None:
    uses = list(template_keys())
    assert len(uses) >= 20, "the scan finds the templates' t() calls"
    for language in i18n.LANGUAGES:
        missing = check_keys(uses, i18n.catalog(language))
        assert not missing, listing(f"missing in {language}", missing)


# -- a small JavaScript scanner (strings, template literals, brackets) ---------------


@dataclass(frozen=True)
class Token:
    kind: str  # "str" (quoted or template literal), "name", "punct"
    text: str  # a string's value (a template literal's parts outside ${...}, joined by \0)
    start: int
    dynamic: bool = False  # a template literal with ${...}


REGEX_BEFORE = set("(,=:[!&|?{};+-*%<>~^") | {"return", "typeof", "case", "in", "of"}


def js_tokens(src: str, offset: int = 0) -> list[Token]:
    """Tokens of `src` without comments; regex literals are skipped (a heuristic: a `/`
    where an operand is expected starts one). Template literals' ${...} are tokenized
    into the stream too (their keys count as uses). `offset`: where `src` starts in its
    file (for line numbers)."""
    tokens: list[Token] = []
    i, n = 0, len(src)

    def previous() -> str:
        return tokens[-1].text if tokens and tokens[-1].kind != "str" else ""

    while i < n:
        c = src[i]
        if c.isspace():
            i += 1
        elif src.startswith("//", i):
            end = src.find("\n", i)
            i = n if end < 0 else end
        elif src.startswith("/*", i):
            i = src.index("*/", i) + 2
        elif c in "'\"":
            j, value = i + 1, []
            while src[j] != c:
                if src[j] == "\\":
                    value.append(src[j : j + 2])
                    j += 2
                else:
                    value.append(src[j])
                    j += 1
            tokens.append(Token("str", "".join(value), offset + i))
            i = j + 1
        elif c == "`":
            i = template_literal(src, i, tokens, offset)
        elif c == "/" and (not tokens or previous() in REGEX_BEFORE):
            j, in_class = i + 1, False
            while j < n and (in_class or src[j] != "/"):
                if src[j] == "\\":
                    j += 1
                elif src[j] == "[":
                    in_class = True
                elif src[j] == "]":
                    in_class = False
                j += 1
            i = j + 1
            while i < n and src[i].isalpha():
                i += 1
            tokens.append(Token("name", "/regex/", offset + i))
        elif c.isalnum() or c in "_$":
            j = i
            while j < n and (src[j].isalnum() or src[j] in "_$"):
                j += 1
            tokens.append(Token("name", src[i:j], offset + i))
            i = j
        else:
            if src.startswith(("===", "!=="), i):
                size = 3
            elif src.startswith(("=>", "==", "!=", "<=", ">=", "&&", "||", "??", "?."), i):
                size = 2
            else:
                size = 1
            tokens.append(Token("punct", src[i : i + size], offset + i))
            i += size
    return tokens


def template_literal(src: str, start: int, tokens: list[Token], offset: int) -> int:
    """Appends the literal (its text parts) then the tokens of its ${...} parts."""
    parts: list[str] = [""]
    inner: list[tuple[int, str]] = []
    j = start + 1
    while src[j] != "`":
        if src[j] == "\\":
            parts[-1] += src[j : j + 2]
            j += 2
        elif src.startswith("${", j):
            depth, k = 1, j + 2
            while depth:
                if src[k] == "{":
                    depth += 1
                elif src[k] == "}":
                    depth -= 1
                elif src[k] in "'\"`":  # a string inside: skip it whole
                    quote, k = src[k], k + 1
                    while src[k] != quote:
                        k += 2 if src[k] == "\\" else 1
                k += 1
            inner.append((j + 2, src[j + 2 : k - 1]))
            parts.append("")
            j = k
        else:
            parts[-1] += src[j]
            j += 1
    tokens.append(Token("str", "\0".join(parts), offset + start, dynamic=len(parts) > 1))
    for at, expression in inner:
        tokens.extend(js_tokens(expression, offset + at))
    return j + 1


OPEN, CLOSE = "([{", ")]}"


def call_arguments(tokens: list[Token], open_index: int) -> tuple[list[list[Token]], int]:
    """The arguments of the call whose "(" is tokens[open_index]: lists of tokens, and
    the index after its ")"."""
    args: list[list[Token]] = [[]]
    depth, i = 0, open_index + 1
    while i < len(tokens):
        token = tokens[i]
        if token.kind == "punct" and token.text in OPEN:
            depth += 1
        elif token.kind == "punct" and token.text in CLOSE:
            if depth == 0:
                return [a for a in args if a], i + 1
            depth -= 1
        elif token.kind == "punct" and token.text == "," and depth == 0:
            args.append([])
            i += 1
            continue
        args[-1].append(token)
        i += 1
    return [a for a in args if a], i


def shown_literals(expression: list[Token]) -> list[Token]:
    """The string literals of an expression that become text as they are: outside any
    call's parentheses or object's braces (`"a" + x`, `c ? "a" : "b"`, `["a", "b"]`),
    not the arguments of `t(...)` or any other call."""
    shown, depth = [], 0
    for token in expression:
        if token.kind == "punct" and token.text in "({":
            depth += 1
        elif token.kind == "punct" and token.text in ")}":
            depth -= 1
        elif token.kind == "str" and depth == 0:
            shown.append(token)
    return shown


def expression_at(tokens: list[Token], start: int) -> list[Token]:
    """The expression from tokens[start] to `;` or `,` or a closing bracket at its level."""
    out, depth = [], 0
    for token in tokens[start:]:
        if token.kind == "punct":
            if token.text in OPEN:
                depth += 1
            elif token.text in CLOSE:
                if depth == 0:
                    break
                depth -= 1
            elif token.text in ";," and depth == 0:
                break
        out.append(token)
    return out


def object_entries(arg: list[Token]) -> Iterator[tuple[str, list[Token]]]:
    """(key, value tokens) of an object literal `{ key: value, ... }` (top level only)."""
    if not arg or arg[0].text != "{" or arg[0].kind != "punct":
        return
    inner, depth, entry = arg[1:-1], 0, []
    for token in [*inner, Token("punct", ",", -1)]:
        if token.kind == "punct" and token.text in OPEN:
            depth += 1
        elif token.kind == "punct" and token.text in CLOSE:
            depth -= 1
        if token.kind == "punct" and token.text == "," and depth == 0:
            if len(entry) > 2 and entry[1].text == ":":
                yield entry[0].text, entry[2:]
            entry = []
        else:
            entry.append(token)


SHOWN_ATTRIBUTES = {
    "title",
    "alt",
    "placeholder",
    "label",
    "aria-label",
    "aria-description",
    "aria-roledescription",
    "aria-valuetext",
    "aria-placeholder",
}
SHOWN_PROPERTIES = {
    "textContent",
    "innerText",
    "innerHTML",
    "outerHTML",
    "title",
    "alt",
    "placeholder",
    "label",
    "ariaLabel",
    "ariaDescription",
    "ariaValueText",
}
# Calls whose arguments (by position; None: all) become text.
SHOWN_ARGUMENTS: dict[str, tuple[int, ...] | None] = {
    "status": (0,),
    "alert": (0,),
    "confirm": (0,),
    "prompt": (0, 1),
    "Option": (0,),
    "createTextNode": (0,),
    "append": None,
    "prepend": None,
    "replaceChildren": None,
    "before": None,
    "after": None,
    "replaceWith": None,
    "table": (0, 1),
}
CODE_TAGS = {"pre", "code", "kbd", "samp"}


def shown_text(token: Token) -> str:
    return token.text.replace("\0", "${…}")


def has_words(token: Token) -> bool:
    text = without_same_words(token.text.replace("\0", " "))
    return bool(LATIN_WORD.search(text) or CJK.search(text))


@dataclass
class ScriptScan:
    keys: list[KeyUse]
    shown: list[str]  # "file:line: 'literal'"


def line_of(src: str, token: Token) -> int:
    return src.count("\n", 0, max(token.start, 0)) + 1


def scan_script(path: Path) -> ScriptScan:
    return scan_source(rel(path), path.read_text(encoding="utf-8"))


def scan_source(where: str, src: str) -> ScriptScan:
    tokens = js_tokens(src)
    keys: list[KeyUse] = []
    shown: list[Token] = []
    for i, token in enumerate(tokens):
        after = tokens[i + 1] if i + 1 < len(tokens) else None
        before = tokens[i - 1] if i else None
        calls = token.kind == "name" and after is not None and after.text == "("
        if calls and token.text == "t" and (before is None or before.text != "."):
            args, _ = call_arguments(tokens, i + 1)
            first = args[0] if args else []
            if first and first[0].kind == "str":
                literal = first[0]
                prefix = literal.text.split("\0", 1)[0]
                dynamic = literal.dynamic or (len(first) > 1 and first[1].text == "+")
                keys.append(KeyUse(f"{where}:{line_of(src, literal)}", prefix, dynamic))
        elif calls and token.text == "el":
            args, _ = call_arguments(tokens, i + 1)
            tag = args[0][0].text if args and args[0][0].kind == "str" else ""
            for position, arg in enumerate(args[1:], start=1):
                if position == 1 and arg[0].text == "{":
                    for name, value in object_entries(arg):
                        if name.strip("'\"") in SHOWN_ATTRIBUTES:
                            shown.extend(shown_literals(value))
                elif tag not in CODE_TAGS:
                    shown.extend(shown_literals(arg))
        elif calls and token.text == "setAttribute":
            args, _ = call_arguments(tokens, i + 1)
            name_arg = args[0][0] if len(args) == 2 else None
            if (
                name_arg is not None
                and name_arg.kind == "str"
                and name_arg.text in SHOWN_ATTRIBUTES
            ):
                shown.extend(shown_literals(args[1]))
        elif calls and token.text in SHOWN_ARGUMENTS:
            args, _ = call_arguments(tokens, i + 1)
            positions = SHOWN_ARGUMENTS[token.text]
            for position, arg in enumerate(args):
                if positions is None or position in positions:
                    shown.extend(shown_literals(arg))
        elif (
            token.kind == "name"
            and token.text in SHOWN_PROPERTIES
            and before is not None
            and before.text in (".", "?.")
            and after is not None
            and after.text in ("=", "+=")
        ):
            shown.extend(shown_literals(expression_at(tokens, i + 2)))
    return ScriptScan(
        keys,
        [f"{where}:{line_of(src, s)}: {shown_text(s)!r}" for s in shown if has_words(s)],
    )


def test_the_script_scan_catches_text() -> None:
    """The scanner itself: literal words in the usual places are caught, keys are not."""
    sample = """
      // textContent = "In a comment"
      const re = /"quoted"/g;
      node.textContent = "Hard coded";
      node.textContent = t("common.saved");
      a.title = ok ? "Yes please" : t("common.no");
      root.append(el("p", { class: "muted", "aria-label": "Close it" }, "Hello there", t("x.y")));
      root.append(el("td", {}, `${count} rows`));
      el("code", {}, "curl https://example.com");
      el("td", {}, `${a}/${b}`);
      status(t("common.error_generic"), "error");
      status("Saved it", "ok");
      const k = t(`errors.${code}`);
      const r = t("console.role_" + role);
      button.setAttribute("aria-label", "Remove member");
      table(t("x.caption"), ["Model", t("x.cost")], rows);
    """
    assert any(t.text == "/regex/" for t in js_tokens(sample))
    scan = scan_source("sample.js", sample)
    assert scan.shown[0] == "sample.js:4: 'Hard coded'"
    shown = [s.split(": ", 1)[1] for s in scan.shown]
    assert shown == [
        "'Hard coded'",
        "'Yes please'",
        "'Close it'",
        "'Hello there'",
        "'${…} rows'",
        "'Saved it'",
        "'Remove member'",
        "'Model'",
    ]
    uses = {(u.key, u.dynamic) for u in scan.keys}
    assert ("common.saved", False) in uses
    assert ("errors.", True) in uses
    assert ("console.role_", True) in uses
    assert ("x.y", False) in uses


def script_areas() -> dict[Path, set[str] | None]:
    """The areas whose strings reach each console script (the server embeds `common`,
    `errors`, `console` and the page's own area): a page's module and what it imports
    (relative imports, followed) get that page's area too. Other scripts: None (any)."""
    imports = re.compile(r"""(?:import|from)\s*['"](\.{1,2}/[^'"]+)['"]""")

    def reached(start: Path) -> set[Path]:
        seen, pending = set(), [start]
        while pending:
            file = pending.pop()
            if file in seen or not file.exists():
                continue
            seen.add(file)
            for target in imports.findall(file.read_text(encoding="utf-8")):
                pending.append((file.parent / target).resolve())
        return seen

    areas: dict[Path, set[str] | None] = {p.resolve(): None for p in scripts()}
    console = (SOURCES / "console").resolve()
    for page in CONSOLE_PAGES:
        for file in reached((console / f"{page}.js").resolve()):
            if file.is_relative_to(console) or file.is_relative_to(SOURCES / "lib"):
                areas[file] = (areas[file] or {"common", "errors", "console"}) | {page}
    main = (console / "main.js").resolve()
    areas[main] = {"common", "errors", "console"}
    for file in (SOURCES / "lib").resolve().glob("*.js"):
        areas[file] = {"common", "errors"}  # the lib serves every page
    return areas


def test_script_keys_exist_and_reach_the_page() -> None:
    areas = script_areas()
    uses_found = 0
    problems: list[str] = []
    for path in scripts():
        uses = scan_script(path).keys
        uses_found += len(uses)
        for language in i18n.LANGUAGES:
            problems += [
                f"{p} (missing in {language})" for p in check_keys(uses, i18n.catalog(language))
            ]
        allowed = areas.get(path.resolve())
        if allowed is not None:
            problems += [
                f"{u.where}: {u.key} is not among the strings this page embeds ({sorted(allowed)})"
                for u in uses
                if u.key.split(".", 1)[0] not in allowed
            ]
    assert uses_found >= 5, "the scan finds the scripts' t() calls"
    assert not problems, listing("", sorted(set(problems)))


@pytest.mark.parametrize("path", scripts(), ids=rel)
def test_script_has_no_hard_coded_text(path: Path) -> None:
    """Words shown to people come from t("area.key"), never a literal in the script."""
    shown = scan_script(path).shown
    assert not shown, listing("hard-coded text", shown)


# -- hard-coded text in templates -----------------------------------------------------

JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
# Blocks that fill an attribute (`<body class="{% block body_class %}">`): not text.
ATTRIBUTE_BLOCK = re.compile(
    r"\{%-?\s*block\s+(\w*(?:class|_id|attributes)\w*)\s*-?%\}.*?\{%-?\s*endblock\b[^%]*%\}", re.S
)
BRAND = "Dynoyard"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}


class TextFinder(HTMLParser):
    """Text nodes and shown attributes with letters, outside code samples and data."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.found: list[tuple[int, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            shown = name in SHOWN_ATTRIBUTES or (
                name == "value" and dict(attrs).get("type") in ("submit", "button", "reset")
            )
            if shown and value and self.letters(value):
                self.found.append((self.getpos()[0], f'{tag} {name}="{value}"'))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if tag in self.stack:
            while self.stack.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if set(self.stack) & (CODE_TAGS | {"script", "style"}):
            return
        if self.letters(data):
            self.found.append((self.getpos()[0], data.strip()))

    @staticmethod
    def letters(text: str) -> bool:
        return bool(LETTER.search(text.replace(BRAND, "")))


def hard_coded_text(source: str) -> list[tuple[int, str]]:
    # Jinja parts become blanks of the same lines, so positions keep their line numbers.
    blanks = lambda m: "\n" * m.group(0).count("\n")  # noqa: E731
    markup = JINJA.sub(blanks, ATTRIBUTE_BLOCK.sub(blanks, source))
    finder = TextFinder()
    finder.feed(markup)
    finder.close()
    return finder.found


def test_the_template_scan_catches_text() -> None:
    sample = (
        '<p>{{ t("a.b") }}</p>\n<h1 title="Hello">Dynoyard · {{ t("x") }}</h1>\n'
        '<img alt="{{ t(\'a.c\') }}" src="/x.png"><button aria-label="Close">+</button>\n'
        "<pre><code>curl https://x</code></pre><p>Left here {% if x %}{% endif %}</p>"
        '<input type="submit" value="Send"><input placeholder="you@example.com">\n'
        "{% block body_class %}console{% endblock %}{% block title %}Hi{% endblock %}"
    )
    assert [text for _, text in hard_coded_text(sample)] == [
        'h1 title="Hello"',
        'button aria-label="Close"',
        "Left here",
        'input value="Send"',
        'input placeholder="you@example.com"',
        "Hi",
    ]


@pytest.mark.parametrize("path", templates(), ids=lambda p: str(p.relative_to(TEMPLATES)))
def test_template_has_no_hard_coded_text(path: Path) -> None:
    found = hard_coded_text(path.read_text(encoding="utf-8"))
    lines = [f"{path.relative_to(ROOT)}:{line}: {text!r}" for line, text in found]
    assert not lines, listing("hard-coded text", lines)
