"""Main-subject choice from captions, with no language model."""

from __future__ import annotations

import pytest

from cafe_vision.subject import main_subject, names_subject, noun_phrases, subject_query


@pytest.mark.parametrize(
    ("caption", "subject"),
    [
        ("a small brown dog sitting on a couch", "small brown dog"),
        ("a close up of a red mug on a table", "red mug"),
        ("arafed man in a suit and tie standing in front of a building", "man"),
        ("there is a cat that is laying on a bed", "cat"),
        ("a photo of a rocket at night", "rocket"),
        ("two dogs playing in the snow", "dogs"),
        ("A WOMAN holding an umbrella.", "woman"),
    ],
)
def test_main_subject(caption: str, subject: str) -> None:
    assert main_subject(caption) == subject


def test_other_phrases_follow_the_subject_without_place_words() -> None:
    assert noun_phrases("arafed man in a suit standing in front of a building") == ["man", "suit", "building"]


def test_caption_naming_nothing_gives_none() -> None:
    assert main_subject("") is None
    assert main_subject("on the in of") is None
    assert subject_query("...") is None


def test_query_prompt_is_grounding_dino_format() -> None:
    query = subject_query("a red mug on a wooden table")
    assert query is not None
    assert query.subject == "red mug"
    assert query.prompt == "red mug. wooden table."


def test_detected_phrase_must_name_the_head_noun() -> None:
    assert names_subject("mug", "red mug")
    assert names_subject("red mug", "red mug")
    assert not names_subject("table", "red mug")
    assert not names_subject("", "red mug")
