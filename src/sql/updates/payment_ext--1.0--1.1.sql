/*
 * payment_ext upgrade script, version 1.0 to 1.1.
 *
 * The fresh 1.1 install script is the 1.0 parts of src/sql/ followed by this
 * file (see the Makefile), so an upgraded database and a fresh 1.1 install
 * have the same objects; test/t/ops_upgrade.sh compares their catalogs.
 * 1.1 adds payment.version() and the guard against DROP EXTENSION of a
 * database that holds payments.  The C library of 1.1 keeps every entry
 * point of 1.0, so it serves both versions while the upgrade runs.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION payment_ext UPDATE TO '1.1'" to load this file. \quit

-- ---------------------------------------------------------------------------
-- 1.1: payment.version()
-- ---------------------------------------------------------------------------
CREATE FUNCTION payment.version()
RETURNS text
AS 'MODULE_PATHNAME', 'pe_version'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION payment.version() IS
	'version of the payment_ext library serving this database (pg_extension.extversion is the installed SQL version)';
GRANT EXECUTE ON FUNCTION payment.version() TO PUBLIC;

-- ---------------------------------------------------------------------------
-- 1.1: DROP protection
--
-- An event trigger at ddl_command_start of the commands that can drop the
-- extension refuses to drop it while "Payments", "PaymentRefunds" or
-- "PaymentAuditLog" hold rows, unless payment_ext.allow_drop is on (a
-- superuser-only parameter).  An empty install drops as before.
-- ---------------------------------------------------------------------------
CREATE FUNCTION payment.drop_guard()
RETURNS event_trigger
AS 'MODULE_PATHNAME', 'pe_drop_guard'
LANGUAGE C;
COMMENT ON FUNCTION payment.drop_guard() IS
	'refuses DROP EXTENSION payment_ext (and DROP SCHEMA ... CASCADE, DROP OWNED that would drop it) while it holds payments, unless payment_ext.allow_drop = on';
REVOKE ALL ON FUNCTION payment.drop_guard() FROM PUBLIC;

CREATE EVENT TRIGGER payment_ext_drop_guard
	ON ddl_command_start
	WHEN TAG IN ('DROP EXTENSION', 'DROP SCHEMA', 'DROP OWNED')
	EXECUTE FUNCTION payment.drop_guard();
COMMENT ON EVENT TRIGGER payment_ext_drop_guard IS
	'payment_ext: no DROP EXTENSION of a database that holds payments unless payment_ext.allow_drop = on';
