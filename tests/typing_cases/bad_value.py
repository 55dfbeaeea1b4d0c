"""A member's `.value` is `str` on every target: not its definition tuple, and not `Any`.

Each line below is an error only if mypy types `.value` as `str`: with `Any` there would be no
error, with the definition tuple the message would name a tuple.
"""

from ckptkeys import KeyGroup, ModuleKeys, OptimizerKeys, Severity

x: int = OptimizerKeys.ZERO_STAGE.value  # E: Incompatible types in assignment (expression has type "str", variable
t: tuple[str, str, str | None, bool] = OptimizerKeys.FP32_GROUPS.value  # E: (expression has type "str", variable
level: int = Severity.ERROR.value  # E: Incompatible types in assignment (expression has type "


def any_member(member: KeyGroup) -> None:
    n: int = member.value  # E: (expression has type "str", variable has type "int")


def every_member() -> None:
    for member in ModuleKeys:
        n: int = member.value  # E: (expression has type "str", variable has type "int")
