#!/usr/bin/env python3
"""Model-based test of the money flow (issue 17, "Beyond the defects").

Driven by test/t/money_model.sh, which starts the Stripe stand-in and a
cluster of its own (test/worker_lib.sh) and prints the first TAP line; this
program prints the rest.  For each seed (PE_MODEL_SEED: one or more numbers,
space or comma separated) it runs for its share of PE_MODEL_S seconds a
random sequence of steps chosen by random.Random(seed):

  payment.create (cards that succeed, decline, need 3-D Secure, or no card),
  payment.retry, payment.refund (partial, full, too much), payment.resolve
  (an administrator: Pending -> Failed, or -> Completed when the ledger shows
  the charge), webhook deliveries of the stand-in's real events (signed now,
  duplicated, reordered, held back, lost), the customer finishing or failing
  3-D Secure, stand-in faults (500/503/429, lost answers, timeouts, outages,
  declines, refunds pending or failed) and immediate server restarts.

After each step the invariants that hold at every moment are checked (the
ledger never refunds more than a charge, per charge and per payment; a
payment's refunds never exceed its amount; every audit chain verifies).
Every few steps the faults are cleared and the system is left to settle
(polled, with a generous deadline), and then everything is checked against
the stand-in's ledger, the judge:

  - per registration at most one charge that is not fully refunded;
  - every charge in the ledger is known to the database (its payment exists
    and its PaymentIntent is in payment.stripe_refs);
  - refunds never exceed charges, per charge and per payment;
  - payment.verify_audit() is true;
  - payment.reconcile is empty, and no payment or refund disagrees with the
    ledger.

The choices are a function of the seed and of what the system shows when
they are made, so a replay of a seed (PE_MODEL_SEED=N) makes the same kind
of run; the worker's timing can differ between runs.
"""

import hashlib
import hmac
import json
import os
import random
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

WORK = os.environ["PE_WORK"]
BIN = os.environ["PE_BIN"]
C = os.environ["MODEL_CLUSTER"]
URL = os.environ["W_URL"]
SOCK = os.path.join(WORK, C + ".sock")
DATA = os.path.join(WORK, C)
with open(os.path.join(WORK, C + ".whsec")) as f:
    WHSEC = f.readline().strip()
with open(os.path.join(WORK, C + ".stripe_key")) as f:
    STRIPE_KEY = f.readline().strip()
NREG = int(os.environ.get("MODEL_NREG", "12"))
ADMIN = "10000000-0000-0000-0000-%012d" % (NREG + 1)
BUDGET = float(os.environ.get("PE_MODEL_S", "300"))
SEEDS = [int(s) for s in re.split(r"[\s,]+", os.environ.get("PE_MODEL_SEED", "").strip()) if s] or [20261206]
FIRST = int(os.environ.get("MODEL_FIRST_TEST", "2"))
SETTLE_S = float(os.environ.get("MODEL_SETTLE_S", "240"))

EXPECTED = {
    # what each call may answer besides success, as doc/sql-reference.md documents
    "create": {"23505"},            # the registration has a live payment
    "retry": {"55000", "23505"},    # not Failed / charged; another live payment
    "refund": {"55000", "23514"},   # not Completed/PartiallyRefunded; more than is left
    "resolve": {"55000", "23505"},  # already in that status; another live payment
    "webhook": {"55000"},           # a refund event while its payment is Pending
}


def reg(i):
    return "30000000-0000-0000-0000-%012d" % i


def user(i):
    return "10000000-0000-0000-0000-%012d" % i


def comment(msg):
    for line in str(msg).splitlines():
        print("# " + line, flush=True)


class SqlError(Exception):
    def __init__(self, state, text):
        super().__init__(text)
        self.state = state


def psql(sql, variables=None, check=True):
    """Run SQL (one or more statements) as the superuser; the output of the
    last one, unaligned.  An error raises SqlError with its SQLSTATE."""
    args = [os.path.join(BIN, "psql"), "-h", SOCK, "-p", "5432", "-U", "postgres", "-d", "postgres",
            "-X", "-qAt", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=sqlstate"]
    for k, v in (variables or {}).items():
        args += ["-v", "%s=%s" % (k, v)]
    r = subprocess.run(args + ["-f", "-"], input=sql, capture_output=True, text=True)
    if r.returncode != 0:
        m = re.search(r"ERROR:\s+([0-9A-Z]{5})", r.stderr)
        if check or not m:
            raise SqlError(m.group(1) if m else "conn", r.stderr.strip()[-300:])
        raise SqlError(m.group(1), r.stderr.strip()[-300:])
    return r.stdout.strip()


def pjson(sql):
    out = psql("SELECT coalesce(json_agg(t), '[]') FROM (%s) t" % sql)
    return json.loads(out)


def http(method, path, body=None, key=False):
    data = None
    headers = {}
    if body is not None:
        if key:
            data = body.encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
    if key:
        headers["Authorization"] = "Bearer " + STRIPE_KEY
    req = urllib.request.Request(URL + path, data=data, method=method, headers=headers)
    for _ in range(600):
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read().decode())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read().decode() or "{}")
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.1)  # an outage of the stand-in: its port refuses for a while
    raise RuntimeError("the stand-in does not answer %s %s" % (method, path))


def ledger():
    return http("GET", "/_test/ledger")[1]


def cents(v):
    return int(round(float(v) * 100))


class Model:
    def __init__(self):
        self.rng = None
        self.failures = {k: [] for k in ("one_charge", "known", "refund_le_charge", "audit",
                                          "agree", "settles", "answers")}
        self.event_seq = 0
        self.pool = {}          # undelivered events: id -> (seq, type, payload)
        self.delivered = {}     # delivered events, for duplicates: id -> (seq, type, payload)
        self.dumped = set()
        self.pi_status = {}     # PaymentIntent id -> last status seen (final ones only kept)
        self.stats = {"steps": 0, "checkpoints": 0, "restarts": 0, "webhooks": 0, "faults": 0,
                      "creates": 0, "refunds": 0, "retries": 0, "resolves": 0, "customer": 0,
                      "refusals": 0}
        self.seed = None
        self.step_no = 0
        self.last_action = ""

    # -- recording -------------------------------------------------------------
    def dump(self, pid):
        """What the database holds of a payment, into $PE_WORK/money_model.debug
        (no Stripe ids: those stay sealed), once per payment."""
        if pid in self.dumped or not re.match(r"^[0-9a-f-]{36}$", pid or ""):
            return
        self.dumped.add(pid)
        with open(os.path.join(WORK, "money_model.debug"), "a") as f:
            f.write("== seed %s step %d payment %s\n" % (self.seed, self.step_no, pid))
            for q in ('''SELECT "Status", "AmountValue", "RefundAmountValue", "UpdatedAt" FROM "Payments" WHERE "Id" = '%s' ''',
                      '''SELECT id, kind, state, attempts, last_http_status, left(last_error, 200), refund_id, idempotency_key, created_at, updated_at
                           FROM payment.outbox WHERE payment_id = '%s' ORDER BY id''',
                      '''SELECT "Id", "RefundAmountValue", "RefundStatus", "CreatedAt", "ProcessedAt" FROM "PaymentRefunds" WHERE "OriginalPaymentId" = '%s' ''',
                      '''SELECT s.* FROM payment.refund_states s JOIN "PaymentRefunds" r ON r."Id" = s.refund_id WHERE r."OriginalPaymentId" = '%s' ''',
                      '''SELECT stripe_status, source, amount_refunded, reported_at FROM payment.intents WHERE payment_id = '%s' ''',
                      '''SELECT received_at, type, object_status, refund_id, outcome FROM payment.webhook_events WHERE payment_id = '%s' ORDER BY received_at''',
                      '''SELECT "FailureCode", left("FailureMessage", 200), "CreatedAt" FROM "PaymentFailures" WHERE "PaymentId" = '%s' ''',
                      '''SELECT "ActionType", left("ActionDescription", 300), "CreatedAt" FROM "PaymentAuditLog" WHERE "PaymentId" = '%s' ORDER BY "ChainSeq" '''):
                try:
                    f.write(psql(q % pid) + "\n--\n")
                except SqlError as e:
                    f.write("(%s)\n" % e)
            d = ledger()
            f.write("ledger charges: %s\n" % [(c["amount"], c["source"], c["idempotency_key"]) for c in d["charges"] if c["payment_id"] == pid])
            f.write("ledger refunds: %s\n" % [(r["amount"], r["status"], r["refund_id"], r["idempotency_key"]) for r in d["refunds"] if r["payment_id"] == pid])

    def fail(self, inv, msg):
        for pid in re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", msg)[:1]:
            try:
                self.dump(pid)
            except Exception as e:  # a dump is for the reader; it never decides a test
                comment("no dump: %s" % e)
        lst = self.failures[inv]
        lst.append((self.seed, self.step_no, msg))
        if len(lst) <= 5:
            comment("seed %s step %d (%s): %s: %s" % (self.seed, self.step_no, self.last_action, inv, msg))

    def call(self, what, sql, variables=None):
        """A call of the application or an administrator: success, or a
        refusal doc/sql-reference.md documents; anything else is a failure."""
        try:
            return psql(sql, variables)
        except SqlError as e:
            if e.state in EXPECTED.get(what, ()):
                self.stats["refusals"] += 1
                return None
            self.fail("answers", "%s answered %s: %s" % (what, e.state, e))
            return None

    # -- the database's view ----------------------------------------------------
    def payments(self):
        return pjson("""SELECT p."Id" AS id, p."EventRegistrationId" AS reg, p."Status" AS status,
                               p."AmountValue"::text AS amount, coalesce(p."RefundAmountValue", 0)::text AS refunded,
                               p."EncryptedStripePaymentIntentId" IS NOT NULL AS has_pi,
                               CASE WHEN p."EncryptedStripePaymentIntentId" IS NOT NULL THEN
                                 payment.decrypt(p."EncryptedStripePaymentIntentId",
                                                 'Payments.EncryptedStripePaymentIntentId:' || p."Id") END AS pi
                          FROM "Payments" p""")

    # -- steps ------------------------------------------------------------------
    def step_create(self):
        i = self.rng.randint(1, NREG)
        pm = self.rng.choices(["pm_card_visa", "pm_card_chargeDeclined", "pm_card_threeDSecure2Required", None],
                              [60, 15, 10, 15])[0]
        amount = "%d.%02d" % (self.rng.randint(1, 99), self.rng.randint(0, 99))
        disc = self.rng.choice([0, 0, 0, 10, 25])
        key = ""
        if self.rng.random() < 0.2:  # a double click: the same key again
            key = ", idempotency_key => 'model-%d-%d'" % (self.seed, self.rng.randint(1, 5))
        self.last_action = "create reg %d %s %s" % (i, amount, pm)
        r = self.call("create", "SELECT payment.create('%s', '%s', %s, %d%s%s)" % (
            reg(i), user(i), amount, disc,
            ", stripe_payment_method => '%s'" % pm if pm else "", key))
        if r is not None:
            self.stats["creates"] += 1

    def step_retry(self, pays):
        failed = [p for p in pays if p["status"] == 2]
        if not failed:
            return self.step_create()
        p = self.rng.choice(failed)
        self.last_action = "retry %s" % p["id"]
        if self.call("retry", "SELECT payment.retry('%s')" % p["id"]) is not None:
            self.stats["retries"] += 1

    def step_refund(self, pays):
        paid = [p for p in pays if p["status"] in (1, 4) and p["has_pi"]]
        if not paid:
            return self.step_create()
        p = self.rng.choice(paid)
        left = cents(p["amount"]) - cents(p["refunded"])
        r = self.rng.random()
        if r < 0.35 or left <= 1:
            amt = left                       # the rest: full
        elif r < 0.9:
            amt = self.rng.randint(1, left - 1)  # partial
        else:
            amt = left + self.rng.randint(1, 500)  # more than is left (refused, unless Processing ones failed)
        if amt <= 0:
            amt = 1
        self.last_action = "refund %s %d of %d left" % (p["id"], amt, left)
        if self.call("refund", "SELECT payment.refund('%s', %d.%02d, 'model test refund %d', '%s')" % (
                p["id"], amt // 100, amt % 100, self.step_no, ADMIN)) is not None:
            self.stats["refunds"] += 1

    def step_resolve(self, pays):
        led = ledger()["by_payment_id"]
        cands = []
        for p in pays:
            if p["status"] == 0:
                cands.append((p, 2, "customer abandoned checkout (model step %d)" % self.step_no))
            d = led.get(p["id"])
            # Stripe shows one PaymentIntent, charged, no refund: the administrator completes it
            if p["status"] in (0, 2) and d and d["charges"] == 1 and d["refunds"] == 0 \
                    and len(d["payment_intents"]) == 1:
                cands.append((p, 1, "Stripe shows the charge succeeded (model step %d)" % self.step_no))
        if not cands:
            return self.step_create()
        p, st, why = self.rng.choice(cands)
        self.last_action = "resolve %s -> %d" % (p["id"], st)
        if self.call("resolve", "SET app.current_user_id = '%s'; SELECT payment.resolve('%s', %d, '%s')" % (
                ADMIN, p["id"], st, why)) is not None:
            self.stats["resolves"] += 1

    def fetch_events(self):
        st, j = http("GET", "/_test/events?since=%d" % self.event_seq)
        for e in j["events"]:
            self.event_seq = max(self.event_seq, e["seq"])
            self.pool[e["id"]] = (e["seq"], e["type"], e["payload"])

    def deliver(self, eid, ev):
        payload = ev[2]
        t = int(time.time())
        sig = "t=%d,v1=%s" % (t, hmac.new(WHSEC.encode(), ("%d." % t).encode() + payload.encode(),
                                           hashlib.sha256).hexdigest())
        self.stats["webhooks"] += 1
        try:
            psql("SELECT payment.handle_webhook(:'p', :'h')", {"p": payload, "h": sig})
        except SqlError as e:
            if e.state in EXPECTED["webhook"]:
                return False  # Stripe delivers it again later
            self.fail("answers", "webhook %s answered %s: %s" % (ev[1], e.state, e))
        return True

    def step_webhooks(self):
        self.fetch_events()
        ids = list(self.pool)
        self.rng.shuffle(ids)  # reordered
        n = self.rng.randint(1, 8)
        self.last_action = "webhooks"
        for eid in ids[:n]:
            ev = self.pool[eid]
            if self.deliver(eid, ev):
                del self.pool[eid]
                self.delivered[eid] = ev
        # duplicates of events delivered earlier, in any order
        if self.delivered and self.rng.random() < 0.5:
            old = self.rng.sample(sorted(self.delivered), min(3, len(self.delivered)))
            for eid in old:
                self.deliver(eid, self.delivered[eid])

    def step_fault(self):
        self.stats["faults"] += 1
        k = self.rng.choices(["500", "503", "429", "drop_after", "drop_before", "slow", "decline",
                              "processing", "refund_pending", "refund_failed", "outage"],
                             [10, 10, 5, 15, 5, 8, 6, 5, 6, 5, 6])[0]
        self.last_action = "fault %s" % k
        if k == "outage":
            http("POST", "/_test/outage", {"seconds": self.rng.choice([0.5, 1, 2, 3]),
                                            "mode": self.rng.choice(["refuse", "reset"])})
            return
        f = {"kind": k, "count": self.rng.randint(1, 4)}
        if k in ("refund_pending", "refund_failed") and self.rng.random() < 0.6:
            # aimed at one of our refunds (payment.refund); else the next
            # refund Stripe makes, ours or a refund.unwanted
            rids = psql("""SELECT string_agg("Id"::text, ' ' ORDER BY "Id") FROM "PaymentRefunds"
                            WHERE "RefundStatus" = 0""").split()
            if rids:
                f["refund_id"] = self.rng.choice(rids)
        if k in ("500", "503", "drop_after", "drop_before", "slow", "429"):
            f["method"] = "POST"
            f["path"] = self.rng.choice(["/v1/payment_intents", "/v1/refunds", "/v1/*", "/v1/payment_intents/*"])
        if k == "slow":
            f["delay_ms"] = 3000  # over request_timeout_ms: a timeout, the request executed
        if k == "429":
            f["retry_after"] = 1
        http("POST", "/_test/faults", f)

    def step_customer(self):
        """The customer finishes (or fails) 3-D Secure, or pays an
        unconfirmed PaymentIntent, whatever the database thinks of it."""
        led = ledger()["by_payment_id"]
        pis = [pi for d in led.values() for pi in d["payment_intents"] if self.pi_status.get(pi) is None]
        self.rng.shuffle(pis)
        for pi in pis[:5]:
            st, o = http("GET", "/v1/payment_intents/" + pi, key=True)
            if st != 200:
                continue
            if o["status"] in ("succeeded", "canceled"):
                self.pi_status[pi] = o["status"]
                continue
            if o["status"] in ("requires_action", "requires_payment_method", "requires_confirmation", "processing"):
                act = self.rng.choice(["succeed", "succeed", "fail"])
                self.last_action = "customer %s %s" % (act, o["status"])
                http("POST", "/_test/payment_intents/%s/%s" % (pi, act), {})
                self.stats["customer"] += 1
                return

    def restart(self):
        self.last_action = "restart"
        self.stats["restarts"] += 1
        subprocess.run([os.path.join(BIN, "pg_ctl"), "-D", DATA, "-m", "immediate", "-w", "-t", "60", "stop"],
                       capture_output=True)
        r = subprocess.run([os.path.join(BIN, "pg_ctl"), "-D", DATA, "-l", os.path.join(WORK, C + ".log"),
                            "-w", "-t", "120", "start"], capture_output=True, text=True)
        if r.returncode != 0:
            self.fail("answers", "the server did not start again: %s" % r.stderr[-300:])

    def step(self):
        self.step_no += 1
        self.stats["steps"] += 1
        pays = self.payments()
        a = self.rng.choices(["create", "retry", "refund", "resolve", "webhooks", "fault", "customer",
                              "restart", "tick"],
                             [22, 6, 16, 5, 18, 12, 6, 2, 8])[0]
        if a == "create":
            self.step_create()
        elif a == "retry":
            self.step_retry(pays)
        elif a == "refund":
            self.step_refund(pays)
        elif a == "resolve":
            self.step_resolve(pays)
        elif a == "webhooks":
            self.step_webhooks()
        elif a == "fault":
            self.step_fault()
        elif a == "customer":
            self.step_customer()
        elif a == "restart":
            self.restart()
        else:
            self.last_action = "tick"
            time.sleep(self.rng.random() * 0.5)  # let the worker get on (no assertion follows a pause)
        self.check_always()

    # -- invariants -------------------------------------------------------------
    def check_always(self, led=None):
        """What holds at every moment, settled or not."""
        led = led or ledger()
        charge_amount = {c["id"]: c["amount"] for c in led["charges"]}
        per_charge = {}
        for r in led["refunds"]:
            if r["status"] in ("succeeded", "pending", "requires_action"):
                per_charge[r["charge"]] = per_charge.get(r["charge"], 0) + r["amount"]
        for ch, amt in per_charge.items():
            if amt > charge_amount.get(ch, 0):
                self.fail("refund_le_charge", "charge refunded %d of %d" % (amt, charge_amount.get(ch, 0)))
        for pid, d in led["by_payment_id"].items():
            if d["refunded_amount"] > d["charged_amount"]:
                self.fail("refund_le_charge", "payment %s: refunded %d of %d charged" % (
                    pid, d["refunded_amount"], d["charged_amount"]))
        over = psql("""SELECT count(*) FROM "Payments" p
                        WHERE (SELECT coalesce(sum(r."RefundAmountValue"), 0) FROM "PaymentRefunds" r
                                WHERE r."OriginalPaymentId" = p."Id" AND r."RefundStatus" <> 2) > p."AmountValue" """)
        if over != "0":
            self.fail("refund_le_charge", "%s payments whose refunds exceed their amount" % over)
        if psql("SELECT payment.verify_audit()") != "t":
            self.fail("audit", "payment.verify_audit() is not true")

    def settle(self):
        """Faults off; Stripe-side leftovers finished by the customer or
        the bank; webhooks delivered, held back or lost; then poll until
        nothing is on its way and nothing is Pending or Processing."""
        http("POST", "/_test/faults/clear", {})
        deadline = time.time() + SETTLE_S
        while http("GET", "/_test/outage")[1].get("mode") is not None and time.time() < deadline:
            time.sleep(0.1)
        finished = set()
        quiet = 0
        last = None
        while time.time() < deadline:
            led = ledger()
            for pid, d in sorted(led["by_payment_id"].items()):
                for pi in d["payment_intents"]:
                    if self.pi_status.get(pi) or pi in finished:
                        continue
                    st, o = http("GET", "/v1/payment_intents/" + pi, key=True)
                    if st != 200:
                        continue
                    if o["status"] in ("succeeded", "canceled"):
                        self.pi_status[pi] = o["status"]
                    elif o["status"] == "processing":
                        # the bank decides a processing payment
                        http("POST", "/_test/payment_intents/%s/%s" % (pi, self.rng.choice(["succeed", "fail"])), {})
                        finished.add(pi)
            for r in led["refunds"]:
                if r["status"] in ("pending", "requires_action") and r["id"] not in finished:
                    act = self.rng.choice(["succeed", "succeed", "fail"])
                    http("POST", "/_test/refunds/%s/%s" % (r["id"], act), {})
                    finished.add(r["id"])
            # every event held back so far is delivered now, in any order (Stripe
            # delivers for three days: late, never lost); a refusal (55000) is
            # delivered again on the next round
            self.fetch_events()
            ids = sorted(self.pool)
            self.rng.shuffle(ids)
            for eid in ids:
                if self.deliver(eid, self.pool[eid]):
                    self.delivered[eid] = self.pool.pop(eid)
            busy = psql("""SELECT (SELECT count(*) FROM payment.outbox WHERE state IN ('pending', 'sending'))
                                + (SELECT count(*) FROM "Payments" WHERE "Status" = 0)
                                + (SELECT count(*) FROM "PaymentRefunds" WHERE "RefundStatus" = 0)""")
            now = (busy, len(led["charges"]), len(led["refunds"]),
                   sum(1 for r in led["refunds"] if r["status"] in ("pending", "requires_action")),
                   self.event_seq)
            if busy == "0" and now == last:
                quiet += 1
                if quiet >= 3:
                    return True
            else:
                quiet = 0
            last = now
            time.sleep(0.3)
        detail = pjson("""SELECT payment_id, kind, state, attempts, last_http_status, left(last_error, 160) AS last_error,
                                  next_attempt_at > now() AS later
                             FROM payment.outbox WHERE state IN ('pending', 'sending') ORDER BY id LIMIT 5""")
        detail.append(pjson("SELECT state, in_flight, left(last_error, 160) FROM payment.worker_status"))
        pend = pjson("""SELECT "Status", count(*) FROM "Payments" WHERE "Status" = 0 GROUP BY 1""")
        refp = pjson("""SELECT count(*) FROM "PaymentRefunds" WHERE "RefundStatus" = 0""")
        self.fail("settles", "not settled after %d s: outbox %s, payments %s, refunds %s" % (
            SETTLE_S, detail, pend, refp))
        return False

    def check_settled(self):
        led = ledger()
        self.check_always(led)
        pays = {p["id"]: p for p in self.payments()}
        refunds = pjson("""SELECT "Id" AS id, "OriginalPaymentId" AS pid, "RefundStatus" AS status,
                                  "RefundAmountValue"::text AS amount FROM "PaymentRefunds" """)
        refs = set(psql("""SELECT encode(digest, 'hex') FROM payment.stripe_refs
                            WHERE object = 'payment_intent'""").split())
        ours = {r["id"] for r in refunds}
        # refunds per charge, all (live) and ours only
        live = {}
        unwanted_live = {}
        for r in led["refunds"]:
            if r["status"] in ("succeeded", "pending", "requires_action"):
                live[r["charge"]] = live.get(r["charge"], 0) + r["amount"]
                if r["refund_id"] not in ours:
                    unwanted_live[r["charge"]] = unwanted_live.get(r["charge"], 0) + r["amount"]
            if r["refund_id"] is not None and r["refund_id"] not in ours:
                self.fail("known", "a refund at Stripe names refund_id %s, unknown to the database" % r["refund_id"])
        # a charge the payment does not keep whose refund.unwanted Stripe
        # refused or failed: shown in payment.dead_letters for an
        # administrator (the money goes back by other means), so it is not
        # counted as a charge that was let through unseen
        dead_keys = psql("""SELECT string_agg(idempotency_key, ' ') FROM payment.dead_letters
                             WHERE kind = 'refund.unwanted'""").split()

        def shown(c):
            k = "pe-%s-unwanted-refund-%s" % (c["payment_id"],
                                              hashlib.sha256(c["payment_intent"].encode()).hexdigest()[:16])
            return any(d == k or d.startswith(k + "-re-") for d in dead_keys)
        # every charge known; at most one not fully refunded per registration
        open_by_reg = {}
        charges_of = {}
        for c in led["charges"]:
            p = pays.get(c["payment_id"])
            if p is None:
                self.fail("known", "charge of %d for payment_id %s: no such payment" % (c["amount"], c["payment_id"]))
                continue
            if hashlib.sha256(c["payment_intent"].encode()).hexdigest() not in refs:
                self.fail("known", "payment %s (%s): its charged PaymentIntent is not in payment.stripe_refs" % (
                    p["id"], p["status"]))
            charges_of.setdefault(p["id"], []).append(c)
            if live.get(c["id"], 0) < c["amount"] and not shown(c):
                open_by_reg.setdefault(p["reg"], []).append((p["id"], p["status"], c["amount"], live.get(c["id"], 0)))
        for r, lst in open_by_reg.items():
            if len(lst) > 1:
                self.fail("one_charge", "registration %s has %d charges not fully refunded: %s" % (r, len(lst), lst))
        # the database agrees with the ledger
        rec = pjson("SELECT payment_id, refund_id, database_state, stripe_state, source, problem FROM payment.reconcile")
        for row in rec:
            self.fail("agree", "payment.reconcile: %s" % row)
        for pid, p in pays.items():
            chs = charges_of.get(pid, [])
            kept = [c for c in chs if unwanted_live.get(c["id"], 0) < c["amount"] and not shown(c)]
            if p["status"] in (1, 3, 4):
                if len(kept) != 1:
                    self.fail("agree", "payment %s is %d but the ledger keeps %d charges for it" % (pid, p["status"], len(kept)))
                elif kept[0]["amount"] != cents(p["amount"]):
                    self.fail("agree", "payment %s of %s: its charge is %d" % (pid, p["amount"], kept[0]["amount"]))
                elif p["pi"] is not None and p["pi"] != kept[0]["payment_intent"]:
                    self.fail("agree", "payment %s holds another PaymentIntent than the one charged" % pid)
            elif p["status"] in (2, 5):
                for c in chs:
                    if live.get(c["id"], 0) < c["amount"] and not shown(c):
                        self.fail("agree", "payment %s is %d but a charge of %d has %d refunded" % (
                            pid, p["status"], c["amount"], live.get(c["id"], 0)))
        by_rid = {}
        for r in led["refunds"]:
            if r["refund_id"] is not None:
                by_rid.setdefault(r["refund_id"], []).append(r)
        for r in refunds:
            lr = by_rid.get(r["id"], [])
            ok_ = [x for x in lr if x["status"] == "succeeded"]
            livex = [x for x in lr if x["status"] in ("succeeded", "pending", "requires_action")]
            if r["status"] == 1 and (len(ok_) != 1 or ok_[0]["amount"] != cents(r["amount"]) or len(livex) != 1):
                self.fail("agree", "refund %s is Completed; the ledger has %s" % (
                    r["id"], [(x["amount"], x["status"]) for x in lr]))
            if r["status"] == 2 and livex:
                self.fail("agree", "refund %s is Failed; the ledger has %s" % (
                    r["id"], [(x["amount"], x["status"]) for x in lr]))
        self.stats["checkpoints"] += 1

    # -- a run ----------------------------------------------------------------------
    def run(self, seed, secs):
        self.seed = seed
        self.rng = random.Random(seed)
        self.step_no = 0
        print("# seed %d" % seed, flush=True)
        end = time.time() + secs
        steps0 = self.stats["steps"]
        while time.time() < end:
            for _ in range(self.rng.randint(10, 40)):
                self.step()
                if time.time() >= end:
                    break
            self.last_action = "settle"
            if self.settle():
                self.check_settled()
        comment("seed %d: %d steps" % (seed, self.stats["steps"] - steps0))


def main():
    m = Model()
    share = BUDGET / len(SEEDS)
    t0 = time.time()
    for s in SEEDS:
        m.run(s, share)
    n = FIRST
    led = ledger()

    def tap(inv, name):
        nonlocal n
        bad = m.failures[inv]
        print("%s %d - %s" % ("ok" if not bad else "not ok", n, name), flush=True)
        for seed, step, msg in bad[:10]:
            print("#   seed %s step %d: %s" % (seed, step, msg))
        if len(bad) > 10:
            print("#   ... %d more" % (len(bad) - 10))
        n += 1

    tap("one_charge", "per registration at most one charge that is not fully refunded (the ledger, at every settled checkpoint)")
    tap("known", "every charge and refund in the ledger is known to the database after settling")
    tap("refund_le_charge", "refunds never exceed charges, per charge and per payment (ledger) and per payment (database), after every step")
    tap("audit", "payment.verify_audit() is true after every step")
    tap("agree", "after settling, payment.reconcile is empty and every payment and refund agrees with the ledger")
    tap("settles", "the system settles (nothing on its way, nothing Pending or Processing) within %d s of the faults ending" % SETTLE_S)
    tap("answers", "every call, delivery and restart answered as documented (success or a documented refusal)")
    s = m.stats
    meaningful = (s["checkpoints"] >= len(SEEDS) and s["creates"] > 0 and len(led["charges"]) > 0
                  and len(led["refunds"]) > 0 and s["webhooks"] > 0)
    print("%s %d - the run did something: %d checkpoints, %d charges and %d refunds in the ledger" % (
        "ok" if meaningful else "not ok", n, s["checkpoints"], len(led["charges"]), len(led["refunds"])))
    comment("ran %d steps over %d seed(s) (%s) in %d s: %s" % (
        s["steps"], len(SEEDS), " ".join(map(str, SEEDS)), time.time() - t0,
        ", ".join("%s %d" % kv for kv in sorted(s.items()) if kv[0] != "steps")))
    comment("paths: " + psql("""SELECT format('requests sent again under a new key %s, refund.unwanted failed by Stripe (dead letters) %s, refund events of unwanted charges ignored %s, Dashboard refunds recorded %s',
        (SELECT count(*) FROM payment.outbox WHERE idempotency_key ~ '-re-[0-9]+$'),
        (SELECT count(*) FROM payment.dead_letters WHERE kind = 'refund.unwanted'),
        (SELECT count(*) FROM payment.webhook_events WHERE outcome LIKE 'ignored: a refund (%'),
        (SELECT count(*) FROM "PaymentRefunds" WHERE "Metadata" ->> 'source' = 'stripe_dashboard'))"""))
    comment("ledger: %d PaymentIntents, %d charges, %d refunds" % (
        led["counts"]["payment_intents"], len(led["charges"]), len(led["refunds"])))
    return 0 if meaningful and not any(m.failures.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
