"""``ckptkeys keys VALUE``: the members whose value is VALUE, when VALUE names no group."""

from __future__ import annotations

import json

import pytest

import ckptkeys
from ckptkeys._cli._main import main
from ckptkeys._keys import _registry


def keys(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["keys", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_value_prints_every_member_with_it(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = keys(capsys, "ds_version")
    assert (status, err) == (0, "")
    expected = ckptkeys.members_for("ds_version")
    assert len(expected) == 3
    lines = out.splitlines()
    assert lines[0] == "'ds_version': 3 members"
    named = [line.split()[0] for line in lines[1::2]]
    assert named == [f"{type(m).__name__}.{m.name}" for m in expected]
    for member, line in zip(expected, lines[2::2], strict=True):
        assert line.strip() == member.description
    assert all(line.split()[1] == "'ds_version'" for line in lines[1::2])


@pytest.mark.parametrize("member", list(ckptkeys.iter_members())[::7], ids=str)
def test_every_value_is_found(capsys: pytest.CaptureFixture[str], member: ckptkeys.KeyGroup) -> None:
    status, out, _ = keys(capsys, "--json", member.value)
    document = json.loads(out)
    assert status == 0
    assert document["value"] == member.value
    found = [(m["group"], m["name"]) for m in document["members"]]
    assert (type(member).__name__, member.name) in found
    assert found == [(type(m).__name__, m.name) for m in ckptkeys.members_for(member.value)]


def test_json_document(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = keys(capsys, "zero_stage", "--json")
    document = json.loads(out)
    assert status == 0
    assert set(document) == {"schema_version", "deepspeed_version", "value", "members"}
    assert document["schema_version"] == 1
    member = ckptkeys.OptimizerKeys.ZERO_STAGE
    entry = next(m for m in document["members"] if m["group"] == "OptimizerKeys")
    assert entry == {
        "group": "OptimizerKeys",
        "name": "ZERO_STAGE",
        "value": "zero_stage",
        "description": member.description,
        "since": member.since,
        "deepspeed_name": member.deepspeed_name,
    }


def test_markdown_table(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = keys(capsys, "--markdown", "ds_version")
    assert status == 0
    rows = [line for line in out.splitlines() if line.startswith("| `")]
    assert [row.split(" | ")[0] for row in rows] == [
        "| `ModuleKeys.DS_VERSION`",
        "| `OptimFileKeys.DS_VERSION`",
        "| `OptimizerKeys.DS_VERSION`",
    ]
    assert out.splitlines()[2] == "| Member | Value | Description | Since | Constant |"


def test_exact_value_first_then_any_case(capsys: pytest.CaptureFixture[str]) -> None:
    # No two values of the registry differ only in case: the fallback is never ambiguous.
    values = {m.value for m in ckptkeys.iter_members()}
    assert len({v.casefold() for v in values}) == len(values)
    status, out, _ = keys(capsys, "--json", "Zero_Stage")
    assert status == 0
    document = json.loads(out)
    assert document["value"] == "zero_stage"
    assert len(document["members"]) == len(ckptkeys.members_for("zero_stage")) > 0


def test_neither_group_nor_value_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = keys(capsys, "ds_versio")
    assert (status, out) == (2, "")
    assert err.startswith("ckptkeys keys: no group or key value 'ds_versio'; closest values: 'ds_version'")
    assert "the groups are: ModuleKeys, " in err


def test_a_group_name_wins_over_an_equal_value(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # No value equals a group name today; were one to, the group is printed and the members named.
    assert not any(_registry.members_for(g.__name__) for g in ckptkeys.GROUPS)
    assert not any(m.value.lower() == g.__name__.lower() for m in ckptkeys.iter_members() for g in ckptkeys.GROUPS)
    clash = (ckptkeys.ModuleKeys.DS_VERSION,)
    real = _registry.members_for
    monkeypatch.setattr(_registry, "members_for", lambda v: clash if v == "VocabKeys" else real(v))
    status, out, err = keys(capsys, "VocabKeys")
    assert status == 0
    assert out.startswith("VocabKeys (")
    assert err == "ckptkeys keys: 'VocabKeys' is also the value of ModuleKeys.DS_VERSION\n"
