"""Produces lines of a generated file to a Kafka topic: line n (1-based) goes to partition
(n - 1) % PARTITIONS, so the k-th line of partition p is at offset k and the tests can map
every Kafka position back to its line.

Usage: produce.py --brokers HOST:PORT --topic T --file F --from-line A --to-line B [--partitions 4]
(produces lines A..B-1)
"""

import argparse
import sys

from confluent_kafka import Producer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--brokers", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--file", required=True)
    p.add_argument("--from-line", type=int, default=1)
    p.add_argument("--to-line", type=int, required=True)
    p.add_argument("--partitions", type=int, default=4)
    a = p.parse_args()

    errors = []
    producer = Producer({
        "bootstrap.servers": a.brokers,
        "linger.ms": 5,
        "batch.num.messages": 1000,
        "queue.buffering.max.messages": 1000000,
        # Exactly the lines given, in order per partition: no retries that could reorder.
        "max.in.flight.requests.per.connection": 1,
        "enable.idempotence": False,
    })

    def delivered(err, msg):
        if err is not None:
            errors.append(str(err))

    # tansu 0.6 answers a fetch from inside a record batch with the next batch. A consumer
    # resuming mid-batch then sees a later offset and Strata re-reads the partition; but if
    # no batch follows, nothing comes at all. So the last record of each partition goes in a
    # batch of its own, after the others: every resume point has a batch after it.
    lines = []
    with open(a.file, "rb") as f:
        for n, line in enumerate(f, start=1):
            if n < a.from_line:
                continue
            if n >= a.to_line:
                break
            lines.append((n, line.rstrip(b"\r\n")))
    last = {}
    for n, _ in lines:
        last[(n - 1) % a.partitions] = n
    tail = set(last.values())

    sent = 0

    def send(n, value):
        nonlocal sent
        while True:
            try:
                producer.produce(a.topic, value=value, partition=(n - 1) % a.partitions, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        sent += 1
        if sent % 10000 == 0:
            producer.poll(0)

    for n, value in lines:
        if n not in tail:
            send(n, value)
    producer.flush(60)
    for n, value in lines:
        if n in tail:
            send(n, value)
    remaining = producer.flush(60)
    if errors or remaining:
        print(f"produce failed: {remaining} not delivered, errors: {errors[:5]}", file=sys.stderr)
        sys.exit(1)
    print(f"produced lines {a.from_line}..{a.to_line - 1} ({sent} messages)")


if __name__ == "__main__":
    main()
