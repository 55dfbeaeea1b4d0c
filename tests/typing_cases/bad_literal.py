"""A shim name used where another key's literal is expected is an error."""

from typing import Literal, TypedDict

from ckptkeys.constants import CLIP_GRAD, PARTITION_COUNT, ZERO_STAGE


class Inner(TypedDict):
    zero_stage: int


def wants_literal(key: Literal["zero_stage"]) -> None: ...


def use(state: Inner) -> None:
    wants_literal(ZERO_STAGE)
    wants_literal(PARTITION_COUNT)  # E: Argument 1 to "wants_literal" has incompatible type
    state[CLIP_GRAD]  # E: TypedDict "Inner" has no key "clip_grad"
    state[ZERO_STAGE]
