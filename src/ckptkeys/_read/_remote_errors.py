"""What a store's failures mean to the user: one line naming the URL, and what to fix.

The remote byte source (``_source``) hands every exception the filesystem raised, after its own
retries, to :func:`remote_error`, and every answer it refuses (:class:`Refused`: a GET answered
with other bytes than the range asked of the version pinned) says its reason in the same words.
Errors are told by class name and HTTP status: botocore, gcsfs and huggingface_hub are not imported.
"""

from __future__ import annotations

import errno

from ._errors import ReadError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

__all__ = ["CHANGED", "Refused", "remote_error"]

CHANGED: Final = "changed while being read"


class Refused(Exception):
    """A ranged GET answered with other bytes than the range asked of the object pinned: its
    message is the reason a :class:`ReadError` gives (:func:`remote_error`)."""


def remote_error(url: str, error: BaseException, fs: Any = None) -> ReadError:
    """One line naming the URL, for whatever the filesystem ``fs`` raised after its own retries: what
    went wrong, and what the user must fix (credentials, access, the name, the network)."""
    if isinstance(error, ReadError):
        return error
    if isinstance(error, Refused):
        return ReadError(url, str(error))
    text = " ".join(str(error).split()) or type(error).__name__
    kind = {cls.__name__ for cls in type(error).__mro__}
    status = _status(error)
    if _precondition_failed(error) or "pre-condition" in text.lower() or "412" in text.split(":")[0] or status == 412:
        return ReadError(url, f"{CHANGED}: the store no longer holds the version first seen ({text:.200})")
    if kind & _NO_CREDENTIALS or status == 401:
        return ReadError(url, f"cannot be read: no credentials: {_credentials_hint(url)} ({text:.200})")
    if isinstance(error, FileNotFoundError) or kind & _NOT_FOUND or status == 404:
        return ReadError(url, f"does not exist ({text:.200})")
    if isinstance(error, PermissionError) or kind & _DENIED or status == 403 or text.startswith("Forbidden"):
        return ReadError(url, f"cannot be read: access denied: the credentials in use may not read it ({text:.200})")
    if (isinstance(error, OSError) and error.errno == errno.EBUSY) or status in (429, 503):
        # s3fs's SlowDown / 503, retried already
        return ReadError(url, f"cannot be read: the store is throttling requests, still after retries ({text:.200})")
    if isinstance(error, TimeoutError) or any("Timeout" in name for name in kind):
        waited = _timeout(error, fs)
        after = f" after {waited:g} s" if waited is not None else ""
        return ReadError(
            url,
            f"cannot be read: timed out{after}, still after retries: the store did not answer (a slow "
            f"network or endpoint: raise read_timeout/connect_timeout in storage_options config_kwargs) "
            f"({text:.200})",
        )
    if isinstance(error, ConnectionError) or kind & _UNREACHABLE:
        return ReadError(
            url, f"cannot be read: cannot connect to the store: check endpoint_url and the network ({text:.200})"
        )
    return ReadError(url, f"cannot be read: {text:.300}")


# Errors by class name (botocore, gcsfs, huggingface_hub are not imported to tell them).
_NO_CREDENTIALS: Final = frozenset({"NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError"})
_NOT_FOUND: Final = frozenset(
    {"NoSuchBucket", "RepositoryNotFoundError", "RevisionNotFoundError", "EntryNotFoundError"}
)
_DENIED: Final = frozenset({"GatedRepoError", "DisabledRepoError"})
_UNREACHABLE: Final = frozenset({"EndpointConnectionError", "ClientConnectorError", "ConnectionError"})
# botocore waits 60 s for a connection and for each read unless config_kwargs say otherwise.
_BOTOCORE_TIMEOUT: Final = 60.0


def _status(error: BaseException) -> int | None:
    """The HTTP status an error carries: gcsfs's ``HttpError.code``, an HTTP error's response."""
    code = getattr(error, "code", None)
    if isinstance(code, int) and 100 <= code < 600:
        return code
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _timeout(error: BaseException, fs: Any) -> float | None:
    """How long the client waited before it gave up, where the filesystem says (s3fs: botocore's
    ``read_timeout``/``connect_timeout`` of ``config_kwargs``, 60 s by default)."""
    config = getattr(fs, "config_kwargs", None)
    if not isinstance(config, dict):
        return None
    name = "connect_timeout" if "Connect" in type(error).__name__ else "read_timeout"
    value = config.get(name, _BOTOCORE_TIMEOUT)
    return float(value) if isinstance(value, (int, float)) else None


def _credentials_hint(url: str) -> str:
    """What gives the store of ``url`` credentials."""
    scheme = url.partition("://")[0].lower()
    if scheme in ("s3", "s3a"):
        return (
            "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) or pass storage_options key/secret "
            "(anon=true for a public bucket)"
        )
    if scheme in ("gs", "gcs"):
        return "set GOOGLE_APPLICATION_CREDENTIALS or pass storage_options token (token='anon' for a public bucket)"
    if scheme == "hf":
        return "set HF_TOKEN (or run hf auth login) or pass storage_options token"
    return "pass them in storage_options"


def _precondition_failed(error: BaseException) -> bool:
    """Whether the store answered ``412`` (the pinned ``If-Match``/version no longer holds): told by the
    botocore response s3fs's error is caused by, whatever the store's message says."""
    seen: BaseException | None = error
    for _ in range(8):  # the chain of causes, not followed forever
        if seen is None:
            break
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "PreconditionFailed" or status == 412:
                return True
        if "PreconditionFailed" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
