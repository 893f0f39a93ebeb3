
-- ---------------------------------------------------------------------------
-- roles (DESIGN.md "Roles")
--
-- NOLOGIN group roles, created when absent.  Roles belong to the cluster,
-- not to the extension: DROP EXTENSION leaves them, and a second database
-- with payment_ext reuses them.  Grants follow each object.
--   payment_app        the application
--   payment_admin      refunds, retries, key rotation
--   payment_reporting  read-only views; never the Encrypted... columns
--   payment_worker     the outbox worker's identity
-- ---------------------------------------------------------------------------
DO $pe_roles$
DECLARE
	r text;
BEGIN
	FOREACH r IN ARRAY ARRAY['payment_app', 'payment_admin', 'payment_reporting', 'payment_worker'] LOOP
		IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) r) THEN
			EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
		END IF;
	END LOOP;
END
$pe_roles$;

GRANT USAGE ON SCHEMA payment TO payment_app, payment_admin, payment_reporting, payment_worker;
