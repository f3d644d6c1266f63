"""An interop target on Python's http.server (HTTP/1.1 keep-alive, one thread per connection).

It listens on an ephemeral port of 127.0.0.1, names it on the first stdout line, then writes
every request received as one JSON line on stdout (headers as the application saw them, the
body in hex, read by its Content-Length as a typical handler does) and answers 200.
"""
import http.server
import json
import sys
import threading

lock = threading.Lock()


class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        record = {
            "port": self.server.server_address[1],
            "version": self.request_version,
            "method": self.command,
            "target": self.path,
            "headers": [[name, value] for name, value in self.headers.items()],
            "body_hex": body.hex(),
        }
        with lock:
            sys.stdout.write(json.dumps(record) + "\n")
            sys.stdout.flush()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, format, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
print(json.dumps({"listening": {"h1": server.server_address[1]}}), flush=True)
server.serve_forever()
