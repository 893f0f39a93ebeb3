
-- ---------------------------------------------------------------------------
-- functions: status codes
-- ---------------------------------------------------------------------------
CREATE FUNCTION payment.status_name(status integer)
RETURNS text
AS 'MODULE_PATHNAME', 'pe_status_name'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION payment.status_name(integer) IS
	'name of a payment status code: 0 Pending, 1 Completed, 2 Failed, 3 Refunded, 4 PartiallyRefunded, 5 NotRequired';

CREATE FUNCTION payment.refund_status_name(status integer)
RETURNS text
AS 'MODULE_PATHNAME', 'pe_refund_status_name_sql'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION payment.refund_status_name(integer) IS
	'name of a refund status code: 0 Processing, 1 Completed, 2 Failed';

-- ---------------------------------------------------------------------------
-- functions: pricing
-- ---------------------------------------------------------------------------
CREATE FUNCTION payment.price(full_price numeric, discount_pct numeric)
RETURNS numeric
AS 'MODULE_PATHNAME', 'pe_price'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION payment.price(numeric, numeric) IS
	'sliding-scale price: full_price x (1 - discount_pct/100), rounded half-up to the cent; discount 0 to 75, at most two decimals';

CREATE FUNCTION payment.quote(event_id uuid, tier text, discount_pct numeric DEFAULT 0)
RETURNS numeric
AS 'MODULE_PATHNAME', 'pe_quote'
LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION payment.quote(uuid, text, numeric) IS
	'price of an event''s pricing tier ("Events"."PricingTiers") after the sliding-scale discount';

-- ---------------------------------------------------------------------------
-- functions: payments and refunds
-- ---------------------------------------------------------------------------
CREATE FUNCTION payment."create"(registration_id uuid, user_id uuid, full_price numeric,
                                 discount_pct numeric DEFAULT 0, currency text DEFAULT 'USD',
                                 method_type integer DEFAULT 1,
                                 stripe_payment_method text DEFAULT NULL,
                                 saved_method_id uuid DEFAULT NULL,
                                 idempotency_key text DEFAULT NULL,
                                 metadata jsonb DEFAULT '{}')
RETURNS uuid
AS 'MODULE_PATHNAME', 'pe_create'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION payment."create"(uuid, uuid, numeric, numeric, text, integer, text, uuid, text, jsonb) IS
	'creates a Pending payment (NotRequired for a zero amount) and, in the same transaction, its Stripe request in payment.outbox';

CREATE FUNCTION payment.retry(payment_id uuid)
RETURNS void
AS 'MODULE_PATHNAME', 'pe_retry'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION payment.retry(uuid) IS
	'moves a Failed payment back to Pending and queues a new Stripe request for it';

CREATE FUNCTION payment.refund(payment_id uuid, amount numeric, reason text,
                               processed_by uuid, idempotency_key text DEFAULT NULL)
RETURNS uuid
AS 'MODULE_PATHNAME', 'pe_refund'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION payment.refund(uuid, numeric, text, uuid, text) IS
	'refunds part or all of a Completed or PartiallyRefunded payment: a Processing "PaymentRefunds" row and its Stripe request';
