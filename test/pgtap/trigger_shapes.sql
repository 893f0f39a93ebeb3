--
-- test/pgtap/trigger_shapes.sql — every trigger function of the extension,
-- attached by a superuser to a table of another shape, raises a clear
-- error instead of misreading a value (issue 16, item 7: a wrong type once
-- crashed the backend and restarted the cluster).
--
-- The trigger functions are enumerated from pg_proc (prorettype trigger,
-- members of the extension): one without an entry in "cases" below fails
-- the test.  Each case names the table the function is written for; the
-- test builds two look-alikes in schemas of their own, one with the same
-- column names but other types (text-like columns become integer, every
-- other column text, each holding a value) and one with none of the
-- columns, attaches the function as the extension does, and fires it.
--
\set ON_ERROR_STOP 1
\set QUIET 1
SET client_min_messages = warning;
CREATE EXTENSION payment_ext;
SELECT pg_postmaster_start_time() AS started, pg_backend_pid() AS backend \gset
BEGIN;
SELECT plan(27);

-- function, the table it is written for, how the extension attaches it,
-- the events fired, and whether it reads columns (then every firing must
-- be refused with 42804 or 42703; otherwise it must pass, as it does for
-- a superuser)
CREATE TEMP TABLE cases (fn text, tbl text, timing text, events text[], reads boolean);
INSERT INTO cases VALUES
	('payments_state_trigger', 'public."Payments"', 'BEFORE INSERT OR UPDATE ON %s FOR EACH ROW', '{insert,update}', true),
	('refunds_rules_trigger', 'public."PaymentRefunds"', 'BEFORE INSERT OR UPDATE ON %s FOR EACH ROW', '{insert,update}', true),
	('refunds_sync_trigger', 'public."PaymentRefunds"', 'AFTER INSERT OR UPDATE ON %s FOR EACH ROW', '{insert,update}', true),
	('payment_methods_expiry_trigger', 'public."PaymentMethods"', 'BEFORE INSERT OR UPDATE ON %s FOR EACH ROW', '{insert,update}', true),
	('sealed_columns_trigger', 'public."PaymentMethods"', 'BEFORE INSERT OR UPDATE ON %s FOR EACH ROW', '{insert,update}', true),
	('audit_row_trigger', 'public."Payments"', 'AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW', '{insert,update,delete}', true),
	('audit_row_trigger', 'public."PaymentRefunds"', 'AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW', '{insert,update,delete}', true),
	('audit_row_trigger', 'public."PaymentFailures"', 'AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW', '{insert,update,delete}', true),
	('audit_row_trigger', 'public."PaymentMethods"', 'AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW', '{insert,update,delete}', true),
	('audit_chain_trigger', 'public."PaymentAuditLog"', 'BEFORE INSERT ON %s FOR EACH ROW', '{insert}', true),
	('audit_append_only_trigger', 'public."PaymentAuditLog"', 'BEFORE UPDATE OR DELETE ON %s FOR EACH ROW', '{update,delete}', false),
	('financial_no_delete_trigger', 'public."Payments"', 'BEFORE DELETE ON %s FOR EACH ROW', '{delete}', false),
	('outbox_wake_trigger', 'payment.outbox', 'AFTER INSERT ON %s FOR EACH STATEMENT', '{insert}', false);

-- the look-alikes: pe_wrong.<table> (same names, other types, one row) and
-- pe_missing.<table> (none of the columns, one row)
CREATE SCHEMA pe_wrong;
CREATE SCHEMA pe_missing;
CREATE FUNCTION pg_temp.lookalikes() RETURNS void LANGUAGE plpgsql AS $f$
DECLARE
	t regclass;
	cols text;
	vals text;
BEGIN
	FOR t IN SELECT DISTINCT tbl::regclass FROM cases LOOP
		SELECT string_agg(format('%I %s', a.attname,
		                         CASE WHEN a.atttypid IN ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype)
		                              THEN 'integer' ELSE 'text' END), ', ' ORDER BY a.attnum),
		       string_agg(CASE WHEN a.atttypid IN ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype)
		                       THEN '1' ELSE '''1''' END, ', ' ORDER BY a.attnum)
		  INTO cols, vals
		  FROM pg_attribute a WHERE a.attrelid = t AND a.attnum > 0 AND NOT a.attisdropped;
		EXECUTE format('CREATE TABLE pe_wrong.%I (%s)', (SELECT relname FROM pg_class WHERE oid = t), cols);
		EXECUTE format('INSERT INTO pe_wrong.%I VALUES (%s)', (SELECT relname FROM pg_class WHERE oid = t), vals);
		EXECUTE format('CREATE TABLE pe_missing.%I ("Unrelated" integer)', (SELECT relname FROM pg_class WHERE oid = t));
		EXECUTE format('INSERT INTO pe_missing.%I VALUES (1)', (SELECT relname FROM pg_class WHERE oid = t));
	END LOOP;
END
$f$;
SELECT pg_temp.lookalikes();

-- fire: attach, fire each event once (each in a subtransaction), detach;
-- one result row per firing: the SQLSTATE, or 'ok'
CREATE FUNCTION pg_temp.fire(fn text, tbl regclass, shape text, timing text, events text[])
RETURNS TABLE (event text, outcome text) LANGUAGE plpgsql AS $f$
DECLARE
	target text := format('%I.%I', shape, (SELECT relname FROM pg_class WHERE oid = tbl));
	firstcol text;
	vals text;
	ev text;
BEGIN
	SELECT quote_ident(a.attname) INTO firstcol FROM pg_attribute a
	 WHERE a.attrelid = target::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum LIMIT 1;
	SELECT string_agg(CASE WHEN a.atttypid = 'integer'::regtype THEN '2' ELSE '''2''' END, ', ' ORDER BY a.attnum)
	  INTO vals FROM pg_attribute a WHERE a.attrelid = target::regclass AND a.attnum > 0 AND NOT a.attisdropped;
	EXECUTE format('CREATE TRIGGER pe_shape_test ' || timing || ' EXECUTE FUNCTION payment.%I()', target, fn);
	FOREACH ev IN ARRAY events LOOP
		event := ev;
		BEGIN
			IF ev = 'insert' THEN
				EXECUTE format('INSERT INTO %s VALUES (%s)', target, vals);
			ELSIF ev = 'update' THEN
				EXECUTE format('UPDATE %s SET %s = %s', target, firstcol, firstcol);
			ELSE
				EXECUTE format('DELETE FROM %s', target);
			END IF;
			outcome := 'ok';
			-- undo what a passing firing did, keep the row for the next one
			RAISE SQLSTATE 'PE999';
		EXCEPTION WHEN SQLSTATE 'PE999' THEN
			NULL;
		WHEN OTHERS THEN
			outcome := SQLSTATE;
		END;
		RETURN NEXT;
	END LOOP;
	EXECUTE format('DROP TRIGGER pe_shape_test ON %s', target);
END
$f$;

CREATE TEMP TABLE results AS
SELECT c.fn, c.tbl, s.shape, c.reads, f.event, f.outcome
  FROM cases c
 CROSS JOIN (VALUES ('pe_wrong'), ('pe_missing')) s(shape)
 CROSS JOIN LATERAL pg_temp.fire(c.fn, c.tbl::regclass, s.shape, c.timing, c.events) f;

-- every trigger function of the extension has a case
SELECT is((SELECT array_agg(p.proname::text ORDER BY p.proname)
             FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                                           AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
                                           AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'payment_ext')
            WHERE p.prorettype = 'trigger'::regtype),
          (SELECT array_agg(DISTINCT fn ORDER BY fn) FROM cases),
          'every trigger function of the extension is tested here');

-- a function that reads columns refuses each firing, with the right code
SELECT is((SELECT string_agg(DISTINCT r.event || ': ' || r.outcome, ', ')
             FROM results r WHERE r.fn = c.fn AND r.tbl = c.tbl AND r.shape = s.shape),
          (SELECT string_agg(DISTINCT e || ': ' || CASE s.shape WHEN 'pe_wrong' THEN '42804' ELSE '42703' END, ', ')
             FROM unnest(c.events) e),
          format('%s on a %s look-alike of %s: every firing refused (%s)', c.fn,
                 CASE s.shape WHEN 'pe_wrong' THEN 'wrong-typed' ELSE 'column-less' END, c.tbl,
                 CASE s.shape WHEN 'pe_wrong' THEN '42804' ELSE '42703' END))
  FROM cases c CROSS JOIN (VALUES ('pe_wrong'), ('pe_missing')) s(shape)
 WHERE c.reads
 ORDER BY c.fn, c.tbl, s.shape;

-- a function that reads no column lets a superuser through
SELECT is((SELECT string_agg(DISTINCT r.outcome, ', ') FROM results r WHERE r.fn = c.fn),
          'ok', c.fn || ' reads no column: each firing passes for a superuser')
  FROM cases c WHERE NOT c.reads ORDER BY c.fn;

-- the message names the trigger function, the table, the column and its type
CREATE TRIGGER pe_msg BEFORE INSERT OR UPDATE ON pe_wrong."Payments"
	FOR EACH ROW EXECUTE FUNCTION payment.payments_state_trigger();
SELECT throws_ok($$UPDATE pe_wrong."Payments" SET "Status" = "Status"$$, '42804',
                 'trigger function payment.payments_state_trigger() needs column "Id" of table "Payments" to be of type uuid',
                 'the message names the trigger function, the table, the column and the type it needs');
DROP TRIGGER pe_msg ON pe_wrong."Payments";

SELECT is(pg_postmaster_start_time(), :'started'::timestamptz, 'the server never restarted');
SELECT is(pg_backend_pid(), :'backend'::int, 'the same backend ran every firing');

SELECT * FROM finish();
ROLLBACK;
