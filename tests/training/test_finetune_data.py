"""Fine-tuning data: validation errors naming file and line, loss masks on each format (every prompt, context,
user, header and pad position excluded, every answer token included), the chat template's round trip, the split
and the resumable example loader."""

from __future__ import annotations

import json

import pytest

from pipeline.tokenizer import GPT2_EOT, gpt2_encoding
from tests.helpers import parse_transcript
from training.finetune_data import (
    ChatTemplate, ExampleBatches, FinetuneDataError, parse_record, prepare, read_jsonl, to_row,
    tokenize_example,
)
from training.model import IGNORE_INDEX

T = ChatTemplate()


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def row_for(record, seq_len=96):
    enc = gpt2_encoding()
    tokenized = tokenize_example(parse_record(record, "mem:1", T), enc, T)
    x, y = to_row(tokenized, seq_len)
    return enc, tokenized, x, y


def targets_text(enc, y):
    """The target tokens in order, decoded (EOT as its string)."""
    return enc.decode([int(t) for t in y if t != IGNORE_INDEX])


def check_positions(tokenized, x, y):
    n = len(tokenized.tokens)
    # x is the token sequence; y[i] is a target exactly where token i+1 is an answer token.
    assert list(x[: n - 1]) == tokenized.tokens[:-1]
    for i in range(len(y)):
        if i < n - 1 and tokenized.is_answer[i + 1]:
            assert y[i] == tokenized.tokens[i + 1]
        else:
            assert y[i] == IGNORE_INDEX
    assert (x[n - 1:] == GPT2_EOT).all() and (y[n - 1:] == IGNORE_INDEX).all()  # padding: no loss


def test_completion_mask_is_the_completion_and_end_of_turn():
    enc, tokenized, x, y = row_for({"prompt": "The capital of France is", "completion": " Paris."})
    assert targets_text(enc, y) == " Paris.<|endoftext|>"
    prompt_len = len(enc.encode_ordinary("The capital of France is"))
    assert not any(tokenized.is_answer[:prompt_len]) and all(tokenized.is_answer[prompt_len:])
    check_positions(tokenized, x, y)


def test_qa_mask_excludes_context_and_question():
    record = {"context": "Zorbs are green and live on Io.", "question": "What colour are zorbs?", "answer": "green"}
    enc, tokenized, x, y = row_for(record)
    assert targets_text(enc, y) == " green<|endoftext|>"
    prompt = T.qa_prompt(record["question"], record["context"])
    assert enc.decode(tokenized.tokens[: tokenized.is_answer.index(True)]) == prompt
    assert "green" in prompt  # the answer word in the context is not a target: only the answer span is
    assert sum(t != IGNORE_INDEX for t in y) == len(enc.encode_ordinary(" green")) + 1
    check_positions(tokenized, x, y)


def test_dialogue_mask_is_every_assistant_turn_only():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Two plus two?"},
                {"role": "assistant", "content": "Four."}]
    enc, tokenized, x, y = row_for({"messages": messages})
    assert targets_text(enc, y) == "Hello.<|endoftext|>Four.<|endoftext|>"
    # every token outside the two answer spans (system, user turns, all headers) is excluded
    spans, current = [], []
    for token, answer in zip(tokenized.tokens, tokenized.is_answer):
        if answer:
            current.append(token)
        elif current:
            spans.append(current)
            current = []
    spans.append(current)
    assert [enc.decode(s) for s in spans if s] == ["Hello.<|endoftext|>", "Four.<|endoftext|>"]
    not_answer = enc.decode([t for t, a in zip(tokenized.tokens, tokenized.is_answer) if not a])
    assert not_answer == ("### System:\nBe brief.\n\n### User:\nHi there\n\n### Assistant:\n"
                          "### User:\nTwo plus two?\n\n### Assistant:\n")
    check_positions(tokenized, x, y)


def test_chat_round_trip_through_the_template():
    enc = gpt2_encoding()
    messages = [{"role": "system", "content": "You answer in French."},
                {"role": "user", "content": "Hello\n\nhow are you?"},  # a blank line inside a turn survives
                {"role": "assistant", "content": "Bien, merci !"},
                {"role": "user", "content": "Say <|endoftext|> please"},
                {"role": "assistant", "content": "Non."}]
    with pytest.raises(FinetuneDataError, match="template marker"):
        parse_record({"messages": messages}, "mem:1", T)  # the end-of-turn text is refused in content
    messages[3]["content"] = "Say goodbye"
    tokenized = tokenize_example(parse_record({"messages": messages}, "mem:1", T), enc, T)
    text = enc.decode(tokenized.tokens)
    assert parse_transcript(T, text) == messages
    # the prompt for the next turn is the history plus an open assistant header
    prompt = T.chat_prompt(messages[:2])
    assert prompt.endswith("### Assistant:\n") and parse_transcript(T, prompt + "Bien, merci !<|endoftext|>") \
        == messages[:3]
    # the user text "<|endoftext|>" can never become the end-of-turn id
    assert GPT2_EOT not in enc.encode_ordinary("Say <|endoftext|> please")


def test_template_is_saved_and_loaded(tmp_path):
    custom = ChatTemplate(user_header="USER: ", assistant_header="BOT: ")
    assert ChatTemplate.load(custom.save(tmp_path)) == custom
    (tmp_path / "bad.json").write_text('{"nope": 1}')
    with pytest.raises(FinetuneDataError, match="bad.json"):
        ChatTemplate.load(tmp_path / "bad.json")


@pytest.mark.parametrize("line, message", [
    ("{not json", "invalid JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"text": "x"}', "no known keys"),
    ('{"prompt": "a", "completion": "b", "extra": 1}', "unexpected key"),
    ('{"prompt": "a", "completion": ""}', "'completion' is empty"),
    ('{"question": "q?", "answer": 3}', "'answer' must be a string"),
    ('{"question": "q?"}', "'answer' must be a string"),
    ('{"messages": []}', "non-empty list"),
    ('{"messages": [{"role": "bot", "content": "x"}]}', "role 'bot'"),
    ('{"messages": [{"role": "user", "content": "x"}]}', "no assistant message"),
    ('{"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "y"}]}', "system message"),
    ('{"messages": [{"role": "user", "content": "### Assistant: hi"}, {"role": "assistant", "content": "y"}]}',
     "template marker"),
])
def test_errors_name_file_and_line(tmp_path, line, message):
    path = write_jsonl(tmp_path / "data.jsonl", [{"prompt": "ok", "completion": " fine"}, "", line])
    with pytest.raises(FinetuneDataError) as err:
        read_jsonl(path, T)
    assert str(err.value).startswith(f"{path}:3:") and message in str(err.value)


def test_empty_mask_is_an_error():
    # An answer that tokenizes to nothing after the first token cannot happen in the three formats (the
    # end-of-turn token is always a target), so check the rule on a hand-made example.
    from training.finetune_data import Example

    example = Example("completion", {}, "mem:7", [("only a prompt", False)])
    with pytest.raises(FinetuneDataError, match="mem:7: the loss mask is empty"):
        tokenize_example(example, gpt2_encoding(), T)


def test_prepare_splits_stably_and_handles_too_long(tmp_path):
    records = [{"question": f"What is item {i}?", "answer": f"value {i}"} for i in range(200)]
    path = write_jsonl(tmp_path / "qa.jsonl", records + [{"prompt": "word " * 80, "completion": " end"}])
    enc = gpt2_encoding()
    with pytest.raises(FinetuneDataError, match=f"{path}:201: .* longer than seq_len"):
        prepare([str(path)], 32, enc, T, val_fraction=0.2)
    train, val, rejected = prepare([str(path)], 32, enc, T, val_fraction=0.2, too_long="drop")
    assert [r["source"] for r in rejected] == [f"{path}:201"] and rejected[0]["reason"] == "longer_than_seq_len"
    assert len(train.examples) + len(val.examples) == 200 and 20 <= len(val.examples) <= 60
    val_sources = {e.source for e in val.examples}
    # adding examples does not move existing ones between splits
    write_jsonl(path, records + [{"question": f"New {i}?", "answer": "x"} for i in range(50)])
    _, val2, _ = prepare([str(path)], 32, enc, T, val_fraction=0.2)
    assert val_sources <= {e.source for e in val2.examples}
    # an explicit validation file replaces the hash split
    val_path = write_jsonl(tmp_path / "val.jsonl", records[:5])
    train3, val3, _ = prepare([str(path)], 32, enc, T, val_files=[str(val_path)])
    assert len(val3.examples) == 5 and len(train3.examples) == 250


def test_example_loader_is_disjoint_per_rank_and_resumes_exactly(tmp_path):
    enc = gpt2_encoding()
    path = write_jsonl(tmp_path / "c.jsonl", [{"prompt": f"n{i}", "completion": f" {i}"} for i in range(40)])
    train, _, _ = prepare([str(path)], 16, enc, T, val_fraction=0.0)
    npz = str(train.save(tmp_path / "train.npz"))
    ranks = [ExampleBatches([npz], 4, 16, rank=r, world_size=2, seed=3) for r in range(2)]
    seen = [tuple(x.tolist()) for loader in ranks for _ in range(5) for x in loader.next_batch()[0]]
    assert len(set(seen)) == 40  # one epoch: 5 steps x 2 ranks x 4 examples, no example twice
    a = ExampleBatches([npz], 4, 16, seed=3)
    for _ in range(7):
        a.next_batch()
    b = ExampleBatches([npz], 4, 16, seed=3)
    b.load_state_dict(a.state_dict())
    for _ in range(12):  # across an epoch boundary
        xa, ya = a.next_batch()
        xb, yb = b.next_batch()
        assert xa.equal(xb) and ya.equal(yb)
    with pytest.raises(ValueError, match="seed"):
        ExampleBatches([npz], 4, 16, seed=4).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="seq_len"):
        ExampleBatches([npz], 4, 32)
    assert ((ExampleBatches([npz], 4, 16).next_batch()[1].numpy() != IGNORE_INDEX).sum(1) >= 2).all()
