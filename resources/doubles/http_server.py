"""The one HTTP skeleton of the stdlib test doubles: a threaded server on a free 127.0.0.1 port whose
subclass answers each request from its JSON body."""

from __future__ import annotations

import abc
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port() -> int:
    """A port free on 127.0.0.1 now (for a server started in another process)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that gave up (a timeout test, a killed client) leaves a broken pipe: the test's point


class ScriptedHTTPServer(abc.ABC):
    """Serves `respond(method, path, body, headers) -> (status, answer)` from the moment it is built;
    `answer` is sent as JSON, or verbatim when it is a string. A context manager; `close()` stops it."""

    def __init__(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self._send(*outer.respond("POST", self.path, body, self.headers))

            def do_GET(self) -> None:
                self._send(*outer.respond("GET", self.path, None, self.headers))

            def _send(self, status: int, answer: dict | str) -> None:
                data = (answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on this request

            def log_message(self, *args) -> None:  # keep test output clean
                return

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @abc.abstractmethod
    def respond(self, method: str, path: str, body: dict | None, headers) -> tuple[int, dict | str]:
        """(HTTP status, answer) for one request; `body` is None for a GET."""

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
