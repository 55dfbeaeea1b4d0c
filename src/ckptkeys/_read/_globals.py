"""What the globals a pickle names mean for ``torch.load``: allowed, refused, or code execution.

Reading records every global a pickle names, resolved as the real unpickler resolves it
(:func:`ckptkeys._read._pickle.find_class`: Python 2 names renamed, dotted names walked, torch's own
renaming). This module judges them, on that resolution:

- ``"allowed"``: ``torch.load(weights_only=True)`` accepts it without ``add_safe_globals``:
  exactly torch 2.13's own allow-list (``torch._weights_only_unpickler._get_allowed_globals``:
  containers, ``torch.Size``, dtypes, storage and tensor classes, tensor rebuild functions),
  and only where the weights-only unpickler, which renames only the Python 2 names of its own
  small table and never walks a dotted name, would see the same global.
- ``"code-execution"``: a well-known way to run code or touch the system on load: modules such as
  ``os``, ``subprocess``, ``pickle`` or ``importlib``, builtins such as ``eval`` and ``getattr``,
  torch's own ``load``/``save``/``_import_dotted_name``, its compilers and their loaders
  (``torch._C``, ``torch.jit``, ``torch.fx``: TorchScript importers, GraphModules that exec
  source), and every dotted name (the unpickler walks attributes from the module and can reach
  any object, ``torch._utils.torch.os.system``).
  A list of gadgets is never complete: it names what is known, it proves nothing safe.
- ``"refused"``: everything else. ``weights_only=True`` refuses it; ``weights_only=False``
  imports it and calls what the pickle says, which can run arbitrary code.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final, Literal

    from ._globalref import GlobalRef

    GlobalClass = Literal["allowed", "code-execution", "refused"]

__all__ = ["DEEPSPEED_DATA_GLOBALS", "FRAMEWORK_DATA_GLOBALS", "TORCH_ALLOWED_GLOBALS", "classify", "explain"]

# torch 2.13's torch._weights_only_unpickler._get_allowed_globals(), every key (a test compares
# it with the installed torch).
TORCH_ALLOWED_GLOBALS: Final = frozenset(
    {
        "_codecs.encode",
        "builtins.bytearray",
        "builtins.complex",
        "builtins.set",
        "collections.Counter",
        "collections.OrderedDict",
        "torch.Size",
        "torch.Tensor",
        "torch._tensor._rebuild_from_type_v2",
        "torch.device",
        "torch.nn.parameter.Parameter",
        "torch.serialization._get_layout",
        "torch.storage.TypedStorage",
        "torch.storage.UntypedStorage",
        *(
            f"torch._utils._rebuild_{kind}"
            for kind in (
                "device_tensor_from_cpu_tensor",
                "device_tensor_from_numpy",
                "meta_tensor_no_storage",
                "nested_tensor",
                "parameter",
                "parameter_with_state",
                "qtensor",
                "sparse_tensor",
                "tensor",
                "tensor_v2",
                "tensor_v3",
                "wrapper_subclass",
            )
        ),
        *(
            f"torch.{dtype}"
            for dtype in [
                "bfloat16",
                "bits16",
                "bits1x8",
                "bits2x4",
                "bits4x2",
                "bits8",
                "bool",
                "complex128",
                "complex32",
                "complex64",
                "float16",
                "float32",
                "float4_e2m1fn_x2",
                "float64",
                "float8_e4m3fn",
                "float8_e4m3fnuz",
                "float8_e5m2",
                "float8_e5m2fnuz",
                "float8_e8m0fnu",
                "int1",
                "int16",
                "int2",
                "int3",
                "int32",
                "int4",
                "int5",
                "int6",
                "int64",
                "int7",
                "int8",
                "qint32",
                "qint8",
                "quint2x4",
                "quint4x2",
                "quint8",
                "uint1",
                "uint16",
                "uint2",
                "uint3",
                "uint32",
                "uint4",
                "uint5",
                "uint6",
                "uint64",
                "uint7",
                "uint8",
                "per_channel_affine",
                "per_channel_affine_float_qparams",
                "per_channel_symmetric",
                "per_tensor_affine",
                "per_tensor_symmetric",
            ]
        ),
        *(
            f"{module}.{kind}{suffix}"
            for module in ("torch", "torch.cuda")
            for kind in ("BFloat16", "Bool", "Byte", "Char", "Double", "Float", "Half", "Int", "Long", "Short")
            for suffix in ("Storage", "Tensor")
        ),
        *(
            f"{module}.{kind}Storage"
            for module in ("torch", "torch.cuda")
            for kind in ("ComplexDouble", "ComplexFloat")
        ),
        *(f"torch.{kind}Storage" for kind in ("QInt32", "QInt8", "QUInt2x4", "QUInt4x2", "QUInt8")),
        *(
            f"{module}.{kind}Tensor"
            for module in ("torch.sparse", "torch.cuda.sparse")
            for kind in ("BFloat16", "Byte", "Char", "Double", "Float", "Half", "Int", "Long", "Short")
        ),
    }
)

# The classes DeepSpeed 0.19.8 itself pickles into its checkpoint files (every configuration of
# tests/data/fixtures; a test keeps it exact): "refused" by weights_only=True, but DeepSpeed's own
# data (an enum, a loss scaler's numbers, a fragment's offsets), which touch no tensor.
DEEPSPEED_DATA_GLOBALS: Final = frozenset(
    {
        "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
        "deepspeed.runtime.fp16.loss_scaler.LossScaler",
        "deepspeed.runtime.zero.config.ZeroStageEnum",
        "deepspeed.utils.tensor_fragment.fragment_address",
    }
)
# What Hugging Face Trainer, Accelerate and Lightning pickle beside a DeepSpeed save (training
# arguments, plugin configs, numpy random states: tests/data/clients): known, if not inert.
FRAMEWORK_DATA_GLOBALS: Final = frozenset(
    {
        "accelerate.state.PartialState",
        "accelerate.utils.dataclasses.DeepSpeedPlugin",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray._reconstruct",
        "numpy.dtype",
        "numpy.ndarray",
        "transformers.integrations.deepspeed.HfDeepSpeedConfig",
        "transformers.integrations.deepspeed.HfTrainerDeepSpeedConfig",
        "transformers.trainer_pt_utils.AcceleratorConfig",
        "transformers.training_args.TrainingArguments",
    }
)

# The Python 2 renaming of torch's weights-only unpickler (torch._utils.IMPORT_MAPPING and
# NAME_MAPPING), applied to every GLOBAL whatever the protocol: "allowed" requires that it
# lands on the same global as the real unpickler.
_WEIGHTS_ONLY_IMPORTS: Final = {
    "__builtin__": "builtins",
    "copy_reg": "copyreg",
    "Queue": "queue",
    "repr": "reprlib",
    "_abcoll": "collections.abc",
    "UserDict": "collections",
    "UserList": "collections",
    "UserString": "collections",
    "whichdb": "dbm",
    "StringIO": "io",
    "cStringIO": "io",
}
_WEIGHTS_ONLY_NAMES: Final = {
    ("__builtin__", "xrange"): ("builtins", "range"),
    ("__builtin__", "reduce"): ("functools", "reduce"),
    ("__builtin__", "intern"): ("sys", "intern"),
    ("__builtin__", "unichr"): ("builtins", "chr"),
    ("__builtin__", "unicode"): ("builtins", "str"),
    ("__builtin__", "long"): ("builtins", "int"),
    ("itertools", "izip"): ("builtins", "zip"),
    ("itertools", "imap"): ("builtins", "map"),
    ("itertools", "ifilter"): ("builtins", "filter"),
    ("itertools", "ifilterfalse"): ("itertools", "filterfalse"),
    ("itertools", "izip_longest"): ("itertools", "zip_longest"),
    ("UserDict", "IterableUserDict"): ("collections", "UserDict"),
    ("UserList", "UserList"): ("collections", "UserList"),
    ("UserString", "UserString"): ("collections", "UserString"),
    ("__builtin__", "basestring"): ("builtins", "str"),
    ("exceptions", "StandardError"): ("builtins", "Exception"),
    ("UserDict", "UserDict"): ("collections", "UserDict"),
}

# Modules whose globals run code or touch the system (by the first part of the module name).
_CODE_EXECUTION_MODULES: Final = frozenset(
    {
        "os", "posix", "nt", "subprocess", "_posixsubprocess", "pty", "runpy", "importlib", "imp", "zipimport",
        "pkgutil", "sys", "shutil", "socket", "ssl", "ctypes", "_ctypes", "cffi", "code", "codeop", "pickle",
        "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "joblib", "multiprocessing",
        "concurrent", "asyncio", "threading", "_thread", "signal", "webbrowser", "pdb", "bdb", "timeit",
        "tempfile", "commands", "popen2", "site", "distutils", "setuptools", "pip", "urllib", "http", "ftplib",
        "smtplib", "telnetlib", "requests", "pydoc", "logging",
    }
)  # fmt: skip
_CODE_EXECUTION_BUILTINS: Final = frozenset(
    {
        "eval", "exec", "execfile", "compile", "getattr", "setattr", "delattr", "__import__", "open", "input",
        "breakpoint", "globals", "locals", "vars", "apply", "reload", "file",
    }
)  # fmt: skip
_CODE_EXECUTION_GLOBALS: Final = frozenset(
    {
        ("io", "open"), ("_io", "open"), ("codecs", "open"), ("operator", "attrgetter"), ("operator", "methodcaller"),
        ("types", "CodeType"), ("types", "FunctionType"), ("types", "LambdaType"), ("types", "MethodType"),
    }
)  # fmt: skip
# Names that run, load or build code or touch the system wherever they are found: the global's
# name, or a part of its module path after the first (torch.hub, torch.utils.cpp_extension).
_CODE_EXECUTION_NAMES: Final = frozenset(
    {
        "system", "popen", "spawn", "fork", "getoutput", "getstatusoutput", "check_output", "check_call", "Popen",
        "run_path", "run_module", "import_module", "__import__", "__builtins__", "__globals__", "__subclasses__",
        "_import_dotted_name", "load_inline", "cpp_extension", "runstring", "load", "loads", "save",
        "_load_from_bytes", "hub", "package", "os", "sys", "subprocess", "pickle", "builtins", "importlib",
        # torch's compilers and their loaders: torch._C's raw bindings hold TorchScript's importers
        # (import_ir_module_from_buffer compiles an archive's code and runs its __setstate__s),
        # torch.jit compiles and runs TorchScript, torch.fx's GraphModule pickles exec Python source.
        "_C", "jit", "fx", "_dynamo", "_inductor", "compiler", "import_ir_module", "import_ir_module_from_buffer",
        "_load_for_lite_interpreter", "_load_for_lite_interpreter_from_buffer", "CompilationUnit",
        "_forward_from_src", "_exec_with_source", "reduce_graph_module", "reduce_package_graph_module", "exec",
        "eval",
        # torch.distributed's RPC: a remote module's receiver torch.jit.loads the bytes it is given
        "rpc", "remote_module", "_recursive_script_module_receiver",
    }
)  # fmt: skip


def _weights_only_view(ref: GlobalRef) -> tuple[str, str]:
    module, name = ref.written or (ref.module, ref.name)
    renamed = _WEIGHTS_ONLY_NAMES.get((module, name))
    if renamed is not None:
        return renamed
    return _WEIGHTS_ONLY_IMPORTS.get(module, module), name


def _code_execution(ref: GlobalRef) -> str | None:
    """Why the global is a known way to run code, or None."""
    if "." in ref.name:
        return (
            f"a dotted name: the unpickler walks attributes from {ref.module} ({' -> '.join(ref.name.split('.'))}) "
            "and can reach any object"
        )
    parts = ref.module.split(".")
    if parts[0] in _CODE_EXECUTION_MODULES:
        return f"module {parts[0]} runs code or touches the system"
    if (parts[0] == "builtins" and ref.name in _CODE_EXECUTION_BUILTINS) or (
        ref.module,
        ref.name,
    ) in _CODE_EXECUTION_GLOBALS:
        return f"{ref.qualname} runs code, reaches any object or opens files"
    for part in (*parts[1:], ref.name):
        if part in _CODE_EXECUTION_NAMES:
            return f"{part} runs code, loads code or touches the system"
    return None


def _allowed(ref: GlobalRef) -> bool:
    return ref.qualname in TORCH_ALLOWED_GLOBALS and _weights_only_view(ref) == (ref.module, ref.name)


def classify(ref: GlobalRef) -> GlobalClass:
    """``"allowed"``, ``"code-execution"`` or ``"refused"``: see the module's text."""
    if _code_execution(ref) is not None:
        return "code-execution"
    return "allowed" if _allowed(ref) else "refused"


def explain(ref: GlobalRef) -> str:
    """One sentence: what loading the global means."""
    renamed = f" (written {ref.written[0]}.{ref.written[1]})" if ref.written else ""
    why = _code_execution(ref)
    if why is not None:
        return f"{ref.qualname}{renamed}: code execution on torch.load(weights_only=False): {why}"
    if _allowed(ref):  # not code execution: known above
        return f"{ref.qualname}{renamed}: allowed by torch.load(weights_only=True)"
    return (
        f"{ref.qualname}{renamed}: refused by torch.load(weights_only=True); with weights_only=False torch imports it "
        "and calls what the pickle says, which can run arbitrary code"
    )
