"""Referral codes: easy to say aloud and type, hard to guess from a neighbour's, never rude.

Generated codes are an optional friendly prefix from the advocate's first name plus random characters drawn with
`secrets` from `ALPHABET`, which leaves out the characters people confuse (0/O, 1/I/L). Vanity codes chosen by
advocates go through `validate_vanity`, which refuses what would embarrass the brand or confuse the system.
Both kinds end up as `graph.program.Code` values: 4-32 upper-case letters and digits.
"""

from __future__ import annotations

import random
import re
import secrets
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from typing import Final

from graph.errors import AdvocacyError, InvalidInput
from graph.program import normalise_code

ALPHABET: Final[str] = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
"""Letters and digits without look-alikes (0 O 1 I L): 31 symbols, about 5 bits each."""

CODE_MIN_LENGTH: Final[int] = 4
CODE_MAX_LENGTH: Final[int] = 32
MIN_RANDOM_LENGTH: Final[int] = 4
"""Fewer random characters would let a visitor walk through codes by trying neighbours."""
VANITY_MIN_LENGTH: Final[int] = 4
VANITY_MAX_LENGTH: Final[int] = 20
DEFAULT_RANDOM_LENGTH: Final[int] = 6
GROW_AFTER_ATTEMPTS: Final[int] = 3
"""`candidate_codes` adds one random character per attempt after this many collisions."""
_MAX_DRAWS: Final[int] = 100

RESERVED_WORDS: Final[frozenset[str]] = frozenset(
    {
        "ADMIN",
        "ADMINISTRATOR",
        "API",
        "BILLING",
        "COUPON",
        "DEFAULT",
        "DISCOUNT",
        "FREE",
        "HELP",
        "LOGIN",
        "MODERATOR",
        "NONE",
        "NULL",
        "OFFICIAL",
        "OWNER",
        "PROMO",
        "REFERRAL",
        "ROOT",
        "SECURITY",
        "SIGNUP",
        "STAFF",
        "SUPPORT",
        "SYSTEM",
        "TEST",
        "UNDEFINED",
    }
)
"""Whole codes that would pass for the brand speaking, or for a placeholder in a bug report."""

BLOCKED_WORDS: Final[tuple[str, ...]] = (
    "BITCH",
    "CUNT",
    "DILDO",
    "FAGGOT",
    "FUCK",
    "HITLER",
    "KKK",
    "NIGGA",
    "NIGGER",
    "PORN",
    "RETARD",
    "SHIT",
    "SLUT",
    "WANKER",
    "WHORE",
)
"""Matched anywhere in a code, also with digits read as letters (SH17 is SHIT). Kept short on purpose: words that
hide inside ordinary names (ASS in CLASSIC) would refuse innocent codes."""

_DIGITS_AS_LETTERS: Final = str.maketrans("013456789", "OIEASGTBG")
_UNDECOMPOSED_LETTERS: Final = str.maketrans(
    {
        "Æ": "AE",
        "æ": "ae",
        "Œ": "OE",
        "œ": "oe",
        "Ø": "O",
        "ø": "o",
        "ß": "ss",
        "Ð": "D",
        "ð": "d",
        "Đ": "D",
        "đ": "d",
        "Þ": "TH",
        "þ": "th",
        "Ł": "L",
        "ł": "l",
        "ı": "i",
    }
)
"""Latin letters that NFKD does not split into a base letter and an accent."""
_CODE_CHARS: Final = re.compile(r"^[A-Z0-9]*$")
_FIRST_WORD: Final = re.compile(r"[A-Za-z]+")


def has_blocked_word(code: str) -> bool:
    """Whether a normalised code contains a blocked word, as written or with digits read as letters."""
    readings = (code, code.translate(_DIGITS_AS_LETTERS))
    return any(word in reading for reading in readings for word in BLOCKED_WORDS)


def generate_code(*, prefix: str = "", length: int = DEFAULT_RANDOM_LENGTH, rng: random.Random | None = None) -> str:
    """`prefix` + `length` characters of `ALPHABET`, from `secrets` unless a seeded `rng` is given (tests).

    A draw that happens to spell a blocked word is drawn again.

    >>> generate_code(prefix="zoe", rng=random.Random(7)).startswith("ZOE")
    True
    """
    head = normalise_code(prefix)
    if not _CODE_CHARS.match(head):
        raise InvalidInput(f"a code prefix is letters A-Z and digits only, not {prefix!r}")
    if has_blocked_word(head):
        raise InvalidInput("the code prefix contains a word we do not allow")
    if length < MIN_RANDOM_LENGTH:
        raise InvalidInput(f"a generated code needs at least {MIN_RANDOM_LENGTH} random characters, not {length}")
    if len(head) + length > CODE_MAX_LENGTH:
        raise InvalidInput(f"prefix and random part exceed {CODE_MAX_LENGTH} characters")
    choose: Callable[[Sequence[str]], str] = rng.choice if rng is not None else secrets.choice
    for _ in range(_MAX_DRAWS):
        code = head + "".join(choose(ALPHABET) for _ in range(length))
        if not has_blocked_word(code):
            return code
    raise AdvocacyError(f"no code free of blocked words after {_MAX_DRAWS} draws with prefix {head!r}")


def code_prefix(name: str | None, *, max_len: int = 5) -> str:
    """A friendly prefix from the first name, folded to ASCII letters: "Zoë Martin" -> "ZOE"; "" if none fits.

    A prefix containing a blocked word is dropped rather than cut, so nobody gets a rude code from their name.

    >>> code_prefix("Zoë Martin"), code_prefix("Jean-Luc Picard"), code_prefix("李雷"), code_prefix(None)
    ('ZOE', 'JEAN', '', '')
    """
    if not name or max_len < 1:
        return ""
    folded = unicodedata.normalize("NFKD", name.translate(_UNDECOMPOSED_LETTERS))
    ascii_name = folded.encode("ascii", "ignore").decode("ascii")
    first = _FIRST_WORD.search(ascii_name)
    if first is None:
        return ""
    prefix = first.group().upper()[:max_len]
    return "" if has_blocked_word(prefix) else prefix


def validate_vanity(raw: str) -> str:
    """The normalised code an advocate asked for, or `InvalidInput` saying why it cannot be theirs.

    >>> validate_vanity(" jane-10 ")
    'JANE10'
    """
    code = normalise_code(raw)
    if not _CODE_CHARS.match(code):
        raise InvalidInput(f"a code is letters A-Z and digits only (spaces, - and _ are ignored), not {raw!r}")
    if not VANITY_MIN_LENGTH <= len(code) <= VANITY_MAX_LENGTH:
        raise InvalidInput(
            f"a code is {VANITY_MIN_LENGTH} to {VANITY_MAX_LENGTH} letters or digits; {code!r} has {len(code)}"
        )
    if not any(char.isalpha() for char in code):
        raise InvalidInput("a code needs at least one letter, so it cannot pass for an order or phone number")
    if len(set(code)) == 1:
        raise InvalidInput("a code cannot be one character repeated")
    if code in RESERVED_WORDS:
        raise InvalidInput(f"{code} is reserved: it could pass for a message from the brand")
    if has_blocked_word(code):
        raise InvalidInput("this code contains a word we do not allow")
    return code


def candidate_codes(name: str | None, *, attempts: int = 5, rng: random.Random | None = None) -> Iterator[str]:
    """Codes to try in turn until one is free: the name's prefix plus random characters, longer after a few tries.

    Collisions at the default length are rare; repeated ones mean a crowded prefix, which a longer random part
    escapes.
    """
    prefix = code_prefix(name)
    longest = CODE_MAX_LENGTH - len(prefix)
    for attempt in range(attempts):
        grown = max(0, attempt - GROW_AFTER_ATTEMPTS + 1)
        yield generate_code(prefix=prefix, length=min(DEFAULT_RANDOM_LENGTH + grown, longest), rng=rng)
