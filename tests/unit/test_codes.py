"""engine.codes: generated codes are valid and readable, prefixes are friendly, vanity codes are screened."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter

from engine.codes import (
    ALPHABET,
    BLOCKED_WORDS,
    RESERVED_WORDS,
    candidate_codes,
    code_prefix,
    generate_code,
    has_blocked_word,
    validate_vanity,
)
from graph.errors import AdvocacyError, InvalidInput
from graph.program import Code

CODE = TypeAdapter(Code)


class _Always:
    """An rng that always picks the same character, to force a collision or a blocked word."""

    def __init__(self, char: str) -> None:
        self.char = char

    def choice(self, seq: Sequence[str]) -> str:
        assert self.char in seq
        return self.char


def test_alphabet_leaves_out_look_alikes_and_has_no_duplicates() -> None:
    assert not set("0O1IL") & set(ALPHABET)
    assert len(set(ALPHABET)) == len(ALPHABET) == 31
    assert set(ALPHABET) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def test_generated_code_is_prefix_plus_requested_number_of_alphabet_characters() -> None:
    code = generate_code(prefix="zoe", length=8, rng=random.Random(1))
    assert code.startswith("ZOE")
    assert len(code) == 11
    assert set(code[3:]) <= set(ALPHABET)


def test_generated_codes_come_from_secrets_without_an_rng() -> None:
    codes = {generate_code() for _ in range(50)}
    assert len(codes) == 50


def test_a_seeded_rng_gives_the_same_code() -> None:
    assert generate_code(rng=random.Random(42)) == generate_code(rng=random.Random(42))


@given(
    prefix=st.sampled_from(["", "ZOE", "JANE", "MAX", "AB12"]),
    length=st.integers(min_value=4, max_value=20),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_generated_codes_always_validate_and_have_no_look_alikes_after_the_prefix(
    prefix: str, length: int, seed: int
) -> None:
    code = generate_code(prefix=prefix, length=length, rng=random.Random(seed))
    assert CODE.validate_python(code) == code
    assert not set(code[len(prefix) :]) & set("0O1IL")
    assert not has_blocked_word(code)


@given(seed=st.integers(min_value=0, max_value=2**32))
def test_generated_codes_pass_vanity_screening_too(seed: int) -> None:
    code = generate_code(prefix=code_prefix("Zoë"), rng=random.Random(seed))
    assert validate_vanity(code) == code


@pytest.mark.parametrize(
    ("prefix", "length"),
    [("ZO E!", 6), ("", 3), ("A" * 27, 6), ("SHIT", 6)],
    ids=["bad characters", "too few random characters", "longer than 32", "blocked prefix"],
)
def test_generate_code_refuses_unusable_arguments(prefix: str, length: int) -> None:
    with pytest.raises(InvalidInput):
        generate_code(prefix=prefix, length=length, rng=random.Random(0))


def test_generate_code_accepts_exactly_32_characters() -> None:
    assert len(generate_code(prefix="A" * 26, length=6, rng=random.Random(0))) == 32


def test_a_draw_that_spells_a_blocked_word_is_drawn_again_until_the_limit() -> None:
    with pytest.raises(AdvocacyError, match="blocked words"):
        generate_code(prefix="FUC", length=4, rng=_Always("K"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "prefix"),
    [
        ("Zoë Martin", "ZOE"),
        ("jane", "JANE"),
        ("Maximilian Schmidt", "MAXIM"),
        ("Jean-Luc Picard", "JEAN"),
        ("Ørjan Berg", "ORJAN"),
        ("Łukasz", "LUKAS"),
        ("Æsa", "AESA"),
        ("  Élodie  ", "ELODI"),
        ("3 Amigos", "AMIGO"),
        ("李雷", ""),
        ("", ""),
        (None, ""),
        ("   ", ""),
        ("Kshitij Rao", ""),
    ],
)
def test_code_prefix_folds_the_first_name_to_ascii_letters(name: str | None, prefix: str) -> None:
    assert code_prefix(name) == prefix


def test_code_prefix_honours_max_len() -> None:
    assert code_prefix("Alexandra", max_len=3) == "ALE"
    assert code_prefix("Alexandra", max_len=0) == ""


@pytest.mark.parametrize(
    ("raw", "code"),
    [(" jane-10 ", "JANE10"), ("zoe_summer", "ZOESUMMER"), ("ABCD", "ABCD"), ("A" * 19 + "B", "A" * 19 + "B")],
)
def test_validate_vanity_accepts_and_normalises_good_codes(raw: str, code: str) -> None:
    assert validate_vanity(raw) == code


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("ABC", "4 to 20"),
        ("A" * 20 + "B", "4 to 20"),
        ("", "4 to 20"),
        ("ZOË10", "letters A-Z and digits only"),
        ("JANE!", "letters A-Z and digits only"),
        ("123456", "at least one letter"),
        ("AAAA", "one character repeated"),
        ("admin", "reserved"),
        ("Free", "reserved"),
        ("TEST", "reserved"),
        ("SUPPORT", "reserved"),
        ("MYFUCKCODE", "word we do not allow"),
        ("SH17TY", "word we do not allow"),
        ("b-i-t-c-h-99", "word we do not allow"),
    ],
)
def test_validate_vanity_refuses_with_a_reason(raw: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        validate_vanity(raw)


def test_every_reserved_word_long_enough_to_be_a_code_is_refused() -> None:
    for word in RESERVED_WORDS:
        with pytest.raises(InvalidInput):
            validate_vanity(word)


def test_every_blocked_word_is_refused_inside_a_longer_code() -> None:
    for word in BLOCKED_WORDS:
        with pytest.raises(InvalidInput, match="word we do not allow"):
            validate_vanity(f"X{word}7")


@pytest.mark.parametrize("innocent", ["CLASSIC", "GRAPEFRUIT", "ASSUNTA", "SHIITAKE", "MEHDI2024"])
def test_words_that_only_resemble_short_rude_sequences_are_accepted(innocent: str) -> None:
    assert validate_vanity(innocent) == innocent


def test_candidate_codes_start_with_the_name_prefix_and_grow_after_three_attempts() -> None:
    codes = list(candidate_codes("Zoë Martin", attempts=6, rng=random.Random(3)))
    assert len(codes) == 6
    assert all(code.startswith("ZOE") for code in codes)
    assert [len(code) - 3 for code in codes] == [6, 6, 6, 7, 8, 9]
    assert len(set(codes)) == 6


def test_candidate_codes_without_a_usable_name_have_no_prefix() -> None:
    codes = list(candidate_codes("李雷", attempts=2, rng=random.Random(3)))
    assert [len(code) for code in codes] == [6, 6]


def test_candidate_codes_never_exceed_the_code_length_limit() -> None:
    codes = list(candidate_codes("Maximilian", attempts=40, rng=random.Random(5)))
    assert len(codes) == 40
    assert max(len(code) for code in codes) == 32
    for code in codes:
        assert CODE.validate_python(code) == code
