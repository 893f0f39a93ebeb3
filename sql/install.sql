--
-- install: CREATE EXTENSION into an empty schema and into one that already
-- has a "Users" table; DROP EXTENSION leaves nothing behind.
--
\set VERBOSITY terse

-- a "Users" table of the application's own, with a row
CREATE TABLE "Users" ("Id" uuid PRIMARY KEY, "SceneName" text NOT NULL, "Email" text NOT NULL);
INSERT INTO "Users" VALUES ('00000000-0000-0000-0000-0000000000aa', 'Existing', 'existing@example.org');

CREATE EXTENSION payment_ext;

-- kept, with its row, and not a member of the extension
SELECT "SceneName" FROM "Users";
SELECT count(*) AS users_is_member
  FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
 WHERE e.extname = 'payment_ext' AND d.objid = '"Users"'::regclass;
-- the others were created and belong to the extension
SELECT c.relname
  FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
  JOIN pg_class c ON c.oid = d.objid AND d.classid = 'pg_class'::regclass
 WHERE e.extname = 'payment_ext' AND c.relkind = 'r'
 ORDER BY 1;

DROP EXTENSION payment_ext;
SELECT count(*) AS users_rows FROM "Users";
SELECT to_regclass('"Events"') AS events, to_regclass('"Payments"') AS payments,
       to_regnamespace('payment') AS payment_schema;

-- a "Users" table whose key is not a uuid "Id" is refused, with no change
DROP TABLE "Users";
CREATE TABLE "Users" ("Id" integer PRIMARY KEY);
CREATE EXTENSION payment_ext;
SELECT to_regclass('"Payments"') AS payments;
DROP TABLE "Users";

-- into an empty schema: minimal tables, and DROP leaves nothing behind
CREATE TEMP TABLE before_objects AS
	SELECT classid, objid FROM pg_depend WHERE deptype <> 'p'
	UNION SELECT 'pg_class'::regclass, oid FROM pg_class
	UNION SELECT 'pg_proc'::regclass, oid FROM pg_proc
	UNION SELECT 'pg_type'::regclass, oid FROM pg_type
	UNION SELECT 'pg_namespace'::regclass, oid FROM pg_namespace;
CREATE EXTENSION payment_ext;
SELECT count(*) > 0 AS created FROM pg_class WHERE relname IN ('Users', 'Events', 'EventRegistrations');
DROP EXTENSION payment_ext;
SELECT count(*) AS left_behind FROM (
	SELECT 'pg_class'::regclass, oid FROM pg_class WHERE relnamespace <> pg_my_temp_schema()
	UNION SELECT 'pg_proc'::regclass, oid FROM pg_proc
	UNION SELECT 'pg_type'::regclass, oid FROM pg_type WHERE typnamespace <> pg_my_temp_schema()
	UNION SELECT 'pg_namespace'::regclass, oid FROM pg_namespace WHERE nspname NOT LIKE 'pg_temp%' AND nspname NOT LIKE 'pg_toast_temp%'
	EXCEPT SELECT classid, objid FROM before_objects) x;
DROP TABLE before_objects;

-- CREATE EXTENSION works again; the rest of the suite uses this install
CREATE EXTENSION payment_ext;
SELECT extversion FROM pg_extension WHERE extname = 'payment_ext';

-- try(sql): runs a statement and shows its SQLSTATE and message when it is
-- refused, so the expected output pins every error's SQLSTATE (a test helper,
-- not part of the extension).  Random (version 4) uuids in messages show as
-- <uuid>; the tests' fixed ids stay.
CREATE FUNCTION try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE sql;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM,
		'[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}', '<uuid>', 'g');
END
$$;
