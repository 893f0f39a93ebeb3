
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
