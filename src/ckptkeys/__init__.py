"""ckptkeys: a typed vocabulary for DeepSpeed checkpoints.

Key groups are ``StrEnum`` classes whose members equal DeepSpeed's strings::

    from ckptkeys import OptimizerKeys
    state[OptimizerKeys.ZERO_STAGE]

``ckptkeys.constants`` is a drop-in for ``deepspeed.checkpoint.constants``. Importing
ckptkeys never imports torch, numpy or DeepSpeed; the registry itself is built on first use,
so ``import ckptkeys.constants`` costs well under a millisecond.
"""

from ._errors import CkptKeysError, StructureError, UnknownKeyError

TYPE_CHECKING = False  # type checkers treat this as True and see the names below
if TYPE_CHECKING:
    from ._check._converters import Verdict
    from ._check._entry import (
        DictKindName,
        validate,
        validate_file,
        validate_folder,
        validate_path,
        validate_run,
        validate_tag,
    )
    from ._check._layout import Layout, LayoutFile, TagLayout, scan
    from ._check._problems import Problem, Severity
    from ._check._reports import FileReport, RunReport, TagReport, ValidationReport
    from ._check._runs import Run, Save, scan_run
    from ._check._safetensors_files import SafetensorsReport
    from ._check._select import Selection
    from ._check._weights_folders import WeightsFolderReport, WeightsIndex
    from ._export._entry import plan_export
    from ._export._types import Dtype, ExportError, ExportPlan, ExportShard, ExportTensor, Weights
    from ._export._write import OutputExistsError, export, write_export
    from ._keys._plain import plain
    from ._keys._registry import (
        AUTOEP_PLACEMENT_VERSION,
        AUTOEP_ZERO3_EXPERT_STATE_FORMAT_VERSION,
        AUTOEP_ZERO12_REQUIRED_FIELDS,
        FOLDING_METADATA_VERSION,
        GROUPS,
        UNIVERSAL_CHECKPOINT_VERSION_VALUE,
        AffineMapKeys,
        AutoEPKeys,
        AutoEPParamKeys,
        AutoEPPlacementKeys,
        FoldingKeys,
        LossScalerKeys,
        ModuleKeys,
        NamingKeys,
        OptimFileKeys,
        OptimizerKeys,
        ParallelDimsKeys,
        ParamAttrKeys,
        ParamPatternKeys,
        SubParamKeys,
        UniversalKeys,
        UniversalParamKeys,
        UniversalStateKeys,
        VocabKeys,
        iter_members,
        member_for_constant,
        members_for,
    )
    from ._keys._strenum import KeyGroup
    from ._read._errors import (
        AmbiguousFileError,
        CorruptCheckpointError,
        LimitError,
        NotACheckpointError,
        ReadError,
        SafetensorsHeaderError,
        TorchScriptArchiveError,
        UnsupportedFormatError,
    )
    from ._read._globalref import GlobalRef
    from ._read._limits import Limits
    from ._read._pickle import Opaque
    from ._read._reader import Checkpoint, read
    from ._read._safetensors import SafetensorsFile, SafetensorsTensor, read_safetensors
    from ._read._torch import StorageInfo, TensorInfo
    from ._universal._entry import plan_universal
    from ._universal._types import NotRestored, UniversalFile, UniversalPlan
    from ._universal._write import universal, write_universal

__version__ = "0.1.0"

__all__ = [
    "AUTOEP_PLACEMENT_VERSION",
    "AUTOEP_ZERO3_EXPERT_STATE_FORMAT_VERSION",
    "AUTOEP_ZERO12_REQUIRED_FIELDS",
    "FOLDING_METADATA_VERSION",
    "GROUPS",
    "UNIVERSAL_CHECKPOINT_VERSION_VALUE",
    "AffineMapKeys",
    "AmbiguousFileError",
    "AutoEPKeys",
    "AutoEPParamKeys",
    "AutoEPPlacementKeys",
    "Checkpoint",
    "CkptKeysError",
    "CorruptCheckpointError",
    "DictKindName",
    "Dtype",
    "ExportError",
    "ExportPlan",
    "ExportShard",
    "ExportTensor",
    "FileReport",
    "FoldingKeys",
    "GlobalRef",
    "KeyGroup",
    "Layout",
    "LayoutFile",
    "LimitError",
    "Limits",
    "LossScalerKeys",
    "ModuleKeys",
    "NamingKeys",
    "NotACheckpointError",
    "NotRestored",
    "Opaque",
    "OptimFileKeys",
    "OptimizerKeys",
    "OutputExistsError",
    "ParallelDimsKeys",
    "ParamAttrKeys",
    "ParamPatternKeys",
    "Problem",
    "ReadError",
    "Run",
    "RunReport",
    "SafetensorsFile",
    "SafetensorsHeaderError",
    "SafetensorsReport",
    "SafetensorsTensor",
    "Save",
    "Selection",
    "Severity",
    "StorageInfo",
    "StructureError",
    "SubParamKeys",
    "TagLayout",
    "TagReport",
    "TensorInfo",
    "TorchScriptArchiveError",
    "UniversalFile",
    "UniversalKeys",
    "UniversalParamKeys",
    "UniversalPlan",
    "UniversalStateKeys",
    "UnknownKeyError",
    "UnsupportedFormatError",
    "ValidationReport",
    "Verdict",
    "VocabKeys",
    "Weights",
    "WeightsFolderReport",
    "WeightsIndex",
    "__version__",
    "export",
    "iter_members",
    "member_for_constant",
    "members_for",
    "plain",
    "plan_export",
    "plan_universal",
    "read",
    "read_safetensors",
    "scan",
    "scan_run",
    "universal",
    "validate",
    "validate_file",
    "validate_folder",
    "validate_path",
    "validate_run",
    "validate_tag",
    "write_export",
    "write_universal",
]

# Where each lazily loaded public name lives. Building the registry's enum classes takes a few
# milliseconds, which users of the legacy shim alone should never pay.
_EAGER = {"CkptKeysError", "StructureError", "UnknownKeyError", "__version__"}
_ELSEWHERE = {
    "AmbiguousFileError": "_read._errors",
    "CorruptCheckpointError": "_read._errors",
    "LimitError": "_read._errors",
    "NotACheckpointError": "_read._errors",
    "ReadError": "_read._errors",
    "SafetensorsHeaderError": "_read._errors",
    "TorchScriptArchiveError": "_read._errors",
    "UnsupportedFormatError": "_read._errors",
    "Checkpoint": "_read._reader",
    "read": "_read._reader",
    "SafetensorsFile": "_read._safetensors",
    "SafetensorsTensor": "_read._safetensors",
    "read_safetensors": "_read._safetensors",
    "GlobalRef": "_read._globalref",
    "Opaque": "_read._pickle",
    "StorageInfo": "_read._torch",
    "TensorInfo": "_read._torch",
    "Limits": "_read._limits",
    "KeyGroup": "_keys._strenum",
    "plain": "_keys._plain",
    "Layout": "_check._layout",
    "LayoutFile": "_check._layout",
    "TagLayout": "_check._layout",
    "scan": "_check._layout",
    "scan_run": "_check._runs",
    "Run": "_check._runs",
    "Save": "_check._runs",
    "Problem": "_check._problems",
    "Severity": "_check._problems",
    "Selection": "_check._select",
    "TagReport": "_check._reports",
    "ValidationReport": "_check._reports",
    "validate": "_check._entry",
    "DictKindName": "_check._entry",
    "validate_folder": "_check._entry",
    "validate_file": "_check._entry",
    "validate_path": "_check._entry",
    "validate_run": "_check._entry",
    "validate_tag": "_check._entry",
    "FileReport": "_check._reports",
    "SafetensorsReport": "_check._safetensors_files",
    "WeightsFolderReport": "_check._weights_folders",
    "WeightsIndex": "_check._weights_folders",
    "RunReport": "_check._reports",
    "Verdict": "_check._converters",
    "Dtype": "_export._types",
    "Weights": "_export._types",
    "ExportError": "_export._types",
    "ExportPlan": "_export._types",
    "ExportShard": "_export._types",
    "ExportTensor": "_export._types",
    "OutputExistsError": "_export._write",
    "export": "_export._write",
    "plan_export": "_export._entry",
    "write_export": "_export._write",
    "plan_universal": "_universal._entry",
    "NotRestored": "_universal._types",
    "UniversalFile": "_universal._types",
    "UniversalPlan": "_universal._types",
    "universal": "_universal._write",
    "write_universal": "_universal._write",
}
_LAZY = {name: _ELSEWHERE.get(name, "_keys._registry") for name in __all__ if name not in _EAGER}

if not TYPE_CHECKING:  # a module __getattr__ would make every misspelt name type-check

    def __getattr__(name):
        module_name = _LAZY.get(name)
        if module_name is None:
            raise AttributeError(f"module 'ckptkeys' has no attribute {name!r}")
        import importlib

        value = getattr(importlib.import_module(f"ckptkeys.{module_name}"), name)
        globals()[name] = value  # later look-ups skip this function
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


del TYPE_CHECKING
