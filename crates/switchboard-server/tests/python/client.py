#!/usr/bin/env python3
"""A Switchboard gRPC client in Python, from stubs generated out of the project's .proto files.

It publishes COUNT CloudEvents to a topic in one unary batch, then opens the Consume stream on a
queue subscription with COUNT credits, receives every message, acks each batch of deliveries in
the same stream, and prints a JSON summary on stdout:

    {"published": 20, "duplicates": 0, "opened_credits": 20, "received": 20, "acked": 20,
     "ack_errors": [], "ids_match": true, "data_match": true, "max_attempt": 1}

Generate the stubs first (grpcio-tools from PyPI, no system protoc needed):

    python -m grpc_tools.protoc -I proto --python_out=STUBS --grpc_python_out=STUBS \
        switchboard/v1/switchboard.proto io/cloudevents/v1/cloudevents.proto
    python client.py --stubs STUBS --target 127.0.0.1:50051 --topic t --subscription s

The CloudEvents proto's package is `io.cloudevents.v1`, so protoc generates it as the Python
module `io.cloudevents.v1.cloudevents_pb2` — and Python's standard `io` module shadows that
name. `load_stubs` loads the generated module by path and registers it under that name
before the Switchboard stubs import it.
"""

import argparse
import importlib.util
import json
import os
import queue
import sys
import types


def load_stubs(stubs):
    """Makes the generated modules importable; returns (switchboard_pb2, switchboard_pb2_grpc,
    cloudevents_pb2)."""
    sys.path.insert(0, stubs)
    name = "io.cloudevents.v1.cloudevents_pb2"
    path = os.path.join(stubs, "io", "cloudevents", "v1", "cloudevents_pb2.py")
    spec = importlib.util.spec_from_file_location(name, path)
    cloudevents_pb2 = importlib.util.module_from_spec(spec)
    sys.modules[name] = cloudevents_pb2
    spec.loader.exec_module(cloudevents_pb2)
    package = types.ModuleType("io.cloudevents.v1")
    package.cloudevents_pb2 = cloudevents_pb2
    sys.modules["io.cloudevents.v1"] = package

    from switchboard.v1 import switchboard_pb2, switchboard_pb2_grpc

    return switchboard_pb2, switchboard_pb2_grpc, cloudevents_pb2


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stubs", required=True, help="directory of the generated stubs")
    parser.add_argument("--target", required=True, help="host:port of the gRPC listener")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--subscription", required=True)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--token", default=os.environ.get("SWITCHBOARD_TOKEN"))
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()

    pb, pb_grpc, ce = load_stubs(args.stubs)
    import grpc

    metadata = [("authorization", f"Bearer {args.token}")] if args.token else []
    with grpc.insecure_channel(args.target) as channel:
        stub = pb_grpc.SwitchboardStub(channel)

        # Publish: one unary batch of CloudEvents.
        Attr = ce.CloudEvent.CloudEventAttributeValue
        sent = {}
        events = []
        for i in range(args.count):
            event_id = f"py-{i}"
            body = json.dumps({"n": i, "lang": "python"})
            sent[event_id] = body
            events.append(
                ce.CloudEvent(
                    id=event_id,
                    source="/tests/python",
                    spec_version="1.0",
                    type="dev.switchboard.test.python",
                    attributes={
                        "datacontenttype": Attr(ce_string="application/json"),
                        "subject": Attr(ce_string=f"item-{i}"),
                        "partitionkey": Attr(ce_string=f"k{i % 3}"),
                    },
                    text_data=body,
                )
            )
        published = stub.Publish(
            pb.PublishRequest(topic=args.topic, events=events), metadata=metadata, timeout=args.timeout
        )

        # Consume: requests go through a queue that the stream reads from.
        requests = queue.Queue()

        def outgoing():
            while True:
                r = requests.get()
                if r is None:
                    return
                yield r

        requests.put(
            pb.ConsumeRequest(
                open=pb.ConsumeRequest.Open(
                    topic=args.topic, subscription=args.subscription, credits=args.count
                )
            )
        )
        responses = stub.Consume(outgoing(), metadata=metadata, timeout=args.timeout)
        opened_credits = None
        received = {}
        acked = 0
        ack_errors = []
        max_attempt = 0
        request_id = 0
        try:
            for resp in responses:
                kind = resp.WhichOneof("response")
                if kind == "opened":
                    opened_credits = resp.opened.credits
                elif kind == "deliveries":
                    receipts = []
                    for d in resp.deliveries.deliveries:
                        received[d.event.id] = d.event.text_data
                        max_attempt = max(max_attempt, d.attempt)
                        receipts.append(d.receipt)
                    request_id += 1
                    requests.put(
                        pb.ConsumeRequest(request_id=request_id, ack=pb.ConsumeRequest.Ack(receipts=receipts))
                    )
                elif kind == "settled":
                    for outcome in resp.settled.outcomes:
                        if outcome.HasField("error"):
                            ack_errors.append(
                                {"receipt": outcome.receipt, "code": outcome.error.code, "message": outcome.error.message}
                            )
                        else:
                            acked += 1
                    if acked + len(ack_errors) >= args.count:
                        break
        finally:
            requests.put(None)
            responses.cancel()

    print(
        json.dumps(
            {
                "published": len(published.receipts),
                "duplicates": sum(1 for r in published.receipts if r.duplicate),
                "opened_credits": opened_credits,
                "received": len(received),
                "acked": acked,
                "ack_errors": ack_errors,
                "ids_match": sorted(received) == sorted(sent),
                "data_match": all(received.get(k) == v for k, v in sent.items()),
                "max_attempt": max_attempt,
            }
        )
    )


if __name__ == "__main__":
    main()
