#!/usr/bin/env python3
"""Local S3-compatible server for Apiary's tests.

Runs moto's S3 emulation (pinned moto[server]==5.2.5, installed by
scripts/s3-test-server) with every request serialized behind one
process-wide lock. moto checks "does the key exist?" and then writes it
without any lock in between, so concurrent conditional PUTs
(`If-None-Match: *`, `If-Match: <etag>`) could otherwise both succeed.
Holding the lock for the whole request -- including producing the complete
response body -- makes those checks atomic, as they are on real S3.

Data lives in memory only. Usage:

    python s3_test_server.py [--port 0] [--port-file PATH]
"""

import argparse
import logging
import os
import sys
import threading

# Internal moto modules: the reason moto's version is pinned.
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server


class SerializedApp:
    """WSGI middleware: one request at a time, body fully materialized."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        captured = {}
        chunks = []

        def capture_start_response(status, headers, exc_info=None):
            captured["args"] = (status, headers, exc_info)
            return chunks.append  # legacy write() callable: buffer too

        with self.lock:
            result = self.app(environ, capture_start_response)
            try:
                # Iterating may run lazy application code (and may be what
                # calls start_response), so it must happen under the lock.
                chunks.extend(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()

        status, headers, exc_info = captured["args"]
        start_response(status, headers, exc_info)
        return [b"".join(chunks)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, default=0, help="0 picks a free port (default)"
    )
    parser.add_argument("--port-file", help="write the bound port to this file")
    parser.add_argument(
        "--log-requests", action="store_true", help="log every request"
    )
    args = parser.parse_args()

    # Quiet: werkzeug logs one INFO line per request (and forces its logger
    # to INFO unless a level is set explicitly); keep warnings and errors.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("werkzeug").setLevel(
        logging.INFO if args.log_requests else logging.WARNING
    )

    app = SerializedApp(DomainDispatcherApplication(create_backend_app))
    # make_server is what werkzeug's run_simple uses underneath; calling it
    # directly binds the socket (port 0 -> the kernel picks a free port) and
    # lets us read the real port back before serving, with no window in
    # which another process could grab it.
    server = make_server(
        args.host,
        args.port,
        app,
        threaded=True,
        request_handler=MotoRequestHandler,
    )
    port = server.socket.getsockname()[1]

    if args.port_file:
        tmp = f"{args.port_file}.tmp.{os.getpid()}"
        with open(tmp, "w", encoding="ascii") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)  # readers never see a partial file
    print(f"s3 test server (moto) on http://{args.host}:{port}", flush=True)

    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
