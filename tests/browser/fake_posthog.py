"""A PostHog stand-in on 127.0.0.1 for the consent tests: a real HTTP server that answers
every request with `{}` and records its method and path, so a test can prove that no
request reached analytics before consent or after a decline."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakePostHog:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                recorder.requests.append((self.command, self.path))
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("access-control-allow-origin", self.headers.get("origin") or "*")
                self.send_header("access-control-allow-credentials", "true")
                self.send_header("access-control-allow-headers", "content-type")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = do_OPTIONS = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
