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
-- issue 16, item 3: no role that changes payments writes the audit log
--
-- The audit triggers write "PaymentAuditLog" as its owner, and set who
-- wrote each row ("SessionUser", "CurrentUser", "UserId", "IpAddress",
-- "UserAgent", "CreatedAt") from the server's own state; the outbox worker's
-- rows come from those triggers too.  Its INSERT privilege let it insert
-- rows naming any user, address and time, so it is gone.
-- ---------------------------------------------------------------------------
REVOKE INSERT ON "PaymentAuditLog" FROM payment_worker;
