--
-- test/pgtap/webhooks.sql — the webhook and reconciliation objects of
-- src/sql/60_webhooks.sql: their tables (columns, keys, the checks that
-- refuse a bad row, pg_dump marks), the outbox kinds the settler uses,
-- payment.handle_webhook, payment.resolve, payment.reconcile_lookup and
-- payment.reconcile_all (SECURITY DEFINER, each granted to its one role),
-- the payment.reconcile view (what it lists, who may read it) and the
-- worker's grants for the settler.
--
\set ON_ERROR_STOP 1
\set QUIET 1
SET client_min_messages = warning;
CREATE EXTENSION payment_ext;
BEGIN;
SELECT plan(89);

-- ---------------------------------------------------------------------------
-- tables
-- ---------------------------------------------------------------------------
SELECT has_table('payment', t, 'table payment.' || t || ' exists')
  FROM unnest(ARRAY['webhook_events', 'stripe_refs', 'refund_states', 'disputes']) t ORDER BY t;
SELECT columns_are('payment', 'webhook_events',
                   ARRAY['event_id', 'type', 'created', 'api_version', 'livemode', 'payment_id', 'refund_id',
                         'object_status', 'payload', 'payload_bytes', 'outcome', 'received_at', 'applied_at'],
                   'payment.webhook_events has its columns');
SELECT columns_are('payment', 'stripe_refs', ARRAY['digest', 'object', 'payment_id', 'refund_id', 'created_at'],
                   'payment.stripe_refs has its columns');
SELECT columns_are('payment', 'refund_states', ARRAY['refund_id', 'stripe_status', 'source', 'reported_at'],
                   'payment.refund_states has its columns');
SELECT columns_are('payment', 'disputes',
                   ARRAY['id', 'digest', 'stripe_dispute_id', 'payment_id', 'amount', 'currency', 'reason',
                         'status', 'opened_at', 'closed_at', 'updated_at'],
                   'payment.disputes has its columns');
SELECT col_is_pk('payment', 'webhook_events', 'event_id', 'one row per Stripe event id');
SELECT col_is_pk('payment', 'stripe_refs', 'digest', 'one row per Stripe id digest');
SELECT col_is_pk('payment', 'refund_states', 'refund_id', 'one Stripe state per refund');
SELECT col_type_is('payment', 'disputes', 'amount', 'numeric(10,2)', 'a dispute''s amount is money, numeric(10,2)');
SELECT fk_ok('payment', 'refund_states', 'refund_id', 'public', 'PaymentRefunds', 'Id');
SELECT fk_ok('payment', 'stripe_refs', 'payment_id', 'public', 'Payments', 'Id');
SELECT fk_ok('payment', 'disputes', 'payment_id', 'public', 'Payments', 'Id');
SELECT is((SELECT array_agg(c::regclass::text ORDER BY c::regclass::text)
             FROM pg_extension e, unnest(e.extconfig) c
            WHERE e.extname = 'payment_ext'
              AND c::regclass::text IN ('payment.webhook_events', 'payment.stripe_refs',
                                        'payment.refund_states', 'payment.disputes')),
          ARRAY['payment.disputes', 'payment.refund_states', 'payment.stripe_refs', 'payment.webhook_events'],
          'every webhook table is marked for pg_dump');
SELECT ok(obj_description(('payment.' || t)::regclass, 'pg_class') IS NOT NULL, 'payment.' || t || ' has a comment')
  FROM unnest(ARRAY['webhook_events', 'stripe_refs', 'refund_states', 'disputes', 'reconcile', 'disputes_summary']) t
 ORDER BY t;

-- data to act on, as the superuser
INSERT INTO "Users" ("Id", "SceneName", "Email") VALUES
	('10000000-0000-0000-0000-000000000001', 'Ash', 'ash@example.org'),
	('10000000-0000-0000-0000-000000000002', 'Birch', 'birch@example.org');
INSERT INTO "Events" ("Id", "Title", "StartDate", "EndDate") VALUES
	('20000000-0000-0000-0000-000000000001', 'Rope', now(), now());
INSERT INTO "EventRegistrations" ("Id", "EventId", "UserId") VALUES
	('30000000-0000-0000-0000-000000000001', '20000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000001'),
	('30000000-0000-0000-0000-000000000002', '20000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000002');
INSERT INTO "Payments" ("Id", "EventRegistrationId", "UserId", "AmountValue", "Status", "PaymentMethodType",
                        "EncryptedStripePaymentIntentId")
VALUES ('40000000-0000-0000-0000-000000000001', '30000000-0000-0000-0000-000000000001',
        '10000000-0000-0000-0000-000000000001', 40, 1, 1,
        payment.encrypt('pi_hook_1', 'Payments.EncryptedStripePaymentIntentId:40000000-0000-0000-0000-000000000001')),
       ('40000000-0000-0000-0000-000000000002', '30000000-0000-0000-0000-000000000002',
        '10000000-0000-0000-0000-000000000002', 25, 1, 1, NULL);
INSERT INTO "PaymentRefunds" ("Id", "OriginalPaymentId", "RefundAmountValue", "RefundCurrency", "RefundReason",
                              "ProcessedByUserId")
VALUES ('50000000-0000-0000-0000-000000000001', '40000000-0000-0000-0000-000000000001', 5, 'USD',
        'attendee could not come', '10000000-0000-0000-0000-000000000002');

-- ---------------------------------------------------------------------------
-- checks that refuse a bad row (23514)
-- ---------------------------------------------------------------------------
SELECT throws_ok($$INSERT INTO payment.webhook_events (event_id, type, payload, payload_bytes, outcome)
                   VALUES ('evt_1', 'payment_intent.succeeded', '{"id": "evt_1"}', 15, 'applied')$$,
                 '23514', NULL, 'webhook_events: a payload that is not sealed is refused');
SELECT throws_ok($$INSERT INTO payment.webhook_events (event_id, type, payload, payload_bytes, outcome)
                   VALUES ('evt 1; drop', 'x', 'pe1:k:abc', 3, 'applied')$$,
                 '23514', NULL, 'webhook_events: an event id other than letters, digits, _ is refused');
SELECT throws_ok($$INSERT INTO payment.stripe_refs (digest, object, payment_id)
                   VALUES ('\x0102'::bytea, 'payment_intent', '40000000-0000-0000-0000-000000000001')$$,
                 '23514', NULL, 'stripe_refs: a digest that is not 32 bytes is refused');
SELECT throws_ok($$INSERT INTO payment.stripe_refs (digest, object, payment_id)
                   VALUES (sha256('x'), 'customer', '40000000-0000-0000-0000-000000000001')$$,
                 '23514', NULL, 'stripe_refs: an object other than payment_intent, charge, refund, dispute is refused');
SELECT throws_ok($$INSERT INTO payment.refund_states (refund_id, stripe_status, source)
                   VALUES ('50000000-0000-0000-0000-000000000001', 'succeeded', 'guess')$$,
                 '23514', NULL, 'refund_states: a source other than response, webhook, lookup is refused');
SELECT throws_ok($$INSERT INTO payment.disputes (digest, stripe_dispute_id, payment_id, amount, currency, status)
                   VALUES (sha256('dp'), 'dp_plain', '40000000-0000-0000-0000-000000000001', 5, 'USD', 'lost')$$,
                 '23514', NULL, 'disputes: a dispute id that is not sealed is refused');

-- ---------------------------------------------------------------------------
-- the outbox kinds, the settler's lookups included
-- ---------------------------------------------------------------------------
SELECT is((SELECT array_agg(k ORDER BY k) FROM unnest(ARRAY['payment_intent.create', 'refund.create',
             'payment_intent.retrieve', 'payment_intent.cancel', 'payment_intent.search', 'refund.list']) k
            WHERE pg_get_constraintdef((SELECT oid FROM pg_constraint WHERE conname = 'outbox_kind_check'
                                         AND conrelid = 'payment.outbox'::regclass)) LIKE '%''' || k || '''%'),
          ARRAY['payment_intent.cancel', 'payment_intent.create', 'payment_intent.retrieve',
                'payment_intent.search', 'refund.create', 'refund.list'],
          'outbox_kind_check allows every kind the worker sends');
SELECT lives_ok($$INSERT INTO payment.outbox (kind, payment_id, refund_id, request, idempotency_key)
                  VALUES ('refund.list', '40000000-0000-0000-0000-000000000001', '50000000-0000-0000-0000-000000000001',
                          '{"limit": "100"}', 'pe-50000000-0000-0000-0000-000000000001-lookup-1')$$,
                'outbox: a refund lookup (refund.list) for a refund is accepted');
SELECT throws_ok($$INSERT INTO payment.outbox (kind, payment_id, request, idempotency_key)
                   VALUES ('refund.list', '40000000-0000-0000-0000-000000000001', '{}', 'k-list-no-refund')$$,
                 '23514', NULL, 'outbox: a refund.list without its refund is refused');
SELECT throws_ok($$INSERT INTO payment.outbox (kind, payment_id, refund_id, request, idempotency_key)
                   VALUES ('payment_intent.retrieve', '40000000-0000-0000-0000-000000000001',
                           '50000000-0000-0000-0000-000000000001', '{}', 'k-retrieve-refund')$$,
                 '23514', NULL, 'outbox: a payment lookup naming a refund is refused');
SELECT throws_ok($$INSERT INTO payment.outbox (kind, payment_id, refund_id, request, idempotency_key)
                   VALUES ('refund.retrieve', '40000000-0000-0000-0000-000000000001',
                           '50000000-0000-0000-0000-000000000001', '{}', 'k-unknown-kind')$$,
                 '23514', NULL, 'outbox: an unknown kind is refused');
SELECT ok(col_description('payment.outbox'::regclass, (SELECT attnum FROM pg_attribute
            WHERE attrelid = 'payment.outbox'::regclass AND attname = 'kind')) LIKE '%refund.list%',
          'the comment on payment.outbox.kind names refund.list');

-- ---------------------------------------------------------------------------
-- functions: signature, SECURITY DEFINER with a pinned search_path, grants
-- ---------------------------------------------------------------------------
SELECT function_returns('payment', 'handle_webhook', ARRAY['text', 'text'], 'text',
                        'payment.handle_webhook(text, text) returns the event id');
SELECT function_returns('payment', 'resolve', ARRAY['uuid', 'integer', 'text'], 'void',
                        'payment.resolve(uuid, integer, text) returns void');
SELECT function_returns('payment', 'reconcile_lookup', ARRAY['uuid'], 'bigint',
                        'payment.reconcile_lookup(uuid) returns the outbox id');
SELECT function_returns('payment', 'reconcile_all', ARRAY[]::text[], 'integer',
                        'payment.reconcile_all() returns a count');
SELECT is_definer('payment', f, a, 'payment.' || f || ' is SECURITY DEFINER')
  FROM (VALUES ('handle_webhook', ARRAY['text', 'text']), ('resolve', ARRAY['uuid', 'integer', 'text']),
               ('reconcile_lookup', ARRAY['uuid']), ('reconcile_all', ARRAY[]::text[])) v(f, a)
 ORDER BY f;
SELECT is((SELECT array_agg(p.proname::text ORDER BY p.proname) FROM pg_proc p
            WHERE p.pronamespace = 'payment'::regnamespace
              AND p.proname IN ('handle_webhook', 'resolve', 'reconcile_lookup', 'reconcile_all')
              AND 'search_path=pg_catalog, pg_temp' = ANY (p.proconfig)),
          ARRAY['handle_webhook', 'reconcile_all', 'reconcile_lookup', 'resolve'],
          'each pins search_path = pg_catalog, pg_temp');

SELECT function_privs_are('payment', 'handle_webhook', ARRAY['text', 'text'], r,
                          CASE WHEN r = 'payment_app' THEN ARRAY['EXECUTE'] ELSE ARRAY[]::text[] END,
                          'handle_webhook: ' || CASE WHEN r = 'payment_app' THEN 'executable' ELSE 'not executable' END || ' by ' || r)
  FROM unnest(ARRAY['payment_app', 'payment_admin', 'payment_reporting', 'payment_worker', 'public']) r ORDER BY r;
SELECT function_privs_are('payment', 'resolve', ARRAY['uuid', 'integer', 'text'], r,
                          CASE WHEN r = 'payment_admin' THEN ARRAY['EXECUTE'] ELSE ARRAY[]::text[] END,
                          'resolve: ' || CASE WHEN r = 'payment_admin' THEN 'executable' ELSE 'not executable' END || ' by ' || r)
  FROM unnest(ARRAY['payment_app', 'payment_admin', 'payment_reporting', 'payment_worker', 'public']) r ORDER BY r;
SELECT function_privs_are('payment', 'reconcile_lookup', ARRAY['uuid'], r,
                          CASE WHEN r = 'payment_admin' THEN ARRAY['EXECUTE'] ELSE ARRAY[]::text[] END,
                          'reconcile_lookup: ' || CASE WHEN r = 'payment_admin' THEN 'executable' ELSE 'not executable' END || ' by ' || r)
  FROM unnest(ARRAY['payment_app', 'payment_admin', 'payment_reporting', 'public']) r ORDER BY r;
SELECT function_privs_are('payment', 'reconcile_all', ARRAY[]::text[], r,
                          CASE WHEN r = 'payment_admin' THEN ARRAY['EXECUTE'] ELSE ARRAY[]::text[] END,
                          'reconcile_all: ' || CASE WHEN r = 'payment_admin' THEN 'executable' ELSE 'not executable' END || ' by ' || r)
  FROM unnest(ARRAY['payment_app', 'payment_admin', 'payment_reporting', 'public']) r ORDER BY r;

-- ---------------------------------------------------------------------------
-- table and view grants
-- ---------------------------------------------------------------------------
SELECT table_privs_are('payment', 'reconcile', r, CASE WHEN r IN ('payment_admin', 'payment_reporting')
                       THEN ARRAY['SELECT'] ELSE ARRAY[]::text[] END, 'payment.reconcile privileges of ' || r)
  FROM unnest(ARRAY['payment_admin', 'payment_reporting', 'payment_app', 'public']) r ORDER BY r;
SELECT ok(NOT has_column_privilege(r, 'payment.webhook_events', 'payload', 'SELECT'),
          r || ' cannot read the sealed payload of webhook events')
  FROM unnest(ARRAY['payment_admin', 'payment_reporting', 'payment_app']) r ORDER BY r;
SELECT ok(has_column_privilege('payment_admin', 'payment.webhook_events', 'outcome', 'SELECT'),
          'payment_admin reads what each event did');
SELECT ok(NOT has_table_privilege(r, 'payment.stripe_refs', 'SELECT'), r || ' cannot read payment.stripe_refs')
  FROM unnest(ARRAY['payment_admin', 'payment_reporting', 'payment_app']) r ORDER BY r;
SELECT ok(has_table_privilege('payment_worker', 'payment.outbox', 'INSERT')
          AND NOT has_table_privilege('payment_worker', 'payment.outbox', 'DELETE'),
          'the worker inserts the settler''s lookups (and deletes nothing)');
SELECT ok(has_table_privilege('payment_worker', 'payment.refund_states', 'SELECT, INSERT, UPDATE')
          AND has_table_privilege('payment_worker', 'payment.stripe_refs', 'SELECT, INSERT'),
          'the worker records refund states and Stripe id digests');

-- ---------------------------------------------------------------------------
-- the roles at work
-- ---------------------------------------------------------------------------
SET LOCAL ROLE payment_reporting;
SELECT throws_ok($$SELECT payment.handle_webhook('{}', 't=1,v1=00')$$, '42501', NULL,
                 'reporting: cannot deliver webhooks');
SELECT throws_ok($$SELECT payment.resolve('40000000-0000-0000-0000-000000000001', 2, 'reporting tries a repair')$$,
                 '42501', NULL, 'reporting: cannot resolve');
SELECT throws_ok($$SELECT payload FROM payment.webhook_events$$, '42501', NULL, 'reporting: no sealed payload');
SELECT lives_ok($$SELECT * FROM payment.reconcile$$, 'reporting: reads payment.reconcile');
RESET ROLE;

SET LOCAL ROLE payment_app;
SELECT throws_ok($$SELECT payment.resolve('40000000-0000-0000-0000-000000000001', 2, 'the app tries a repair')$$,
                 '42501', NULL, 'app: cannot resolve');
SELECT throws_ok($$SELECT payment.reconcile_lookup('40000000-0000-0000-0000-000000000001')$$,
                 '42501', NULL, 'app: cannot queue lookups');
SELECT throws_ok($$SELECT * FROM payment.reconcile$$, '42501', NULL, 'app: cannot read payment.reconcile');
RESET ROLE;

-- ---------------------------------------------------------------------------
-- payment.reconcile lists where the database and Stripe disagree
-- ---------------------------------------------------------------------------
SELECT is((SELECT count(*)::int FROM payment.reconcile), 0, 'reconcile: nothing reported yet, nothing listed');
INSERT INTO payment.intents (payment_id, stripe_status, source)
VALUES ('40000000-0000-0000-0000-000000000001', 'requires_payment_method', 'lookup');
INSERT INTO payment.refund_states (refund_id, stripe_status, source)
VALUES ('50000000-0000-0000-0000-000000000001', 'succeeded', 'lookup');
SELECT results_eq($$SELECT payment_id, refund_id, database_state, stripe_state, source FROM payment.reconcile
                    ORDER BY refund_id NULLS FIRST$$,
                  $$VALUES ('40000000-0000-0000-0000-000000000001'::uuid, NULL::uuid, 'Completed'::text,
                            'requires_payment_method'::text, 'lookup'::text),
                           ('40000000-0000-0000-0000-000000000001'::uuid, '50000000-0000-0000-0000-000000000001'::uuid,
                            'refund Processing', 'refund succeeded', 'lookup')$$,
                  'reconcile: a paid payment Stripe has not charged, a Processing refund Stripe has made');
UPDATE payment.intents SET stripe_status = 'succeeded' WHERE payment_id = '40000000-0000-0000-0000-000000000001';
UPDATE "PaymentRefunds" SET "RefundStatus" = 1 WHERE "Id" = '50000000-0000-0000-0000-000000000001';
SELECT is((SELECT count(*)::int FROM payment.reconcile), 0, 'reconcile: empty once they agree');

SET LOCAL ROLE payment_admin;
SELECT isnt(payment.reconcile_lookup('40000000-0000-0000-0000-000000000001'), NULL,
            'admin: reconcile_lookup queues a lookup');
SELECT isnt(payment.reconcile_lookup('40000000-0000-0000-0000-000000000002'), NULL,
            'admin: also for a payment without a PaymentIntent id');
SELECT is(payment.reconcile_lookup('4fffffff-0000-0000-0000-000000000000'), NULL,
          'admin: an unknown payment queues nothing');
SELECT is(payment.reconcile_all(), 0, 'admin: reconcile_all has nothing to look up when nothing disagrees');
RESET ROLE;
SELECT is((SELECT array_agg(kind || ':' || (request ? 'query')::text ORDER BY payment_id) FROM payment.outbox
            WHERE kind LIKE 'payment_intent.%'),
          ARRAY['payment_intent.retrieve:false', 'payment_intent.search:true'],
          'a retrieve by id for the payment with a PaymentIntent, a search by metadata for the other');

SELECT * FROM finish();
ROLLBACK;
