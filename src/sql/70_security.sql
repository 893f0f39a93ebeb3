
-- ---------------------------------------------------------------------------
-- row-level security (the spec's "Access Control Implementation")
--
-- The spec's policy casts current_setting('app.current_user_id') to uuid,
-- which raises when the setting is unset and when it is '' (as it is after
-- any SET LOCAL has ended).  payment.app_user_id() is NULL then instead, so
-- an unset or malformed setting sees nothing, without an error.
--
-- app.current_user_id and app.user_role are the application's claims: any
-- role can SET them, so the application's connection is the trust boundary.
-- They decide which rows a payment_app session sees, nothing more.  The
-- extension's own roles (admin, worker, reporting) see every row; table
-- owners and superusers bypass row-level security as usual.
-- "PaymentAuditLog" needs no policy: the application holds no privilege on
-- it at all (see the audit trail's grants).
-- ---------------------------------------------------------------------------
CREATE FUNCTION payment.app_user_id()
RETURNS uuid
AS 'MODULE_PATHNAME', 'pe_app_user_id'
LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION payment.app_user_id() IS
	'app.current_user_id as a uuid; NULL when unset, empty or not a uuid (never an error)';

CREATE FUNCTION payment.app_sees_all()
RETURNS boolean
AS 'MODULE_PATHNAME', 'pe_app_sees_all'
LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION payment.app_sees_all() IS
	'true when app.user_role is Admin or Teacher, who see every payment';

ALTER TABLE "Payments" ENABLE ROW LEVEL SECURITY;
CREATE POLICY payment_access_policy ON "Payments"
	FOR ALL TO PUBLIC
	USING ("UserId" OPERATOR(pg_catalog.=) payment.app_user_id() OR payment.app_sees_all());
CREATE POLICY payment_staff_policy ON "Payments"
	FOR ALL TO payment_admin, payment_worker, payment_reporting
	USING (true);

ALTER TABLE "PaymentRefunds" ENABLE ROW LEVEL SECURITY;
CREATE POLICY payment_refund_access_policy ON "PaymentRefunds"
	FOR ALL TO PUBLIC
	USING (payment.app_sees_all() OR EXISTS (
		SELECT 1 FROM "Payments" p
		 WHERE p."Id" OPERATOR(pg_catalog.=) "OriginalPaymentId"
		   AND p."UserId" OPERATOR(pg_catalog.=) payment.app_user_id()));
CREATE POLICY payment_refund_staff_policy ON "PaymentRefunds"
	FOR ALL TO payment_admin, payment_worker, payment_reporting
	USING (true);

ALTER TABLE "PaymentFailures" ENABLE ROW LEVEL SECURITY;
CREATE POLICY payment_failure_access_policy ON "PaymentFailures"
	FOR ALL TO PUBLIC
	USING (payment.app_sees_all() OR EXISTS (
		SELECT 1 FROM "Payments" p
		 WHERE p."Id" OPERATOR(pg_catalog.=) "PaymentId"
		   AND p."UserId" OPERATOR(pg_catalog.=) payment.app_user_id()));
CREATE POLICY payment_failure_staff_policy ON "PaymentFailures"
	FOR ALL TO payment_admin, payment_worker, payment_reporting
	USING (true);

ALTER TABLE "PaymentMethods" ENABLE ROW LEVEL SECURITY;
CREATE POLICY payment_method_access_policy ON "PaymentMethods"
	FOR ALL TO PUBLIC
	USING ("UserId" OPERATOR(pg_catalog.=) payment.app_user_id() OR payment.app_sees_all());
CREATE POLICY payment_method_staff_policy ON "PaymentMethods"
	FOR ALL TO payment_admin, payment_worker, payment_reporting
	USING (true);
