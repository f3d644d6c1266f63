"""A backend for the balance tests: Python's own HTTP/1.1 server, keep-alive on.

    python3 worker.py NAME PORT      (PORT 0: any free port)

Prints `PORT <n>` once listening. Paths (the verbs may follow any prefix: `/big/upload`):
  GET  /healthz            200, or 503 while sick
  POST /control/sick       the health checks fail from now on; /control/well undoes it
  ANY  .../status/<code>   answers <code> with a JSON body naming the worker
  ANY  .../slow/<ms>       waits <ms> ms, then echoes
  GET  .../download/<n>    streams <n> zero bytes in 64 KiB chunks (Content-Length set)
  POST .../upload          reads the body as it comes (Content-Length or chunked) and answers
                           {"worker", "bytes"}
  ANY  anything else       echoes {"worker", "method", "path", "len", "headers"}
"""
import http.server
import json
import sys
import threading
import time

name, port = sys.argv[1], int(sys.argv[2])
sick = threading.Event()
CHUNK = b"\0" * 65536


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, payload):
        out = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def read_body(self):
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return total
                left = size
                while left:
                    left -= len(self.rfile.read(min(left, 65536)))
                self.rfile.readline()
                total += size
        left = int(self.headers.get("content-length") or 0)
        total = 0
        while left:
            got = len(self.rfile.read(min(left, 65536)))
            if got == 0:
                break
            left -= got
            total += got
        return total

    def handle_any(self):
        path = self.path.split("?")[0]
        if path == "/healthz":
            self.read_body()
            return self.answer(503 if sick.is_set() else 200, {"worker": name})
        if path == "/control/sick":
            self.read_body()
            sick.set()
            return self.answer(200, {"worker": name})
        if path == "/control/well":
            self.read_body()
            sick.clear()
            return self.answer(200, {"worker": name})
        parts = path.strip("/").split("/")
        verb, arg = (parts[-2], parts[-1]) if len(parts) >= 2 else ("", "")
        if verb == "status":
            self.read_body()
            return self.answer(int(arg), {"worker": name})
        if verb == "download":
            self.read_body()
            left = int(arg)
            self.send_response(200)
            self.send_header("content-type", "application/octet-stream")
            self.send_header("content-length", str(left))
            self.send_header("x-worker", name)
            self.end_headers()
            while left:
                piece = CHUNK[: min(left, len(CHUNK))]
                self.wfile.write(piece)
                left -= len(piece)
            return None
        if parts[-1] == "upload":
            return self.answer(200, {"worker": name, "bytes": self.read_body()})
        if verb == "slow":
            time.sleep(int(arg) / 1000)
        length = self.read_body()
        return self.answer(
            200,
            {
                "worker": name,
                "method": self.command,
                "path": self.path,
                "len": length,
                "headers": {k.lower(): v for k, v in self.headers.items()},
            },
        )

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
server.daemon_threads = True
print(f"PORT {server.server_address[1]}", flush=True)
server.serve_forever()
