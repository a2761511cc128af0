"""The docs cannot rot silently: every relative link resolves, and every `ADVOCACY_…` variable is a real setting.

Links are read from `docs/*.md` and `README.md` outside code (fenced blocks and code spans), as a Markdown viewer
would follow them. A variable `ADVOCACY_A__B__C` names the field `c` of the group `b` of the group `a` of
`engine.settings.Settings` (pydantic-settings' prefix and `__` nesting); a map field takes one more part, its key.
Variables that the test suite itself reads (`ADVOCACY_TEST_…`, see tests/neo4j_support.py) are not settings.
"""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin
from urllib.parse import unquote, urlsplit

import pytest
from pydantic import BaseModel

from engine.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PAGES = (*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md")

_FENCED = re.compile(r"^ {0,3}(`{3,}|~{3,})[^\n]*\n.*?^ {0,3}\1[ \t]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.DOTALL)
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^\s)]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.MULTILINE)
_VARIABLE = re.compile(r"\bADVOCACY_[A-Z0-9_]*[A-Z0-9]\b")
_TEST_ONLY = "ADVOCACY_TEST_"


def prose(markdown: str) -> str:
    """`markdown` without fenced code blocks and code spans, where a `[x](y)` is code, not a link."""
    return _CODE_SPAN.sub("", _FENCED.sub("", markdown))


def link_targets(markdown: str) -> list[str]:
    """The targets of inline links, images and reference definitions, in the order they appear."""
    text = prose(markdown)
    found = [m.group(1) for m in _INLINE_LINK.finditer(text)] + [m.group(1) for m in _REFERENCE.finditer(text)]
    return [target.strip("<>") for target in found]


def local_path(target: str) -> str | None:
    """The file a relative link points at, or None for a URL with a scheme or an anchor on the same page."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path:
        return None
    return unquote(parts.path)


def broken_links(page: Path) -> list[str]:
    missing = []
    for target in link_targets(page.read_text(encoding="utf-8")):
        path = local_path(target)
        if path is not None and not (page.parent / path).exists():
            missing.append(target)
    return missing


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The settings group a field holds (`ContactPolicy`, or `X` of `X | None`), or None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        models = [m for m in map(_nested_model, get_args(annotation)) if m is not None]
        return models[0] if models else None
    return None


def _is_map(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_is_map(arg) for arg in get_args(annotation))
    return origin is dict


def names_a_setting(variable: str) -> bool:
    """Whether pydantic-settings would read `variable` into a field of `Settings`."""
    parts = variable.removeprefix("ADVOCACY_").lower().split("__")
    model: type[BaseModel] = Settings
    for depth, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        rest = parts[depth + 1 :]
        if not rest:
            return True
        nested = _nested_model(field.annotation)
        if nested is None:
            return _is_map(field.annotation) and len(rest) == 1
        model = nested
    return False


def variables(page: Path) -> list[tuple[int, str]]:
    """(line, name) of every `ADVOCACY_…` variable a page names, in code or prose alike."""
    found = []
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
        found += [(number, name) for name in _VARIABLE.findall(line) if not name.startswith(_TEST_ONLY)]
    return found


# --- the pages ---------------------------------------------------------------------------------------------------
def test_the_pages_the_readme_promises_are_there() -> None:
    names = {page.name for page in PAGES}
    assert {"operations.md", "api-guide.md", "architecture.md", "webhooks.md", "README.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_of_a_page_points_at_a_file(page: Path) -> None:
    assert broken_links(page) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_advocacy_variable_a_page_names_is_a_setting(page: Path) -> None:
    unknown = [f"{page.name}:{line}: {name}" for line, name in variables(page) if not names_a_setting(name)]
    assert not unknown, f"not fields of engine.settings.Settings (prefix ADVOCACY_, groups joined by __): {unknown}"


def test_the_architecture_picture_is_an_accessible_svg() -> None:
    svg = (ROOT / "docs" / "architecture.svg").read_text(encoding="utf-8")
    assert svg.lstrip().startswith("<svg")
    assert re.search(r"<title[^>]*>[^<]{10,}</title>", svg)
    assert re.search(r"<desc[^>]*>[^<]{10,}</desc>", svg)
    assert 'role="img"' in svg


# --- the checks themselves ------------------------------------------------------------------------------------
def test_links_are_found_in_prose_but_not_in_code() -> None:
    markdown = (
        'See [the guide](docs/guide.md#errors), ![a picture](pic.svg "title") and [site](https://example.org).\n'
        "`[not](a-link.md)` in a span.\n"
        "```js\nconst x = a[i](b);\n[also](not-a-link.md)\n```\n"
        "[ref]: <other file.md>\n"
    )
    assert link_targets(markdown) == ["docs/guide.md#errors", "pic.svg", "https://example.org", "other file.md"]


def test_only_relative_links_name_local_files() -> None:
    assert local_path("docs/guide.md#errors") == "docs/guide.md"
    assert local_path("my%20file.md") == "my file.md"
    assert local_path("#errors") is None
    assert local_path("https://example.org/a.md") is None
    assert local_path("mailto:someone@example.org") is None


def test_a_link_to_a_missing_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# here\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md) [gone](missing.md#part) [web](https://example.org/x)\n", encoding="utf-8")
    assert broken_links(page) == ["missing.md#part"]


@pytest.mark.parametrize(
    "variable",
    [
        "ADVOCACY_STORE",
        "ADVOCACY_SECRET_KEY",
        "ADVOCACY_NEO4J__DATABASE",
        "ADVOCACY_API__CORS_ORIGINS",
        "ADVOCACY_CONTACT__POLICY__QUIET_START",
        "ADVOCACY_API__CUSTOMER_TOKEN_KEYS__K2",
        "ADVOCACY_REFERRAL__SHOPIFY_SECRET",
    ],
)
def test_real_settings_are_recognised(variable: str) -> None:
    assert names_a_setting(variable)


@pytest.mark.parametrize(
    "variable",
    [
        "ADVOCACY_NO_SUCH_THING",
        "ADVOCACY_API__NO_SUCH_THING",
        "ADVOCACY_STORE__PATH",
        "ADVOCACY_CONTACT__POLICY__NO_SUCH_CAP",
        "ADVOCACY_API__CUSTOMER_TOKEN_KEYS__K2__MORE",
        "ADVOCACY_CUSTOMER_TOKEN_KEYS",
    ],
)
def test_names_that_are_not_settings_are_refused(variable: str) -> None:
    assert not names_a_setting(variable)


def test_variables_are_found_with_their_lines_and_test_only_ones_are_skipped(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Set `ADVOCACY_STORE` (prefix `ADVOCACY_`, or `ADVOCACY_*`).\nADVOCACY_TEST_REDIS_URL=x ADVOCACY_API__PORT=1\n",
        encoding="utf-8",
    )
    assert variables(page) == [(1, "ADVOCACY_STORE"), (2, "ADVOCACY_API__PORT")]
