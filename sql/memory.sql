--
-- memory: values the C functions return or read after leaving SPI (issue 16
-- item 5).  payment.client_secret opened the sealed secret in SPI's memory
-- and read and wiped it after SPI_finish had freed it: on an assert-enabled
-- server (CLOBBER_FREED_MEMORY) the caller got the wipe pattern, and under
-- valgrind every call was an invalid read.  The secret must come back
-- intact, whole, for the paying user and an admin, many times in one
-- statement; NULL when the intent has none.
--
\set VERBOSITY terse
SET timezone = 'UTC';

INSERT INTO "Users" ("Id", "SceneName", "Email") VALUES
	('1d000000-0000-0000-0000-000000000001', 'Memory Oak', 'memory.oak@example.org'),
	('1d000000-0000-0000-0000-000000000002', 'Memory Elm', 'memory.elm@example.org');
INSERT INTO "Events" ("Id", "Title", "StartDate", "EndDate") VALUES
	('2d000000-0000-0000-0000-000000000001', 'Memory Lane', '2026-12-01', '2026-12-02');
INSERT INTO "EventRegistrations" ("Id", "EventId", "UserId") VALUES
	('3d000000-0000-0000-0000-000000000001', '2d000000-0000-0000-0000-000000000001', '1d000000-0000-0000-0000-000000000001'),
	('3d000000-0000-0000-0000-000000000002', '2d000000-0000-0000-0000-000000000001', '1d000000-0000-0000-0000-000000000002');
SELECT payment.create('3d000000-0000-0000-0000-000000000001', '1d000000-0000-0000-0000-000000000001', 40) AS p1 \gset
SELECT payment.create('3d000000-0000-0000-0000-000000000002', '1d000000-0000-0000-0000-000000000002', 30) AS p2 \gset

-- what the worker stores: the sealed client secret (a long one, so that it
-- spans more than one small allocation), and an intent without one
INSERT INTO payment.intents (payment_id, client_secret, stripe_status)
VALUES (:'p1', payment.encrypt('pi_memtest_secret_' || repeat('abcdefgh', 40),
                               'payment.intents.client_secret:' || :'p1'), 'requires_payment_method'),
       (:'p2', NULL, 'requires_payment_method');

-- an admin (here the superuser) reads it, intact
SELECT payment.client_secret(:'p1') = 'pi_memtest_secret_' || repeat('abcdefgh', 40) AS intact,
       length(payment.client_secret(:'p1')) AS length;
-- many calls in one statement: each result outlives the call that made it
SELECT count(*) FILTER (WHERE s = 'pi_memtest_secret_' || repeat('abcdefgh', 40)) AS intact,
       count(*) AS calls
  FROM (SELECT payment.client_secret(:'p1') AS s FROM generate_series(1, 200)) x;
SELECT array_agg(DISTINCT md5(payment.client_secret(:'p1'))) = ARRAY[md5('pi_memtest_secret_' || repeat('abcdefgh', 40))] AS one_value
  FROM generate_series(1, 50);
-- the paying user, through the application role
BEGIN;
SET LOCAL ROLE payment_app;
SET LOCAL app.current_user_id = '1d000000-0000-0000-0000-000000000001';
SELECT payment.client_secret(:'p1') = 'pi_memtest_secret_' || repeat('abcdefgh', 40) AS intact_for_the_payer;
ROLLBACK;
-- no secret: NULL
SELECT payment.client_secret(:'p2') IS NULL AS no_secret;
