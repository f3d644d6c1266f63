"""gRPC through a balance route, with the official Python library (grpcio) on both ends.

    python3 grpc_echo.py serve NAME          a server of service action.Processor on a free
                                             port (prints `PORT <n>`), h2c
    python3 grpc_echo.py call HOST:PORT      calls every kind of method there and prints one
                                             JSON object with what came back
    python3 grpc_echo.py unavailable HOST:PORT  one call expected to fail: [code, details]

Methods (bytes in, bytes out, no .proto needed):
  Echo   unary: NAME:request, trailing metadata x-served-by: NAME
  Fail   unary: fails with INVALID_ARGUMENT "bad input: 100%"
  Repeat server streaming: NAME:request three times
  Count  client streaming: the number of messages as text
  Chat   bidirectional: NAME:message for each message, as each arrives
"""
import json
import sys
from concurrent import futures

import grpc

SERVICE = "action.Processor"


def serve(name):
    def echo(request, context):
        context.set_trailing_metadata((("x-served-by", name),))
        return name.encode() + b":" + request

    def fail(request, context):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad input: 100%")

    def repeat(request, context):
        for _ in range(3):
            yield name.encode() + b":" + request

    def count(requests, context):
        return str(sum(1 for _ in requests)).encode()

    def chat(requests, context):
        context.set_trailing_metadata((("x-served-by", name),))
        for message in requests:
            yield name.encode() + b":" + message

    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Repeat": grpc.unary_stream_rpc_method_handler(repeat),
        "Count": grpc.stream_unary_rpc_method_handler(count),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"PORT {port}", flush=True)
    server.wait_for_termination()


def call(target):
    out = {}
    metadata = (("x-action", "echo"),)
    with grpc.insecure_channel(target) as channel:
        method = lambda kind, name: getattr(channel, kind)(f"/{SERVICE}/{name}")
        reply, state = method("unary_unary", "Echo").with_call(b"hi", metadata=metadata, timeout=10)
        out["echo"] = reply.decode()
        out["echo_trailers"] = dict(state.trailing_metadata())
        try:
            method("unary_unary", "Fail")(b"x", metadata=metadata, timeout=10)
            out["fail"] = None
        except grpc.RpcError as error:
            out["fail"] = [error.code().name, error.details()]
        out["repeat"] = [r.decode() for r in method("unary_stream", "Repeat")(b"r", metadata=metadata, timeout=10)]
        out["count"] = method("stream_unary", "Count")(iter([b"a", b"b", b"c", b"d"]), metadata=metadata, timeout=10).decode()
        chat = method("stream_stream", "Chat")(iter([b"one", b"two", b"three"]), metadata=metadata, timeout=10)
        out["chat"] = [r.decode() for r in chat]
        out["chat_trailers"] = dict(chat.trailing_metadata())
        other = method("unary_unary", "Echo")(b"hi", metadata=(("x-action", "other"),), timeout=10)
        out["other"] = other.decode()
        try:
            method("unary_unary", "Echo")(b"hi", metadata=(("x-action", "nobody"),), timeout=10)
            out["unrouted"] = None
        except grpc.RpcError as error:
            out["unrouted"] = [error.code().name, error.details()]
    print(json.dumps(out), flush=True)


def unavailable(target):
    """One unary call that fanout cannot serve: its status and details."""
    with grpc.insecure_channel(target) as channel:
        try:
            channel.unary_unary(f"/{SERVICE}/Echo")(b"hi", metadata=(("x-action", "echo"),), timeout=10)
            print(json.dumps(None), flush=True)
        except grpc.RpcError as error:
            print(json.dumps([error.code().name, error.details()]), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    elif sys.argv[1] == "unavailable":
        unavailable(sys.argv[2])
    else:
        call(sys.argv[2])
