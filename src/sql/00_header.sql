/*
 * payment_ext install script, version 1.0.
 *
 * Built by the Makefile from the numbered parts in src/sql/.  The spec's
 * tables go into the schema CREATE EXTENSION targets (@extschema@, public by
 * default); the extension's own functions, views and tables go into schema
 * "payment", which this script creates.
 */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION payment_ext" to load this file. \quit

-- ---------------------------------------------------------------------------
-- schema
-- ---------------------------------------------------------------------------
CREATE SCHEMA payment;
COMMENT ON SCHEMA payment IS 'payment_ext: functions, views and internal tables';
