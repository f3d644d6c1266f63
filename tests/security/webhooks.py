"""Standard Webhooks, GitHub and generic HMAC peers for tests/security.rs, on the official
`standardwebhooks` library and Python's own hmac module (nothing of fanout's).

Usage:
  webhooks.py receiver SECRET   a target on http.server that listens on an ephemeral port of
                                127.0.0.1, names it on its first stdout line ({"port": N}),
                                answers every POST 200 (but the first to each path that starts
                                with /flaky: 503) and writes one JSON line per request: whether
                                the library verified it with SECRET, its headers and status.
  webhooks.py sign SECRET ID TIMESTAMP    the library's webhook-signature of stdin's bytes.
  webhooks.py hmac SECRET hex|base64      HMAC-SHA256 of stdin's bytes with SECRET's bytes.
"""
import base64
import datetime
import hashlib
import hmac
import http.server
import json
import sys
import threading

import standardwebhooks


def receiver(secret):
    webhook = standardwebhooks.Webhook(secret)
    lock = threading.Lock()
    seen = set()

    class Receiver(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {name.lower(): value for name, value in self.headers.items()}
            try:
                webhook.verify(body, headers, json_parse=False)
                verified, error = True, None
            except Exception as e:  # the library's verdict, whatever it is
                verified, error = False, str(e)
            with lock:
                status = 503 if self.path.startswith("/flaky") and self.path not in seen else 200
                seen.add(self.path)
            record = {
                "path": self.path,
                "status": status,
                "verified": verified,
                "error": error,
                "headers": headers,
                "body": body.decode("utf-8", "replace"),
            }
            with lock:
                sys.stdout.write(json.dumps(record) + "\n")
                sys.stdout.flush()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024

    server = Server(("127.0.0.1", 0), Receiver)
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()


def main():
    command = sys.argv[1]
    if command == "receiver":
        receiver(sys.argv[2])
    elif command == "sign":
        secret, msg_id, timestamp = sys.argv[2], sys.argv[3], int(sys.argv[4])
        when = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
        body = sys.stdin.buffer.read()
        print(standardwebhooks.Webhook(secret).sign(msg_id, when, body))
    elif command == "hmac":
        secret, encoding = sys.argv[2].encode(), sys.argv[3]
        digest = hmac.new(secret, sys.stdin.buffer.read(), hashlib.sha256).digest()
        print(digest.hex() if encoding == "hex" else base64.b64encode(digest).decode())
    else:
        sys.exit("unknown command " + command)


main()
