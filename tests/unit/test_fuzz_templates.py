"""Marketer templates as hostile input: sandbox escapes, resource bombs and fuzzed templates are refused when saved
(an `InvalidInput` naming the problem) or stopped by the render budget, and never crash or hang a worker."""

from __future__ import annotations

import itertools
import re
import threading

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from engine.kits import KIT_VARIABLES, KitRenderer, sample_context
from graph.errors import InvalidInput
from graph.outreach import ShareChannel, Template
from tests.outreach_factories import make_template

pytestmark = pytest.mark.timeout(180)  # a hang fails its test; how fast parsing is belongs in bench/, not here

RENDERER = KitRenderer()
FAST = KitRenderer(render_timeout_s=0.3)
"""A short time budget, so that the bombs the clock has to stop cost little."""

CONTEXT = sample_context()
LEAKS = re.compile(r"0x[0-9a-f]{6,}|<built-in|<function|<bound method|<class|<module|__globals__|__builtins__")
"""What a template must never print: memory addresses and the insides of Python objects."""

SPLIT = "{% set l = ('x' * 20000).split('x') %}{% set m = ('y' * 20000).split('y') %}"


def template(body: str, *, subject: str | None = None) -> Template:
    return make_template(id="hostile", body=body, subject=subject, channel=ShareChannel.EMAIL)


def refusal(renderer: KitRenderer, body: str, *, subject: str | None = None) -> list[str]:
    """The problems `validate` names; fails the test when the template is accepted."""
    with pytest.raises(InvalidInput) as excinfo:
        renderer.validate(template(body, subject=subject))
    assert excinfo.value.problems, "a refusal names at least one problem"
    return [str(problem) for problem in excinfo.value.problems]


def ten_fold(levels: int, leaf: str, prefix: str) -> str:
    """`{% set a = [l, l, ...] %}{% set b = [a, a, ...] %}...`: each level prints ten times the one below."""
    names = [leaf, *(f"{prefix}{level}" for level in range(levels))]
    return "".join(f"{{% set {name} = [{', '.join([below] * 10)}] %}}" for below, name in itertools.pairwise(names))


# --- sandbox escapes -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("{{ ''.__class__.__mro__ }}", "'__class__' is not allowed"),
        ("{{ link.__class__.__mro__[1].__subclasses__() }}", "'__class__' is not allowed"),
        ("{{ link.__globals__ }}", "'__globals__' is not allowed"),
        ("{{ cycler.__init__.__globals__ }}", "unknown variable 'cycler'"),
        ("{{ self._TemplateReference__context }}", "unknown variable 'self'"),
        ("{{ lipsum.__globals__['os'] }}", "unknown variable 'lipsum'"),
        ("{{ request.environ }}", "unknown variable 'request'"),
        ("{{ config.items() }}", "unknown variable 'config'"),
        ("{{ namespace(a=1) }}", "unknown variable 'namespace'"),
        ("{{ '{0.__class__}'.format(link) }}", "'format' is not allowed"),
        ("{{ '{0.__class__}'.format_map(advocate) }}", "'format_map' is not allowed"),
        ("{{ '{0.__class__}' | format(link) }}", "No filter named 'format'"),
        ("{{ link | attr('__class__') }}", "No filter named 'attr'"),
        ("{{ [link] | map(attribute='__class__') | list }}", "No filter named 'map'"),
        ("{{ link | sort(attribute='__class__') }}", "unsafe"),
        ("{% set k = '__cla' ~ 'ss__' %}{{ link[k] }}", "unsafe"),
        ("{{ '%s' % link }}", "cannot be formatted with %"),
        ("{{ advocate.purchases.pop() }}", "unsafe"),
        ("{{ advocate.items }}", "a method cannot be printed"),
        ("{% for c in link %}{{ loop.cycle }}{% endfor %}", "a method cannot be printed"),
        ("{% import 'os' as os %}", "import are not allowed"),
        ("{% include '/etc/passwd' %}", "include are not allowed"),
        ("{% extends 'layout.html.j2' %}", "extends are not allowed"),
        ("{{ link | safe }}", "No filter named 'safe'"),
    ],
)
def test_a_template_reaching_for_python_internals_is_refused_when_saved_naming_the_problem(
    body: str, named: str
) -> None:
    problems = refusal(RENDERER, body)
    assert any(named in problem for problem in problems), problems
    with pytest.raises(InvalidInput):
        RENDERER.preview(template(body), CONTEXT)


@pytest.mark.parametrize(
    "body",
    [
        "{{ advocate.get('__class__') }}",
        "{{ advocate.get('__globals__', 'none') }}",
        "{% for k, v in advocate.items() %}{{ k }}{{ v }}{% endfor %}",
        "{{ range(3) }}",
    ],
)
def test_what_the_sandbox_lets_through_prints_no_python_internals(body: str) -> None:
    RENDERER.validate(template(body))
    assert not LEAKS.search(RENDERER.preview(template(body), CONTEXT))


def test_an_escape_in_the_subject_is_refused_against_the_subject() -> None:
    problems = refusal(RENDERER, "{{ link }}", subject="{{ ''.__class__ }}")
    assert problems == ["hostile.subject:1: the attribute '__class__' is not allowed"]


# --- resource bombs ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "range() may produce"),
        ("{{ 'x' * 10**9 }}", "repeating would produce more than"),
        ("{{ [link] * 10**9 }}", "repeating would produce more than"),
        ("{{ 10 ** (10 ** 10) }}", "a power that large"),
        ("{% set n = 2 ** 2000 %}{{ n * n * n }}", "a product that large"),
        ("{% macro m(n) %}{{ m(n) }}{% endmacro %}{{ m(1) }}", "macros are not allowed"),
        ("{% for c in link recursive %}{{ loop(link) }}{% endfor %}", "recursive loops are not allowed"),
        ("{% for a in range(1000) %}{% for b in range(1000) %}{{ link }}{% endfor %}{% endfor %}", "output is longer"),
        (
            "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}{% endfor %}{% endfor %}"
            "{% endfor %}",
            "ran longer than 0.3 s",
        ),
        ("{% set s = link * 600 %}{% set s = s ~ s %}{% set s = s ~ s %}{{ s }}", "more than 20,000 characters"),
        ("{{ link | replace('', link) | replace('', link) }}", "more than 20,000 characters"),
        (
            "{% set s = 'x' * 20000 %}{% set c %}{% for i in range(1000) %}{% for j in range(1000) %}{{ s }}"
            "{% endfor %}{% endfor %}{% endset %}{{ c | length }}",
            "a block captured more than",
        ),
        (
            "{% set s = 'x' * 20000 %}{% filter upper %}{% for i in range(1000) %}{% for j in range(1000) %}{{ s }}"
            "{% endfor %}{% endfor %}{% endfilter %}",
            "a block captured more than",
        ),
        (SPLIT + "{{ (l * 1000) | string | length }}", "repeating would produce more than"),
        (SPLIT + ten_fold(8, "l", "a") + ten_fold(8, "m", "b") + "{{ a7 == b7 }}", "a list or dict would hold"),
        (SPLIT + "{{ {'k': l, 'j': m} }}", "a list or dict would hold"),
        ("{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}", "nested too deeply"),
        ("{{ " + " + ".join(["1"] * 2000) + " }}", "nested too deeply"),
        ("{{ " + "[" * 2000 + "]" * 2000 + " }}", "nested too deeply"),
        ("{{ link" + " | upper" * 1200 + " }}", "nested too deeply"),
        ("{% for a in link %}" * 25 + "x" + "{% endfor %}" * 25, "nested too deeply"),
    ],
    ids=[
        "nested-huge-ranges",
        "repeat-text",
        "repeat-list",
        "power-tower",
        "big-product",
        "recursive-macro",
        "recursive-loop",
        "huge-output",
        "endless-loops",
        "doubling",
        "replace-growth",
        "set-block-capture",
        "filter-block-capture",
        "printing-a-repeated-list",
        "comparing-nested-lists",
        "dict-of-big-lists",
        "deep-parentheses",
        "long-operator-chain",
        "deep-lists",
        "long-filter-chain",
        "nested-loops",
    ],
)
def test_a_resource_bomb_is_refused_or_stopped_by_the_budget_with_a_clear_error(body: str, named: str) -> None:
    problems = refusal(FAST, body)
    assert any(named in problem for problem in problems), problems


def test_a_power_tower_is_read_left_to_right_and_stays_small() -> None:
    """Jinja reads `10**10**10` as `(10**10)**10`, a 101-digit number: harmless, and printed as such."""
    assert FAST.preview(template("{{ 10**10**10 }}"), CONTEXT) == str(10**100)


def test_a_bomb_rendered_on_a_worker_thread_ends_that_thread_within_the_budget() -> None:
    """Celery and the API render on pool threads: the budget must hold there, not only on the main thread."""
    loop = "{% for a in range(1000) %}"
    body = loop * 3 + "{% endfor %}" * 3
    outcome: list[BaseException] = []

    def render() -> None:
        try:
            FAST.preview(template(body), CONTEXT)
        except InvalidInput as exc:
            outcome.append(exc)

    worker = threading.Thread(target=render, daemon=True)
    worker.start()
    worker.join(timeout=5.0)
    assert not worker.is_alive()
    assert len(outcome) == 1
    assert "ran longer than 0.3 s" in str(outcome[0])


# --- fuzzing ------------------------------------------------------------------------------------------------------
NAMES = st.sampled_from(
    [
        *sorted(KIT_VARIABLES),
        *("advocate.first_name", "advocate.impact.friends_joined", "advocate.purchases", "assets"),
        *("x", "cycler", "self", "lipsum", "config", "loop", "range"),
    ]
)
LITERALS = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6).map(str),
    st.sampled_from(["10**9", "2**4096", "1e308", "0", "-1", "True", "none"]),
    st.text(max_size=12).map(repr),
)
ATTRIBUTES = st.sampled_from(
    [
        *("upper()", "split(',')", "items()", "get('x')", "keys()", "count('a')", "first_name", "purchases"),
        *("__class__", "__globals__", "mro()", "format(1)", "_private", "pop()", "__init__"),
    ]
)
FILTERS = st.sampled_from(
    [
        *("upper", "length", "join(', ')", "replace('a', 'bb')", "list", "sort", "string", "urlencode", "first"),
        *("default('')", "truncate(5)", "int", "e", "attr('__class__')", "format(1)", "safe", "center(10)"),
    ]
)
OPERATORS = st.sampled_from([" ~ ", " + ", " * ", " ** ", " % ", " // ", " == ", " in ", " and "])


def _expressions(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(inner, ATTRIBUTES).map(lambda p: f"{p[0]}.{p[1]}"),
        st.tuples(inner, FILTERS).map(lambda p: f"({p[0]} | {p[1]})"),
        st.tuples(inner, OPERATORS, inner).map(lambda p: f"({p[0]}{p[1]}{p[2]})"),
        st.tuples(inner, inner).map(lambda p: f"[{p[0]}, {p[1]}]"),
        st.tuples(inner, inner).map(lambda p: f"{p[0]}[{p[1]}]"),
        inner.map(lambda e: f"range({e})"),
    )


EXPRESSIONS = st.recursive(st.one_of(NAMES, LITERALS), _expressions, max_leaves=6)


def _statements(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(EXPRESSIONS, inner).map(lambda p: f"{{% for item in {p[0]} %}}{p[1]}{{% endfor %}}"),
        st.tuples(EXPRESSIONS, inner).map(lambda p: f"{{% if {p[0]} %}}{p[1]}{{% else %}}x{{% endif %}}"),
        st.tuples(EXPRESSIONS, inner).map(lambda p: f"{{% set v = {p[0]} %}}{p[1]}{{{{ v }}}}"),
        inner.map(lambda body: f"{{% set captured %}}{body}{{% endset %}}{{{{ captured }}}}"),
        inner.map(lambda body: f"{{% filter upper %}}{body}{{% endfilter %}}"),
        st.lists(inner, min_size=2, max_size=3).map("".join),
    )


STATEMENTS = st.recursive(
    st.one_of(EXPRESSIONS.map(lambda e: f"{{{{ {e} }}}}"), st.text(max_size=20)), _statements, max_leaves=5
)
SHARDS = st.lists(
    st.sampled_from(
        [
            *("{{", "}}", "{%", "%}", "{#", "#}", "(", ")", "[", "]", "|", ".", "~", "*", "**", "'", '"'),
            *("for ", " in ", "endfor", "if ", "endif", "set ", "=", "link", "__class__", "range(", "1000"),
            *("\x00", "\n", " ", "é"),
        ]
    ),
    max_size=40,
).map("".join)


def _check(body: str) -> None:
    """Refused with named problems, or rendered to bounded text without Python internals, within the budget."""
    assume(body)  # a template's body is never empty (the model refuses it before any Jinja runs)
    hostile = template(body)
    refused: InvalidInput | None = None
    text = ""
    try:
        FAST.validate(hostile)
        text = FAST.preview(hostile, CONTEXT)
    except InvalidInput as exc:
        refused = exc
    if refused is not None:
        assert refused.problems
        assert all(problem.source.startswith("hostile.") for problem in refused.problems)
    else:
        assert len(text) <= FAST.max_output_chars
        assert not LEAKS.search(text), text


@settings(max_examples=150, deadline=None)
@given(body=STATEMENTS)
def test_any_template_built_from_jinja_pieces_is_refused_or_renders_bounded_text(body: str) -> None:
    _check(body)


@settings(max_examples=150, deadline=None)
@given(body=SHARDS.filter(str.strip))
def test_any_jumble_of_jinja_delimiters_is_refused_or_renders_bounded_text(body: str) -> None:
    _check(body)


@settings(max_examples=100, deadline=None)
@given(
    text=st.text(
        alphabet=st.characters(blacklist_characters="{}%#\r\n", blacklist_categories=("Cs", "Cc", "Zl", "Zp")),
        min_size=1,
        max_size=200,
    ).filter(str.strip)
)
def test_text_without_jinja_delimiters_renders_as_itself(text: str) -> None:
    RENDERER.validate(template(text))
    assert RENDERER.preview(template(text), CONTEXT) == text.strip()
