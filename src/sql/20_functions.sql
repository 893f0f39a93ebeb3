
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
