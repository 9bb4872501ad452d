import pytest

from mmalign.data import hh_messages, hh_turns, split_hh
from mmalign.errors import DataError

DIALOGUE = (
    "\n\nHuman: What is a good name for a cat?"
    "\n\nAssistant: How about Whiskers?"
    "\n\nHuman: Something shorter, please."
    "\n\nAssistant: Tom."
)


def test_split_keeps_everything_up_to_the_last_assistant_turn():
    prompt, response = split_hh(DIALOGUE)
    assert prompt == DIALOGUE[: DIALOGUE.rindex("\n\nAssistant:") + len("\n\nAssistant:")]
    assert prompt.endswith("Something shorter, please.\n\nAssistant:")
    assert "Whiskers" in prompt
    assert response == " Tom."
    assert prompt + response == DIALOGUE


def test_turns_of_a_multi_turn_dialogue():
    assert hh_turns(DIALOGUE) == [
        ("user", "What is a good name for a cat?"),
        ("assistant", "How about Whiskers?"),
        ("user", "Something shorter, please."),
        ("assistant", "Tom."),
    ]
    prompt, _ = split_hh(DIALOGUE)
    assert hh_turns(prompt)[-1] == ("user", "Something shorter, please.")
    assert len(hh_turns(prompt)) == 3


def test_messages_for_chat_templates_and_non_hh_text():
    prompt, response = split_hh(DIALOGUE)
    msgs = hh_messages(prompt, response)
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
    assert msgs[-1]["content"] == "Tom."
    assert hh_messages("Human: hi\n\nAssistant:") == [{"role": "user", "content": "hi"}]
    assert hh_messages("just a plain question") is None


def test_assistant_text_mentioning_human_is_not_a_turn():
    text = "\n\nHuman: Quote it.\n\nAssistant: He wrote Human: be kind."
    assert split_hh(text)[1] == " He wrote Human: be kind."
    assert len(hh_turns(text)) == 2


def test_not_a_dialogue():
    with pytest.raises(DataError, match="data.jsonl:3: not an HH dialogue"):
        split_hh("no turns here", "data.jsonl:3")
