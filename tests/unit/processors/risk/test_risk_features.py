"""Grounding features from embeddings, on tiny in-memory data."""

from __future__ import annotations

import pytest

from llmtap.processors.embeddings.encoder import Encoder
from llmtap.processors.risk.features import (
    FEATURE_NAMES,
    RiskInput,
    compute_features,
    content_words,
    split_sentences,
)

CONTEXT = (
    "The Eiffel Tower was completed in 1889 for the World's Fair. "
    "It is 330 metres tall and stands in Paris. Gustave Eiffel's company built it."
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("One. Two! Three?", ["One.", "Two!", "Three?"]),
        ("the U.S. team won. Dr. Smith agreed.", ["the U.S. team won.", "Dr. Smith agreed."]),
        (
            "burnley drew 0-0 . townsend came on late .",
            ["burnley drew 0-0 .", "townsend came on late ."],
        ),
        ('He said "yes." Then he left.', ['He said "yes."', "Then he left."]),
        ("Intro\n\n- first\n- second", ["Intro", "- first", "- second"]),
        ("a .38 caliber revolver", ["a .38 caliber revolver"]),
        ("   ", []),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_content_words_drop_stopwords_and_match_inflections() -> None:
    assert content_words("The towers were built in 1889") == {"towers", "built", "1889"}
    assert content_words("tower") <= {"tower"}
    assert "toweri" in content_words("towering")  # cut to 6 characters


def test_a_supported_answer_has_more_support_than_an_unsupported_one(
    fake_encoder: Encoder,
) -> None:
    supported, unsupported = compute_features(
        fake_encoder,
        [
            RiskInput(answer="The Eiffel Tower was completed in 1889.", contexts=[CONTEXT]),
            RiskInput(answer="Bananas grow quickly in tropical rain.", contexts=[CONTEXT]),
        ],
    )
    assert supported.values["support_min"] > unsupported.values["support_min"]
    assert supported.values["unsupported_token_fraction"] == 0.0
    assert unsupported.values["unsupported_token_fraction"] == 1.0
    assert supported.values["has_context"] == 1.0


def test_the_weakest_sentence_sets_support_min(fake_encoder: Encoder) -> None:
    (features,) = compute_features(
        fake_encoder,
        [
            RiskInput(
                answer="The Eiffel Tower stands in Paris. It was painted green by aliens.",
                contexts=[CONTEXT],
            )
        ],
    )
    assert len(features.sentence_support) == 2
    assert features.values["support_min"] == min(features.sentence_support)
    assert features.sentence_support[0] > features.sentence_support[1]
    assert features.values["support_mean"] > features.values["support_min"]


def test_a_swapped_number_shows_as_novelty(fake_encoder: Encoder) -> None:
    right, swapped = compute_features(
        fake_encoder,
        [
            RiskInput(answer="It is 330 metres tall and stands in Paris.", contexts=[CONTEXT]),
            RiskInput(answer="It is 1889 metres tall and stands in Paris.", contexts=[CONTEXT]),
        ],
    )
    assert right.values["sentence_novelty_mean"] == 0.0
    assert swapped.values["sentence_novelty_mean"] > 0.0


def test_words_recombined_from_the_context_show_as_novel_trigrams(fake_encoder: Encoder) -> None:
    copied, recombined, tokenized = compute_features(
        fake_encoder,
        [
            RiskInput(answer="It is 330 metres tall and stands in Paris.", contexts=[CONTEXT]),
            RiskInput(
                answer="Gustave Eiffel stands in Paris, 330 metres tall.", contexts=[CONTEXT]
            ),
            RiskInput(answer="gustave eiffel 's company built it .", contexts=[CONTEXT]),
        ],
    )
    assert copied.values["novel_trigram_mean"] == 0.0
    assert recombined.values["novel_trigram_mean"] > 0.5
    assert recombined.values["unsupported_token_fraction"] == 0.0  # every word is in the context
    assert tokenized.values["novel_trigram_mean"] == 0.0  # "'s" split off as in running text


def test_without_context_the_support_features_are_zero(fake_encoder: Encoder) -> None:
    (features,) = compute_features(
        fake_encoder, [RiskInput(answer="Paris is in France.", question="Where is Paris?")]
    )
    assert features.values["has_context"] == 0.0
    assert features.values["support_min"] == 0.0
    assert features.values["answer_question_similarity"] > 0.0
    assert list(features.values) == list(FEATURE_NAMES)
    assert len(features.vector()) == len(FEATURE_NAMES)


def test_empty_chunks_are_ignored_and_ids_stay_aligned(fake_encoder: Encoder) -> None:
    compute_features(
        fake_encoder,
        [RiskInput(answer="Paris.", contexts=["", "Paris is big."], context_ids=["a", "b"])],
    )
    vector = fake_encoder.cache.get("id:chunk:b")
    assert vector is not None
    assert fake_encoder.cache.get("id:chunk:a") is None
