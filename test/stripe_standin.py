#!/usr/bin/env python3
"""Stripe stand-in: a test fixture that speaks Stripe's wire format on 127.0.0.1.

Python 3 standard library only (Debian 12's python3.11).  One asyncio event
loop, a small HTTP/1.1 parser of its own (keep-alive, pipelining, chunked
bodies, Expect: 100-continue), in-memory state.

Serves, as Stripe does (form-encoded requests, JSON objects, Stripe's error
object, idempotency keys scoped per API key):

    POST /v1/payment_intents                    create (confirm=true too)
    POST /v1/payment_intents/{id}/confirm
    POST /v1/payment_intents/{id}/cancel
    GET  /v1/payment_intents/{id}
    GET  /v1/payment_intents/search?query=metadata['payment_id']:'...'
    POST /v1/refunds
    GET  /v1/refunds/{id}
    GET  /v1/refunds?payment_intent=...

and, for tests, control endpoints under /_test/ (no authentication):
ledger, reset, faults, config, request log, webhook events, and state
changes that Stripe makes on its own (3-D Secure completion, dashboard
refunds, refunds that fail later).  doc/stripe-standin.md documents
them; `python3 test/stripe_standin.py --help` lists the flags.

Faults (kinds in FAULT_KINDS, fields in FAULT_FIELDS) include, besides
errors, slow answers and dropped connections, "tamper": a PaymentIntent
creation made as if its request had been altered on the way, with the
fault's `amount`, `currency` and/or `metadata_payment_id` instead of the
request's (the PaymentIntent, its charge, the ledger and the events all
carry the altered values), so that tests can check that an answer that
disagrees with the payment is never taken for it.
"""

import argparse
import asyncio
import base64
import email.utils
import fnmatch
import hashlib
import hmac
import ipaddress
import json
import os
import random
import re
import signal
import socket
import string
import struct
import sys
import time
from collections import deque
from urllib.parse import parse_qsl, urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_API_VERSION = "2023-08-16"
DEFAULT_WEBHOOK_SECRET = "whsec_standin_test_secret"
IDEMPOTENCY_TTL_S = 24 * 3600

with open(os.path.join(HERE, "stripe_params.json"), encoding="utf-8") as _f:
    PARAM_SCHEMAS = json.load(_f)

# Hand-written schemas for the operations the slice does not carry.
PARAM_SCHEMAS["POST /v1/payment_intents/{intent}/cancel"] = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "cancellation_reason": {"type": "string", "enum": [
            "abandoned", "duplicate", "fraudulent", "requested_by_customer"]},
        "expand": {"type": "array", "items": {"type": "string", "maxLength": 5000}},
    },
}
_EXPAND = {"type": "array", "items": {"type": "string", "maxLength": 5000}}
PARAM_SCHEMAS["GET /v1/payment_intents/{intent}"] = {
    "type": "object", "additionalProperties": False,
    "properties": {"client_secret": {"type": "string", "maxLength": 5000}, "expand": _EXPAND},
}
PARAM_SCHEMAS["GET /v1/payment_intents/search"] = {
    "type": "object", "additionalProperties": False, "required": ["query"],
    "properties": {"query": {"type": "string", "maxLength": 5000},
                   "limit": {"type": "integer"}, "page": {"type": "string", "maxLength": 5000},
                   "expand": _EXPAND},
}
PARAM_SCHEMAS["GET /v1/refunds/{refund}"] = {
    "type": "object", "additionalProperties": False, "properties": {"expand": _EXPAND},
}
PARAM_SCHEMAS["GET /v1/refunds"] = {
    "type": "object", "additionalProperties": False,
    "properties": {"payment_intent": {"type": "string", "maxLength": 5000},
                   "charge": {"type": "string", "maxLength": 5000},
                   "limit": {"type": "integer"},
                   "starting_after": {"type": "string", "maxLength": 5000},
                   "ending_before": {"type": "string", "maxLength": 5000},
                   "expand": _EXPAND},
}

# Minimum charge amounts in minor units (docs.stripe.com/currencies#minimum-and-maximum-charge-amounts).
MIN_AMOUNT = {
    "usd": 50, "eur": 50, "gbp": 30, "cad": 50, "aud": 50, "chf": 50, "nzd": 50,
    "sgd": 50, "hkd": 400, "jpy": 50, "mxn": 1000, "sek": 300, "nok": 300,
    "dkk": 250, "pln": 200, "czk": 1500, "brl": 50, "inr": 50, "huf": 17500,
}
ZERO_DECIMAL = {"jpy", "krw", "vnd", "clp", "huf_never"}
MAX_AMOUNT = 99999999

# Stripe's test PaymentMethods (docs.stripe.com/testing).
DECLINES = {
    "pm_card_chargeDeclined": ("card_declined", "generic_decline", "Your card was declined."),
    "pm_card_chargeDeclinedInsufficientFunds": ("card_declined", "insufficient_funds", "Your card has insufficient funds."),
    "pm_card_chargeDeclinedLostCard": ("card_declined", "lost_card", "Your card was declined."),
    "pm_card_chargeDeclinedStolenCard": ("card_declined", "stolen_card", "Your card was declined."),
    "pm_card_chargeDeclinedFraudulent": ("card_declined", "fraudulent", "Your card was declined."),
    "pm_card_chargeDeclinedExpiredCard": ("expired_card", "expired_card", "Your card has expired."),
    "pm_card_chargeDeclinedIncorrectCvc": ("incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect."),
    "pm_card_chargeDeclinedProcessingError": ("processing_error", "processing_error",
                                              "An error occurred while processing your card. Try again in a little bit."),
}
THREE_DS = {"pm_card_threeDSecure2Required", "pm_card_threeDSecureRequired", "pm_card_authenticationRequired"}
DECLINE_MESSAGES = {
    "insufficient_funds": "Your card has insufficient funds.",
    "expired_card": "Your card has expired.",
    "incorrect_cvc": "Your card's security code is incorrect.",
    "processing_error": "An error occurred while processing your card. Try again in a little bit.",
    "authentication_required": "Your card was declined. This transaction requires authentication.",
}
PM_RE = re.compile(r"^(pm|card|src)_[A-Za-z0-9_]+$")
KEY_RE = re.compile(r"^(sk|rk)_(test|live)_[A-Za-z0-9_]+$")
VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$")

FAULT_KINDS = {
    # edge: answered before the API does anything; never saved under the key
    "429": "edge", "502": "edge", "503": "edge", "504": "edge", "409": "edge",
    "drop_before": "edge",
    # execution: only for a request that executes (not a replay)
    "500": "exec", "slow": "exec", "decline": "exec", "requires_action": "exec",
    "processing": "exec", "refund_pending": "exec", "refund_failed": "exec",
    "tamper": "exec",
    # transport: the answer is computed and saved, then mangled on the wire
    "drop_after": "wire", "drop_mid_body": "wire", "malformed_json": "wire",
}
FAULT_FIELDS = {"kind", "count", "rate", "method", "path", "payment_id", "refund_id",
                "idempotency_key", "delay_ms", "retry_after", "code", "decline_code",
                "should_retry", "stored", "effect", "reset", "status", "message",
                "amount", "currency", "metadata_payment_id"}

STATUS_TEXT = {100: "Continue", 200: "OK", 400: "Bad Request", 401: "Unauthorized",
               402: "Request Failed", 403: "Forbidden", 404: "Not Found",
               405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large",
               429: "Too Many Requests", 431: "Request Header Fields Too Large",
               500: "Internal Server Error", 502: "Bad Gateway",
               503: "Service Unavailable", 504: "Gateway Timeout"}

ALNUM = string.ascii_letters + string.digits


class StripeError(Exception):
    """An error answered in Stripe's error object."""

    def __init__(self, status, type_, message, code=None, param=None,
                 decline_code=None, extra=None, saved=True, headers=None):
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.code = code
        self.param = param
        self.decline_code = decline_code
        self.extra = extra or {}
        self.saved = saved          # saved under the idempotency key?
        self.headers = headers or []

    def body(self, request_id):
        err = {"type": self.type, "message": self.message}
        if self.code:
            err["code"] = self.code
            err["doc_url"] = "https://stripe.com/docs/error-codes/" + self.code.replace("_", "-")
        if self.decline_code:
            err["decline_code"] = self.decline_code
        if self.param:
            err["param"] = self.param
        err.update(self.extra)
        err["request_log_url"] = "https://dashboard.stripe.com/test/logs/" + request_id
        return {"error": err}


def invalid(message, code=None, param=None, status=400, saved=False):
    return StripeError(status, "invalid_request_error", message, code=code, param=param, saved=saved)


class Response:
    __slots__ = ("status", "headers", "body", "wire", "reset")

    def __init__(self, status, body, headers=None, wire=None, reset=False):
        self.status = status
        self.body = body            # bytes
        self.headers = headers or []
        self.wire = wire            # None | drop | drop_mid_body | malformed_json
        self.reset = reset


class Delayed:
    """Finish later: after `delay` seconds call fn(), which returns a Response or a Delayed."""
    __slots__ = ("delay", "fn")

    def __init__(self, delay, fn):
        self.delay = delay
        self.fn = fn


# ---------------------------------------------------------------------------
# form encoding
# ---------------------------------------------------------------------------
_KEY_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def parse_form(text):
    """Parse a[b][c]=v form data into nested dicts; a[]=v appends to a list."""
    out = {}
    for raw_key, value in parse_qsl(text, keep_blank_values=True, strict_parsing=False):
        m = _KEY_RE.match(raw_key)
        if not m:
            raise invalid("Invalid parameter name: %s" % raw_key, param=raw_key)
        parts = [m.group(1)] + re.findall(r"\[([^\[\]]*)\]", m.group(2))
        node = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if part != "" and not last:
                    raise invalid("Invalid array: %s" % raw_key, param=parts[0])
                if last:
                    node.append(value)
                else:
                    child = {}
                    node.append(child)
                    node = child
                continue
            nxt_is_append = not last and parts[i + 1] == ""
            if last:
                if isinstance(node.get(part), (dict, list)):
                    raise invalid("Invalid hash: %s is both a value and a hash" % raw_key, param=parts[0])
                node[part] = value
            else:
                child = node.get(part)
                if child is None:
                    child = [] if nxt_is_append else {}
                    node[part] = child
                elif isinstance(child, str):
                    raise invalid("Invalid hash: %s is both a value and a hash" % raw_key, param=parts[0])
                node = child
    return out


def param_name(path):
    if not path:
        return "(request body)"
    return path[0] + "".join("[%s]" % p for p in path[1:])


def validate(schema, value, path):
    """Check value (strings, dicts, lists from parse_form) against a request
    schema; return it converted (integers, booleans, lists)."""
    if "anyOf" in schema:
        first = None
        for sub in schema["anyOf"]:
            try:
                return validate(sub, value, path)
            except StripeError as e:
                first = first or e
        raise first
    t = schema.get("type")
    name = param_name(path)
    if isinstance(value, str) and value == "" and t != "string" and "" not in schema.get("enum", ()):
        raise invalid("You passed an empty string for '%s'. We assume empty values are an attempt to "
                      "unset a parameter; however '%s' cannot be unset. You should remove '%s' from "
                      "your request or supply a non-empty value." % (name, name, name),
                      code="parameter_invalid_empty", param=name)
    if t == "object":
        if not isinstance(value, dict):
            raise invalid("Invalid object", param=name)
        props = schema.get("properties", {})
        addl = schema.get("additionalProperties")
        out = {}
        for k, v in value.items():
            if k in props:
                out[k] = validate(props[k], v, path + [k])
            elif isinstance(addl, dict):
                out[k] = validate(addl, v, path + [k])
            else:
                raise invalid("Received unknown parameter: %s" % param_name(path + [k]),
                              code="parameter_unknown", param=param_name(path + [k]))
        for k in schema.get("required", ()):
            if k not in value:
                raise invalid("Missing required param: %s." % param_name(path + [k]),
                              code="parameter_missing", param=param_name(path + [k]))
        return out
    if t == "array":
        if isinstance(value, dict):
            if not all(k.isdigit() for k in value):
                raise invalid("Invalid array", param=name)
            value = [value[k] for k in sorted(value, key=int)]
        if not isinstance(value, list):
            raise invalid("Invalid array", param=name)
        return [validate(schema.get("items", {}), v, path + [str(i)]) for i, v in enumerate(value)]
    if isinstance(value, (dict, list)):
        raise invalid("Invalid %s: %s is an object, not a value" % (t or "value", name), param=name)
    if t == "integer":
        if not re.fullmatch(r"-?\d+", value):
            raise invalid("Invalid integer: %s" % value, code="parameter_invalid_integer", param=name)
        return int(value)
    if t == "number":
        try:
            return float(value)
        except ValueError:
            raise invalid("Invalid decimal: %s" % value, param=name)
    if t == "boolean":
        if value not in ("true", "false"):
            raise invalid("Invalid boolean: %s" % value, param=name)
        return value == "true"
    # string
    enum = schema.get("enum")
    if enum is not None and value not in enum:
        choices = [e for e in enum if e != ""]
        if len(choices) > 1:
            listing = ", ".join(choices[:-1]) + ", or " + choices[-1]
        else:
            listing = choices[0] if choices else ""
        raise invalid("Invalid %s: must be one of %s" % (name, listing), param=name)
    ml = schema.get("maxLength")
    if ml is not None and len(value) > ml:
        raise invalid("Invalid string: %s...; must be at most %d characters" % (value[:20], ml),
                      code="string_length_exceeds_maximum", param=name)
    return value


def check_metadata(md, param="metadata"):
    if md is None or md == "":
        return {}
    if len(md) > 50:
        raise invalid("You can have up to 50 metadata keys, but you passed %d." % len(md), param=param)
    out = {}
    for k, v in md.items():
        if len(k) > 40:
            raise invalid("Metadata keys can have up to 40 characters, but you passed in a key that is "
                          "%d characters. Invalid key: %s" % (len(k), k), param="%s[%s]" % (param, k))
        if len(v) > 500:
            raise invalid("Metadata values can have up to 500 characters, but you passed in a value "
                          "that is %d characters. Invalid value: %s" % (len(v), v[:50]),
                          param="%s[%s]" % (param, k))
        if v != "":
            out[k] = v
    return out


def fmt_amount(amount, currency):
    if currency in ZERO_DECIMAL:
        return "%d %s" % (amount, currency)
    symbol = {"usd": "$", "cad": "$", "aud": "$", "nzd": "$", "sgd": "$", "hkd": "$",
              "eur": "\u20ac", "gbp": "\u00a3"}.get(currency, "")
    return "%s%d.%02d %s" % (symbol, amount // 100, amount % 100, currency)


# ---------------------------------------------------------------------------
# the stand-in's state and API
# ---------------------------------------------------------------------------
class StandIn:
    def __init__(self, args):
        self.args = args
        self.started = time.time()
        self.rng = random.Random(args.seed)
        self.base_faults = [self.make_fault(f) for f in args.fault]
        # an outage (POST /_test/outage): set by main() and the protocol
        self.loop = None
        self.server = None
        self.make_server = None
        self.conns = set()
        self.outage_mode = None
        self.outage_resets = 0
        self.reset()

    # -- state ---------------------------------------------------------------
    def reset(self):
        self.config = {
            "latency_ms": self.args.latency_ms,
            "webhook_secret": self.args.webhook_secret,
            "default_api_version": self.args.default_api_version,
            "idempotency_ttl_s": IDEMPOTENCY_TTL_S,
            "api_keys": list(self.args.api_key or []),
            "events": not self.args.no_events,
            "max_log": self.args.max_log,
        }
        self.intents = {}
        self.intent_extra = {}      # what Stripe keeps but does not show: return_url
        self.charges = {}
        self.refunds = {}
        self.idem = {}              # (api_key, key) -> entry dict
        self.ledger_charges = []
        self.ledger_refunds = []
        self.by_key = {}
        self.events = deque(maxlen=self.config["max_log"])
        self.requests = deque(maxlen=self.config["max_log"])
        self.faults = [dict(f) for f in self.base_faults]
        self.seq = 0
        self.event_seq = 0
        self.counts = {"requests": 0, "replays": 0, "faults": 0, "conflicts": 0}

    # -- outages -------------------------------------------------------------
    def outage_start(self, secs, mode):
        """Every connection is cut; for secs seconds the port refuses
        connections (mode refuse: the listening socket is closed, as when
        nothing listens) or accepts each one and resets it at once, counted
        in outage_resets (mode reset).  Then the same port serves again with
        every object, key and ledger entry kept."""
        self.outage_mode = mode
        for c in list(self.conns):
            c.drop(True)
        if mode == "refuse" and self.server is not None:
            self.server.close()
            self.server = None
        self.loop.call_later(secs, self.outage_end)

    def outage_end(self):
        if self.outage_mode == "refuse":
            self.loop.create_task(self.reopen())
        else:
            self.outage_mode = None

    async def reopen(self):
        while True:
            try:
                self.server = await self.make_server()
                break
            except OSError:
                await asyncio.sleep(0.05)
        self.outage_mode = None

    def new_id(self, prefix, n=24):
        return prefix + "".join(self.rng.choices(ALNUM, k=n))

    # -- faults --------------------------------------------------------------
    def make_fault(self, spec):
        if isinstance(spec, str):
            spec = spec.strip()
            if spec.startswith("{"):
                spec = json.loads(spec)
            else:
                parts = spec.split(",")
                d = {"kind": parts[0]}
                for p in parts[1:]:
                    k, _, v = p.partition("=")
                    d[k.strip()] = v.strip()
                spec = d
        f = dict(spec)
        unknown = set(f) - FAULT_FIELDS
        if unknown:
            raise ValueError("unknown fault field(s): %s" % ", ".join(sorted(unknown)))
        kind = str(f.get("kind", ""))
        if kind not in FAULT_KINDS:
            raise ValueError("unknown fault kind %r (one of %s)" % (kind, ", ".join(sorted(FAULT_KINDS))))
        f["kind"] = kind
        for k in ("count", "delay_ms", "status", "amount"):
            if f.get(k) is not None:
                f[k] = int(f[k])
        if f.get("retry_after") is not None and f["retry_after"] != "":
            f["retry_after"] = int(f["retry_after"])
        if f.get("rate") is not None:
            f["rate"] = float(f["rate"])
            if not 0 <= f["rate"] <= 1:
                raise ValueError("rate must be between 0 and 1")
        for k in ("stored", "effect", "reset"):
            if isinstance(f.get(k), str):
                f[k] = f[k].lower() in ("1", "true", "yes", "on")
        if isinstance(f.get("should_retry"), str):
            f["should_retry"] = f["should_retry"].lower() in ("1", "true", "yes", "on")
        if f.get("count") is None and f.get("rate") is None:
            f["count"] = 1
        f.setdefault("count", None)
        f.setdefault("rate", None)
        if kind == "slow" and not f.get("delay_ms"):
            raise ValueError("a slow fault needs delay_ms")
        if kind == "tamper" and all(f.get(k) is None for k in ("amount", "currency", "metadata_payment_id")):
            raise ValueError("a tamper fault needs amount, currency or metadata_payment_id")
        f["method"] = f.get("method", "").upper() or None
        f["hits"] = 0
        self.fault_seq = getattr(self, "fault_seq", 0) + 1
        f["id"] = "flt_%d" % self.fault_seq
        return f

    def pick_fault(self, req, ctx, executing):
        for f in self.faults:
            if f["count"] is not None and f["count"] <= 0:
                continue
            if f["method"] and f["method"] != req.method:
                continue
            if f.get("path") and not fnmatch.fnmatchcase(req.path, f["path"]):
                continue
            if f.get("payment_id") and f["payment_id"] != ctx.get("payment_id"):
                continue
            if f.get("refund_id") and f["refund_id"] != ctx.get("refund_id"):
                continue
            if f.get("idempotency_key") and f["idempotency_key"] != req.idem_key:
                continue
            cls = FAULT_KINDS[f["kind"]]
            if cls == "exec":
                if not executing:
                    continue
                k = f["kind"]
                if k in ("decline", "requires_action", "processing") and not ctx.get("confirming"):
                    continue
                if k.startswith("refund_") and ctx.get("op") != "refund.create":
                    continue
                if k == "tamper" and ctx.get("op") != "payment_intent.create":
                    continue
            if f.get("rate") is not None and f["rate"] < 1 and self.rng.random() >= f["rate"]:
                continue
            if f["count"] is not None:
                f["count"] -= 1
            f["hits"] += 1
            self.counts["faults"] += 1
            return f
        return None

    # -- objects ---------------------------------------------------------------
    def pi_object(self, pi, expand=()):
        o = dict(pi)
        if "latest_charge" in expand and o.get("latest_charge"):
            o["latest_charge"] = dict(self.charges[o["latest_charge"]])
        return o

    def refund_object(self, re_, expand=()):
        o = dict(re_)
        if "charge" in expand and o.get("charge"):
            o["charge"] = dict(self.charges[o["charge"]])
        if "payment_intent" in expand and o.get("payment_intent"):
            o["payment_intent"] = dict(self.intents[o["payment_intent"]])
        return o

    def new_intent(self, p, livemode, version):
        pid = self.new_id("pi_")
        apm = p.get("automatic_payment_methods")
        if apm is None and "payment_method_types" not in p and version >= "2023-08-16":
            apm = {"enabled": True}
        if apm is not None:
            apm = {"allow_redirects": apm.get("allow_redirects", "always"), "enabled": apm["enabled"]}
            if not apm["enabled"]:
                apm = None
        pi = {
            "id": pid, "object": "payment_intent",
            "amount": p["amount"], "amount_capturable": 0,
            "amount_details": {"tip": {}}, "amount_received": 0,
            "application": None, "application_fee_amount": p.get("application_fee_amount"),
            "automatic_payment_methods": apm,
            "canceled_at": None, "cancellation_reason": None,
            "capture_method": p.get("capture_method", "automatic"),
            "client_secret": "%s_secret_%s" % (pid, "".join(self.rng.choices(ALNUM, k=25))),
            "confirmation_method": p.get("confirmation_method", "automatic"),
            "created": int(time.time()), "currency": p["currency"],
            "customer": p.get("customer"), "description": p.get("description"),
            "invoice": None, "last_payment_error": None, "latest_charge": None,
            "livemode": livemode, "metadata": check_metadata(p.get("metadata")),
            "next_action": None, "on_behalf_of": p.get("on_behalf_of"),
            "payment_method": p.get("payment_method"),
            "payment_method_configuration_details": None,
            "payment_method_options": {"card": {"installments": None, "mandate_options": None,
                                                "network": None, "request_three_d_secure": "automatic"}},
            "payment_method_types": p.get("payment_method_types") or ["card"],
            "processing": None, "receipt_email": p.get("receipt_email"),
            "review": None, "setup_future_usage": p.get("setup_future_usage"),
            "shipping": p.get("shipping"),
            "statement_descriptor": p.get("statement_descriptor"),
            "statement_descriptor_suffix": p.get("statement_descriptor_suffix"),
            "status": "requires_confirmation" if p.get("payment_method") else "requires_payment_method",
            "transfer_data": p.get("transfer_data"), "transfer_group": p.get("transfer_group"),
        }
        self.intents[pid] = pi
        self.intent_extra[pid] = {"return_url": p.get("return_url")}
        return pi

    def new_charge(self, pi, pm, ok, failure=None):
        cid = self.new_id("ch_")
        ch = {
            "id": cid, "object": "charge", "amount": pi["amount"],
            "amount_captured": pi["amount"] if ok else 0, "amount_refunded": 0,
            "application": None, "application_fee": None, "application_fee_amount": None,
            "balance_transaction": self.new_id("txn_") if ok else None,
            "billing_details": {"address": {"city": None, "country": None, "line1": None, "line2": None,
                                            "postal_code": None, "state": None},
                                "email": None, "name": None, "phone": None},
            "calculated_statement_descriptor": "PAYMENT_EXT",
            "captured": ok, "created": int(time.time()), "currency": pi["currency"],
            "customer": pi["customer"], "description": pi["description"], "disputed": False,
            "failure_balance_transaction": None,
            "failure_code": failure[0] if failure else None,
            "failure_message": failure[2] if failure else None,
            "fraud_details": {}, "invoice": None, "livemode": pi["livemode"],
            "metadata": dict(pi["metadata"]), "on_behalf_of": None,
            "outcome": {"network_status": "approved_by_network" if ok else "declined_by_network",
                        "reason": None if ok else failure[1], "risk_level": "normal",
                        "seller_message": "Payment complete." if ok else "The bank did not return any further details with this decline.",
                        "type": "authorized" if ok else "issuer_declined"},
            "paid": ok, "payment_intent": pi["id"], "payment_method": pm,
            "payment_method_details": {"card": {"brand": "visa", "last4": "4242", "exp_month": 12,
                                                "exp_year": 2034, "funding": "credit"},
                                       "type": "card"},
            "receipt_email": pi["receipt_email"], "receipt_number": None, "receipt_url": None,
            "refunded": False, "review": None, "shipping": pi["shipping"],
            "source_transfer": None, "statement_descriptor": None,
            "statement_descriptor_suffix": None,
            "status": "succeeded" if ok else "failed",
            "transfer_data": None, "transfer_group": None,
        }
        self.charges[cid] = ch
        return ch

    def key_stats(self, key):
        if key is None:
            return None
        st = self.by_key.get(key)
        if st is None:
            st = self.by_key[key] = {"requests": 0, "executions": 0, "replays": 0,
                                     "objects": [], "charges": 0, "refunds": 0}
        return st

    def succeed_intent(self, pi, ctx):
        ch = self.new_charge(pi, pi["payment_method"], True)
        pi.update(status="succeeded", amount_received=pi["amount"], latest_charge=ch["id"],
                  next_action=None, last_payment_error=None, processing=None, amount_capturable=0)
        entry = {"id": ch["id"], "payment_intent": pi["id"], "amount": pi["amount"],
                 "currency": pi["currency"], "payment_id": pi["metadata"].get("payment_id"),
                 "idempotency_key": ctx.get("idem_key"), "source": ctx.get("source", "api"),
                 "created": ch["created"]}
        self.ledger_charges.append(entry)
        st = self.key_stats(ctx.get("idem_key"))
        if st is not None:
            st["charges"] += 1
        self.emit("charge.succeeded", ch, ctx)
        self.emit("payment_intent.succeeded", pi, ctx)

    def decline_intent(self, pi, code, decline_code, message, ctx):
        ch = self.new_charge(pi, pi["payment_method"], False, (code, decline_code, message))
        pm = pi["payment_method"]
        err = {"charge": ch["id"], "code": code, "decline_code": decline_code,
               "doc_url": "https://stripe.com/docs/error-codes/" + code.replace("_", "-"),
               "message": message,
               "payment_method": {"id": pm, "object": "payment_method", "type": "card"},
               "type": "card_error"}
        pi.update(status="requires_payment_method", last_payment_error=err, latest_charge=ch["id"],
                  payment_method=None, next_action=None, processing=None)
        self.emit("charge.failed", ch, ctx)
        self.emit("payment_intent.payment_failed", pi, ctx)
        return StripeError(402, "card_error", message, code=code, decline_code=decline_code,
                           extra={"charge": ch["id"], "payment_intent": self.pi_object(pi),
                                  "payment_method": err["payment_method"]})

    def confirm_checks(self, pm, apm, return_url, pi=None):
        """Refuse a confirmation that cannot start (before anything changes)."""
        if not pm:
            raise StripeError(400, "invalid_request_error",
                              "You cannot confirm this PaymentIntent because it's missing a payment method. "
                              "You can either update the PaymentIntent with a payment method and then "
                              "confirm it again, or confirm it again directly with a payment method.",
                              code="payment_intent_unexpected_state",
                              extra={"payment_intent": self.pi_object(pi)} if pi else None)
        if not PM_RE.match(pm):
            raise StripeError(400, "invalid_request_error", "No such PaymentMethod: '%s'" % pm,
                              code="resource_missing", param="payment_method")
        if apm and apm["allow_redirects"] != "never" and not return_url:
            raise StripeError(400, "invalid_request_error",
                              "This PaymentIntent is configured to accept payment methods enabled in your "
                              "Dashboard, some of which may require a full page redirect to succeed. If you "
                              "do not want to accept redirect-based payment methods, set "
                              "`automatic_payment_methods[enabled]` to `true` and "
                              "`automatic_payment_methods[allow_redirects]` to `never` when creating Setup "
                              "Intents and Payment Intents. If you do want to accept redirect-based payment "
                              "methods, set the `return_url` parameter when confirming the PaymentIntent.",
                              param="return_url")

    def confirm_intent(self, pi, p, ctx, fault):
        """Attempt payment; returns None (pi updated) or a StripeError (402)."""
        pm = pi["payment_method"]
        outcome = "succeed"
        if pm in DECLINES:
            outcome = ("decline",) + DECLINES[pm]
        elif pm in THREE_DS:
            outcome = "requires_action"
        if fault is not None:
            k = fault["kind"]
            if k == "decline":
                dc = fault.get("decline_code") or "insufficient_funds"
                code = fault.get("code") or ("card_declined" if dc not in ("expired_card", "incorrect_cvc", "processing_error") else dc)
                outcome = ("decline", code, dc, fault.get("message") or DECLINE_MESSAGES.get(dc, "Your card was declined."))
            elif k in ("requires_action", "processing"):
                outcome = k
        if outcome == "requires_action" and (p.get("off_session") in (True, "one_off", "recurring")
                                             or p.get("error_on_requires_action")):
            outcome = ("decline", "authentication_required", "authentication_required",
                       DECLINE_MESSAGES["authentication_required"])
        if outcome == "succeed":
            self.succeed_intent(pi, ctx)
            return None
        if outcome == "requires_action":
            return_url = self.intent_extra[pi["id"]]["return_url"]
            if return_url:
                na = {"type": "redirect_to_url",
                      "redirect_to_url": {"return_url": return_url,
                                          "url": "https://hooks.stripe.com/3d_secure_2/hosted?payment_intent=%s" % pi["id"]}}
            else:
                na = {"type": "use_stripe_sdk",
                      "use_stripe_sdk": {"type": "three_d_secure_redirect", "source": self.new_id("src_"),
                                         "stripe_js": "https://hooks.stripe.com/redirect/authenticate/%s" % pi["id"]}}
            pi.update(status="requires_action", next_action=na)
            self.emit("payment_intent.requires_action", pi, ctx)
            return None
        if outcome == "processing":
            pi.update(status="processing", processing={"card": {}, "type": "card"})
            self.emit("payment_intent.processing", pi, ctx)
            return None
        return self.decline_intent(pi, outcome[1], outcome[2], outcome[3], ctx)

    # -- refunds ---------------------------------------------------------------
    def refundable(self, ch):
        live = sum(r["amount"] for r in self.refunds.values()
                   if r["charge"] == ch["id"] and r["status"] in ("succeeded", "pending", "requires_action"))
        return ch["amount"] - live

    def update_charge_refunds(self, ch):
        refunded = ch["amount"] - self.refundable(ch)
        ch["amount_refunded"] = refunded
        ch["refunded"] = refunded >= ch["amount"]

    def create_refund(self, pi, ch, amount, reason, metadata, ctx, status="succeeded"):
        rid = self.new_id("re_")
        r = {"id": rid, "object": "refund", "amount": amount,
             "balance_transaction": self.new_id("txn_") if status != "failed" else None,
             "charge": ch["id"], "created": int(time.time()), "currency": ch["currency"],
             "destination_details": {"card": {"reference_status": "pending", "reference_type": "acquirer_reference_number",
                                              "type": "refund"}, "type": "card"},
             "metadata": metadata, "payment_intent": pi["id"], "reason": reason,
             "receipt_number": None, "source_transfer_reversal": None,
             "status": status, "transfer_reversal": None}
        if status == "failed":
            r["failure_reason"] = "declined"
            r["failure_balance_transaction"] = self.new_id("txn_")
        self.refunds[rid] = r
        self.update_charge_refunds(ch)
        self.ledger_refunds.append({
            "id": rid, "payment_intent": pi["id"], "charge": ch["id"], "amount": amount,
            "currency": ch["currency"], "status": status, "reason": reason,
            "payment_id": metadata.get("payment_id") or pi["metadata"].get("payment_id"),
            "refund_id": metadata.get("refund_id"), "idempotency_key": ctx.get("idem_key"),
            "source": ctx.get("source", "api"), "created": r["created"]})
        st = self.key_stats(ctx.get("idem_key"))
        if st is not None:
            st["refunds"] += 1
            st["objects"].append(rid)
        self.emit("refund.created", r, ctx)
        self.emit("charge.refunded", ch, ctx)
        return r

    def set_refund_status(self, r, status, failure_reason=None, ctx=None):
        r["status"] = status
        if status == "failed":
            r["failure_reason"] = failure_reason or "declined"
            r["failure_balance_transaction"] = self.new_id("txn_")
        self.update_charge_refunds(self.charges[r["charge"]])
        for e in self.ledger_refunds:
            if e["id"] == r["id"]:
                e["status"] = status
        self.emit("refund.updated", r, ctx or {})
        self.emit("charge.refund.updated", r, ctx or {})

    # -- webhook events --------------------------------------------------------
    def emit(self, type_, obj, ctx):
        if not self.config["events"]:
            return
        self.event_seq += 1
        # Rendered (payload, signature) on first read: emitting stays cheap.
        t = int(time.time())
        self.events.append({"seq": self.event_seq, "id": self.new_id("evt_"), "type": type_, "created": t,
                            "_object": dict(obj), "_version": self.config["default_api_version"],
                            "_request": {"id": ctx.get("request_id"), "idempotency_key": ctx.get("idem_key")},
                            "_secret": self.config["webhook_secret"]})

    def render_event(self, e):
        if "payload" not in e:
            ev = {"id": e["id"], "object": "event", "api_version": e.pop("_version"),
                  "created": e["created"], "data": {"object": e.pop("_object")},
                  "livemode": False, "pending_webhooks": 1, "request": e.pop("_request"),
                  "type": e["type"]}
            ev["livemode"] = bool(ev["data"]["object"].get("livemode", False))
            e["payload"] = json.dumps(ev, indent=2)
            e["signature"] = self.sign(e["payload"], e["created"], e.pop("_secret"))
        return e

    def sign(self, payload, t, secret=None):
        secret = secret or self.config["webhook_secret"]
        mac = hmac.new(secret.encode(), ("%d." % t).encode() + payload.encode(), hashlib.sha256).hexdigest()
        return "t=%d,v1=%s" % (t, mac)

    # -- request entry point -----------------------------------------------------
    def handle(self, req):
        self.seq += 1
        if req.path.startswith("/_test/") or req.path == "/_test":
            try:
                status, body = self.control(req)
            except StripeError as e:
                status, body = e.status, {"error": {"type": e.type, "message": e.message}}
            except (ValueError, KeyError, TypeError) as e:
                status, body = 400, {"error": {"type": "invalid_request_error", "message": str(e)}}
            return Response(status, json.dumps(body).encode())
        return self.api(req)

    def log_request(self, req, rec):
        self.requests.append(rec)

    def api(self, req):
        request_id = self.new_id("req_", 14)
        self.counts["requests"] += 1
        rec = {"seq": self.seq, "time": time.time(), "method": req.method, "path": req.path,
               "query": req.query, "idempotency_key": req.idem_key,
               "stripe_version": req.headers.get("stripe-version"), "request_id": request_id,
               "content_type": req.headers.get("content-type"), "status": None,
               "replayed": False, "fault": None, "params": None}
        self.requests.append(rec)
        hdrs = [("Request-Id", request_id)]
        version = req.headers.get("stripe-version") or self.config["default_api_version"]
        hdrs.append(("Stripe-Version", version))
        if req.idem_key is not None and req.method == "POST":
            hdrs.append(("Idempotency-Key", req.idem_key))

        def error_response(e, extra_headers=()):
            return Response(e.status, json.dumps(e.body(request_id)).encode(),
                            hdrs + list(e.headers) + list(extra_headers))

        def finish(resp, fault=None):
            rec["status"] = resp.status
            if fault is not None:
                if fault.get("should_retry") is not None:
                    resp.headers.append(("Stripe-Should-Retry", "true" if fault["should_retry"] else "false"))
                if FAULT_KINDS[fault["kind"]] == "wire":
                    resp.wire = "drop" if fault["kind"] == "drop_after" else fault["kind"]
                    resp.reset = bool(fault.get("reset"))
            return resp

        # parse the request
        try:
            route, ids = self.route(req)
            params = self.request_params(req)
        except StripeError as e:
            return finish(error_response(e))
        rec["params"] = params
        api_key, auth_error = self.authenticate(req)
        ctx = {"request_id": request_id, "idem_key": req.idem_key, "op": route,
               "api_key": api_key, "version": version, "livemode": bool(api_key and "_live_" in api_key)}
        self.request_context(route, ids, params, ctx)

        # idempotency: what a retry of this key would get (nothing changes yet)
        idem_key = req.idem_key if req.method == "POST" else None
        entry = None
        fingerprint = None
        if idem_key is not None and api_key is not None:
            fingerprint = json.dumps([req.method, req.path, params], sort_keys=True)
            entry = self.idem.get((api_key, idem_key))
            if entry is not None and time.time() - entry["created"] > self.config["idempotency_ttl_s"]:
                del self.idem[(api_key, idem_key)]
                entry = None
        executing = entry is None
        fault = self.pick_fault(req, ctx, executing)
        rec["fault"] = fault["kind"] if fault else None
        latency = self.config["latency_ms"] / 1000.0

        def delayed(seconds, fn):
            return Delayed(seconds, fn) if seconds > 0 else fn()

        # edge faults: answered before the API does anything, never saved
        if fault is not None and FAULT_KINDS[fault["kind"]] == "edge":
            def edge():
                k = fault["kind"]
                if k == "drop_before":
                    rec["status"] = "dropped"
                    return Response(0, b"", wire="drop", reset=bool(fault.get("reset")))
                if k == "429":
                    code = fault.get("code") or "rate_limit"
                    msg = ("Request rate limit exceeded. Learn more about rate limits here "
                           "https://stripe.com/docs/rate-limits." if code == "rate_limit" else
                           "This object cannot be accessed right now because another API request or "
                           "Stripe process is currently accessing it. If you see this error "
                           "intermittently, retry the request. If you see this error frequently and "
                           "are making multiple concurrent requests to a single object, make your "
                           "requests serially or at a lower rate.")
                    e = StripeError(429, "invalid_request_error", fault.get("message") or msg, code=code)
                    ra = fault.get("retry_after", 1)
                    extra = [("Retry-After", str(ra))] if ra not in (None, "") else []
                    return finish(error_response(e, extra), fault)
                if k == "409":
                    e = StripeError(409, "idempotency_error", fault.get("message") or
                                    "There is currently another in-progress request using this Idempotent Key "
                                    "(that probably means you submitted twice, and the other request is still "
                                    "going through): %s. Please try again later." % idem_key,
                                    code=fault.get("code") or "idempotency_key_in_use")
                    return finish(error_response(e), fault)
                status = int(k)
                e = StripeError(status, "api_error", fault.get("message") or
                                "An unknown error occurred while processing this request. "
                                "Please try again later.", code=fault.get("code"))
                # a 502/503/504 carries Retry-After only when the fault names one
                ra = fault.get("retry_after")
                extra = [("Retry-After", str(ra))] if ra not in (None, "") else []
                return finish(error_response(e, extra), fault)
            return delayed(latency, edge)

        # authentication, version
        if auth_error is not None:
            return finish(error_response(auth_error, [("WWW-Authenticate", 'Basic realm="Stripe"')]))
        if not VERSION_RE.match(version):
            return finish(error_response(invalid("Invalid Stripe API version: %s" % version,
                                                 code="api_version_invalid")))
        if idem_key is not None and len(idem_key) > 255:
            return finish(error_response(invalid(
                "Invalid Idempotency-Key: keys can be at most 255 characters long; yours has %d." % len(idem_key),
                param="Idempotency-Key")))
        stats = self.key_stats(idem_key)
        if stats is not None:
            stats["requests"] += 1

        if entry is not None:
            if entry["state"] == "in_progress":
                self.counts["conflicts"] += 1
                e = StripeError(409, "idempotency_error",
                                "There is currently another in-progress request using this Idempotent Key "
                                "(that probably means you submitted twice, and the other request is still "
                                "going through): %s. Please try again later." % idem_key,
                                code="idempotency_key_in_use")
                return delayed(latency, lambda: finish(error_response(e), fault))
            if entry["method"] != req.method or entry["path"] != req.path:
                e = StripeError(400, "idempotency_error",
                                "Keys for idempotent requests can only be used for the same endpoint they "
                                "were first used for ('%s %s' vs '%s %s'). Try using a key other than '%s' "
                                "if you meant to execute a different request."
                                % (entry["method"], entry["path"], req.method, req.path, idem_key))
                return delayed(latency, lambda: finish(error_response(e), fault))
            if entry["fingerprint"] != fingerprint:
                e = StripeError(400, "idempotency_error",
                                "Keys for idempotent requests can only be used with the same parameters they "
                                "were first used with. Try using a key other than '%s' if you meant to "
                                "execute a different request." % idem_key)
                return delayed(latency, lambda: finish(error_response(e), fault))
            # replay the saved answer
            self.counts["replays"] += 1
            stats["replays"] += 1
            rec["replayed"] = True

            def replay():
                h = [x for x in hdrs if x[0] != "Request-Id"]
                h = [("Request-Id", entry["request_id"])] + h + [("Idempotent-Replayed", "true")]
                h += entry["headers"]
                return finish(Response(entry["status"], entry["body"], h), fault)
            return delayed(latency, replay)

        # validation: refused before execution begins, never saved
        try:
            params = self.validate_params(route, params)
        except StripeError as e:
            return delayed(latency, lambda: finish(error_response(e), fault))

        # execution begins: the key is taken until the answer is saved
        if idem_key is not None:
            stats["executions"] += 1
            entry = {"state": "in_progress", "fingerprint": fingerprint, "method": req.method,
                     "path": req.path, "created": time.time(), "request_id": request_id}
            self.idem[(api_key, idem_key)] = entry

        def execute():
            extra_headers = []
            if fault is not None and fault["kind"] == "500":
                e = StripeError(500, "api_error", fault.get("message") or
                                "An unknown error occurred while processing this request.",
                                code=fault.get("code"), saved=fault.get("stored", True))
                if fault.get("effect"):
                    try:
                        self.execute(route, ids, params, ctx, None)
                    except StripeError:
                        pass
                status, body, saved = 500, e.body(request_id), e.saved
            else:
                try:
                    status, body = 200, self.execute(route, ids, params, ctx, fault)
                    saved = True
                except StripeError as e:
                    status, body, saved = e.status, e.body(request_id), e.saved
                    extra_headers = list(e.headers)
            if fault is not None and fault.get("stored") is not None and fault["kind"] != "500":
                saved = fault["stored"]
            raw = json.dumps(body).encode()
            if idem_key is not None:
                if saved:
                    entry.update(state="done", status=status, body=raw, headers=extra_headers)
                else:
                    self.idem.pop((api_key, idem_key), None)
            return finish(Response(status, raw, hdrs + extra_headers), fault)

        delay = latency
        if fault is not None and fault["kind"] == "slow":
            delay += fault["delay_ms"] / 1000.0
        return delayed(delay, execute)

    # -- routing, parameters -------------------------------------------------------
    ROUTES = [
        ("POST", re.compile(r"^/v1/payment_intents$"), "payment_intent.create", "POST /v1/payment_intents"),
        ("GET", re.compile(r"^/v1/payment_intents/search$"), "payment_intent.search", "GET /v1/payment_intents/search"),
        ("POST", re.compile(r"^/v1/payment_intents/([^/]+)/confirm$"), "payment_intent.confirm",
         "POST /v1/payment_intents/{intent}/confirm"),
        ("POST", re.compile(r"^/v1/payment_intents/([^/]+)/cancel$"), "payment_intent.cancel",
         "POST /v1/payment_intents/{intent}/cancel"),
        ("GET", re.compile(r"^/v1/payment_intents/([^/]+)$"), "payment_intent.retrieve",
         "GET /v1/payment_intents/{intent}"),
        ("POST", re.compile(r"^/v1/refunds$"), "refund.create", "POST /v1/refunds"),
        ("GET", re.compile(r"^/v1/refunds$"), "refund.list", "GET /v1/refunds"),
        ("GET", re.compile(r"^/v1/refunds/([^/]+)$"), "refund.retrieve", "GET /v1/refunds/{refund}"),
    ]
    SCHEMA_OF = {r[2]: r[3] for r in ROUTES}

    def route(self, req):
        for method, rx, name, _ in self.ROUTES:
            m = rx.match(req.path)
            if m and method == req.method:
                return name, m.groups()
        raise invalid("Unrecognized request URL (%s: %s). Please see https://stripe.com/docs or we can "
                      "help at https://support.stripe.com/." % (req.method, req.path), status=404)

    def request_params(self, req):
        text = req.query or ""
        if req.method == "POST" and req.body:
            ctype = (req.headers.get("content-type") or "application/x-www-form-urlencoded").split(";")[0].strip().lower()
            if ctype != "application/x-www-form-urlencoded":
                raise invalid("Invalid request: the request body must be application/x-www-form-urlencoded, "
                              "not %s." % ctype)
            try:
                body = req.body.decode("utf-8")
            except UnicodeDecodeError:
                raise invalid("Invalid request: the body is not valid UTF-8.")
            text = text + "&" + body if text else body
        return parse_form(text)

    def authenticate(self, req):
        auth = req.headers.get("authorization")
        key = None
        if auth:
            scheme, _, cred = auth.partition(" ")
            if scheme.lower() == "bearer":
                key = cred.strip()
            elif scheme.lower() == "basic":
                try:
                    key = base64.b64decode(cred.strip(), validate=True).decode().partition(":")[0]
                except (ValueError, UnicodeDecodeError):
                    key = ""
            else:
                key = ""
        if not auth:
            return None, StripeError(401, "invalid_request_error",
                                     "You did not provide an API key. You need to provide your API key in the "
                                     "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                                     "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for "
                                     "details, or we can help at https://support.stripe.com/.")
        allowed = self.config["api_keys"]
        if not key or not KEY_RE.match(key) or (allowed and key not in allowed):
            shown = (key[:8] + "*" * max(0, len(key) - 12) + key[-4:]) if key and len(key) > 12 else "****"
            return None, StripeError(401, "invalid_request_error",
                                     "Invalid API Key provided: %s" % shown, code="api_key_invalid")
        return key, None

    def request_context(self, route, ids, params, ctx):
        md = params.get("metadata") if isinstance(params.get("metadata"), dict) else {}
        ctx["payment_id"] = md.get("payment_id")
        ctx["refund_id"] = md.get("refund_id")
        pi = None
        if ids:
            pi = self.intents.get(ids[0])
        elif route == "refund.create" and isinstance(params.get("payment_intent"), str):
            pi = self.intents.get(params["payment_intent"])
        if pi is not None and ctx["payment_id"] is None:
            ctx["payment_id"] = pi["metadata"].get("payment_id")
        ctx["confirming"] = route == "payment_intent.confirm" or (
            route == "payment_intent.create" and params.get("confirm") == "true")

    def validate_params(self, route, params):
        schema = PARAM_SCHEMAS[self.SCHEMA_OF[route]]
        md = params.get("metadata")
        if md == "":
            params = dict(params)
            params["metadata"] = {}
        p = validate(schema, params, [])
        # p's top-level key names are not bracketed: fix the param of errors
        if "metadata" in p:
            p["metadata"] = check_metadata(p["metadata"])
        for e in p.get("expand", ()):
            allowed = {"payment_intent.create": ("latest_charge",), "payment_intent.confirm": ("latest_charge",),
                       "payment_intent.cancel": ("latest_charge",), "payment_intent.retrieve": ("latest_charge",),
                       "payment_intent.search": ("data.latest_charge",),
                       "refund.create": ("charge", "payment_intent"), "refund.retrieve": ("charge", "payment_intent"),
                       "refund.list": ("data.charge", "data.payment_intent")}[route]
            if e not in allowed:
                raise invalid("This property cannot be expanded (%s)." % e, param="expand")
        return p

    # -- the operations ------------------------------------------------------------
    def execute(self, route, ids, p, ctx, fault):
        expand = tuple(p.get("expand", ()))
        if route == "payment_intent.create":
            return self.op_create_intent(p, ctx, fault, expand)
        if route == "payment_intent.confirm":
            return self.op_confirm_intent(self.get_intent(ids[0]), p, ctx, fault, expand)
        if route == "payment_intent.cancel":
            return self.op_cancel_intent(self.get_intent(ids[0]), p, ctx, expand)
        if route == "payment_intent.retrieve":
            pi = self.get_intent(ids[0])
            if "client_secret" in p and p["client_secret"] != pi["client_secret"]:
                raise invalid("The client_secret provided does not match the client_secret associated with "
                              "the PaymentIntent.", param="client_secret")
            return self.pi_object(pi, expand)
        if route == "payment_intent.search":
            return self.op_search(p)
        if route == "refund.create":
            return self.op_create_refund(p, ctx, fault, expand)
        if route == "refund.retrieve":
            r = self.refunds.get(ids[0])
            if r is None:
                raise invalid("No such refund: '%s'" % ids[0], code="resource_missing", param="id", status=404)
            return self.refund_object(r, expand)
        if route == "refund.list":
            return self.op_list_refunds(p)
        raise AssertionError(route)

    def get_intent(self, pid):
        pi = self.intents.get(pid)
        if pi is None:
            raise invalid("No such payment_intent: '%s'" % pid, code="resource_missing",
                          param="intent", status=404, saved=True)
        return pi

    def check_amount(self, amount, currency):
        if currency not in MIN_AMOUNT:
            raise invalid("Invalid currency: %s. Stripe currently supports these currencies: %s"
                          % (currency, ", ".join(sorted(MIN_AMOUNT))), param="currency")
        if amount < 1:
            raise invalid("This value must be greater than or equal to 1.",
                          code="parameter_invalid_integer", param="amount")
        if amount < MIN_AMOUNT[currency]:
            raise invalid("Amount must be at least %s" % fmt_amount(MIN_AMOUNT[currency], currency),
                          code="amount_too_small", param="amount")
        if amount > MAX_AMOUNT:
            raise invalid("Amount must be no more than %s" % fmt_amount(MAX_AMOUNT, currency),
                          code="amount_too_large", param="amount")

    def op_create_intent(self, p, ctx, fault, expand):
        if fault is not None and fault["kind"] == "tamper":
            # the request as if altered on its way: Stripe makes (and
            # charges) a PaymentIntent other than the one asked for
            p = dict(p)
            if fault.get("amount") is not None:
                p["amount"] = fault["amount"]
            if fault.get("currency") is not None:
                p["currency"] = fault["currency"]
            if fault.get("metadata_payment_id") is not None:
                p["metadata"] = dict(p.get("metadata") or {}, payment_id=fault["metadata_payment_id"])
        self.check_amount(p["amount"], p["currency"])
        if p.get("capture_method") == "manual":
            raise invalid("The stand-in does not implement capture_method=manual (no capture endpoint).",
                          param="capture_method")
        if p.get("confirm") is not True:
            for k in ("return_url", "error_on_requires_action", "off_session", "mandate", "mandate_data"):
                if k in p:
                    raise invalid("You can only pass %s when confirm=true." % k, param=k)
        version = ctx.get("version") or self.config["default_api_version"]
        if p.get("confirm"):
            apm = p.get("automatic_payment_methods")
            if apm is None and "payment_method_types" not in p and version >= "2023-08-16":
                apm = {"enabled": True}
            if apm is not None and not apm["enabled"]:
                apm = None
            if apm is not None:
                apm = {"allow_redirects": apm.get("allow_redirects", "always")}
            self.confirm_checks(p.get("payment_method"), apm, p.get("return_url"))
        pi = self.new_intent(p, ctx["livemode"], version)
        st = self.key_stats(ctx.get("idem_key"))
        if st is not None:
            st["objects"].append(pi["id"])
        self.emit("payment_intent.created", pi, ctx)
        if p.get("confirm"):
            err = self.confirm_intent(pi, p, ctx, fault)
            if err is not None:
                err.saved = True
                raise err
        return self.pi_object(pi, expand)

    def op_confirm_intent(self, pi, p, ctx, fault, expand):
        if pi["status"] not in ("requires_payment_method", "requires_confirmation", "requires_action"):
            raise StripeError(400, "invalid_request_error",
                              "You cannot confirm this PaymentIntent because it has a status of %s. Only a "
                              "PaymentIntent with one of the following statuses may be confirmed: "
                              "requires_confirmation, requires_action, requires_payment_method." % pi["status"],
                              code="payment_intent_unexpected_state",
                              extra={"payment_intent": self.pi_object(pi)})
        if p.get("client_secret") is not None and p["client_secret"] != pi["client_secret"]:
            raise invalid("The client_secret provided does not match the client_secret associated with the "
                          "PaymentIntent.", param="client_secret")
        extra = self.intent_extra[pi["id"]]
        self.confirm_checks(p.get("payment_method", pi["payment_method"]), pi["automatic_payment_methods"],
                            p.get("return_url", extra["return_url"]), pi)
        if "payment_method" in p:
            pi["payment_method"] = p["payment_method"]
        if "return_url" in p:
            extra["return_url"] = p["return_url"]
        for k in ("receipt_email", "setup_future_usage", "shipping"):
            if k in p:
                pi[k] = p[k] or None
        err = self.confirm_intent(pi, p, ctx, fault)
        if err is not None:
            raise err
        return self.pi_object(pi, expand)

    def op_cancel_intent(self, pi, p, ctx, expand):
        if pi["status"] in ("succeeded", "canceled"):
            raise StripeError(400, "invalid_request_error",
                              "You cannot cancel this PaymentIntent because it has a status of %s. Only a "
                              "PaymentIntent with one of the following statuses may be canceled: "
                              "requires_payment_method, requires_capture, requires_confirmation, "
                              "requires_action, processing." % pi["status"],
                              code="payment_intent_unexpected_state",
                              extra={"payment_intent": self.pi_object(pi)})
        pi.update(status="canceled", canceled_at=int(time.time()),
                  cancellation_reason=p.get("cancellation_reason"), next_action=None, processing=None)
        self.emit("payment_intent.canceled", pi, ctx)
        return self.pi_object(pi, expand)

    def op_create_refund(self, p, ctx, fault, expand):
        pid, cid = p.get("payment_intent"), p.get("charge")
        if not pid and not cid:
            raise invalid("One of the following params should be provided for this request: "
                          "payment_intent or charge.", code="parameter_missing", param="payment_intent")
        if pid:
            pi = self.intents.get(pid)
            if pi is None:
                raise invalid("No such payment_intent: '%s'" % pid, code="resource_missing",
                              param="payment_intent", saved=True)
            ch = self.charges.get(pi["latest_charge"]) if pi["latest_charge"] else None
            if cid and (ch is None or ch["id"] != cid):
                raise invalid("The charge %s does not belong to payment_intent %s." % (cid, pid),
                              param="charge", saved=True)
        else:
            ch = self.charges.get(cid)
            if ch is None:
                raise invalid("No such charge: '%s'" % cid, code="resource_missing", param="charge", saved=True)
            pi = self.intents[ch["payment_intent"]]
        if pi["status"] != "succeeded" or ch is None or ch["status"] != "succeeded":
            raise StripeError(400, "invalid_request_error",
                              "This PaymentIntent (%s) does not have a successful charge to refund." % pi["id"],
                              code="charge_not_refundable" if pi["status"] == "succeeded" else
                              "payment_intent_unexpected_state", param="payment_intent")
        if p.get("currency") and p["currency"] != ch["currency"]:
            raise invalid("The currency of the refund (%s) must match the currency of the charge (%s)."
                          % (p["currency"], ch["currency"]), param="currency", saved=True)
        remaining = self.refundable(ch)
        if remaining <= 0:
            raise StripeError(400, "invalid_request_error", "Charge %s has already been refunded." % ch["id"],
                              code="charge_already_refunded", extra={"charge": ch["id"]})
        amount = p.get("amount", remaining)
        if amount < 1:
            raise invalid("This value must be greater than or equal to 1.",
                          code="parameter_invalid_integer", param="amount")
        if amount > remaining:
            raise StripeError(400, "invalid_request_error",
                              "Refund amount (%s) is greater than unrefunded amount on charge (%s)"
                              % (fmt_amount(amount, ch["currency"]), fmt_amount(remaining, ch["currency"])),
                              code="amount_too_large", param="amount", extra={"charge": ch["id"]})
        status = "succeeded"
        if fault is not None and fault["kind"] == "refund_pending":
            status = "pending"
        elif fault is not None and fault["kind"] == "refund_failed":
            status = "failed"
        r = self.create_refund(pi, ch, amount, p.get("reason"), p.get("metadata") or {}, ctx, status)
        return self.refund_object(r, expand)

    def op_list_refunds(self, p):
        limit = p.get("limit", 10)
        if not 1 <= limit <= 100:
            raise invalid("Invalid integer: %d (limit must be between 1 and 100)" % limit,
                          code="parameter_invalid_integer", param="limit")
        rows = [r for r in self.refunds.values()
                if (not p.get("payment_intent") or r["payment_intent"] == p["payment_intent"])
                and (not p.get("charge") or r["charge"] == p["charge"])]
        rows.reverse()          # newest first
        ids = [r["id"] for r in rows]
        if p.get("starting_after"):
            if p["starting_after"] not in ids:
                raise invalid("No such refund: '%s'" % p["starting_after"], code="resource_missing",
                              param="starting_after")
            rows = rows[ids.index(p["starting_after"]) + 1:]
        elif p.get("ending_before"):
            if p["ending_before"] not in ids:
                raise invalid("No such refund: '%s'" % p["ending_before"], code="resource_missing",
                              param="ending_before")
            rows = rows[:ids.index(p["ending_before"])][-limit:]
        expand = tuple(e[5:] for e in p.get("expand", ()))
        return {"object": "list", "data": [self.refund_object(r, expand) for r in rows[:limit]],
                "has_more": len(rows) > limit, "url": "/v1/refunds"}

    SEARCH_CLAUSE = re.compile(
        r"""\s*(-)?(metadata\[(?:'([^']*)'|"([^"]*)")\]|[a-z_]+)\s*(:|>=|<=|>|<)\s*"""
        r"""(?:'([^']*)'|"([^"]*)"|(-?\d+)|(null))\s*""")

    def op_search(self, p):
        q = p["query"]
        limit = p.get("limit", 10)
        if not 1 <= limit <= 100:
            raise invalid("Invalid integer: %d (limit must be between 1 and 100)" % limit,
                          code="parameter_invalid_integer", param="limit")
        clauses, joiner, pos = [], None, 0
        while True:
            m = self.SEARCH_CLAUSE.match(q, pos)
            if not m:
                raise invalid("Invalid query: could not parse %r at position %d." % (q, pos),
                              code="parameter_invalid", param="query")
            neg, field, mk1, mk2, op, s1, s2, num, null = m.groups()
            key = mk1 if mk1 is not None else mk2
            value = s1 if s1 is not None else s2 if s2 is not None else int(num) if num is not None else None
            if key is None and field not in ("amount", "created", "currency", "customer", "status", "metadata"):
                raise invalid("Invalid query: field %r is not supported for payment_intents." % field,
                              param="query")
            clauses.append((bool(neg), field if key is None else "metadata", key, op, value))
            pos = m.end()
            if pos >= len(q):
                break
            m2 = re.compile(r"(AND|OR)\s+").match(q, pos)
            if not m2:
                raise invalid("Invalid query: expected AND or OR at position %d." % pos, param="query")
            if joiner and joiner != m2.group(1):
                raise invalid("Invalid query: AND and OR cannot be combined in one query.", param="query")
            joiner = m2.group(1)
            pos = m2.end()

        def test(pi, c):
            neg, field, key, op, value = c
            actual = pi["metadata"].get(key) if field == "metadata" else pi.get(field)
            if op == ":":
                ok = (actual is None) if value is None else (str(actual) == str(value))
            else:
                if not isinstance(actual, int) or not isinstance(value, int):
                    return False
                ok = {"<": actual < value, ">": actual > value, "<=": actual <= value, ">=": actual >= value}[op]
            return ok != neg

        combine = any if joiner == "OR" else all
        rows = [pi for pi in self.intents.values() if combine(test(pi, c) for c in clauses)]
        rows.sort(key=lambda pi: pi["created"], reverse=True)
        start = 0
        if p.get("page"):
            m = re.fullmatch(r"page_(\d+)", p["page"])
            if not m:
                raise invalid("Invalid page: %s" % p["page"], param="page")
            start = int(m.group(1))
        chunk = rows[start:start + limit]
        more = len(rows) > start + limit
        expand = tuple(e[5:] for e in p.get("expand", ()))
        return {"object": "search_result", "data": [self.pi_object(pi, expand) for pi in chunk],
                "has_more": more, "next_page": "page_%d" % (start + limit) if more else None,
                "url": "/v1/payment_intents/search"}

    # -- control endpoints -----------------------------------------------------------
    def control_params(self, req):
        if not req.body:
            return dict(parse_qsl(req.query or "", keep_blank_values=True))
        ctype = (req.headers.get("content-type") or "").split(";")[0].strip().lower()
        text = req.body.decode("utf-8")
        if ctype == "application/json" or text.lstrip().startswith(("{", "[")):
            return json.loads(text)
        flat = dict(parse_qsl(text, keep_blank_values=True))
        nested = parse_form(text)
        flat.update({k: v for k, v in nested.items() if isinstance(v, dict)})
        return flat

    def ledger(self):
        by_pid, by_rid = {}, {}
        for c in self.ledger_charges:
            d = by_pid.setdefault(c["payment_id"], {"payment_intents": [], "charges": 0, "charged_amount": 0,
                                                    "refunds": 0, "refunded_amount": 0})
            d["charges"] += 1
            d["charged_amount"] += c["amount"]
        for pi in self.intents.values():
            pid = pi["metadata"].get("payment_id")
            if pid is not None:
                d = by_pid.setdefault(pid, {"payment_intents": [], "charges": 0, "charged_amount": 0,
                                            "refunds": 0, "refunded_amount": 0})
                d["payment_intents"].append(pi["id"])
        for r in self.ledger_refunds:
            live = r["status"] in ("succeeded", "pending", "requires_action")
            d = by_pid.setdefault(r["payment_id"], {"payment_intents": [], "charges": 0, "charged_amount": 0,
                                                    "refunds": 0, "refunded_amount": 0})
            d["refunds"] += 1
            d["refunded_amount"] += r["amount"] if live else 0
            if r["refund_id"] is not None:
                e = by_rid.setdefault(r["refund_id"], {"refunds": 0, "refunded_amount": 0, "ids": []})
                e["refunds"] += 1
                e["refunded_amount"] += r["amount"] if live else 0
                e["ids"].append(r["id"])
        by_pid.pop(None, None)
        return {"charges": self.ledger_charges, "refunds": self.ledger_refunds,
                "by_idempotency_key": self.by_key, "by_payment_id": by_pid, "by_refund_id": by_rid,
                "counts": dict(self.counts, payment_intents=len(self.intents),
                               charges=len(self.ledger_charges), refunds=len(self.ledger_refunds),
                               idempotency_keys=len(self.idem))}

    def fault_view(self, f):
        return {k: v for k, v in f.items() if v is not None}

    def control(self, req):
        path, m = req.path, req.method
        if path == "/_test/health":
            return 200, {"ok": True, "pid": os.getpid(), "started": self.started,
                         "uptime_s": time.time() - self.started}
        if path == "/_test/ledger" and m == "GET":
            return 200, self.ledger()
        if path == "/_test/outage" and m == "POST":
            body = self.control_params(req)
            secs = float(body.get("seconds", 0))
            mode = body.get("mode", "refuse")
            if mode not in ("refuse", "reset") or not 0 < secs <= 3600:
                raise ValueError("an outage needs 0 < seconds <= 3600 and mode refuse or reset")
            if self.outage_mode is not None:
                raise ValueError("an outage is already on")
            self.loop.call_later(0.05, self.outage_start, secs, mode)
            return 200, {"seconds": secs, "mode": mode, "resets": self.outage_resets}
        if path == "/_test/outage" and m == "GET":
            return 200, {"mode": self.outage_mode, "resets": self.outage_resets}
        if path == "/_test/reset" and m == "POST":
            self.reset()
            return 200, {"ok": True}
        if path == "/_test/config":
            if m == "POST":
                body = self.control_params(req)
                for k, v in body.items():
                    if k not in self.config:
                        raise ValueError("unknown config key %r (one of %s)" % (k, ", ".join(sorted(self.config))))
                    if k in ("latency_ms", "idempotency_ttl_s", "max_log"):
                        v = float(v) if k == "latency_ms" else int(v)
                    elif k == "events" and isinstance(v, str):
                        v = v.lower() in ("1", "true", "on", "yes")
                    elif k == "api_keys" and isinstance(v, str):
                        v = [x for x in v.split(",") if x]
                    self.config[k] = v
                if "max_log" in body:
                    self.events = deque(self.events, maxlen=self.config["max_log"])
                    self.requests = deque(self.requests, maxlen=self.config["max_log"])
            return 200, dict(self.config)
        if path == "/_test/faults":
            if m == "POST":
                body = self.control_params(req)
                replace = False
                if isinstance(body, dict) and "faults" in body:
                    specs, replace = body["faults"], body.get("replace", False)
                elif isinstance(body, dict):
                    specs = dict(body)
                    replace = specs.pop("replace", False)
                else:
                    specs = body
                if isinstance(specs, dict):
                    specs = [specs]
                new = [self.make_fault(s) for s in specs]
                if str(replace).lower() in ("1", "true"):
                    self.faults = []
                self.faults.extend(new)
                return 200, {"added": [self.fault_view(f) for f in new],
                             "faults": [self.fault_view(f) for f in self.faults]}
            if m == "DELETE":
                self.faults = []
            return 200, {"faults": [self.fault_view(f) for f in self.faults]}
        if path == "/_test/faults/clear" and m == "POST":
            self.faults = []
            return 200, {"faults": []}
        if path == "/_test/requests" and m == "GET":
            q = dict(parse_qsl(req.query or ""))
            rows = [r for r in self.requests
                    if (not q.get("path") or fnmatch.fnmatchcase(r["path"], q["path"]))
                    and (not q.get("idempotency_key") or r["idempotency_key"] == q["idempotency_key"])
                    and (not q.get("since") or r["seq"] > int(q["since"]))]
            if q.get("limit"):
                rows = rows[-int(q["limit"]):]
            return 200, {"requests": rows}
        if path == "/_test/events" and m == "GET":
            q = dict(parse_qsl(req.query or ""))
            rows = [self.render_event(e) for e in self.events
                    if (not q.get("type") or fnmatch.fnmatchcase(e["type"], q["type"]))
                    and (not q.get("since") or e["seq"] > int(q["since"]))]
            return 200, {"events": rows, "webhook_secret": self.config["webhook_secret"]}
        if path == "/_test/events/sign" and m == "POST":
            body = self.control_params(req)
            t = int(body.get("timestamp") or time.time())
            return 200, {"header": self.sign(body["payload"], t, body.get("secret")), "timestamp": t}
        if path == "/_test/expire_keys" and m == "POST":
            body = self.control_params(req) or {}
            key = body.get("idempotency_key")
            gone = [k for k in self.idem if key is None or k[1] == key]
            for k in gone:
                del self.idem[k]
            return 200, {"expired": len(gone)}
        mm = re.match(r"^/_test/payment_intents/([^/]+)/(succeed|fail|processing|requires_action)$", path)
        if mm and m == "POST":
            return self.control_intent(mm.group(1), mm.group(2), self.control_params(req) or {})
        mm = re.match(r"^/_test/refunds/([^/]+)/(succeed|fail|cancel)$", path)
        if mm and m == "POST":
            r = self.refunds.get(mm.group(1))
            if r is None:
                return 404, {"error": {"type": "invalid_request_error", "message": "No such refund: '%s'" % mm.group(1)}}
            if r["status"] not in ("pending", "requires_action") and not (mm.group(2) == "fail" and r["status"] == "succeeded"):
                return 400, {"error": {"type": "invalid_request_error",
                                       "message": "refund %s is %s" % (r["id"], r["status"])}}
            body = self.control_params(req) or {}
            status = {"succeed": "succeeded", "fail": "failed", "cancel": "canceled"}[mm.group(2)]
            self.set_refund_status(r, status, body.get("failure_reason"), {"source": "test"})
            return 200, self.refund_object(r)
        if path == "/_test/dashboard_refund" and m == "POST":
            return self.dashboard_refund(self.control_params(req) or {})
        return 404, {"error": {"type": "invalid_request_error",
                               "message": "Unrecognized control URL (%s: %s)" % (m, path)}}

    def find_intent(self, body):
        if body.get("payment_intent"):
            return self.intents.get(body["payment_intent"])
        if body.get("payment_id"):
            found = [pi for pi in self.intents.values() if pi["metadata"].get("payment_id") == body["payment_id"]
                     and pi["status"] == "succeeded"] or \
                    [pi for pi in self.intents.values() if pi["metadata"].get("payment_id") == body["payment_id"]]
            return found[-1] if found else None
        return None

    def control_intent(self, pid, action, body):
        pi = self.intents.get(pid)
        if pi is None:
            return 404, {"error": {"type": "invalid_request_error", "message": "No such payment_intent: '%s'" % pid}}
        ctx = {"source": "test"}
        if pi["status"] in ("succeeded", "canceled"):
            return 400, {"error": {"type": "invalid_request_error", "code": "payment_intent_unexpected_state",
                                   "message": "PaymentIntent %s is %s" % (pid, pi["status"])}}
        if action == "succeed":
            if not pi["payment_method"]:
                pi["payment_method"] = body.get("payment_method") or "pm_card_visa"
            self.succeed_intent(pi, ctx)
        elif action == "fail":
            if not pi["payment_method"]:
                pi["payment_method"] = body.get("payment_method") or "pm_card_visa"
            dc = body.get("decline_code") or "generic_decline"
            code = body.get("code") or ("card_declined" if dc not in ("expired_card", "incorrect_cvc",
                                                                       "processing_error") else dc)
            self.decline_intent(pi, code, dc, DECLINE_MESSAGES.get(dc, "Your card was declined."), ctx)
        elif action == "processing":
            pi.update(status="processing", processing={"card": {}, "type": "card"}, next_action=None)
            self.emit("payment_intent.processing", pi, ctx)
        else:
            pi.update(status="requires_action",
                      next_action={"type": "use_stripe_sdk",
                                   "use_stripe_sdk": {"type": "three_d_secure_redirect",
                                                      "source": self.new_id("src_")}})
            self.emit("payment_intent.requires_action", pi, ctx)
        return 200, self.pi_object(pi)

    def dashboard_refund(self, body):
        pi = self.find_intent(body)
        if pi is None or pi["status"] != "succeeded":
            return 400, {"error": {"type": "invalid_request_error",
                                   "message": "no succeeded PaymentIntent for %r" % (body.get("payment_intent") or body.get("payment_id"))}}
        ch = self.charges[pi["latest_charge"]]
        remaining = self.refundable(ch)
        amount = int(body.get("amount") or remaining)
        if remaining <= 0:
            return 400, {"error": {"type": "invalid_request_error", "code": "charge_already_refunded",
                                   "message": "Charge %s has already been refunded." % ch["id"]}}
        if amount < 1 or amount > remaining:
            return 400, {"error": {"type": "invalid_request_error", "code": "amount_too_large",
                                   "message": "Refund amount (%d) is greater than unrefunded amount on charge (%d)"
                                              % (amount, remaining)}}
        md = body.get("metadata") or {}
        if not isinstance(md, dict):
            raise ValueError("metadata must be an object")
        r = self.create_refund(pi, ch, amount, body.get("reason") or "requested_by_customer",
                               {str(k): str(v) for k, v in md.items()}, {"source": "dashboard"},
                               body.get("status") or "succeeded")
        return 200, self.refund_object(r)


# ---------------------------------------------------------------------------
# HTTP/1.1
# ---------------------------------------------------------------------------
class Request:
    __slots__ = ("method", "path", "query", "version", "headers", "body", "idem_key")


_date_cache = [0, b""]


def http_date():
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = email.utils.formatdate(now, usegmt=True).encode()
    return _date_cache[1]


class HTTPProtocol(asyncio.Protocol):
    MAX_HEAD = 64 * 1024
    MAX_BODY = 8 * 1024 * 1024

    def __init__(self, app, loop):
        self.app = app
        self.loop = loop
        self.buf = bytearray()
        self.transport = None
        self.busy = False
        self.closed = False
        self.req = None
        self.need = None            # bytes of body still expected (Content-Length)
        self.chunked = False

    def connection_made(self, transport):
        self.transport = transport
        if self.app.outage_mode is not None:
            self.app.outage_resets += 1
            self.drop(True)
            return
        self.app.conns.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def connection_lost(self, exc):
        self.closed = True
        self.app.conns.discard(self)

    def data_received(self, data):
        if self.app.outage_mode is not None:
            self.drop(True)
            return
        self.buf += data
        if not self.busy:
            self.parse()

    def bad(self, status, message):
        body = json.dumps({"error": {"type": "invalid_request_error", "message": message}}).encode()
        self.transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                             b"Connection: close\r\n\r\n%s" % (status, STATUS_TEXT.get(status, "Error").encode(),
                                                                len(body), body))
        self.transport.close()
        self.closed = True

    def parse(self):
        while not self.busy and not self.closed:
            if self.req is None:
                i = self.buf.find(b"\r\n\r\n")
                if i < 0:
                    if len(self.buf) > self.MAX_HEAD:
                        self.bad(431, "request head too large")
                    return
                head = bytes(self.buf[:i]).decode("latin-1")
                del self.buf[:i + 4]
                lines = head.split("\r\n")
                while lines and not lines[0]:
                    lines.pop(0)
                try:
                    method, target, version = lines[0].split(" ")
                except (ValueError, IndexError):
                    self.bad(400, "malformed request line")
                    return
                headers = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(":")
                    if not sep:
                        self.bad(400, "malformed header line")
                        return
                    headers[name.strip().lower()] = value.strip()
                req = Request()
                req.method = method.upper()
                parts = urlsplit(target)
                req.path = parts.path
                req.query = parts.query
                req.version = version
                req.headers = headers
                req.body = b""
                req.idem_key = headers.get("idempotency-key")
                self.req = req
                te = headers.get("transfer-encoding", "").lower()
                self.chunked = "chunked" in te
                if not self.chunked:
                    try:
                        self.need = int(headers.get("content-length", "0"))
                    except ValueError:
                        self.bad(400, "bad Content-Length")
                        return
                    if self.need < 0 or self.need > self.MAX_BODY:
                        self.bad(413, "body too large")
                        return
                if headers.get("expect", "").lower() == "100-continue" and \
                        (self.chunked or len(self.buf) < (self.need or 0)):
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            req = self.req
            if self.chunked:
                done = self.parse_chunks()
                if done is None:
                    return
            else:
                if len(self.buf) < self.need:
                    return
                req.body = bytes(self.buf[:self.need])
                del self.buf[:self.need]
            self.req = None
            self.busy = True
            self.keep_alive = self.wants_keep_alive(req)
            try:
                result = self.app.handle(req)
            except Exception as e:   # a bug in the stand-in: answer 500, keep serving
                import traceback
                traceback.print_exc()
                result = Response(500, json.dumps({"error": {"type": "api_error",
                                                             "message": "stand-in bug: %r" % e}}).encode())
            self.run(result)

    def parse_chunks(self):
        body = bytearray()
        pos = 0
        buf = self.buf
        while True:
            j = buf.find(b"\r\n", pos)
            if j < 0:
                return None
            try:
                size = int(bytes(buf[pos:j]).split(b";")[0], 16)
            except ValueError:
                self.bad(400, "bad chunk size")
                return None
            if size == 0:
                k = buf.find(b"\r\n\r\n", j)
                if k < 0:
                    if buf[j:j + 4] == b"\r\n\r\n":
                        k = j
                    else:
                        return None
                self.req.body = bytes(body)
                del buf[:k + 4]
                return True
            if len(buf) < j + 2 + size + 2:
                return None
            body += buf[j + 2:j + 2 + size]
            pos = j + 2 + size + 2

    @staticmethod
    def wants_keep_alive(req):
        conn = req.headers.get("connection", "").lower()
        if req.version == "HTTP/1.0":
            return "keep-alive" in conn
        return "close" not in conn

    def run(self, result):
        if isinstance(result, Delayed):
            self.loop.call_later(result.delay, self.resume, result.fn)
            return
        self.send(result)

    def resume(self, fn):
        try:
            result = fn()
        except Exception as e:
            import traceback
            traceback.print_exc()
            result = Response(500, json.dumps({"error": {"type": "api_error",
                                                         "message": "stand-in bug: %r" % e}}).encode())
        self.run(result)

    def send(self, resp):
        if self.closed:
            return
        if resp.wire == "drop":
            self.drop(resp.reset)
            return
        body = resp.body
        if resp.wire == "malformed_json":
            body = body[:max(1, len(body) // 2)] + b'\x00{"error": '
        head = [b"HTTP/1.1 %d %s" % (resp.status, STATUS_TEXT.get(resp.status, "Status").encode()),
                b"Server: stripe-standin", b"Date: " + http_date(),
                b"Content-Type: application/json", b"Content-Length: %d" % len(body),
                b"Connection: " + (b"keep-alive" if self.keep_alive else b"close"),
                b"Cache-Control: no-cache, no-store"]
        for k, v in resp.headers:
            head.append(("%s: %s" % (k, v)).encode("latin-1", "replace"))
        data = b"\r\n".join(head) + b"\r\n\r\n" + body
        if resp.wire == "drop_mid_body":
            self.transport.write(data[:len(data) - max(1, len(body) // 2)])
            self.drop(resp.reset)
            return
        self.transport.write(data)
        if not self.keep_alive:
            self.transport.close()
            self.closed = True
            return
        self.busy = False
        if self.buf:
            self.parse()

    def drop(self, reset):
        sock = self.transport.get_extra_info("socket")
        if reset and sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        if reset:
            self.transport.abort()
        else:
            self.transport.close()
        self.closed = True


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------
def parse_args(argv):
    ap = argparse.ArgumentParser(description="Stripe stand-in for payment_ext's tests (127.0.0.1 only)")
    ap.add_argument("--host", default="127.0.0.1", help="loopback address to listen on (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=12111, help="TCP port; 0 picks a free one (default 12111)")
    ap.add_argument("--port-file", help="write the port listened on to this file once listening")
    ap.add_argument("--latency-ms", type=float, default=0.0, help="added to every /v1 answer (default 0)")
    ap.add_argument("--fault", action="append", default=[],
                    help="a standing fault: JSON, or KIND[,field=value...], e.g. 429,rate=0.1,retry_after=2")
    ap.add_argument("--webhook-secret", default=DEFAULT_WEBHOOK_SECRET, help="signs the events at /_test/events")
    ap.add_argument("--api-key", action="append", help="accept only this secret key (repeatable); "
                    "default: any sk_test_/sk_live_/rk_test_/rk_live_ key")
    ap.add_argument("--default-api-version", default=DEFAULT_API_VERSION,
                    help="the account's API version when no Stripe-Version is sent (default %s)" % DEFAULT_API_VERSION)
    ap.add_argument("--no-events", action="store_true", help="do not record webhook events")
    ap.add_argument("--max-log", type=int, default=20000, help="keep this many requests and events (default 20000)")
    ap.add_argument("--seed", type=int, default=None, help="seed for ids and fault rates")
    args = ap.parse_args(argv)
    try:
        if not ipaddress.ip_address(args.host).is_loopback:
            ap.error("--host must be a loopback address")
    except ValueError:
        ap.error("--host must be an IP address")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        app = StandIn(args)
    except ValueError as e:
        print("stripe_standin: %s" % e, file=sys.stderr)
        return 2
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(loop.create_server(
        lambda: HTTPProtocol(app, loop), args.host, args.port, reuse_address=True, backlog=1024))
    port = server.sockets[0].getsockname()[1]
    app.loop, app.server = loop, server
    app.make_server = lambda: loop.create_server(
        lambda: HTTPProtocol(app, loop), args.host, port, reuse_address=True, backlog=1024)
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.port_file)
    print("stripe stand-in listening on http://%s:%d (pid %d)" % (args.host, port, os.getpid()), flush=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loop.stop)
    try:
        loop.run_forever()
    finally:
        if app.server is not None:
            app.server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
