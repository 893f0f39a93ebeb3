
-- ---------------------------------------------------------------------------
-- triggers
--
-- Rule triggers are ENABLE ALWAYS: session_replication_role = replica does
-- not switch them off.
-- ---------------------------------------------------------------------------
CREATE FUNCTION payment.payment_methods_expiry_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'pe_payment_methods_expiry_trigger'
LANGUAGE C;
COMMENT ON FUNCTION payment.payment_methods_expiry_trigger() IS
	'refuses an expired card on insert or when the expiry changes (replaces the spec''s CHECK with NOW())';

CREATE TRIGGER "TR_PaymentMethods_Expiry"
	BEFORE INSERT OR UPDATE OF "ExpiryMonth", "ExpiryYear" ON "PaymentMethods"
	FOR EACH ROW EXECUTE FUNCTION payment.payment_methods_expiry_trigger();
ALTER TABLE "PaymentMethods" ENABLE ALWAYS TRIGGER "TR_PaymentMethods_Expiry";

CREATE FUNCTION payment.payments_state_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'pe_payments_state_trigger'
LANGUAGE C;
COMMENT ON FUNCTION payment.payments_state_trigger() IS
	'the payment state machine: allowed transitions, fixed columns, derived timestamps and refund sums';

CREATE TRIGGER "TR_Payments_State"
	BEFORE INSERT OR UPDATE ON "Payments"
	FOR EACH ROW EXECUTE FUNCTION payment.payments_state_trigger();
ALTER TABLE "Payments" ENABLE ALWAYS TRIGGER "TR_Payments_State";

CREATE FUNCTION payment.refunds_rules_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'pe_refunds_rules_trigger'
LANGUAGE C;
COMMENT ON FUNCTION payment.refunds_rules_trigger() IS
	'refund rules under the payment row lock: refundable status, currency, reason, never more than was paid';

CREATE TRIGGER "TR_PaymentRefunds_Rules"
	BEFORE INSERT OR UPDATE ON "PaymentRefunds"
	FOR EACH ROW EXECUTE FUNCTION payment.refunds_rules_trigger();
ALTER TABLE "PaymentRefunds" ENABLE ALWAYS TRIGGER "TR_PaymentRefunds_Rules";

CREATE FUNCTION payment.refunds_sync_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'pe_refunds_sync_trigger'
LANGUAGE C;
COMMENT ON FUNCTION payment.refunds_sync_trigger() IS
	'brings a payment''s refund columns and status up to date when one of its refunds is added or changes status';

CREATE TRIGGER "TR_PaymentRefunds_Sync"
	AFTER INSERT OR UPDATE OF "RefundStatus" ON "PaymentRefunds"
	FOR EACH ROW EXECUTE FUNCTION payment.refunds_sync_trigger();
ALTER TABLE "PaymentRefunds" ENABLE ALWAYS TRIGGER "TR_PaymentRefunds_Sync";

CREATE FUNCTION payment.financial_no_delete_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'pe_financial_no_delete_trigger'
LANGUAGE C;
COMMENT ON FUNCTION payment.financial_no_delete_trigger() IS
	'refuses DELETE and TRUNCATE of payments, refunds and failures to everyone but superusers';

CREATE TRIGGER "TR_Payments_NoDelete"
	BEFORE DELETE ON "Payments"
	FOR EACH ROW EXECUTE FUNCTION payment.financial_no_delete_trigger();
CREATE TRIGGER "TR_Payments_NoTruncate"
	BEFORE TRUNCATE ON "Payments"
	FOR EACH STATEMENT EXECUTE FUNCTION payment.financial_no_delete_trigger();
CREATE TRIGGER "TR_PaymentRefunds_NoDelete"
	BEFORE DELETE ON "PaymentRefunds"
	FOR EACH ROW EXECUTE FUNCTION payment.financial_no_delete_trigger();
CREATE TRIGGER "TR_PaymentRefunds_NoTruncate"
	BEFORE TRUNCATE ON "PaymentRefunds"
	FOR EACH STATEMENT EXECUTE FUNCTION payment.financial_no_delete_trigger();
CREATE TRIGGER "TR_PaymentFailures_NoDelete"
	BEFORE DELETE ON "PaymentFailures"
	FOR EACH ROW EXECUTE FUNCTION payment.financial_no_delete_trigger();
CREATE TRIGGER "TR_PaymentFailures_NoTruncate"
	BEFORE TRUNCATE ON "PaymentFailures"
	FOR EACH STATEMENT EXECUTE FUNCTION payment.financial_no_delete_trigger();
ALTER TABLE "Payments" ENABLE ALWAYS TRIGGER "TR_Payments_NoDelete";
ALTER TABLE "Payments" ENABLE ALWAYS TRIGGER "TR_Payments_NoTruncate";
ALTER TABLE "PaymentRefunds" ENABLE ALWAYS TRIGGER "TR_PaymentRefunds_NoDelete";
ALTER TABLE "PaymentRefunds" ENABLE ALWAYS TRIGGER "TR_PaymentRefunds_NoTruncate";
ALTER TABLE "PaymentFailures" ENABLE ALWAYS TRIGGER "TR_PaymentFailures_NoDelete";
ALTER TABLE "PaymentFailures" ENABLE ALWAYS TRIGGER "TR_PaymentFailures_NoTruncate";
