#!/usr/bin/env python3
"""test/worker_lock_race.py: the driver of test/t/worker_lock_order.sh
(Python standard library and psql only; no database driver needed).

  worker_lock_race.py barrier PSQL_ARGS_JSON STANDIN_URL ROUNDS FIRST_REG
  worker_lock_race.py race    PSQL_ARGS_JSON STANDIN_URL COUNT FIRST_REG

barrier: ROUNDS times, for one new payment of 12.34 (registration and user
FIRST_REG + i, as test/worker_lib.sh seeds them): session A begins and
locks the payment's row (as payment.handle_webhook does first); session B
queues the payment's confirmed create; once the outbox worker waits for a
lock (its answer came back and is being recorded), A applies the Stripe
stand-in's signed payment_intent.succeeded event of that payment with
payment.handle_webhook and commits; B waits for the request to be done.

race: COUNT payments of 56.78 created at once by payment.create while three
sessions deliver every payment_intent.succeeded event as soon as the
stand-in emits it.

Prints one JSON object: what happened (rounds, stuck, sqlstates of failed
deliveries, seconds).
"""
import json
import subprocess
import sys
import threading
import time
import urllib.request

MARK = "__pe_lock_race_mark__"


class Psql:
    """One psql session, driven statement by statement over a pipe."""

    def __init__(self, args, name):
        self.p = subprocess.Popen(args + ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=0",
                                          "-v", "VERBOSITY=sqlstate"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.q("SET application_name = '%s'" % name)

    def q(self, sql):
        self.p.stdin.write(sql.rstrip().rstrip(";") + ";\n\\echo " + MARK + "\n")
        self.p.stdin.flush()
        out = []
        while True:
            line = self.p.stdout.readline()
            if line == "":
                raise RuntimeError("psql ended")
            line = line.rstrip("\n")
            if line == MARK:
                return out
            out.append(line)

    def one(self, sql):
        out = self.q(sql)
        return out[0] if out else ""

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def errors(lines):
    """The SQLSTATEs of the error lines psql printed."""
    return [l.split("ERROR:", 1)[1].strip() for l in lines if "ERROR:" in l]


def poll(fn, timeout=60.0, every=0.005):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            return None
        time.sleep(every)


class Events:
    """The stand-in's payment_intent.succeeded events, by metadata[payment_id]."""

    def __init__(self, url):
        self.url, self.since, self.by_payment = url, 0, {}

    def fetch(self):
        with urllib.request.urlopen("%s/_test/events?type=payment_intent.succeeded&since=%d"
                                    % (self.url, self.since), timeout=30) as r:
            events = json.load(r)["events"]
        fresh = []
        for e in events:
            self.since = max(self.since, e["seq"])
            pid = json.loads(e["payload"])["data"]["object"].get("metadata", {}).get("payment_id")
            self.by_payment[pid] = e
            fresh.append(e)
        return fresh


def deliver_sql(e):
    tag = "$pe_payload_%d$" % e["seq"]
    return "SELECT payment.handle_webhook(%s%s%s, '%s')" % (tag, e["payload"], tag, e["signature"])


def reg(expr):
    """Registration number expr (an SQL integer expression), as seeded."""
    return "('30000000-0000-0000-0000-' || lpad((%s)::text, 12, '0'))::uuid" % expr


def user(expr):
    return "('10000000-0000-0000-0000-' || lpad((%s)::text, 12, '0'))::uuid" % expr


def barrier(args, url, rounds, first):
    a = Psql(args, "lock_race_webhook")
    b = Psql(args, "lock_race_control")
    ev = Events(url)
    res = {"rounds": rounds, "stuck": 0, "no_event": 0, "delivery_errors": [], "worker_waited": 0}
    t0 = time.monotonic()
    for i in range(rounds):
        pid = b.one("SELECT gen_random_uuid()")
        b.q('INSERT INTO "Payments" ("Id", "EventRegistrationId", "UserId", "AmountValue", "PaymentMethodType") '
            "VALUES ('%s', %s, %s, 12.34, 1)" % (pid, reg(first + i), user(first + i)))
        a.q("BEGIN")
        a.q("SELECT 1 FROM \"Payments\" WHERE \"Id\" = '%s' FOR NO KEY UPDATE" % pid)
        b.q("INSERT INTO payment.outbox (kind, payment_id, request, idempotency_key) "
            "VALUES ('payment_intent.create', '%s', jsonb_build_object('amount', '1234', 'currency', 'usd', "
            "'confirm', 'true', 'payment_method', 'pm_card_visa', 'automatic_payment_methods[enabled]', 'true', "
            "'automatic_payment_methods[allow_redirects]', 'never', 'metadata[payment_id]', '%s'), 'pe-%s-pi-1')"
            % (pid, pid, pid))
        # the answer came back and its recording waits for the payment
        if poll(lambda: b.one("SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                              "'payment_ext outbox worker' AND wait_event_type = 'Lock'") == "1"):
            res["worker_waited"] += 1
        else:
            res["stuck"] += 1
        e = poll(lambda: (ev.fetch(), ev.by_payment.get(pid))[1], every=0.02)
        if e is None:
            res["no_event"] += 1
        else:
            res["delivery_errors"] += errors(a.q(deliver_sql(e)))
        res["delivery_errors"] += errors(a.q("COMMIT"))
        if not poll(lambda: b.one("SELECT state FROM payment.outbox WHERE idempotency_key = 'pe-%s-pi-1'"
                                  % pid) == "done"):
            res["stuck"] += 1
    res["seconds"] = round(time.monotonic() - t0, 1)
    a.close()
    b.close()
    return res


def race(args, url, count, first):
    b = Psql(args, "lock_race_control")
    ev = Events(url)
    ev.fetch()                  # skip what came before
    stop = threading.Event()
    res = {"payments": count, "delivered": 0, "delivery_errors": []}
    lock = threading.Lock()

    def deliverer(slot):
        s = Psql(args, "lock_race_deliverer_%d" % slot)
        mine = Events(url)
        mine.since = ev.since
        while not stop.is_set():
            fresh = [e for e in mine.fetch() if e["seq"] % 3 == slot]
            for e in fresh:
                errs = errors(s.q(deliver_sql(e)))
                with lock:
                    res["delivered"] += 1
                    res["delivery_errors"] += errs
            if not fresh:
                time.sleep(0.01)
        s.close()

    threads = [threading.Thread(target=deliverer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    b.q("SELECT count(payment.create(%s, %s, 56.78, stripe_payment_method => 'pm_card_visa')) "
        "FROM generate_series(%d, %d) i" % (reg("i"), user("i"), first, first + count - 1))
    poll(lambda: b.one("SELECT count(*) FROM payment.webhook_events w JOIN \"Payments\" p ON p.\"Id\" = w.payment_id "
                       "WHERE w.type = 'payment_intent.succeeded' AND p.\"AmountValue\" = 56.78") == str(count)
             and b.one("SELECT count(*) FROM payment.outbox o JOIN \"Payments\" p ON p.\"Id\" = o.payment_id "
                       "WHERE o.state = 'done' AND p.\"AmountValue\" = 56.78") == str(count),
             timeout=300, every=0.1)
    res["seconds"] = round(time.monotonic() - t0, 1)
    stop.set()
    for t in threads:
        t.join()
    b.close()
    return res


def main(argv):
    mode, args, url, n, first = argv[0], json.loads(argv[1]), argv[2], int(argv[3]), int(argv[4])
    print(json.dumps(barrier(args, url, n, first) if mode == "barrier" else race(args, url, n, first)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
