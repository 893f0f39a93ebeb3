/*
 * payment_ext upgrade script, version 1.1 to 1.2.
 *
 * The fresh 1.2 install script is the 1.0 parts of src/sql/, then
 * payment_ext--1.0--1.1.sql, then this file (see the Makefile), so an
 * upgraded database and a fresh install have the same objects;
 * test/t/ops_upgrade.sh compares their catalogs.  The C library of 1.2 keeps
 * every entry point of 1.0 and 1.1, so it serves them while the upgrade runs.
 *
 * 1.2 is the hardening release: each section below names what it changes.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION payment_ext UPDATE TO '1.2'" to load this file. \quit

-- ---------------------------------------------------------------------------
-- issue 17, item 9: one paid payment per registration until it is fully
-- refunded.  A live payment is Pending, Completed or PartiallyRefunded (it
-- was Pending or Completed), so a PartiallyRefunded registration can no
-- longer take a second Completed payment.  An upgrade of a database that
-- already holds two live payments for one registration stops here, naming
-- the first such registration, and changes nothing: an administrator
-- decides (refund one of them in full, or payment.resolve a Pending one to
-- Failed) and runs ALTER EXTENSION ... UPDATE again.
-- ---------------------------------------------------------------------------
DO $pe_live$
DECLARE
	r record;
BEGIN
	SELECT p."EventRegistrationId" AS registration, pg_catalog.count(*) AS live,
	       pg_catalog.string_agg(payment.status_name(p."Status"), ', ' ORDER BY p."Status", p."Id") AS states
	  INTO r
	  FROM "Payments" p
	 WHERE p."Status" IN (0, 1, 4)
	 GROUP BY p."EventRegistrationId"
	HAVING pg_catalog.count(*) > 1
	 ORDER BY p."EventRegistrationId"
	 LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'registration % has % live payments (%)', r.registration, r.live, r.states
			USING ERRCODE = 'unique_violation',
			      DETAIL = 'Version 1.2 allows one Pending, Completed or PartiallyRefunded payment per registration (one paid payment until it is fully refunded).',
			      HINT = 'Refund one of them in full (payment.refund), or set a Pending one to Failed with payment.resolve, then run ALTER EXTENSION payment_ext UPDATE again.';
	END IF;
END
$pe_live$;
DROP INDEX "UX_Payments_EventRegistration_Live";
CREATE UNIQUE INDEX "UX_Payments_EventRegistration_Live"
    ON "Payments"("EventRegistrationId")
    WHERE "Status" IN (0, 1, 4);
COMMENT ON INDEX "UX_Payments_EventRegistration_Live" IS
	'one live (Pending, Completed or PartiallyRefunded) payment per registration: one paid payment until it is fully refunded';

-- ---------------------------------------------------------------------------
-- issue 17, items 1 and 2: no charge for a payment that no longer wants it,
-- and the current attempt's PaymentIntent.  (The logic is in the C library:
-- src/outbox_outcome.c, resolve.c, payments.c, webhook_apply.c.)  A new
-- outbox kind, refund.unwanted: the refund of the whole charge of a
-- PaymentIntent that its payment does not keep (a PaymentIntent of an
-- earlier attempt, or charged after the payment stopped being Pending).
-- ---------------------------------------------------------------------------
ALTER TABLE payment.outbox DROP CONSTRAINT outbox_kind_check;
ALTER TABLE payment.outbox ADD CONSTRAINT outbox_kind_check
	CHECK (kind IN ('payment_intent.create', 'refund.create',
	                'payment_intent.retrieve', 'payment_intent.cancel',
	                'payment_intent.search', 'refund.list', 'refund.unwanted'));
COMMENT ON COLUMN payment.outbox.kind IS
	'payment_intent.create, refund.create, payment_intent.retrieve, payment_intent.cancel, payment_intent.search, refund.list or refund.unwanted';
COMMENT ON TABLE payment.intents IS
	'the latest state Stripe reported of the PaymentIntent of each payment''s current attempt: Stripe status, next action type and the sealed client secret (payment.client_secret); payment.retry removes the row of the earlier attempt';
