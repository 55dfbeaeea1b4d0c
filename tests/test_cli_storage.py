"""``--storage-options``: a JSON object or KEY=VALUE pairs, merged; refused for a local path."""

from __future__ import annotations

import argparse

import pytest

from ckptkeys._cli._storage import add_storage_options, storage_options


def _parsed(*argv: str) -> list[str] | None:
    parser = argparse.ArgumentParser()
    add_storage_options(parser)
    given: list[str] | None = parser.parse_args(list(argv)).storage_options
    return given


def test_none_given_is_none() -> None:
    assert storage_options(_parsed(), "s3://b/run") is None
    assert storage_options(_parsed(), "/local/run") is None


def test_json_object_and_pairs_merge_later_wins() -> None:
    given = _parsed(
        "--storage-options",
        '{"endpoint_url": "http://127.0.0.1:9000", "anon": false, "client_kwargs": {"region_name": "eu"}}',
        "--storage-options",
        "anon=true",
        "--storage-options",
        "retries=5",
        "--storage-options",
        "token=abc=def",
        "--storage-options",
        'quoted="007"',
        "--storage-options",
        "text=007",
    )
    assert storage_options(given, "s3://bucket/run/") == {
        "endpoint_url": "http://127.0.0.1:9000",
        "anon": True,
        "client_kwargs": {"region_name": "eu"},
        "retries": 5,
        "token": "abc=def",
        "quoted": "007",
        "text": "007",
    }


def test_a_value_that_is_not_json_is_its_text() -> None:
    given = _parsed("--storage-options", "endpoint_url=http://localhost:9000/x?y=1")
    assert storage_options(given, "s3://b/k") == {"endpoint_url": "http://localhost:9000/x?y=1"}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "not a JSON object"),
        ("anon", "give a JSON object or KEY=VALUE"),
        ("=true", "give a JSON object or KEY=VALUE"),
    ],
)
def test_malformed_is_one_message_naming_it(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as raised:
        storage_options([text], "s3://b/k")
    assert repr(text) in str(raised.value)


def test_a_local_path_takes_no_storage_options() -> None:
    with pytest.raises(ValueError, match="not to the local path '/data/run'"):
        storage_options(["anon=true"], "/data/run")
