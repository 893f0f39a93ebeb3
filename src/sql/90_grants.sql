
-- ---------------------------------------------------------------------------
-- privileges (the model is in README.md, "Access control")
--
-- Nothing is granted to PUBLIC but pure functions.  The application
-- (payment_app) calls functions and reads its own rows (row-level security)
-- without the sealed columns; only the administrator (payment_admin)
-- refunds, retries, rotates keys, repairs and opens sealed values;
-- reporting (payment_reporting) reads views and every column that is not
-- sealed; the worker (payment_worker) has its grants in the worker part.
-- The tables belong to the superuser who created the extension: nobody
-- else can ALTER them, DISABLE their triggers or TRUNCATE them.
-- ---------------------------------------------------------------------------
REVOKE ALL ON "Payments", "PaymentRefunds", "PaymentFailures", "PaymentMethods",
	payment.outbox, payment.idempotency_keys FROM PUBLIC;
REVOKE ALL ON FUNCTION payment."create"(uuid, uuid, numeric, numeric, text, integer, text, uuid, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION payment.retry(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION payment.refund(uuid, numeric, text, uuid, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION payment.payments_state_trigger() FROM PUBLIC;
REVOKE ALL ON FUNCTION payment.refunds_rules_trigger() FROM PUBLIC;
REVOKE ALL ON FUNCTION payment.refunds_sync_trigger() FROM PUBLIC;
REVOKE ALL ON FUNCTION payment.payment_methods_expiry_trigger() FROM PUBLIC;
REVOKE ALL ON FUNCTION payment.financial_no_delete_trigger() FROM PUBLIC;

-- functions
GRANT EXECUTE ON FUNCTION payment."create"(uuid, uuid, numeric, numeric, text, integer, text, uuid, text, jsonb)
	TO payment_app, payment_admin;
GRANT EXECUTE ON FUNCTION payment.retry(uuid) TO payment_admin;
GRANT EXECUTE ON FUNCTION payment.refund(uuid, numeric, text, uuid, text) TO payment_admin;
GRANT EXECUTE ON FUNCTION payment.verify_audit(uuid) TO payment_admin, payment_reporting;

-- the payment tables: administrators read every column
GRANT SELECT ON "Payments", "PaymentRefunds", "PaymentFailures", "PaymentMethods",
	"PaymentAuditLog", payment.outbox TO payment_admin;
-- an administrator records the outcome of a refund made outside Stripe
GRANT UPDATE ("RefundStatus", "Metadata") ON "PaymentRefunds" TO payment_admin;
GRANT UPDATE ("Metadata") ON "Payments" TO payment_admin;
GRANT SELECT ON "PaymentAuditLog", payment.audit_chain_heads TO payment_reporting;
GRANT SELECT ON payment.audit_chain_heads TO payment_admin;

-- the application and reporting read every column that is not sealed
DO $pe_grants$
DECLARE
	t text;
	cols text;
BEGIN
	FOREACH t IN ARRAY ARRAY['Payments', 'PaymentRefunds', 'PaymentFailures', 'PaymentMethods'] LOOP
		SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum)
		  INTO cols
		  FROM pg_catalog.pg_attribute a
		 WHERE a.attrelid = (pg_catalog.quote_ident('@extschema@') || '.' || pg_catalog.quote_ident(t))::pg_catalog.regclass
		   AND a.attnum > 0 AND NOT a.attisdropped
		   AND a.attname NOT LIKE 'Encrypted%';
		EXECUTE pg_catalog.format('GRANT SELECT (%s) ON %I.%I TO payment_app, payment_reporting',
								  cols, '@extschema@', t);
	END LOOP;

	-- "Users", "Events" and "EventRegistrations" are the application's when
	-- this extension created them (an existing table keeps its own grants)
	FOREACH t IN ARRAY ARRAY['Users', 'Events', 'EventRegistrations'] LOOP
		IF EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
		            WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
		              AND d.objid = (pg_catalog.quote_ident('@extschema@') || '.' || pg_catalog.quote_ident(t))::pg_catalog.regclass
		              AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
		              AND d.deptype = 'e') THEN
			EXECUTE pg_catalog.format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I.%I TO payment_app', '@extschema@', t);
			EXECUTE pg_catalog.format('GRANT SELECT ON %I.%I TO payment_admin', '@extschema@', t);
			SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum)
			  INTO cols
			  FROM pg_catalog.pg_attribute a
			 WHERE a.attrelid = (pg_catalog.quote_ident('@extschema@') || '.' || pg_catalog.quote_ident(t))::pg_catalog.regclass
			   AND a.attnum > 0 AND NOT a.attisdropped
			   AND a.attname NOT LIKE 'Encrypted%';
			EXECUTE pg_catalog.format('GRANT SELECT (%s) ON %I.%I TO payment_reporting', cols, '@extschema@', t);
		END IF;
	END LOOP;
END
$pe_grants$;
