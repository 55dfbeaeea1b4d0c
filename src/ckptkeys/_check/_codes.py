"""Every problem code validation gives, with its severity, and the named groups of codes.

One list, in the order of docs/validation.md's table (a test holds the two, and the codes the
sources give, together): ``--select``/``--ignore`` check their codes against it, and the command
lists it when one is unknown. A new code goes here, in the table, and in the check that gives it.
"""

from __future__ import annotations

from ._problems import Severity

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["CODES", "GROUPS"]

E, W, INFO = Severity.ERROR, Severity.WARNING, Severity.INFO

CODES: Final[dict[str, Severity]] = {
    "missing-key": E,
    "wrong-type": E,
    "unknown-key": W,
    "client-state-key": INFO,
    "not-deepspeed": INFO,
    "missing-shard": E,
    "shard-lacks-tensor": E,
    "unlisted-tensor": W,
    "unlisted-shard": W,
    "index-total-size": W,
    "unreadable-index": E,
    "shadowed-weights": W,
    "incomplete-tag": E,
    "framework-client-state": INFO,
    "missing-rank": E,
    "missing-model-states": E,
    "missing-expert": E,
    "missing-expert-optim": E,
    "missing-optimizer-shards": E,
    "missing-layer": E,
    "layer-param-mismatch": E,
    "missing-frozen-fragment": E,
    "missing-universal-param": E,
    "truncated-file": E,
    "missing-universal-state": E,
    # What DeepSpeed's universal loader does with a universal tag: resuming, not damage.
    "universal-frozen-not-restored": W,
    "universal-buffers-not-restored": W,
    "universal-step-missing": W,
    "universal-no-engine": W,
    "universal-engines": INFO,
    "mixed-precision": E,
    "precision-mismatch": E,
    "partition-count-mismatch": E,
    "dp-world-size-mismatch": E,
    "count-beyond-files": E,
    "mp-world-size-mismatch": E,
    "stage-mismatch": E,
    "param-shapes-mismatch": E,
    "version-mismatch": W,
    "unreadable-file": E,
    "ambiguous-file": E,
    "torchscript-archive": E,
    "unsupported-format": E,
    "code-execution": E,
    "unknown-global": W,
    "latest-missing-tag": E,
    "latest-universal-not-universal": E,
    "no-latest": W,
    "latest-unreadable": E,
    "symlink-outside": W,
    "unlistable-entry": W,
    "special-file": W,
    "unreadable-side-file": W,
    # Converter readiness: information unless a converter is required (``--require``), then an error.
    "zero-to-fp32-not-ready": INFO,
    "zero-to-fp32-safetensors-not-ready": INFO,
    "ds-to-universal-not-ready": INFO,
}
"""Each code and the severity it is given (the readiness codes become errors when required)."""

GROUPS: Final[dict[str, tuple[str, ...]]] = {
    "security": ("ambiguous-file", "torchscript-archive", "unsupported-format", "code-execution", "unknown-global"),
    "converters": ("zero-to-fp32-not-ready", "zero-to-fp32-safetensors-not-ready", "ds-to-universal-not-ready"),
}
"""Names for codes that share a concern but no prefix: what docs/security.md treats, and converter readiness."""
