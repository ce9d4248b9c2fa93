"""An exec child for the tests: nacks every multiple of 5 on its first attempt,
crashes once (without acking) when it first sees message 17, acks the rest.
Each ack is recorded in LOG as '<number> <attempt>'."""
import json
import os
import sys

log_path, marker = sys.argv[1], sys.argv[2]
with open(log_path, "a") as log:
    for line in sys.stdin:
        delivery = json.loads(line)
        number = int(delivery["body"])
        if number == 17 and not os.path.exists(marker):
            open(marker, "w").close()
            print("crashing on purpose", file=sys.stderr, flush=True)
            os._exit(3)
        if number % 5 == 0 and delivery["attempt"] == 1:
            print(json.dumps({"nack": delivery["id"], "delayMs": 10}), flush=True)
            continue
        log.write(f"{number} {delivery['attempt']}\n")
        log.flush()
        print(json.dumps({"ack": delivery["id"]}), flush=True)
        print("garbage that is not json", flush=True) if number == 3 else None
