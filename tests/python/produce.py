"""Produces lines of a generated file to a Kafka topic and records where each one landed.

Lines go to the topic keyed (the event's user_id, or the line number for a record that has
none, and Kafka's hash partitioning places them) or, with --partitions P, line n to partition
(n - 1) % P. Every delivered line is appended to the positions file as a JSON line
[line, partition, offset], so the tests map every Kafka position back to its line whatever
the partitioning, transaction markers or aborted records did to the offsets.

With --transactional ID the lines are produced in transactions of --txn-lines lines; after
each committed transaction comes an aborted one holding copies of its lines (delivered to
the log, then aborted): a consumer reading read_committed must skip them and the gaps their
markers leave.

Usage: produce.py --brokers HOST:PORT --topic T --file F --from-line A --to-line B
                  --positions OUT [--partitions P] [--transactional ID [--txn-lines N]]
(produces lines A..B-1)
"""

import argparse
import json
import sys

from confluent_kafka import Producer


def key_of(n, value):
    try:
        user = json.loads(value).get("user_id")
    except (ValueError, AttributeError):
        user = None
    return str(user).encode() if user is not None else f"line-{n}".encode()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--brokers", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--file", required=True)
    p.add_argument("--from-line", type=int, default=1)
    p.add_argument("--to-line", type=int, required=True)
    p.add_argument("--positions", required=True)
    p.add_argument("--partitions", type=int, help="line n to partition (n - 1) % P instead of keyed")
    p.add_argument("--transactional", help="a transactional.id: produce in transactions, each followed by an aborted one")
    p.add_argument("--txn-lines", type=int, default=500)
    a = p.parse_args()

    errors = []
    settings = {
        "bootstrap.servers": a.brokers,
        "linger.ms": 5,
        "batch.num.messages": 1000,
        "queue.buffering.max.messages": 1000000,
    }
    if a.transactional:
        settings["transactional.id"] = a.transactional
    producer = Producer(settings)
    if a.transactional:
        producer.init_transactions(30)

    positions = []

    def delivered(n):
        def report(err, msg):
            if err is not None:
                errors.append(str(err))
            elif n is not None:
                positions.append((n, msg.partition(), msg.offset()))
        return report

    def send(n, value, record):
        kwargs = {"partition": (n - 1) % a.partitions} if a.partitions else {"key": key_of(n, value)}
        while True:
            try:
                producer.produce(a.topic, value=value, on_delivery=delivered(n if record else None), **kwargs)
                return
            except BufferError:
                producer.poll(0.1)

    lines = []
    with open(a.file, "rb") as f:
        for n, line in enumerate(f, start=1):
            if n < a.from_line:
                continue
            if n >= a.to_line:
                break
            lines.append((n, line.rstrip(b"\r\n")))

    if a.transactional:
        for i in range(0, len(lines), a.txn_lines):
            chunk = lines[i:i + a.txn_lines]
            producer.begin_transaction()
            for n, value in chunk:
                send(n, value, True)
            producer.commit_transaction(60)
            # The same lines again, in the log but aborted: never to be counted.
            producer.begin_transaction()
            for n, value in chunk:
                send(n, value, False)
            producer.flush(60)
            producer.abort_transaction(60)
    else:
        for k, (n, value) in enumerate(lines):
            send(n, value, True)
            if k % 10000 == 0:
                producer.poll(0)
    remaining = producer.flush(60)
    if errors or remaining or len(positions) != len(lines):
        print(f"produce failed: {remaining} not delivered, {len(positions)} of {len(lines)} reported, errors: {errors[:5]}",
              file=sys.stderr)
        sys.exit(1)
    with open(a.positions, "a") as out:
        for n, partition, offset in sorted(positions):
            out.write(json.dumps([n, partition, offset]) + "\n")
    print(f"produced lines {a.from_line}..{a.to_line - 1} ({len(lines)} messages"
          f"{', in transactions' if a.transactional else ''})")


if __name__ == "__main__":
    main()
