"""Tests for the interaction tokenizer: id layout, append-only growth, saved file, locking."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.schemas import ACTIONS
from pipelines.tokens import tokenizer as tokenizer_module
from pipelines.tokens.tokenizer import (
    FIRST_TITLE_ID,
    HF_SPECIAL_TOKENS,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    InteractionTokenizer,
    update_tokenizer_file,
)

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_reserved_block_layout() -> None:
    tok = InteractionTokenizer.from_title_ids(["42"])
    vocab = tok.backend.get_vocab(with_added_tokens=True)
    by_id = {i: token for token, i in vocab.items()}

    assert [by_id[i] for i in range(6)] == ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[MASK]", "[SEP]"]
    assert [by_id[6 + i] for i in range(len(ACTIONS))] == [f"[ACT:{a}]" for a in ACTIONS]
    first_unused = len(SPECIAL_TOKENS) + len(ACTIONS)
    assert [by_id[i] for i in range(first_unused, 64)] == [
        f"[unused{i}]" for i in range(first_unused, 64)
    ]
    assert FIRST_TITLE_ID == 64 and by_id[64] == "title:42"
    assert tok.vocab_size == len(vocab) == 65
    assert tok.pad_id == PAD_ID == 0
    assert tok.action_to_id("completed") == 6 + ACTIONS.index("completed")


def test_ids_follow_sorted_order_whatever_the_input_order() -> None:
    a = InteractionTokenizer.from_title_ids(["b", "10", "a", "2", "a"])
    b = InteractionTokenizer.from_title_ids(iter(["2", "a", "b", "10"]))

    assert a == b
    assert a.title_ids == ["10", "2", "a", "b"]  # string order, duplicates dropped
    assert [a.title_to_id(t) for t in a.title_ids] == [64, 65, 66, 67]
    assert a.id_to_title(66) == "a"


def test_save_load_round_trip(tmp_path: Path) -> None:
    tok = InteractionTokenizer.from_title_ids(["1", "2", "3", "42"])

    written = tok.save(tmp_path / "vocab")
    loaded = InteractionTokenizer.load(tmp_path / "vocab")

    assert written == str(tmp_path / "vocab" / "tokenizer.json")
    assert InteractionTokenizer.load(written) == loaded == tok
    assert loaded.to_json() == Path(written).read_text(encoding="utf-8")
    history = ["42", "1", "42", "3"]
    ids = loaded.encode_titles(history)
    assert ids == tok.encode_titles(history) == [67, 64, 67, 66]
    assert loaded.decode(ids) == history
    assert loaded.decode([PAD_ID, loaded.action_to_id("rated_high"), 64]) == [
        "[PAD]",
        "[ACT:rated_high]",
        "1",
    ]
    assert not [p for p in Path(written).parent.iterdir() if p.name != "tokenizer.json"]


def test_extend_appends_and_never_renumbers() -> None:
    old = InteractionTokenizer.from_title_ids(["m", "z"])

    new = old.extend(["z", "n", "a", "n"])

    assert old.title_ids == ["m", "z"]  # the original is unchanged
    assert new.title_ids == ["m", "z", "a", "n"]  # appended after the old ones, sorted
    assert [new.title_to_id(t) for t in ("m", "z", "a", "n")] == [64, 65, 66, 67]
    assert new.extend(["m", "a"]) is new


def test_unknown_title_raises_a_clear_key_error() -> None:
    tok = InteractionTokenizer.from_title_ids(["1"])

    with pytest.raises(KeyError, match=r"title '999' is not in the vocabulary.*extend"):
        tok.title_to_id("999")
    with pytest.raises(KeyError, match="'999'"):
        tok.encode_titles(["1", "999"])
    assert tok.encode_titles(["1", "999"], allow_unknown=True) == [64, UNK_ID]
    with pytest.raises(KeyError, match=r"\[BOS\], not a title"):
        tok.id_to_title(2)
    with pytest.raises(KeyError, match="outside the vocabulary"):
        tok.decode([65])
    with pytest.raises(KeyError, match="known actions"):
        tok.action_to_id("binged")


def test_title_ids_with_whitespace_are_refused() -> None:
    with pytest.raises(ValueError, match="whitespace"):
        InteractionTokenizer.from_title_ids(["a b"])
    with pytest.raises(TypeError, match="strings"):
        InteractionTokenizer.from_title_ids([7])  # type: ignore[list-item]


def test_load_gives_a_new_action_a_free_reserved_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = InteractionTokenizer.from_title_ids(["1", "2"])
    saved.save(tmp_path)
    monkeypatch.setattr(tokenizer_module, "ACTIONS", (*ACTIONS, "shared"))

    upgraded = InteractionTokenizer.load(tmp_path)

    first_unused = len(SPECIAL_TOKENS) + len(ACTIONS)
    assert upgraded.action_to_id("shared") == first_unused
    assert all(upgraded.action_to_id(a) == saved.action_to_id(a) for a in ACTIONS)
    assert upgraded.encode_titles(["1", "2"]) == saved.encode_titles(["1", "2"])


def test_transformers_fast_tokenizer_reads_the_file(tmp_path: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    tok = InteractionTokenizer.from_title_ids(["x", "y", "z"])
    path = tok.save(tmp_path / "tokenizer.json")

    fast = PreTrainedTokenizerFast(tokenizer_file=str(path), **HF_SPECIAL_TOKENS)

    assert fast.encode("title:x title:y", add_special_tokens=False) == tok.encode_titles(["x", "y"])
    assert fast.pad_token_id == PAD_ID and fast.unk_token_id == UNK_ID
    assert fast.convert_ids_to_tokens([66]) == ["title:z"]
    assert len(fast) == tok.vocab_size


def test_update_tokenizer_file_creates_then_appends(tmp_path: Path) -> None:
    tok, added = update_tokenizer_file(tmp_path, ["3", "1"])
    assert (added, tok.title_ids) == (2, ["1", "3"])

    tok, added = update_tokenizer_file(tmp_path / "tokenizer.json", ["2", "3"])
    assert (added, tok.title_ids) == (1, ["1", "3", "2"])

    before = (tmp_path / "tokenizer.json").stat().st_mtime_ns
    tok, added = update_tokenizer_file(tmp_path, ["1"])
    assert added == 0 and (tmp_path / "tokenizer.json").stat().st_mtime_ns == before
    assert InteractionTokenizer.load(tmp_path) == tok


def test_concurrent_updates_lose_no_title(tmp_path: Path) -> None:
    vocab_dir, gate = tmp_path / "vocab", tmp_path / "gate"
    gate.mkdir()
    # Each process imports, reports ready, then waits for "go" so that their updates overlap.
    script = (
        "import json, sys, time\n"
        "from pathlib import Path\n"
        "from pipelines.tokens.tokenizer import update_tokenizer_file\n"
        "gate = Path(sys.argv[2])\n"
        "(gate / f'ready-{sys.argv[3]}').touch()\n"
        "while not (gate / 'go').exists():\n"
        "    time.sleep(0.005)\n"
        "for title in json.loads(sys.argv[4]):\n"
        "    update_tokenizer_file(sys.argv[1], [title])\n"
    )
    # Overlapping batches, so processes also race to add the same titles.
    batches = [[f"t{n}" for n in range(start, start + 40)] for start in (0, 20, 40, 60)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(vocab_dir), str(gate), str(i), json.dumps(batch)],
            cwd=REPO_ROOT,
        )
        for i, batch in enumerate(batches)
    ]
    deadline = time.monotonic() + 60
    while len(list(gate.glob("ready-*"))) < len(procs) and time.monotonic() < deadline:
        time.sleep(0.01)
    (gate / "go").touch()
    assert [p.wait(timeout=120) for p in procs] == [0] * len(procs)

    tok = InteractionTokenizer.load(vocab_dir)
    assert sorted(tok.title_ids) == sorted({t for batch in batches for t in batch})
    assert tok.num_titles == 100
