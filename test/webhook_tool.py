#!/usr/bin/env python3
"""test/webhook_tool.py: Stripe webhook deliveries for the tests, the demo
and bench/webhooks.sh (Python standard library only).

  webhook_tool.py event ID TYPE OBJECT_JSON [--created T] [--pad BYTES] > FILE
      an event as Stripe sends it (pretty-printed, like the stand-in's);
      --pad adds a metadata value of that many bytes
  webhook_tool.py sign FILE T SECRET [SECRET...]
      a Stripe-Signature header "t=T,v1=..." with one v1 per secret over
      "T." + the file's bytes; T may be "now", "now-301", "now+301"
"""
import hashlib
import hmac
import json
import sys
import time


def when(spec):
    if spec.startswith("now"):
        rest = spec[3:]
        return int(time.time()) + (int(rest) if rest else 0)
    return int(spec)


def main(argv):
    if len(argv) >= 4 and argv[0] == "event":
        ev_id, ev_type, obj = argv[1], argv[2], json.loads(argv[3])
        created, pad = int(time.time()), 0
        rest = argv[4:]
        while rest:
            if rest[0] == "--created":
                created = when(rest[1])
            elif rest[0] == "--pad":
                pad = int(rest[1])
            else:
                raise SystemExit("unknown option " + rest[0])
            rest = rest[2:]
        if pad:
            obj.setdefault("metadata", {})["padding"] = "x" * pad
        ev = {"id": ev_id, "object": "event", "api_version": "2023-08-16", "created": created,
              "data": {"object": obj}, "livemode": False, "pending_webhooks": 1,
              "request": {"id": None, "idempotency_key": None}, "type": ev_type}
        sys.stdout.write(json.dumps(ev, indent=2))
        return 0
    if len(argv) >= 4 and argv[0] == "sign":
        with open(argv[1], "rb") as f:
            payload = f.read()
        t = when(argv[2])
        sigs = ["v1=" + hmac.new(s.encode(), b"%d." % t + payload, hashlib.sha256).hexdigest()
                for s in argv[3:]]
        sys.stdout.write("t=%d,%s" % (t, ",".join(sigs)))
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
