"""Write tests/data/malicious/: pickles that try to run code, each as a raw pickle and a torch-zip .pt.

Every payload, if a normal unpickler ran it, would create the file ``ckptkeys-canary-<name>``
in the current folder (or import a module, or read a file outside the archive). The tests read
each file with ckptkeys in a fresh process, with an audit hook that records every import,
every file opened for writing and every process started, and assert that nothing happened.
Needs nothing but the standard library: python scripts/make_malicious_corpus.py
"""

from __future__ import annotations

import io
import pathlib
import struct
import zipfile

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "malicious"
PROTO = b"\x80\x02"


def s(text: str) -> bytes:
    """BINUNICODE: a str on the stack."""
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def canary(name: str) -> str:
    return f"ckptkeys-canary-{name}"


def touch_command(name: str) -> str:
    return f"touch {canary(name)}"


def write_code(name: str) -> str:
    return f"open({canary(name)!r}, 'w').write('pwned')"


def reduce(module: str, func: str, *args: bytes) -> bytes:
    """func(*args) with REDUCE."""
    return glob(module, func) + b"(" + b"".join(args) + b"tR"


PAYLOADS: dict[str, bytes] = {
    # REDUCE on the classic gadgets
    "reduce_os_system": reduce("os", "system", s(touch_command("reduce_os_system"))),
    "reduce_posix_system": reduce("posix", "system", s(touch_command("reduce_posix_system"))),
    "reduce_builtins_eval": reduce("builtins", "eval", s(write_code("reduce_builtins_eval"))),
    "reduce_builtins_exec": reduce("builtins", "exec", s(write_code("reduce_builtins_exec"))),
    "reduce_builtins_getattr": (
        # getattr(__import__('os'), 'system')('touch ...')
        glob("builtins", "getattr")
        + b"("
        + reduce("builtins", "__import__", s("os"))
        + s("system")
        + b"tR("
        + s(touch_command("reduce_builtins_getattr"))
        + b"tR"
    ),
    "reduce_builtins_import": reduce("builtins", "__import__", s("antigravity")),
    "reduce_subprocess_popen": glob("subprocess", "Popen")
    + b"("
    + b"("
    + s("touch")
    + s(canary("reduce_subprocess_popen"))
    + b"l"
    + b"tR",
    "reduce_runpy_run_code": reduce("runpy", "_run_code", s(write_code("reduce_runpy_run_code")), b"}"),
    "reduce_importlib_import_module": reduce("importlib", "import_module", s("antigravity")),
    # the other calling opcodes
    "inst_os_system": b"(" + s(touch_command("inst_os_system")) + b"ios\nsystem\n",
    "obj_os_system": b"(" + glob("os", "system") + s(touch_command("obj_os_system")) + b"o",
    "newobj_subprocess_popen": glob("subprocess", "Popen")
    + b"("
    + b"("
    + s("touch")
    + s(canary("newobj_subprocess_popen"))
    + b"l"
    + b"t\x81",
    "newobj_ex_subprocess_popen": glob("subprocess", "Popen")
    + b"("
    + b"("
    + s("touch")
    + s(canary("newobj_ex_subprocess_popen"))
    + b"l"
    + b"t}\x92",
    # BUILD that would set __dict__ / __setstate__ on the record the reader made
    "build_setstate": glob("collections", "OrderedDict")
    + b")R"
    + b"}"
    + s("__setstate__")
    + glob("os", "system")
    + b"s"
    + b"b"
    + b"0"
    + glob("collections", "OrderedDict")
    + b")R"
    + s("x")
    + b"b",
    "build_dict_on_opaque": glob("argparse", "Namespace")
    + b")R"
    + b"}("
    + s("__class__")
    + glob("os", "system")
    + s("__reduce__")
    + glob("builtins", "eval")
    + b"u"
    + b"b",
    # STACK_GLOBAL with non-string names
    "stack_global_non_string": b"\x80\x04K\x01K\x02\x93.",
    # extension codes name globals through copyreg's registry
    "ext1": b"\x82\x01.",
    "ext2": b"\x83\x01\x00.",
    "ext4": b"\x84\x01\x00\x00\x00.",
}

# Persistent ids (only meaningful inside a torch zip): not storage records, or pointing outside.
PERSISTENT: dict[str, bytes] = {
    "persid_not_a_storage": b"(" + s("module") + s("os") + b"tQ",
    "persid_outside_archive": b"("
    + s("storage")
    + glob("torch", "FloatStorage")
    + s("../../../../etc/passwd")
    + s("cpu")
    + b"K\x04tQ",
    "persid_absolute_path": b"("
    + s("storage")
    + glob("torch", "FloatStorage")
    + s("/etc/passwd")
    + s("cpu")
    + b"K\x04tQ",
    "persid_code_in_storage_type": b"("
    + s("storage")
    + reduce("os", "system", s(touch_command("persid_code_in_storage_type")))
    + s("0")
    + s("cpu")
    + b"K\x04tQ",
}


def torch_zip(payload: bytes) -> bytes:
    """A torch-zip container (as torch.save writes it) around ``payload`` as data.pkl."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/data/0", b"\0" * 16)
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for path in OUT.iterdir():
        path.unlink()
    for name, body in PAYLOADS.items():
        payload = body if body.startswith(b"\x80") else PROTO + body + b"."
        if not payload.endswith(b"."):
            payload += b"."
        (OUT / f"{name}.pkl").write_bytes(payload)
        (OUT / f"{name}.pt").write_bytes(torch_zip(payload))
    for name, body in PERSISTENT.items():
        payload = PROTO + body + b"."
        (OUT / f"{name}.pt").write_bytes(torch_zip(payload))
    print(f"wrote {len(list(OUT.iterdir()))} files to {OUT}")


if __name__ == "__main__":
    main()
