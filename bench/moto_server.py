"""moto's S3 server for the remote benchmarks (``bench_remote*.py``): fake credentials, and the
server on 127.0.0.1 behind a WSGI wrapper that counts what it answers. The tests have their own
(``tests/remote_support.py``), one per test session.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

W = TypeVar("W")

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_CONFIG_FILE": os.devnull,
}
"""Fake credentials, and no credentials or config file of the user's read."""


def start(wrap: Callable[[Any], W]) -> tuple[Any, W, str]:
    """The credentials set in this process, then moto's server started with its WSGI app wrapped by
    ``wrap``: the server (``stop()`` it), the wrapper and the endpoint URL."""
    from moto.server import ThreadedMotoServer

    os.environ.update(CREDENTIALS)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    wrapped = wrap(server._server.app)
    server._server.app = wrapped
    host, port = server.get_host_and_port()
    return server, wrapped, f"http://{host}:{port}"
