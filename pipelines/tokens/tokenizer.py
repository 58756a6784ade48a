"""The interaction-token vocabulary: special, action and title tokens in one ``tokenizer.json``.

Models index their embedding tables by these ids, so the vocabulary is append-only: a title keeps
its id for ever and new titles only ever get new ids at the end. Ids 0..63 are a reserved block
(special tokens, one ``[ACT:<action>]`` token per ``schemas.ACTIONS`` entry, then ``[unused<id>]``
placeholders that later special or action tokens take over without renumbering anything). Titles
start at ``FIRST_TITLE_ID`` as ``title:<title_id>``, so a title's row in a title-only table is
``token_id - FIRST_TITLE_ID``. The file is a plain Hugging Face ``tokenizers`` WordLevel model
with a whitespace-split pre-tokenizer, loadable by ``transformers.PreTrainedTokenizerFast`` too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

from tokenizers import AddedToken, Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit

from pipelines import storage
from pipelines.schemas import ACTIONS

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[BOS]", "[EOS]", "[MASK]", "[SEP]")
"""Special tokens at ids 0..5, in this order."""
PAD_ID, UNK_ID, BOS_ID, EOS_ID, MASK_ID, SEP_ID = range(len(SPECIAL_TOKENS))

HF_SPECIAL_TOKENS: dict[str, str] = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "bos_token": "[BOS]",
    "eos_token": "[EOS]",
    "mask_token": "[MASK]",
    "sep_token": "[SEP]",
}
"""Keyword arguments for ``PreTrainedTokenizerFast(tokenizer_file=..., **HF_SPECIAL_TOKENS)``."""

RESERVED_SIZE = 64
"""Ids below this are special, action or placeholder tokens, never titles."""
FIRST_TITLE_ID = RESERVED_SIZE
"""Id of the first title token; titles are contiguous from here."""
TITLE_PREFIX = "title:"
TOKENIZER_FILE = "tokenizer.json"
_UNUSED_PREFIX = "[unused"


def action_token(action: str) -> str:
    """The token of an action summary, e.g. ``[ACT:completed]``."""
    return f"[ACT:{action}]"


def title_token(title_id: str) -> str:
    """The token of a title, e.g. ``title:123``."""
    return f"{TITLE_PREFIX}{title_id}"


def _unused_token(token_id: int) -> str:
    # Named by its own id so a file read by eye shows where each placeholder sits.
    return f"{_UNUSED_PREFIX}{token_id}]"


def default_reserved_tokens() -> tuple[str, ...]:
    """The reserved block of a new vocabulary: specials, actions, then placeholders up to 63."""
    used = [*SPECIAL_TOKENS, *(action_token(a) for a in ACTIONS)]
    if len(used) > RESERVED_SIZE:
        raise ValueError(f"{len(used)} special and action tokens do not fit in {RESERVED_SIZE} ids")
    return (*used, *(_unused_token(i) for i in range(len(used), RESERVED_SIZE)))


def _with_current_actions(reserved: Sequence[str]) -> tuple[str, ...]:
    """A saved reserved block, with any action added to ``ACTIONS`` since put in a free slot.

    Existing tokens keep their ids; a new action takes the lowest ``[unused<id>]`` placeholder.
    """
    block = list(reserved)
    for action in ACTIONS:
        token = action_token(action)
        if token in block:
            continue
        free = [i for i, t in enumerate(block) if t.startswith(_UNUSED_PREFIX)]
        if not free:
            raise ValueError(
                f"no free reserved id left for {token}; the reserved block of {RESERVED_SIZE} ids "
                "is full, which needs a new vocabulary (and retraining)"
            )
        block[free[0]] = token
    return tuple(block)


def _check_title_id(title_id: str) -> str:
    if not isinstance(title_id, str):
        raise TypeError(f"title ids are strings, got {title_id!r} ({type(title_id).__name__})")
    if not title_id or title_id != "".join(title_id.split()):
        # The pre-tokenizer splits on whitespace, so such an id would become two tokens.
        raise ValueError(f"title id {title_id!r} is empty or contains whitespace")
    return title_id


def tokenizer_json_path(path: str | os.PathLike[str]) -> str:
    """``path`` itself when it names a ``.json`` file, else ``<path>/tokenizer.json``; a local
    path or a URI (``pipelines.storage``)."""
    path = os.fspath(path)
    if path.endswith(".json") and not storage.is_dir(path):
        return path
    return storage.join(path, TOKENIZER_FILE)


class InteractionTokenizer:
    """An immutable, append-only vocabulary of reserved and title tokens.

    Build one with ``from_title_ids`` or ``load``; ``extend`` returns a new tokenizer with more
    titles. Encoding and decoding go through the ``tokenizers.Tokenizer`` that ``save`` writes,
    so what a model sees in training is what the saved file produces.
    """

    def __init__(self, reserved: Sequence[str], title_ids: Sequence[str]) -> None:
        """Prefer ``from_title_ids``/``load``; this checks and takes a ready id layout.

        ``reserved`` is the whole reserved block (ids 0..63, in id order) and ``title_ids`` the
        titles in id order from ``FIRST_TITLE_ID``.
        """
        reserved = tuple(reserved)
        if len(reserved) != RESERVED_SIZE:
            raise ValueError(f"reserved block has {len(reserved)} tokens, expected {RESERVED_SIZE}")
        if reserved[: len(SPECIAL_TOKENS)] != SPECIAL_TOKENS:
            raise ValueError(
                f"ids 0..{len(SPECIAL_TOKENS) - 1} must be {SPECIAL_TOKENS}, "
                f"got {reserved[: len(SPECIAL_TOKENS)]}"
            )
        missing = [a for a in ACTIONS if action_token(a) not in reserved]
        if missing:
            raise ValueError(f"the reserved block has no token for actions {missing}")
        if len(set(reserved)) != len(reserved):
            raise ValueError("the reserved block repeats a token")
        if any(t.startswith(TITLE_PREFIX) for t in reserved):
            raise ValueError(f"title tokens cannot have reserved ids (< {RESERVED_SIZE})")
        titles = tuple(_check_title_id(t) for t in title_ids)
        self._reserved: tuple[str, ...] = reserved
        self._titles: tuple[str, ...] = titles
        self._reserved_ids = {token: i for i, token in enumerate(reserved)}
        self._title_ids = {title: FIRST_TITLE_ID + i for i, title in enumerate(titles)}
        if len(self._title_ids) != len(titles):
            raise ValueError("a title id appears twice")
        self._tokenizer = self._build_tokenizer()

    def _build_tokenizer(self) -> Tokenizer:
        vocab = {**self._reserved_ids, **{title_token(t): i for t, i in self._title_ids.items()}}
        tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
        tokenizer.pre_tokenizer = WhitespaceSplit()
        # Registered as special so decode(skip_special_tokens=True) and transformers treat them so;
        # they already have vocabulary ids, so registering adds no new id.
        tokenizer.add_special_tokens([AddedToken(t, special=True) for t in SPECIAL_TOKENS])
        return tokenizer

    @classmethod
    def from_title_ids(cls, title_ids: Iterable[str]) -> InteractionTokenizer:
        """A new vocabulary; titles are deduplicated and numbered in sorted (string) order, so
        the ids do not depend on the order the titles arrive in."""
        return cls(default_reserved_tokens(), sorted({_check_title_id(t) for t in title_ids}))

    def extend(self, title_ids: Iterable[str]) -> InteractionTokenizer:
        """A tokenizer with the titles not yet present appended, in sorted order.

        Existing ids never change. This tokenizer is left as it is (it is immutable); when
        nothing is new, ``self`` is returned.
        """
        new = sorted({_check_title_id(t) for t in title_ids} - self._title_ids.keys())
        if not new:
            return self
        return InteractionTokenizer(self._reserved, (*self._titles, *new))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> InteractionTokenizer:
        """Read a ``tokenizer.json`` (the file, or the directory holding it).

        Actions added to ``schemas.ACTIONS`` since the file was written take free reserved ids;
        ``save`` makes that permanent.
        """
        file = tokenizer_json_path(path)
        if not storage.exists(file) or storage.is_dir(file):
            raise FileNotFoundError(f"no tokenizer at {file}")
        return cls.from_json(storage.read_text(file), source=file)

    @classmethod
    def from_json(cls, text: str, source: str = "the text") -> InteractionTokenizer:
        """A tokenizer from ``tokenizer.json`` text (``source`` names it in errors)."""
        file = source
        model_type = json.loads(text)["model"]["type"]
        if model_type != "WordLevel":
            raise ValueError(f"{file} holds a {model_type} model, expected WordLevel")
        vocab = Tokenizer.from_str(text).get_vocab(with_added_tokens=True)
        tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
        if sorted(vocab.values()) != list(range(len(tokens))) or len(tokens) < RESERVED_SIZE:
            raise ValueError(f"{file} ids are not 0..n-1 with a {RESERVED_SIZE}-id reserved block")
        titles = tokens[RESERVED_SIZE:]
        not_titles = [t for t in titles if not t.startswith(TITLE_PREFIX)]
        if not_titles:
            raise ValueError(f"{file} has non-title tokens past the reserved ids: {not_titles[:3]}")
        return cls(
            _with_current_actions(tokens[:RESERVED_SIZE]),
            [t[len(TITLE_PREFIX) :] for t in titles],
        )

    def to_json(self) -> str:
        """The ``tokenizer.json`` text ``save`` writes."""
        return self._tokenizer.to_str(pretty=True)

    def save(self, path: str | os.PathLike[str]) -> str:
        """Write ``tokenizer.json`` whole (``storage.write_text``) and return its path.

        ``path`` is the file itself (``*.json``) or a directory to put ``tokenizer.json`` in; a
        local path or a URI.
        """
        file = tokenizer_json_path(path)
        storage.write_text(file, self.to_json())
        return file

    @property
    def backend(self) -> Tokenizer:
        """The underlying ``tokenizers.Tokenizer`` (what ``save`` writes)."""
        return self._tokenizer

    @property
    def title_ids(self) -> list[str]:
        """Every title, in token-id order (``title_ids[i]`` has id ``FIRST_TITLE_ID + i``)."""
        return list(self._titles)

    @property
    def num_titles(self) -> int:
        return len(self._titles)

    @property
    def vocab_size(self) -> int:
        """Reserved block plus titles: the size of an embedding table over all tokens."""
        return RESERVED_SIZE + len(self._titles)

    @property
    def pad_id(self) -> int:
        return PAD_ID

    def title_to_id(self, title_id: str) -> int:
        """The token id of a title; ``KeyError`` when the vocabulary does not have it."""
        try:
            return self._title_ids[title_id]
        except KeyError:
            raise KeyError(
                f"title {title_id!r} is not in the vocabulary ({self.num_titles} titles); add it "
                "with extend() or update_tokenizer_file() before encoding it"
            ) from None

    def id_to_title(self, token_id: int) -> str:
        """The title of a title token id; ``KeyError`` for reserved or out-of-range ids."""
        if FIRST_TITLE_ID <= token_id < self.vocab_size:
            return self._titles[token_id - FIRST_TITLE_ID]
        if 0 <= token_id < RESERVED_SIZE:
            raise KeyError(f"token id {token_id} is {self._reserved[token_id]}, not a title")
        raise self._out_of_range(token_id)

    def _out_of_range(self, token_id: int) -> KeyError:
        return KeyError(f"token id {token_id} is outside the vocabulary (0..{self.vocab_size - 1})")

    def action_to_id(self, action: str) -> int:
        """The id of an action's token; ``action`` as in ``schemas.ACTIONS`` (``"completed"``)."""
        try:
            return self._reserved_ids[action_token(action)]
        except KeyError:
            raise KeyError(f"action {action!r} has no token; known actions: {ACTIONS}") from None

    def encode_titles(self, title_ids: Sequence[str], *, allow_unknown: bool = False) -> list[int]:
        """Token ids of titles, one each, through the ``tokenizers`` model.

        Unknown titles raise ``KeyError`` unless ``allow_unknown``, which maps them to ``[UNK]``.
        """
        tokens = [title_token(_check_title_id(t)) for t in title_ids]
        if not allow_unknown:
            for title in title_ids:
                self.title_to_id(title)
        encoding = self._tokenizer.encode(tokens, is_pretokenized=True, add_special_tokens=False)
        return list(encoding.ids)

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Inverse of ``encode_titles``: a title id for each title token, and the token itself
        (``[PAD]``, ``[ACT:completed]``…) for each reserved id. Out-of-range ids raise ``KeyError``.
        """
        decoded = []
        for token_id in ids:
            token = self._tokenizer.id_to_token(int(token_id))
            if token is None:
                raise self._out_of_range(token_id)
            is_title = token_id >= FIRST_TITLE_ID
            decoded.append(token.removeprefix(TITLE_PREFIX) if is_title else token)
        return decoded

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InteractionTokenizer):
            return NotImplemented
        return (self._reserved, self._titles) == (other._reserved, other._titles)

    __hash__ = None  # type: ignore[assignment]  # equal by value but not meant as a dict key

    def __repr__(self) -> str:
        return f"InteractionTokenizer(num_titles={self.num_titles}, vocab_size={self.vocab_size})"


def update_tokenizer_file(
    path: str | os.PathLike[str], title_ids: Iterable[str]
) -> tuple[InteractionTokenizer, int]:
    """Load the tokenizer at ``path`` (or start one), append ``title_ids``, save; return it and
    how many titles were added.

    Daily partitions can run at once, so the read-extend-write holds ``storage.exclusive``: a
    POSIX lock on ``tokenizer.json.lock`` beside a local file (a separate file, because ``save``
    replaces ``tokenizer.json`` by rename, and a lock on the replaced file would not stop a
    process that opens the new one). Object stores have no lock; there the daily jobs' order
    (gold/D after gold/D-1) keeps writers apart.
    """
    file = tokenizer_json_path(path)
    with storage.exclusive(file):
        if storage.exists(file):
            existing_text = storage.read_text(file)
            current = InteractionTokenizer.from_json(existing_text, source=file)
            updated = current.extend(title_ids)
            n_added = updated.num_titles - current.num_titles
        else:
            updated = InteractionTokenizer.from_title_ids(title_ids)
            n_added = updated.num_titles
            existing_text = None
        # Also rewrites when only the reserved block changed (an action added to ACTIONS).
        if updated.to_json() != existing_text:
            updated.save(file)
    return updated, n_added
