"""A target for tests/durable_ops.rs on Python's http.server (HTTP/1.1 keep-alive, a thread per
connection).

Usage: receiver.py STATUS. It listens on an ephemeral port of 127.0.0.1 and names it on the
first stdout line ({"port": N}), then answers every POST with STATUS and writes what it got as
one JSON line on stdout: path, the fanout-event-id and content-type headers, the body (UTF-8,
undecodable bytes replaced) and the status it answered. `POST /control?status=N` changes the
status from then on; it is answered 204 and not recorded.
"""
import http.server
import json
import sys
import threading
import urllib.parse

lock = threading.Lock()
status = int(sys.argv[1])


class Receiver(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        global status
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/control":
            with lock:
                status = int(urllib.parse.parse_qs(url.query)["status"][0])
            self.answer(204)
            return
        with lock:
            answered = status
            record = {
                "path": url.path,
                "id": self.headers.get("fanout-event-id"),
                "content_type": self.headers.get("content-type"),
                "body": body.decode("utf-8", "replace"),
                "status": answered,
            }
            sys.stdout.write(json.dumps(record) + "\n")
            sys.stdout.flush()
        self.answer(answered)

    def answer(self, code):
        self.send_response(code)
        if code != 204:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
        self.end_headers()
        if code != 204:
            self.wfile.write(b"{}")

    def log_message(self, format, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True


server = Server(("127.0.0.1", 0), Receiver)
print(json.dumps({"port": server.server_address[1]}), flush=True)
server.serve_forever()
