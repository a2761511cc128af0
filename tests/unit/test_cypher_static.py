"""No Cypher is built from values: every f-string, `.format`, `%` or `+` that builds Cypher text in graph/*cypher*.py
and graph/neo4j_*.py interpolates only what is fixed when the module is imported (constants, enum members, other
query fragments, a comprehension's variable drawn from one of these, as labels joined from a module's tuple), or an
expression whitelisted below with its reason. A future `f"MATCH (c {{id: '{customer_id}'}})"`
fails this test; values must travel as `$parameters`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted({*ROOT.glob("graph/*cypher*.py"), *ROOT.glob("graph/neo4j_*.py")})

CYPHER = re.compile(
    r"\b(MATCH|MERGE|CREATE|SET|RETURN|WHERE|DELETE|DETACH|UNWIND|CALL|WITH|REMOVE|LIMIT|SKIP|ORDER BY|FOREACH|YIELD"
    r"|CASE|WHEN|THEN|ELSE)\b"
    r"|\$[A-Za-z_]|epochMillis|-\[|\]->"
)
"""What makes a string Cypher rather than an error message."""

WHITELIST: dict[tuple[str, str, str], str] = {
    ("graph/cypher.py", "_datetime", "us"): "a helper only ever called with a literal (checked below)",
    ("graph/program_cypher.py", "_us", "at"): "a helper only ever called with a literal (checked below)",
    ("graph/outreach_cypher.py", "_us", "at"): "a helper only ever called with a literal (checked below)",
    ("graph/access_cypher.py", "_us", "at"): "a helper only ever called with a literal (checked below)",
}
"""(file, function or <module>, interpolated expression) -> why it cannot carry a value from outside."""

HELPERS = frozenset({"_datetime", "_us"})
"""Helpers whose parameter is whitelisted above (where a module defines them, or imports them from graph.cypher):
every call to them must pass what is fixed at import."""


def module_strings() -> dict[str, str]:
    """The text of every module-level string constant of the scanned files, to tell a Cypher fragment by name."""
    found: dict[str, str] = {}
    for path in FILES:
        for node in ast.parse(path.read_text()).body:
            text = literal_text(getattr(node, "value", None))
            for name in assigned(node) if isinstance(node, ast.Assign | ast.AnnAssign) and text else ():
                found[name] = found.get(name, "") + (text or "")
    return found


def assigned(node: ast.AST) -> set[str]:
    """Names `node` binds, leaving out comprehension variables (they are bound per item, not once)."""
    if isinstance(node, ast.comprehension | ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp):
        return set()
    names = {node.id} if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) else set()
    for child in ast.iter_child_nodes(node):
        names |= assigned(child)
    return names


def literal_text(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(str(part.value) for part in node.values if isinstance(part, ast.Constant))
    return None


@dataclass
class Finding:
    where: str
    function: str
    expression: str

    def __str__(self) -> str:
        return f"{self.where} in {self.function}: Cypher built from {self.expression!r}"


@dataclass
class Scanner(ast.NodeVisitor):
    """Walks one module, knowing which names are bound at import time and which inside the current function."""

    path: str
    source: ast.Module
    fragments: dict[str, str]
    findings: list[Finding] = field(default_factory=list)
    helper_calls: list[tuple[str, ast.Call]] = field(default_factory=list)
    _function: list[str] = field(default_factory=list)
    _scopes: list[dict[str, bool]] = field(default_factory=list)
    """Names bound in each enclosing function or comprehension, innermost last: whether each is fixed."""
    _chained: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.module_names: set[str] = set()
        self.helpers = {function for (path, function, _) in WHITELIST if path == self.path and function in HELPERS}
        for node in self.source.body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                self.module_names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
                if isinstance(node, ast.ImportFrom) and node.module == "graph.cypher":
                    self.helpers.update(alias.name for alias in node.names if alias.name in HELPERS)
            elif isinstance(node, ast.FunctionDef | ast.ClassDef):
                self.module_names.add(node.name)
            else:
                self.module_names.update(assigned(node))

    # --- scopes ---------------------------------------------------------------------------------------------
    def _bind(self, node: ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp) -> bool:
        """Push the comprehension's scope: a variable is fixed when it is drawn from a fixed iterable (a module's
        tuple of labels, say). Returns whether every iterable was fixed."""
        scope: dict[str, bool] = {}
        self._scopes.append(scope)
        every = True
        for loop in node.generators:
            drawn_from_fixed = self.fixed(loop.iter)
            every &= drawn_from_fixed
            scope.update({n.id: drawn_from_fixed for n in ast.walk(loop.target) if isinstance(n, ast.Name)})
        return every

    def _comprehension(self, node: ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp) -> None:
        self._bind(node)
        self.generic_visit(node)
        self._scopes.pop()

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension  # noqa: N815

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        names = {arg.arg for arg in [*node.args.args, *node.args.kwonlyargs, *node.args.posonlyargs]}
        names |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        self._function.append(node.name)
        self._scopes.append(dict.fromkeys(names, False))
        self.generic_visit(node)
        self._scopes.pop()
        self._function.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]  # noqa: N815

    @property
    def function(self) -> str:
        return self._function[-1] if self._function else "<module>"

    def fixed(self, node: ast.AST) -> bool:
        """Whether `node` is fixed at import time: a literal, or built only from module-level names."""
        if isinstance(node, ast.Constant):
            return True
        if isinstance(node, ast.Name):
            for scope in reversed(self._scopes):
                if node.id in scope:
                    return scope[node.id]
            return node.id in self.module_names or node.id in {"len"}
        if isinstance(node, ast.Attribute):
            return self.fixed(node.value)
        if isinstance(node, ast.Call):
            parts = [node.func, *node.args, *(keyword.value for keyword in node.keywords)]
            return all(self.fixed(part) for part in parts)
        if isinstance(node, ast.JoinedStr):
            return all(self.fixed(part.value) for part in node.values if isinstance(part, ast.FormattedValue))
        if isinstance(node, ast.BinOp):
            return self.fixed(node.left) and self.fixed(node.right)
        if isinstance(node, ast.Subscript):
            return self.fixed(node.value) and self.fixed(node.slice)
        if isinstance(node, ast.Tuple | ast.List):
            return all(self.fixed(item) for item in node.elts)
        if isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp):
            try:
                return self._bind(node) and self.fixed(node.elt)
            finally:
                self._scopes.pop()
        return False

    def check(self, node: ast.AST, interpolated: list[ast.expr]) -> None:
        for expression in interpolated:
            text = ast.unparse(expression)
            if not self.fixed(expression) and (self.path, self.function, text) not in WHITELIST:
                self.findings.append(Finding(f"{self.path}:{getattr(node, 'lineno', 0)}", self.function, text))

    def cypher(self, node: ast.AST | None) -> bool:
        text = literal_text(node)
        if text is None and isinstance(node, ast.Name):
            text = self.fragments.get(node.id)
        return text is not None and CYPHER.search(text) is not None

    # --- the four ways of building a string -----------------------------------------------------------------
    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        if self.cypher(node):
            self.check(node, [part.value for part in node.values if isinstance(part, ast.FormattedValue)])
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in ("format", "format_map") and self.cypher(func.value):
            self.check(node, [*node.args, *(keyword.value for keyword in node.keywords)])
        if isinstance(func, ast.Name) and func.id in self.helpers and self._function[-1:] != [func.id]:
            self.helper_calls.append((f"{self.path}:{node.lineno}", node))
            self.check(node, [*node.args, *(keyword.value for keyword in node.keywords)])
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if isinstance(node.op, ast.Mod) and self.cypher(node.left):
            self.check(node, [node.right])
        elif isinstance(node.op, ast.Add) and id(node) not in self._chained:
            operands = self.added(node)
            if any(self.cypher(operand) for operand in operands):
                self.check(node, [operand for operand in operands if literal_text(operand) is None])
        self.generic_visit(node)

    def added(self, node: ast.expr) -> list[ast.expr]:
        """The operands of a chain `a + b + c`, each inner `+` marked so that it is not checked again."""
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            self._chained.add(id(node))
            return [*self.added(node.left), *self.added(node.right)]
        return [node]


def scan(path: str, source: str, fragments: dict[str, str]) -> Scanner:
    scanner = Scanner(path=path, source=ast.parse(source), fragments=fragments)
    scanner.visit(scanner.source)
    return scanner


def scan_all() -> Iterator[Scanner]:
    fragments = module_strings()
    for path in FILES:
        yield scan(str(path.relative_to(ROOT)), path.read_text(), fragments)


def test_the_scan_covers_every_cypher_and_neo4j_module() -> None:
    names = {path.name for path in FILES}
    assert {"cypher.py", "program_cypher.py", "outreach_cypher.py", "neo4j_store.py", "neo4j_program.py"} <= names


def test_no_cypher_in_the_graph_layer_is_built_from_a_value() -> None:
    findings = [str(finding) for scanner in scan_all() for finding in scanner.findings]
    assert findings == []


def test_the_whitelisted_helpers_are_only_ever_called_with_fixed_text() -> None:
    calls = [(where, call) for scanner in scan_all() for where, call in scanner.helper_calls]
    assert calls, "the helpers are used"
    assert all(isinstance(arg, ast.Constant) for _, call in calls for arg in call.args), calls


def test_every_whitelist_entry_is_still_needed() -> None:
    """A stale entry would silently allow a future interpolation of the same text."""
    fragments = module_strings()
    used: set[tuple[str, str, str]] = set()
    for path in FILES:
        relative = str(path.relative_to(ROOT))
        saved = dict(WHITELIST)
        for key in saved:
            if key[0] != relative:
                continue
            WHITELIST.pop(key)
            if scan(relative, path.read_text(), fragments).findings:
                used.add(key)
            WHITELIST[key] = saved[key]
    assert set(WHITELIST) - used == set()


# --- the check itself can fail ----------------------------------------------------------------------------------
INTERPOLATING = """
from graph.model import EdgeType
LABEL = EdgeType.REFERRED.value
FIXED = f"MATCH (a)-[:{LABEL}]->(b) RETURN b"
LABELS = ("Campaign", "Reward")
FIXED_LABELS = f"MATCH (n) WHERE {' OR '.join(f'n:{label}' for label in LABELS)} DETACH DELETE n"
FIXED_EACH = [f"MATCH (n:{label}) DETACH DELETE n" for label in LABELS]

def by_labels(session, labels):
    return session.run(f"MATCH (n) WHERE {' OR '.join(f'n:{label}' for label in labels)} DETACH DELETE n")

def by_label_shadowing_a_fixed_name(session, LABELS):
    return [session.run(f"MATCH (n:{label}) RETURN n") for label in LABELS]

def by_fstring(session, customer_id):
    return session.run(f"MATCH (c:Customer {{id: '{customer_id}'}}) DETACH DELETE c")

def by_format(session, name):
    return session.run("MATCH (c:Customer) WHERE c.name = '{}' RETURN c".format(name))

def by_percent(session, name):
    return session.run("MATCH (c:Customer) WHERE c.name = '%s' RETURN c" % name)

def by_plus(session, name):
    return session.run("MATCH (c:Customer) WHERE c.name = '" + name + "' RETURN c")

def message(customer_id):
    raise KeyError(f"no customer {customer_id!r}")
"""


def test_the_check_flags_each_way_of_interpolating_a_value_and_nothing_else() -> None:
    findings = scan("graph/neo4j_example.py", INTERPOLATING, {}).findings
    assert sorted((f.function, f.expression) for f in findings) == [
        ("by_format", "name"),
        ("by_fstring", "customer_id"),
        ("by_label_shadowing_a_fixed_name", "label"),
        ("by_labels", "' OR '.join((f'n:{label}' for label in labels))"),
        ("by_percent", "name"),
        ("by_plus", "name"),
    ]
