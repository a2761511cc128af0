"""Importing customer, influence, referral and event files: parsing, every class of bad input, all-or-nothing."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.ingest import import_file, import_files
from graph.errors import InvalidInput, RowError
from graph.factory import open_store
from graph.importer import FileFormat, RecordKind, open_records, parse_kind
from graph.model import ContactChannel, Customer, Event, Influence, InfluenceKind, Referral, ReferralStatus
from graph.store import GraphStore
from tests.factories import make_customer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[GraphStore]:
    s = open_store(f"sqlite:///{tmp_path / 'graph.db'}")
    try:
        yield s
    finally:
        s.close()


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def rows(path: Path, kind: RecordKind | None = None) -> list[tuple[int, object, RowError | None]]:
    return [(r.line, r.record, r.error) for r in open_records(path, kind=kind).rows()]


def problems_of(excinfo: pytest.ExceptionInfo[InvalidInput]) -> list[RowError]:
    return excinfo.value.problems


def nothing_stored(store: GraphStore) -> bool:
    stats = store.stats()
    return stats.customers == 0 and not any(stats.edges.values()) and not any(stats.events.values())


# --- parsing good files ------------------------------------------------------------------------------------------


def test_a_customer_row_maps_consent_columns_and_typed_attributes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.csv",
        "id,name,email,timezone,consent_email,consent_sms,attr_plan,attr_orders,attr_ltv,attr_vip,attr_zip\n"
        "a1,Ann,ann@example.com,Europe/Paris,yes,0,pro,3,12.5,true,007\n"
        "a2,,,,,,,,,,\n",
    )
    parsed = rows(path)
    first = parsed[0][1]
    assert isinstance(first, Customer)
    assert first.consent == {ContactChannel.EMAIL: True, ContactChannel.SMS: False}
    assert first.attributes == {"plan": "pro", "orders": 3, "ltv": 12.5, "vip": True, "zip": "007"}
    second = parsed[1][1]
    assert isinstance(second, Customer)
    assert (second.timezone, second.email, second.consent, second.attributes) == ("UTC", None, {}, {})


def test_the_kind_is_inferred_from_the_header_or_the_first_json_object(tmp_path: Path) -> None:
    cases = {
        "a.csv": ("id,name\nx,X\n", RecordKind.CUSTOMERS),
        "b.csv": ("source_id,target_id\nx,y\n", RecordKind.INFLUENCES),
        "c.csv": ("referrer_id,friend_id,at\nx,y,2024-01-01\n", RecordKind.REFERRALS),
        "d.csv": ("id,customer_id,kind,at\ne,x,purchase,2024-01-01\n", RecordKind.EVENTS),
        "e.jsonl": ('{"source_id": "x", "target_id": "y"}\n', RecordKind.INFLUENCES),
    }
    for name, (text, kind) in cases.items():
        assert open_records(write(tmp_path, name, text)).kind is kind, name


def test_json_lines_rows_take_nested_consent_attributes_and_numeric_ids(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.jsonl",
        '{"id": 42, "consent": {"push": true}, "attributes": {"tier": "gold"}, "attr_orders": 2}\n\n',
    )
    [(line, record, error)] = rows(path)
    assert error is None
    assert line == 1
    assert record == Customer(id="42", consent={ContactChannel.PUSH: True}, attributes={"tier": "gold", "orders": 2})


def test_format_is_sniffed_when_the_suffix_says_nothing(tmp_path: Path) -> None:
    assert open_records(write(tmp_path, "events.txt", '{"id": "e", "customer_id": "c"}\n')).format is FileFormat.JSONL
    assert open_records(write(tmp_path, "people.dat", "id,name\nx,X\n")).format is FileFormat.CSV


def test_kind_names_accept_singulars_and_relationships() -> None:
    assert parse_kind("Relationships") is RecordKind.INFLUENCES
    assert parse_kind("event") is RecordKind.EVENTS
    with pytest.raises(InvalidInput, match="unknown kind"):
        parse_kind("orders")


def test_the_example_files_import_completely(store: GraphStore) -> None:
    # events first on purpose: the importer puts customer files first
    paths = sorted([*EXAMPLES.glob("*.csv"), *EXAMPLES.glob("*.jsonl")], reverse=True)
    reports = import_files(store, paths)
    counted = {r.kind: r.imported for r in reports}
    expected = {
        RecordKind.CUSTOMERS: len((EXAMPLES / "customers.csv").read_text().splitlines()) - 1,
        RecordKind.INFLUENCES: len((EXAMPLES / "influences.csv").read_text().splitlines()) - 1,
        RecordKind.REFERRALS: len((EXAMPLES / "referrals.csv").read_text().splitlines()) - 1,
        RecordKind.EVENTS: len((EXAMPLES / "events.jsonl").read_text().splitlines()),
    }
    assert counted == expected
    stats = store.stats()
    assert stats.customers == expected[RecordKind.CUSTOMERS]
    assert stats.edges["INFLUENCES"] == expected[RecordKind.INFLUENCES]
    assert stats.edges["REFERRED"] == expected[RecordKind.REFERRALS]
    assert sum(stats.events.values()) == expected[RecordKind.EVENTS]
    assert store.get_customer("alice").attributes["city"] == "Paris"


# --- every class of bad input ------------------------------------------------------------------------------------


def test_an_unknown_column_fails_the_whole_file_naming_the_column(tmp_path: Path, store: GraphStore) -> None:
    path = write(tmp_path, "c.csv", "id,name,shoe_size\na,A,42\n")
    with pytest.raises(InvalidInput) as excinfo:
        import_file(store, path, skip_bad_rows=True)
    [problem] = problems_of(excinfo)
    assert (problem.source, problem.line) == (str(path), 1)
    assert "unknown column 'shoe_size'" in problem.reason
    assert nothing_stored(store)


def test_a_missing_required_column_fails_the_file(tmp_path: Path, store: GraphStore) -> None:
    path = write(tmp_path, "r.csv", "referrer_id,friend_id,code\na,b,X\n")
    with pytest.raises(InvalidInput) as excinfo:
        import_file(store, path)
    assert [p.reason for p in problems_of(excinfo)] == ["missing required column 'at' for referrals"]


def test_malformed_csv_rows_are_reported_with_their_line(tmp_path: Path, store: GraphStore) -> None:
    path = write(tmp_path, "c.csv", 'id,name\na,A\nb,"B"x\nc,C,extra\nd,D\ne,"never closed\nf,F\n')
    with pytest.raises(InvalidInput) as excinfo:
        import_file(store, path)
    found = [(p.line, p.reason) for p in problems_of(excinfo)]
    assert found[0][0] == 3
    assert found[0][1].startswith("malformed CSV")
    assert found[1] == (4, "malformed CSV: 3 values but the header has 2 columns")
    assert found[2][0] == 6
    assert "malformed CSV" in found[2][1]
    assert len(found) == 3
    assert nothing_stored(store)


def test_a_duplicate_id_in_the_file_names_both_lines(tmp_path: Path, store: GraphStore) -> None:
    path = write(tmp_path, "c.csv", "id,name\na,A\nb,B\na,Again\n")
    with pytest.raises(InvalidInput) as excinfo:
        import_file(store, path)
    [problem] = problems_of(excinfo)
    assert problem.line == 4
    assert problem.reason == "duplicate customer id 'a' (first on line 2)"
    assert nothing_stored(store)


def test_duplicate_edges_are_found_but_kinds_make_edges_distinct(tmp_path: Path, store: GraphStore) -> None:
    store.upsert_customers([make_customer(id="a"), make_customer(id="b")])
    path = write(tmp_path, "i.csv", "source_id,target_id,kind\na,b,follows\na,b,mentions\nb,a,follows\na,b,follows\n")
    with pytest.raises(InvalidInput) as excinfo:
        import_file(store, path)
    [problem] = problems_of(excinfo)
    assert (problem.line, problem.reason) == (5, "duplicate influence 'a' -> 'b' (follows) (first on line 2)")
    assert store.stats().edges.get("INFLUENCES", 0) == 0


def test_an_edge_to_a_customer_neither_in_the_file_nor_in_the_store_is_refused(
    tmp_path: Path, store: GraphStore
) -> None:
    store.upsert_customers([make_customer(id="stored")])
    customers = write(tmp_path, "c.csv", "id\nnew\n")
    edges = write(tmp_path, "i.csv", "source_id,target_id\nstored,new\nnew,ghost\n")
    with pytest.raises(InvalidInput) as excinfo:
        import_files(store, [edges, customers])
    [problem] = problems_of(excinfo)
    assert (problem.source, problem.line) == (str(edges), 3)
    assert "'ghost'" in problem.reason
    assert "nor in the store" in problem.reason
    assert store.stats().customers == 1  # 'new' was not written either: the import is all or nothing


def test_edges_may_point_at_customers_in_the_same_import_or_in_the_store(tmp_path: Path, store: GraphStore) -> None:
    store.upsert_customers([make_customer(id="stored")])
    customers = write(tmp_path, "c.csv", "id\nnew\n")
    edges = write(tmp_path, "i.csv", "source_id,target_id,weight\nstored,new,0.5\nnew,stored,2\n")
    import_files(store, [edges, customers])
    assert store.stats().edges["INFLUENCES"] == 2


def test_a_bad_timezone_is_reported_in_words(tmp_path: Path, store: GraphStore) -> None:
    path = write(tmp_path, "c.csv", "id,timezone\na,Europe/Paris\nb,Mars/Olympus\n")
    with pytest.raises(InvalidInput) as excinfo:
        import_file(store, path)
    [problem] = problems_of(excinfo)
    assert problem.line == 3
    assert "bad value for 'timezone' ('Mars/Olympus')" in problem.reason
    assert "IANA" in problem.reason


def test_bad_values_name_their_column(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "e.csv",
        "id,customer_id,kind,at,value\ne1,c,purchase,2024-13-01,1\ne2,c,teleport,2024-01-01,1\ne3,c,refund,,x\n",
    )
    reasons = {line: error.reason for line, _, error in rows(path) if error}
    assert reasons[2].startswith("bad value for 'at' ('2024-13-01')")
    assert reasons[3].startswith("bad value for 'kind' ('teleport')")
    assert reasons[4] == "missing value for 'at'"


def test_bad_json_lines_are_reported_each_with_its_line(tmp_path: Path, store: GraphStore) -> None:
    store.upsert_customers([make_customer(id="c")])
    path = write(
        tmp_path,
        "e.jsonl",
        '{"id": "e1", "customer_id": "c", "kind": "purchase", "at": "2024-01-01"}\n'
        '{"id": "e2", "customer_id": "c", kind: "purchase"}\n'
        '["e3", "c"]\n'
        '{"id": "e4", "customer_id": "c", "kind": "purchase", "at": "2024-01-01", "colour": "red"}\n',
    )
    with pytest.raises(InvalidInput) as excinfo:
        import_file(store, path)
    found = {p.line: p.reason for p in problems_of(excinfo)}
    assert set(found) == {2, 3, 4}
    assert found[2].startswith("not valid JSON")
    assert found[3] == "expected a JSON object, got list"
    assert found[4].startswith("unknown field 'colour'")
    assert not any(store.stats().events.values())


def test_a_json_array_file_is_explained(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", '[{"id": "a"}]\n')
    with pytest.raises(InvalidInput) as excinfo:
        open_records(path)
    assert "not JSON Lines" in problems_of(excinfo)[0].reason


def test_invalid_utf8_is_reported_on_its_line(tmp_path: Path, store: GraphStore) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(b"id,name\na,Ann\nb,B\xe9a\n")
    with pytest.raises(InvalidInput) as excinfo:
        import_file(store, path)
    [problem] = problems_of(excinfo)
    assert (problem.line, problem.reason.startswith("not valid UTF-8")) == (3, True)


def test_an_empty_file_is_refused(tmp_path: Path, store: GraphStore) -> None:
    with pytest.raises(InvalidInput, match="empty"):
        import_file(store, write(tmp_path, "c.csv", ""))


def test_one_bad_file_among_several_imports_nothing_at_all(tmp_path: Path, store: GraphStore) -> None:
    good = write(tmp_path, "c.csv", "id\na\nb\n")
    bad = write(tmp_path, "i.csv", "source_id,target_id,weight\na,b,-1\n")
    with pytest.raises(InvalidInput) as excinfo:
        import_files(store, [good, bad])
    assert "weight" in problems_of(excinfo)[0].reason
    assert nothing_stored(store)


# --- skipping bad rows, chunking, idempotence -------------------------------------------------------------------


def test_skipping_bad_rows_imports_the_good_ones_and_reports_the_rest(tmp_path: Path, store: GraphStore) -> None:
    customers = write(tmp_path, "c.csv", "id,email\na,a@example.com\nb,nope\na,again@example.com\nc,\n")
    edges = write(tmp_path, "i.csv", "source_id,target_id\na,c\na,b\nc,a\n")
    c_report, i_report = import_files(store, [customers, edges], skip_bad_rows=True)
    assert (c_report.rows, c_report.imported, c_report.skipped_count) == (4, 2, 2)
    assert [e.line for e in c_report.skipped] == [3, 4]
    assert (i_report.imported, [e.line for e in i_report.skipped]) == (2, [3])  # b was a bad row, so a -> b is too
    assert store.existing_customer_ids(["a", "b", "c"]) == {"a", "c"}
    assert store.get_customer("a").email == "a@example.com"  # the first of the duplicates is the one kept


def test_large_files_are_written_in_chunks_and_a_rerun_changes_nothing(tmp_path: Path, store: GraphStore) -> None:
    customers = write(tmp_path, "c.csv", "id\n" + "".join(f"c{i}\n" for i in range(25)))
    edges = write(tmp_path, "i.csv", "source_id,target_id\n" + "".join(f"c{i},c{(i + 1) % 25}\n" for i in range(25)))
    written: list[int] = []
    original = store.write_batch

    def spy(batch):
        written.append(len(batch))
        original(batch)

    store.write_batch = spy  # type: ignore[method-assign]
    import_files(store, [customers, edges], chunk_rows=10)
    assert written == [10, 10, 5, 10, 10, 5]
    first = store.stats()
    import_files(store, [customers, edges], chunk_rows=10)
    assert store.stats() == first == store.stats()
    assert (first.customers, first.edges["INFLUENCES"]) == (25, 25)


def test_progress_is_reported_per_task(tmp_path: Path, store: GraphStore) -> None:
    seen: list[tuple[str, int, int | None]] = []
    path = write(tmp_path, "c.csv", "id\na\nb\n")
    import_file(store, path, progress=lambda task, done, total: seen.append((task, done, total)))
    assert ("checking c.csv", 2, 2) in seen
    assert seen[-1] == ("importing c.csv", 2, 2)


def test_gzipped_files_are_read(tmp_path: Path, store: GraphStore) -> None:
    path = tmp_path / "refs.csv.gz"
    store.upsert_customers([make_customer(id="a"), make_customer(id="b")])
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("referrer_id,friend_id,status,at\na,b,converted,2024-02-01T10:00:00+01:00\n")
    report = import_file(store, path)
    assert (report.kind, report.imported) == (RecordKind.REFERRALS, 1)


def test_every_model_kind_parses_from_the_examples() -> None:
    kinds = {
        "customers.csv": Customer,
        "influences.csv": Influence,
        "referrals.csv": Referral,
        "events.jsonl": Event,
    }
    for name, model in kinds.items():
        parsed = list(open_records(EXAMPLES / name).rows())
        assert parsed, name
        assert all(r.error is None for r in parsed), name
        assert {type(r.record) for r in parsed} == {model}, name
    referral = next(r.record for r in open_records(EXAMPLES / "referrals.csv").rows())
    assert isinstance(referral, Referral)
    assert referral.status is ReferralStatus.CONVERTED
    influence = next(r.record for r in open_records(EXAMPLES / "influences.csv").rows())
    assert isinstance(influence, Influence)
    assert influence.kind is InfluenceKind.FOLLOWS
