--
-- test/pgtap/views.sql — the reporting views of issue 10: each exists in
-- schema payment, has its comment and a comment on every column, is
-- granted to payment_reporting (SELECT only) and to nobody else, and
-- neither shows nor reads an Encrypted... column; the windowed
-- sliding-scale function likewise.
--
\set ON_ERROR_STOP 1
\set QUIET 1
SET client_min_messages = warning;
CREATE EXTENSION payment_ext;
BEGIN;
SELECT plan(59);

CREATE TEMP TABLE report_views (name text PRIMARY KEY);
INSERT INTO report_views VALUES
	('event_revenue'), ('sliding_scale_summary'), ('outbox_health'),
	('payment_metrics'), ('failure_spikes'), ('refund_metrics');

-- each view: exists, commented, every column commented, SELECT for the
-- reporting role only
SELECT has_view('payment', name, 'view payment.' || name || ' exists')
  FROM report_views ORDER BY name;
SELECT ok(obj_description(('payment.' || name)::regclass, 'pg_class') IS NOT NULL,
          'payment.' || name || ' has a comment')
  FROM report_views ORDER BY name;
SELECT is((SELECT array_agg(a.attname::text ORDER BY a.attnum)
             FROM pg_attribute a
            WHERE a.attrelid = ('payment.' || name)::regclass AND a.attnum > 0 AND NOT a.attisdropped
              AND col_description(a.attrelid, a.attnum) IS NULL),
          NULL, 'every column of payment.' || name || ' has a comment')
  FROM report_views ORDER BY name;
SELECT table_privs_are('payment', name, 'payment_reporting', ARRAY['SELECT'],
                       'payment_reporting may SELECT payment.' || name || ' and nothing else')
  FROM report_views ORDER BY name;
SELECT table_privs_are('payment', name, 'public', ARRAY[]::text[],
                       'PUBLIC has no privilege on payment.' || name)
  FROM report_views ORDER BY name;

-- no Encrypted... column: not among a view's columns, and not among the
-- table columns its query reads (pg_depend of its rewrite rule)
SELECT is((SELECT count(*) FROM pg_attribute a
            WHERE a.attrelid = ('payment.' || name)::regclass AND a.attname ILIKE '%encrypted%'),
          0::bigint, 'payment.' || name || ' shows no Encrypted column')
  FROM report_views ORDER BY name;
SELECT is((SELECT array_agg(DISTINCT a.attname::text)
             FROM pg_rewrite r
             JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
             JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
            WHERE r.ev_class = ('payment.' || name)::regclass AND a.attname ILIKE '%encrypted%'),
          NULL, 'payment.' || name || ' reads no Encrypted column')
  FROM report_views ORDER BY name;
-- the check above sees table columns: it finds the ones a view does read
SELECT ok((SELECT count(*) FROM pg_rewrite r
             JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
             JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
            WHERE r.ev_class = 'payment.event_revenue'::regclass
              AND a.attrelid = '"Payments"'::regclass AND a.attname = 'AmountValue') = 1,
          'the dependency check sees "Payments"."AmountValue" read by payment.event_revenue');

-- the windowed function
SELECT has_function('payment', 'sliding_scale_summary', ARRAY['timestamp with time zone', 'timestamp with time zone'],
                    'payment.sliding_scale_summary(since, until) exists');
SELECT ok(obj_description('payment.sliding_scale_summary(timestamptz, timestamptz)'::regprocedure, 'pg_proc') IS NOT NULL,
          'payment.sliding_scale_summary(since, until) has a comment');
SELECT function_privs_are('payment', 'sliding_scale_summary', ARRAY['timestamp with time zone', 'timestamp with time zone'],
                          'payment_reporting', ARRAY['EXECUTE'], 'payment_reporting may call it');
SELECT function_privs_are('payment', 'sliding_scale_summary', ARRAY['timestamp with time zone', 'timestamp with time zone'],
                          'public', ARRAY[]::text[], 'PUBLIC may not');
SELECT is_definer('payment', 'sliding_scale_summary', ARRAY['timestamp with time zone', 'timestamp with time zone'],
                  'it runs as its owner, like a view');
SELECT is((SELECT proconfig FROM pg_proc WHERE oid = 'payment.sliding_scale_summary(timestamptz, timestamptz)'::regprocedure),
          ARRAY['search_path=pg_catalog, pg_temp'], 'with a fixed search_path');
SELECT is((SELECT array_agg(n ORDER BY n) FROM unnest(
             (SELECT proargnames FROM pg_proc WHERE oid = 'payment.sliding_scale_summary(timestamptz, timestamptz)'::regprocedure)) n
            WHERE n ILIKE '%encrypted%'),
          NULL, 'it returns no Encrypted column');

-- the reporting role can use the schema, and reads no table
SELECT ok(has_schema_privilege('payment_reporting', 'payment', 'USAGE'), 'payment_reporting may use schema payment');
SELECT is((SELECT array_agg(c.relname::text ORDER BY c.relname)
             FROM pg_class c
            WHERE c.relkind IN ('r', 'p')
              AND c.relnamespace IN ('payment'::regnamespace, 'public'::regnamespace)
              AND has_table_privilege('payment_reporting', c.oid, 'SELECT')),
          ARRAY['PaymentAuditLog', 'audit_chain_heads', 'refund_states'],
          'payment_reporting may SELECT whole tables only for the audit log, its chain heads and refund states (the payment tables by column, sealed ones never)');

-- the indexes the reports use
SELECT has_index('public', 'Payments', 'IX_Payments_UserId_CreatedAt', ARRAY['"UserId"', '"CreatedAt"'],
                 'user history index ("UserId", "CreatedAt" DESC)');
SELECT has_index('public', 'Payments', 'IX_Payments_EventRegistrationId_Status', ARRAY['"EventRegistrationId"', '"Status"', '"Id"', '"Currency"', '"AmountValue"', '"SlidingScalePercentage"', '"RefundAmountValue"'],
                 'event revenue index ("EventRegistrationId", "Status") INCLUDE ("Id", "Currency", "AmountValue", "SlidingScalePercentage", "RefundAmountValue")');
SELECT has_index('public', 'EventRegistrations', 'IX_EventRegistrations_EventId', ARRAY['"EventId"', '"Id"'],
                 'event revenue index on the registrations payment_ext created ("EventId") INCLUDE ("Id")');
SELECT has_index('public', 'Payments', 'IX_Payments_Paid_CreatedAt',
                 ARRAY['"CreatedAt"', '"Currency"', '"SlidingScalePercentage"', '"AmountValue"'],
                 'sliding-scale index ("CreatedAt") INCLUDE ("Currency", "SlidingScalePercentage", "AmountValue")');
SELECT is((SELECT pg_get_expr(indpred, indrelid) FROM pg_index WHERE indexrelid = '"IX_Payments_Paid_CreatedAt"'::regclass),
          '("Status" = ANY (ARRAY[1, 3, 4]))', 'sliding-scale index covers the paid payments only');
SELECT has_index('public', 'PaymentRefunds', 'IX_PaymentRefunds_CreatedAt', ARRAY['"CreatedAt"'],
                 'refund metrics index ("CreatedAt" DESC)');
SELECT has_index('payment', 'outbox', 'outbox_state_attempts_idx', ARRAY['state', 'attempts'],
                 'outbox health index (state, attempts)');

SELECT * FROM finish();
ROLLBACK;
