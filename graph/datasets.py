"""Read public network edge lists (SNAP, NetHEPT) as customers and `INFLUENCES` edges.

Accepted format: one edge per line, `u v` or `u v w` separated by spaces or tabs; lines starting with `#` or `%`
are comments; blank lines and any line ending (`\\n`, `\\r\\n`, even `\\r\\r\\n`) are accepted. When the first
data line has two integers and the next one has three fields, the first is taken as a NetHEPT-style `N M` header
(node and edge counts) rather than an edge.

Node labels are kept as they are and become customer ids (`"123"` stays `"123"`), so a file's own side data,
such as email-Eu-core's department labels, matches the customers without a mapping. An undirected file gives two
arcs per edge. Self-loops are dropped and counted; repeated arcs are collapsed into one whose weight is the sum of
the repeats' weights (`w`, or 1 when a line has none), the usual way to read multi-edges as tie strength.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydantic import TypeAdapter, ValidationError

from graph.errors import InvalidInput, RowError
from graph.model import Customer, CustomerId, GraphBatch, Influence, InfluenceKind

_MAX_WEIGHT = 1e6  # the model's upper bound on an influence weight
_ID = TypeAdapter(CustomerId)


@dataclass(frozen=True, slots=True)
class EdgeList:
    """A network read from a file: node labels, and distinct arcs as index arrays into `nodes`."""

    source: str
    directed: bool
    nodes: list[str]
    sources: npt.NDArray[np.int64]
    targets: npt.NDArray[np.int64]
    weights: npt.NDArray[np.float64]
    lines: int  # edge lines read (header and comments excluded)
    self_loops: int  # lines dropped because u == v
    duplicates: int  # arcs collapsed into an earlier identical arc
    header: tuple[int, int] | None = None  # NetHEPT's `N M`, when present

    @property
    def arcs(self) -> int:
        return len(self.sources)

    def customers(self) -> Iterator[Customer]:
        """One customer per node label (labels are validated ids already)."""
        for label in self.nodes:
            yield Customer.model_construct(id=label)

    def influences(self, *, kind: InfluenceKind = InfluenceKind.FOLLOWS) -> Iterator[Influence]:
        """One `INFLUENCES` edge per distinct arc."""
        nodes = self.nodes
        for u, v, w in zip(self.sources.tolist(), self.targets.tolist(), self.weights.tolist(), strict=True):
            yield Influence.model_construct(source_id=nodes[u], target_id=nodes[v], kind=kind, weight=w, at=None)

    def batches(self, *, kind: InfluenceKind = InfluenceKind.FOLLOWS, chunk_size: int = 20_000) -> Iterator[GraphBatch]:
        """Customers first, then edges, `chunk_size` rows per batch, so each batch's customers are stored."""
        customers: list[Customer] = []
        for customer in self.customers():
            customers.append(customer)
            if len(customers) >= chunk_size:
                yield GraphBatch.model_construct(customers=customers, influences=[], referrals=[], events=[])
                customers = []
        if customers:
            yield GraphBatch.model_construct(customers=customers, influences=[], referrals=[], events=[])
        edges: list[Influence] = []
        for edge in self.influences(kind=kind):
            edges.append(edge)
            if len(edges) >= chunk_size:
                yield GraphBatch.model_construct(customers=[], influences=edges, referrals=[], events=[])
                edges = []
        if edges:
            yield GraphBatch.model_construct(customers=[], influences=edges, referrals=[], events=[])


def _is_int(text: str) -> bool:
    """ASCII digits only, and few enough for a 64-bit id (`"²".isdigit()` is True; 5,000 digits is not an id)."""
    return text.isascii() and text.isdigit() and len(text) <= 18


def read_edge_list(path: Path | str, *, directed: bool) -> EdgeList:
    """Read an edge list; every malformed line is reported (file and line) in one `InvalidInput`.

    >>> import tempfile, os
    >>> with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
    ...     _ = f.write("# demo\\n1 2\\n2 1\\n2 2\\n")
    >>> net = read_edge_list(f.name, directed=False)
    >>> net.nodes, net.arcs, net.self_loops, net.duplicates
    (['1', '2'], 2, 1, 2)
    >>> os.unlink(f.name)
    """
    source = str(path)
    index: dict[str, int] = {}
    nodes: list[str] = []
    us: list[int] = []
    vs: list[int] = []
    ws: list[float] = []
    problems: list[RowError] = []
    header: tuple[int, int] | None = None
    pending_header: tuple[int, list[str]] | None = None  # first data line, until the second one decides
    data_lines = 0
    self_loops = 0

    def node(label: str, line: int) -> int | None:
        found = index.get(label)
        if found is not None:
            return found
        try:
            _ID.validate_python(label)
        except ValidationError:
            problems.append(RowError(source, line, f"node label {label!r} cannot be a customer id"))
            return None
        index[label] = len(nodes)
        nodes.append(label)
        return index[label]

    def add(line: int, fields: list[str]) -> None:
        nonlocal self_loops
        if len(fields) not in (2, 3):
            problems.append(RowError(source, line, f"expected 'u v' or 'u v w', found {len(fields)} fields"))
            return
        weight = 1.0
        if len(fields) == 3:
            try:
                weight = float(fields[2])
            except ValueError:
                problems.append(RowError(source, line, f"weight {fields[2]!r} is not a number"))
                return
            if not (0 < weight <= _MAX_WEIGHT):
                problems.append(RowError(source, line, f"weight {fields[2]} must be > 0 and <= {_MAX_WEIGHT:g}"))
                return
        u, v = node(fields[0], line), node(fields[1], line)
        if u is None or v is None:
            return
        if u == v:
            self_loops += 1
            return
        us.append(u)
        vs.append(v)
        ws.append(weight)

    with Path(path).open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
            except UnicodeDecodeError:
                problems.append(RowError(source, number, "not valid UTF-8 text"))
                continue
            if not text or text.startswith(("#", "%")):
                continue
            fields = text.split()
            if pending_header is not None:
                first_line, first = pending_header
                pending_header = None
                if len(fields) == 3:
                    header = (int(first[0]), int(first[1]))
                else:
                    data_lines += 1
                    add(first_line, first)
            elif data_lines == 0 and header is None and len(fields) == 2 and all(map(_is_int, fields)):
                pending_header = (number, fields)
                continue
            data_lines += 1
            add(number, fields)
    if pending_header is not None:  # a one-line file: its only line is an edge
        data_lines += 1
        add(*pending_header)
    if problems:
        raise InvalidInput(f"{source} is not a valid edge list", problems)

    src = np.asarray(us, dtype=np.int64)
    dst = np.asarray(vs, dtype=np.int64)
    weight = np.asarray(ws, dtype=np.float64)
    if not directed:
        src, dst = np.concatenate([src, dst]), np.concatenate([dst, src])
        weight = np.concatenate([weight, weight])
    keys = src * max(len(nodes), 1) + dst
    unique, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # keep arcs in file order
    summed = np.minimum(np.bincount(inverse, weights=weight, minlength=len(unique)), _MAX_WEIGHT)
    return EdgeList(
        source=source,
        directed=directed,
        nodes=nodes,
        sources=src[first][order],
        targets=dst[first][order],
        weights=summed[order],
        lines=data_lines,
        self_loops=self_loops,
        duplicates=len(keys) - len(unique),
        header=header,
    )
