"""A value outside a closed set of str parameters (kind, dtype, weights) is an error; so is any str."""

import pathlib

from ckptkeys import Selection, export, plan_export, validate, validate_file, validate_path

path = pathlib.Path("ckpt")


def misuse(dtype: str) -> None:
    plan_export(path, dtype="bf8")  # E: Argument "dtype" to "plan_export" has incompatible type "Literal['bf8']"
    export(path, "out", dtype="float16")  # E: Argument "dtype" to "export" has incompatible type
    plan_export(path, dtype=dtype)  # E: Argument "dtype" to "plan_export" has incompatible type "str"
    validate(path, kind="model_states")  # E: "validate" has incompatible type "Literal['model_states']"
    validate({}, kind="model-states")  # E: Argument "kind" to "validate" has incompatible type
    validate_file(path, kind="optimizer states")  # E: Argument "kind" to "validate_file" has incompatible type
    validate_path(path, kind="ZeRO-3")  # E: Argument "kind" to "validate_path" has incompatible type
    export(path, "out", weights="master")  # E: Argument "weights" to "export" has incompatible type "Literal['master']"
    plan_export(path, weights="fp32")  # E: Argument "weights" to "plan_export" has incompatible type
    Selection(require=["ds-to-universal"])  # E: List item 0 has incompatible type "Literal['ds-to-universal']"
    Selection(fail_on="warnings")  # E: Argument "fail_on" to "Selection" has incompatible type
