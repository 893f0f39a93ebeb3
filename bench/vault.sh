#!/usr/bin/env bash
#
# bench/vault.sh — seal and open throughput of payment.encrypt/decrypt against
# pgcrypto's raw encrypt(data, key, 'aes') (AES-CBC, no integrity) and
# pgp_sym_encrypt (OpenPGP, S2K per value), side by side in one run, on the
# cluster that tools/run started (PGHOST/PGPORT).  One backend, one query
# per measurement, best of PE_BENCH_REPEAT runs; pgp runs on fewer rows and
# is scaled per value.
#
#   PE_BENCH_ROWS      values per measurement (default 1000000)
#   PE_BENCH_PGP_ROWS  values for pgp_sym_* (default 20000)
#   PE_BENCH_REPEAT    runs per measurement (default 3)
#
set -euo pipefail
ROWS=${PE_BENCH_ROWS:-1000000}
PGP_ROWS=${PE_BENCH_PGP_ROWS:-20000}
REPEAT=${PE_BENCH_REPEAT:-3}
DB=pe_bench_vault

psql -qX -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
psql -qX -v ON_ERROR_STOP=1 -d "$DB" -v rows="$ROWS" -v pgp_rows="$PGP_ROWS" -v repeat="$REPEAT" <<'SQL'
\pset footer off
SET client_min_messages = warning;
CREATE EXTENSION payment_ext;
CREATE EXTENSION pgcrypto;
-- best wall time, in seconds, of :repeat runs of a query
CREATE FUNCTION best(q text, n int) RETURNS numeric LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz; best numeric; d numeric;
BEGIN
	FOR i IN 1 .. n LOOP
		t0 := clock_timestamp();
		EXECUTE q;
		d := extract(epoch FROM clock_timestamp() - t0);
		best := least(best, d);
	END LOOP;
	RETURN best;
END $$;
-- typical Stripe ids (27 characters) and their contexts
CREATE TABLE ids AS
SELECT i, 'pi_3MtwBwLkdIwHu7ix' || lpad(i::text, 8, '0') AS id,
       'Payments.EncryptedStripePaymentIntentId:' || i AS ctx
  FROM generate_series(1, :rows) i;
CREATE TABLE sealed AS SELECT i, payment.encrypt(id, ctx) AS v, ctx FROM ids;
CREATE TABLE raw AS SELECT i, encrypt(convert_to(id, 'UTF8'), '\x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f'::bytea, 'aes') AS v FROM ids;
CREATE TABLE pgp AS SELECT i, pgp_sym_encrypt(id, 'bench passphrase') AS v FROM ids WHERE i <= :pgp_rows;
VACUUM ANALYZE ids, sealed, raw, pgp;
CREATE TEMP TABLE r (op text, what text, rows bigint, seconds numeric);
INSERT INTO r VALUES
 ('seal', 'payment.encrypt (AES-256-GCM)', :rows,
  best('SELECT count(payment.encrypt(id, ctx)) FROM ids', :repeat)),
 ('seal', 'pgcrypto encrypt(aes)', :rows,
  best($q$SELECT count(encrypt(convert_to(id, 'UTF8'), '\x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f'::bytea, 'aes')) FROM ids$q$, :repeat)),
 ('seal', 'pgcrypto pgp_sym_encrypt', :pgp_rows,
  best(format('SELECT count(pgp_sym_encrypt(id, %L)) FROM ids WHERE i <= %s', 'bench passphrase', :pgp_rows), :repeat)),
 ('open', 'payment.decrypt (AES-256-GCM)', :rows,
  best('SELECT count(payment.decrypt(v, ctx)) FROM sealed', :repeat)),
 ('open', 'pgcrypto decrypt(aes)', :rows,
  best($q$SELECT count(decrypt(v, '\x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f'::bytea, 'aes')) FROM raw$q$, :repeat)),
 ('open', 'pgcrypto pgp_sym_decrypt', :pgp_rows,
  best(format('SELECT count(pgp_sym_decrypt(v, %L)) FROM pgp', 'bench passphrase'), :repeat)),
 ('scan', 'the same scan, no crypto', :rows,
  best('SELECT count(id || ctx) FROM ids', :repeat));
\echo
\echo '== vault throughput (one backend; best of the runs)'
SELECT op, what, rows,
       round(seconds, 3) AS seconds,
       round(rows / seconds) AS values_per_s,
       round(seconds * 1e6 / rows, 2) AS us_per_value
  FROM r ORDER BY op, seconds / rows;
\echo '== ratios (per value)'
SELECT op,
       round((SELECT seconds / rows FROM r x WHERE x.op = r.op AND what LIKE 'pgcrypto encrypt%' OR x.op = r.op AND what LIKE 'pgcrypto decrypt%')
             / (seconds / rows), 2) AS vs_pgcrypto_raw,
       round((SELECT seconds / rows FROM r x WHERE x.op = r.op AND what LIKE 'pgcrypto pgp%')
             / (seconds / rows), 1) AS vs_pgp_sym
  FROM r WHERE what LIKE 'payment.%' ORDER BY op DESC;
\pset format unaligned
\pset tuples_only on
SELECT format('RESULT vault | %s per value, 1,000,000 ids: payment.%s vs pgcrypto %s | %s us | %s us | %s',
              o.op, CASE o.op WHEN 'seal' THEN 'encrypt' ELSE 'decrypt' END,
              CASE o.op WHEN 'seal' THEN 'encrypt(aes)' ELSE 'decrypt(aes)' END,
              round(o.seconds * 1e6 / o.rows, 2), round(b.seconds * 1e6 / b.rows, 2),
              round((b.seconds / b.rows) / (o.seconds / o.rows), 2))
  FROM r o JOIN r b ON b.op = o.op AND b.what ~ '^pgcrypto (en|de)crypt'
 WHERE o.what LIKE 'payment.%' ORDER BY o.op DESC;
SELECT format('RESULT vault | %s per value: payment.%s vs %s | %s us | %s us | %s',
              o.op, CASE o.op WHEN 'seal' THEN 'encrypt' ELSE 'decrypt' END, b.what,
              round(o.seconds * 1e6 / o.rows, 2), round(b.seconds * 1e6 / b.rows, 2),
              round((b.seconds / b.rows) / (o.seconds / o.rows), 1))
  FROM r o JOIN r b ON b.op = o.op AND b.what LIKE 'pgcrypto pgp%'
 WHERE o.what LIKE 'payment.%' ORDER BY o.op DESC;
SQL
psql -qX -d postgres -c "DROP DATABASE $DB" >/dev/null
