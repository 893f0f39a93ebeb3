--
-- test/pgtap/pricing.sql — payment.price against an independent exact
-- computation in integer cents, for 10,000 random (price, discount) pairs and
-- the edges, plus the function's declared properties.
--
\set ON_ERROR_STOP 1
\set QUIET 1
SET client_min_messages = warning;
CREATE EXTENSION payment_ext;
BEGIN;
SELECT plan(9);

SELECT setseed(0.4242);
CREATE TEMP TABLE pairs AS
SELECT (random() * 1e10)::bigint % 10000000000 AS cents,       -- 0.00 .. 99999999.99
       (random() * 7500)::int AS hundredths                    -- 0.00 .. 75.00 percent
  FROM generate_series(1, 10000);
-- the edges of both ranges
INSERT INTO pairs
SELECT c, h FROM unnest(ARRAY[0, 1, 2, 3, 5, 25, 50, 99, 100, 9999999999]::bigint[]) c,
                 unnest(ARRAY[0, 1, 50, 2500, 3333, 5000, 7499, 7500]) h;

-- independent: integer cents, half-up = floor((x + 5000) / 10000)
SELECT is((SELECT count(*) FROM pairs
            WHERE payment.price(cents / 100.0, hundredths / 100.0) * 100
                  <> (cents * (10000 - hundredths) + 5000) / 10000),
          0::bigint, '10,080 (price, discount) pairs: payment.price equals the integer-cents computation');
SELECT is((SELECT count(*) FROM pairs
            WHERE scale(payment.price(cents / 100.0, hundredths / 100.0)) <> 2),
          0::bigint, 'every result has exactly two decimals');
SELECT is((SELECT count(DISTINCT hundredths) FROM pairs) > 5000, true, 'the discounts cover the range');

-- the prices pay for what the discount forgoes: never more than full price, never negative
SELECT is((SELECT count(*) FROM pairs
            WHERE payment.price(cents / 100.0, hundredths / 100.0) > cents / 100.0
               OR payment.price(cents / 100.0, hundredths / 100.0) < 0),
          0::bigint, 'no price is above the full price or below zero');

SELECT function_lang_is('payment', 'price', ARRAY['numeric', 'numeric'], 'c', 'payment.price is C');
SELECT volatility_is('payment', 'price', ARRAY['numeric', 'numeric'], 'immutable', 'payment.price is immutable');
SELECT is_strict('payment', 'price', ARRAY['numeric', 'numeric'], 'payment.price is strict');
SELECT throws_ok('SELECT payment.price(10, 75.001)', '22023', NULL, 'a discount with three decimals is refused');
SELECT throws_ok('SELECT payment.price(10, ''NaN'')', '22023', NULL, 'a NaN discount is refused');

SELECT * FROM finish();
ROLLBACK;
