"""Real-time recency on Apache Kafka, from a client's side: round after round, one event of a
country of its own is produced and made readable, and at once, with no wait, one query must
count it with every earlier one. A plain event is readable once acknowledged (acks=all); one
committed in a transaction once its partition's last stable offset has passed it: Kafka
writes the commit's markers after commit_transaction returns, so the script waits for that
(asking Kafka, as a read_committed consumer does), not for Strata. The marker then ends the
partition.

Usage: recency.py --endpoint grpc://host:port --brokers host:port --topic T --rounds N
Prints "recency: N rounds, every event counted by the first query after its acknowledgement".
"""

import argparse
import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition

from flight_clients import PyArrowFlightSql


def event(country, k):
    return json.dumps({"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "user_id": f"recency-{k}",
                       "country": country, "url": "/recency", "device": "recency", "latency_ms": k}).encode()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    client = PyArrowFlightSql(args.endpoint)
    plain = Producer({"bootstrap.servers": args.brokers, "linger.ms": 0, "acks": "all"})
    transactional = Producer({"bootstrap.servers": args.brokers, "linger.ms": 0,
                              "transactional.id": "strata-recency-check"})
    transactional.init_transactions(30)
    # Asks for the last stable offsets, as Strata's read_committed consumer does.
    stable = Consumer({"bootstrap.servers": args.brokers, "group.id": "strata-recency-check",
                       "isolation.level": "read_committed", "enable.auto.commit": False})
    landed = {}

    def delivered(err, msg):
        if err is None:
            landed["at"] = (msg.partition(), msg.offset())
    country = f"RECENCY-{int(time.time() * 1000)}"
    sql = f"SELECT coalesce(sum(views), 0) AS n FROM page_stats WHERE country = '{country}'"
    failures = []
    for k in range(args.rounds):
        # Each round to another partition of the topic's, by key.
        key = f"recency-{k}".encode()
        if k % 2 == 0:
            plain.produce(args.topic, key=key, value=event(country, k))
            if plain.flush(30) != 0:
                sys.exit(f"round {k}: the event was not acknowledged within 30 s")
        else:
            transactional.begin_transaction()
            transactional.produce(args.topic, key=key, value=event(country, k), on_delivery=delivered)
            transactional.commit_transaction(30)
            partition, offset = landed.pop("at")
            deadline = time.monotonic() + 30
            while stable.offsets_for_times([TopicPartition(args.topic, partition, -1)], 10)[0].offset <= offset:
                if time.monotonic() > deadline:
                    sys.exit(f"round {k}: the commit's marker was not written within 30 s")
                time.sleep(0.001)
        counted = client.query(sql).to_pylist()[0]["n"]
        if counted != k + 1:
            failures.append(f"round {k} ({'plain' if k % 2 == 0 else 'transactional'}): "
                            f"the first query counted {counted} of {k + 1}")
    stable.close()
    if failures:
        sys.exit("\n".join(failures))
    print(f"recency: {args.rounds} rounds, every event counted by the first query after its acknowledgement")


if __name__ == "__main__":
    main()
