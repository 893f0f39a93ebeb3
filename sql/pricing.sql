--
-- pricing: payment.price and payment.quote, results and refusals
--
\set VERBOSITY terse

-- results, rounded half-up to the cent
SELECT full_price, pct, payment.price(full_price, pct)
  FROM (VALUES (40.00, 0), (40.00, 25), (40.00, 75), (40.00, 33.33), (40.00, 12.5),
               (19.99, 50), (0.01, 50), (0.03, 50), (0.05, 10), (10.05, 50),
               (99999999.99, 0), (99999999.99, 75), (0, 40), (33.33, 0.01),
               (12.34, 74.99)) v(full_price, pct)
 ORDER BY 1, 2;
-- half-up, not banker's rounding: 0.125 -> 0.13, 0.135 -> 0.14
SELECT payment.price(0.25, 50) AS "0.125", payment.price(0.27, 50) AS "0.135";
-- 40, 40.0 and 40.00 give the same amount, with two decimals
SELECT payment.price(40, 10), payment.price(40.0, 10.0), payment.price(40.000, 10.00);

-- refusals, one class per line
SELECT try('SELECT payment.price(40, 75.01)');            -- discount above 75
SELECT try('SELECT payment.price(40, -1)');               -- negative discount
SELECT try('SELECT payment.price(40, ''NaN'')');          -- NaN discount
SELECT try('SELECT payment.price(40, ''Infinity'')');     -- infinite discount
SELECT try('SELECT payment.price(40, 12.345)');           -- three decimals of discount
SELECT try('SELECT payment.price(-0.01, 10)');            -- negative price
SELECT try('SELECT payment.price(''NaN'', 10)');          -- NaN price
SELECT try('SELECT payment.price(''-Infinity'', 10)');    -- infinite price
SELECT try('SELECT payment.price(40.001, 10)');           -- three decimals of price
SELECT try('SELECT payment.price(100000000.00, 10)');     -- overflows numeric(10,2)
SELECT payment.price(NULL, 10) IS NULL AS strict;

-- quote: from the event's pricing tiers
INSERT INTO "Events" ("Id", "Title", "StartDate", "EndDate", "PricingTiers") VALUES
	('20000000-0000-0000-0000-0000000000a1', 'Tiered', '2026-12-01', '2026-12-02',
	 '[{"name": "standard", "price": 40.00, "currency": "USD"},
	   {"name": "supporter", "price": 60, "currency": "USD"},
	   {"name": "free", "price": 0}]'),
	('20000000-0000-0000-0000-0000000000a2', 'Broken', '2026-12-01', '2026-12-02',
	 '[{"name": "standard", "price": "forty"}]'),
	('20000000-0000-0000-0000-0000000000a3', 'Nameless', '2026-12-01', '2026-12-02',
	 '[{"price": 40}]'),
	('20000000-0000-0000-0000-0000000000a4', 'Negative', '2026-12-01', '2026-12-02',
	 '[{"name": "standard", "price": -5}]'),
	('20000000-0000-0000-0000-0000000000a5', 'Nested', '2026-12-01', '2026-12-02',
	 '[[{"name": "standard", "price": 5}]]'),
	('20000000-0000-0000-0000-0000000000a6', 'Empty', '2026-12-01', '2026-12-02', '[]');
SELECT payment.quote('20000000-0000-0000-0000-0000000000a1', 'standard');
SELECT payment.quote('20000000-0000-0000-0000-0000000000a1', 'standard', 25);
SELECT payment.quote(event_id => '20000000-0000-0000-0000-0000000000a1', tier => 'supporter', discount_pct => 33.33);
SELECT payment.quote('20000000-0000-0000-0000-0000000000a1', 'free', 50);
SELECT try($$SELECT payment.quote('20000000-0000-0000-0000-0000000000a1', 'vip')$$);        -- unknown tier
SELECT try($$SELECT payment.quote('20000000-0000-0000-0000-0000000000a6', 'standard')$$);   -- no tiers
SELECT try($$SELECT payment.quote('20000000-0000-0000-0000-0000000000ff', 'standard')$$);   -- unknown event
SELECT try($$SELECT payment.quote('20000000-0000-0000-0000-0000000000a2', 'standard')$$);   -- price not a number
SELECT try($$SELECT payment.quote('20000000-0000-0000-0000-0000000000a3', 'standard')$$);   -- tier without a name
SELECT try($$SELECT payment.quote('20000000-0000-0000-0000-0000000000a4', 'standard')$$);   -- negative price
SELECT try($$SELECT payment.quote('20000000-0000-0000-0000-0000000000a5', 'standard')$$);   -- not flat objects
SELECT try($$SELECT payment.quote('20000000-0000-0000-0000-0000000000a1', 'standard', 80)$$); -- discount above 75
DELETE FROM "Events" WHERE "Title" IN ('Tiered', 'Broken', 'Nameless', 'Negative', 'Nested', 'Empty');
