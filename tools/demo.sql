--
-- tools/demo.sql — the payment flow on a throwaway cluster (tools/run demo)
--
\set ON_ERROR_STOP 1
\pset footer off
SET client_min_messages = warning;
\echo '== CREATE EXTENSION payment_ext'
CREATE EXTENSION payment_ext;
SELECT extname, extversion FROM pg_extension WHERE extname = 'payment_ext';

\echo '== a user, an event with pricing tiers, a registration'
INSERT INTO "Users" ("Id", "SceneName", "Email")
VALUES ('a0000000-0000-0000-0000-000000000001', 'Juniper', 'juniper@example.org');
INSERT INTO "Events" ("Id", "Title", "StartDate", "EndDate", "IsPublished", "PricingTiers")
VALUES ('e0000000-0000-0000-0000-000000000001', 'Rope Basics', now() + interval '7 days',
        now() + interval '7 days 3 hours', true,
        '[{"name": "standard", "price": 40.00, "currency": "USD"},
          {"name": "supporter", "price": 60.00, "currency": "USD"}]');
INSERT INTO "EventRegistrations" ("Id", "EventId", "UserId", "Tier")
VALUES ('b0000000-0000-0000-0000-000000000001', 'e0000000-0000-0000-0000-000000000001',
        'a0000000-0000-0000-0000-000000000001', 'standard');
SELECT "Title", "PricingTiers" FROM "Events";

\echo '== the tables a DBA looks after'
SELECT c.relname AS "table",
       (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %s', c.oid::regclass), false, true, '')))[1]::text::bigint AS rows,
       pg_size_pretty(pg_total_relation_size(c.oid)) AS size
  FROM pg_class c
 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
 ORDER BY 1;

\echo '== payment status codes'
SELECT s AS code, payment.status_name(s) AS status FROM generate_series(0, 5) s ORDER BY s;

\echo '== token vault: a saved card, sealed for its row (the Stripe id never stored in clear)'
SELECT payment.save_method('a0000000-0000-0000-0000-000000000001', 'pm_1NxWb2LkdIwHu7ixDemo', '4242', 'Visa', 12, 2099, make_default => true) IS NOT NULL AS saved;
SELECT "LastFourDigits", "CardBrand", "IsDefault",
       left("EncryptedStripePaymentMethodId", 7) || '...' AS sealed_prefix
  FROM "PaymentMethods";
SELECT key_id, sealed_values, newest FROM payment.key_usage ORDER BY key_id;
\echo '== card numbers are refused, without echoing them'
\set ON_ERROR_STOP 0
SELECT payment.save_method('a0000000-0000-0000-0000-000000000001', '4242 4242 4242 4242', '4242', 'Visa', 12, 2099);
\set ON_ERROR_STOP 1
