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
-- issue 17, item 6: a PaymentIntent that disagrees with its payment
--
-- The worker's outcomes and the webhook appliers share one check
-- (pe_pi_mismatch, src/webhook_apply.c): metadata[payment_id], currency and
-- amount must be the payment's.  A disagreement is a "PaymentFailures" row
-- (code metadata_mismatch, currency_mismatch or amount_mismatch), the
-- payment is not completed, and payment.reconcile lists it until the
-- payment changes (payment.resolve, say).  The worker looks for such a row
-- before it records another, hence its column privilege.
-- ---------------------------------------------------------------------------
GRANT SELECT ("PaymentId", "FailureCode", "CreatedAt") ON "PaymentFailures" TO payment_worker;

CREATE OR REPLACE VIEW payment.reconcile AS
	SELECT p."Id" AS payment_id, NULL::uuid AS refund_id,
	       payment.status_name(p."Status") AS database_state,
	       i.stripe_status AS stripe_state, i.source, i.reported_at,
	       CASE
	         WHEN i.stripe_status OPERATOR(pg_catalog.=) 'succeeded'
	           THEN 'Stripe charged it; the database has it ' || payment.status_name(p."Status")
	         WHEN i.stripe_status OPERATOR(pg_catalog.=) 'canceled'
	           THEN 'Stripe canceled it; the database has it ' || payment.status_name(p."Status")
	         ELSE 'the database has it ' || payment.status_name(p."Status") || '; Stripe has not charged it'
	       END AS problem
	  FROM "Payments" p
	  JOIN payment.intents i ON i.payment_id OPERATOR(pg_catalog.=) p."Id"
	 WHERE (i.stripe_status OPERATOR(pg_catalog.=) 'succeeded' AND p."Status" NOT IN (1, 3, 4))
	    OR (i.stripe_status OPERATOR(pg_catalog.=) 'canceled' AND p."Status" <> 2)
	    OR (i.stripe_status NOT IN ('succeeded', 'canceled') AND p."Status" IN (1, 3, 4))
	UNION ALL
	SELECT p."Id", NULL::uuid, payment.status_name(p."Status"),
	       'refunded ' || (i.amount_refunded::numeric OPERATOR(pg_catalog./) 100)::numeric(12,2),
	       i.source, i.reported_at,
	       'Stripe refunded ' || (i.amount_refunded::numeric OPERATOR(pg_catalog./) 100)::numeric(12,2)
	         || '; the database has ' || COALESCE(p."RefundAmountValue", 0) || ' in refunds that are not Failed'
	  FROM "Payments" p
	  JOIN payment.intents i ON i.payment_id OPERATOR(pg_catalog.=) p."Id"
	 WHERE i.amount_refunded IS NOT NULL
	   AND i.amount_refunded <> (COALESCE(p."RefundAmountValue", 0) OPERATOR(pg_catalog.*) 100)::bigint
	UNION ALL
	SELECT r."OriginalPaymentId", r."Id", 'refund ' || payment.refund_status_name(r."RefundStatus"),
	       'refund ' || s.stripe_status, s.source, s.reported_at,
	       'Stripe has the refund ' || s.stripe_status || '; the database has it '
	         || payment.refund_status_name(r."RefundStatus")
	  FROM "PaymentRefunds" r
	  JOIN payment.refund_states s ON s.refund_id OPERATOR(pg_catalog.=) r."Id"
	 WHERE (s.stripe_status OPERATOR(pg_catalog.=) 'succeeded' AND r."RefundStatus" <> 1)
	    OR (s.stripe_status IN ('failed', 'canceled') AND r."RefundStatus" <> 2)
	    OR (s.stripe_status IN ('pending', 'requires_action') AND r."RefundStatus" <> 0)
	UNION ALL
	SELECT f."PaymentId", NULL::uuid, payment.status_name(p."Status"),
	       f."FailureCode"::text, 'check', f."CreatedAt", f."FailureMessage"
	  FROM "PaymentFailures" f
	  JOIN "Payments" p ON p."Id" OPERATOR(pg_catalog.=) f."PaymentId"
	 WHERE f."FailureCode" IN ('metadata_mismatch', 'currency_mismatch', 'amount_mismatch')
	   AND f."CreatedAt" >= p."UpdatedAt";

-- ---------------------------------------------------------------------------
-- issue 17, item 7: key rotation covers every sealed value
--
-- payment.rotate_keys() (src/sealed.c) now also re-seals
-- payment.intents.client_secret, payment.disputes.stripe_dispute_id and
-- payment.webhook_events.payload, and payment.key_usage counts them, so a
-- key it reports as sealing nothing can leave the keyring.
-- ---------------------------------------------------------------------------
CREATE OR REPLACE VIEW payment.key_usage AS
WITH sealed(v) AS (
	SELECT "EncryptedStripePaymentIntentId" FROM "Payments"
	UNION ALL SELECT "EncryptedStripeCustomerId" FROM "Payments"
	UNION ALL SELECT "EncryptedStripeRefundId" FROM "Payments"
	UNION ALL SELECT "EncryptedStripePaymentMethodId" FROM "PaymentMethods"
	UNION ALL SELECT "EncryptedStripeRefundId" FROM "PaymentRefunds"
	UNION ALL SELECT "EncryptedStripeErrorDetails" FROM "PaymentFailures"
	UNION ALL SELECT e.value FROM payment.outbox o, pg_catalog.jsonb_each_text(o.request) e
	           WHERE pg_catalog.starts_with(e.value, 'pe1:')
	UNION ALL SELECT client_secret FROM payment.intents
	UNION ALL SELECT stripe_dispute_id FROM payment.disputes
	UNION ALL SELECT payload FROM payment.webhook_events
), used AS (
	SELECT pg_catalog.split_part(v, ':', 2) AS key_id, pg_catalog.count(*) AS sealed_values
	  FROM sealed
	 WHERE v IS NOT NULL
	 GROUP BY 1
)
SELECT COALESCE(k.key_id, u.key_id) AS key_id,
       COALESCE(u.sealed_values, 0) AS sealed_values,
       k.key_id IS NOT NULL AS in_keyring,
       COALESCE(k.newest, false) AS newest
  FROM payment.keyring_keys() k
  FULL JOIN used u ON u.key_id OPERATOR(pg_catalog.=) k.key_id;
