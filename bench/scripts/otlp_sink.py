"""A minimal OTLP/gRPC trace receiver for measuring authd's cost of exporting spans.

Accepts every ExportTraceServiceRequest on 127.0.0.1:<port> (default 4317), counts the
spans, and prints the count each 5 s, so a benchmark run with
AUTHD_OTLP_ENDPOINT=http://127.0.0.1:4317 exports to a real receiver rather than to a
closed port. Needs `pip install grpcio opentelemetry-proto`.
"""

import sys
import threading
import time
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Sink(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self):
        self.spans = 0
        self.lock = threading.Lock()

    def Export(self, request, context):
        count = sum(
            len(scope.spans)
            for resource in request.resource_spans
            for scope in resource.scope_spans
        )
        with self.lock:
            self.spans += count
        return trace_service_pb2.ExportTraceServiceResponse()


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 4317
    sink = Sink()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"otlp sink on 127.0.0.1:{port}", flush=True)
    while True:
        time.sleep(5)
        print(f"spans received: {sink.spans}", flush=True)


if __name__ == "__main__":
    main()
