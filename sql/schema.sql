--
-- schema: status codes, the constraints of the spec and of DESIGN.md, and
-- the expiry rule that replaced the spec's CHECK with NOW()
--
\set VERBOSITY terse

SELECT s, payment.status_name(s) FROM generate_series(0, 5) s ORDER BY s;
SELECT s, payment.refund_status_name(s) FROM generate_series(0, 2) s ORDER BY s;
-- not a code
SELECT try('SELECT payment.status_name(6)');
SELECT try('SELECT payment.status_name(-1)');
SELECT try('SELECT payment.refund_status_name(3)');
SELECT payment.status_name(NULL) IS NULL AS null_in_null_out;

INSERT INTO "Users" ("Id", "SceneName", "Email") VALUES
	('10000000-0000-0000-0000-000000000001', 'Rowan', 'rowan@example.org');
INSERT INTO "Events" ("Id", "Title", "StartDate", "EndDate", "PricingTiers") VALUES
	('20000000-0000-0000-0000-000000000001', 'Rope Basics', '2026-12-01 18:00+00', '2026-12-01 21:00+00',
	 '[{"name": "standard", "price": 40.00, "currency": "USD"}]');
INSERT INTO "EventRegistrations" ("Id", "EventId", "UserId") VALUES
	('30000000-0000-0000-0000-000000000001', '20000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000001');

-- Payments: every CHECK of the spec and DESIGN.md refuses its bad value
SELECT try($q$INSERT INTO "Payments" ("EventRegistrationId", "UserId", "AmountValue", "PaymentMethodType")
	VALUES ('30000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000001', -1, 1)$q$);  -- negative amount
SELECT try($q$INSERT INTO "Payments" ("EventRegistrationId", "UserId", "AmountValue", "Currency", "PaymentMethodType")
	VALUES ('30000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000001', 10, 'JPY', 1)$q$);  -- currency
SELECT try($q$INSERT INTO "Payments" ("EventRegistrationId", "UserId", "AmountValue", "SlidingScalePercentage", "PaymentMethodType")
	VALUES ('30000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000001', 10, 75.01, 1)$q$);  -- discount
SELECT try($q$INSERT INTO "Payments" ("EventRegistrationId", "UserId", "AmountValue", "Status", "PaymentMethodType")
	VALUES ('30000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000001', 10, 6, 1)$q$);  -- status code
SELECT try($q$INSERT INTO "Payments" ("EventRegistrationId", "UserId", "AmountValue", "PaymentMethodType")
	VALUES ('30000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000001', 10, 5)$q$);  -- method type
SELECT try($q$INSERT INTO "Payments" ("EventRegistrationId", "UserId", "AmountValue", "PaymentMethodType")
	VALUES ('30000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000001', 0, 1)$q$);  -- zero amount must be NotRequired
SELECT try($q$INSERT INTO "Payments" ("EventRegistrationId", "UserId", "AmountValue", "PaymentMethodType")
	VALUES ('30000000-0000-0000-0000-0000000000ff', '10000000-0000-0000-0000-000000000001', 10, 1)$q$);  -- unknown registration
-- the refund columns are derived by "TR_Payments_State": switched off here to
-- show the spec's CHECKs themselves
ALTER TABLE "Payments" DISABLE TRIGGER "TR_Payments_State";
SELECT try($q$INSERT INTO "Payments" ("EventRegistrationId", "UserId", "AmountValue", "PaymentMethodType", "RefundAmountValue", "RefundedAt")
	VALUES ('30000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000001', 10, 1, 11, now())$q$);  -- refund over amount
SELECT try($q$INSERT INTO "Payments" ("EventRegistrationId", "UserId", "AmountValue", "PaymentMethodType", "RefundAmountValue")
	VALUES ('30000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000001', 10, 1, 1)$q$);  -- refund without time
SELECT try($q$INSERT INTO "Payments" ("EventRegistrationId", "UserId", "AmountValue", "PaymentMethodType", "RefundCurrency")
	VALUES ('30000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000001', 10, 1, 'EUR')$q$);  -- refund currency
ALTER TABLE "Payments" ENABLE ALWAYS TRIGGER "TR_Payments_State";
SELECT count(*) AS payments FROM "Payments";

-- one live (Pending or Completed) payment per registration
INSERT INTO "Payments" ("Id", "EventRegistrationId", "UserId", "AmountValue", "PaymentMethodType")
	VALUES ('40000000-0000-0000-0000-000000000001', '30000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000001', 10, 1);
SELECT try($q$INSERT INTO "Payments" ("EventRegistrationId", "UserId", "AmountValue", "PaymentMethodType")
	VALUES ('30000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000001', 10, 1)$q$);  -- second live payment
SELECT try($q$INSERT INTO "Payments" ("EventRegistrationId", "UserId", "AmountValue", "Status", "PaymentMethodType")
	VALUES ('30000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000001', 10, 2, 1)$q$);  -- a failed one is fine
SELECT payment.status_name("Status"), count(*) FROM "Payments" GROUP BY 1 ORDER BY 1;

-- PaymentRefunds: the spec's CHECKs (the rules trigger, switched off here,
-- refuses the same values first; sql/refunds.sql tests it)
ALTER TABLE "PaymentRefunds" DISABLE TRIGGER "TR_PaymentRefunds_Rules";
-- PaymentRefunds: reason, currency, amount
SELECT try($q$INSERT INTO "PaymentRefunds" ("OriginalPaymentId", "RefundAmountValue", "RefundReason", "ProcessedByUserId")
	VALUES ('40000000-0000-0000-0000-000000000001', 1, '   short   ', '10000000-0000-0000-0000-000000000001')$q$);  -- reason too short
SELECT try($q$INSERT INTO "PaymentRefunds" ("OriginalPaymentId", "RefundAmountValue", "RefundReason", "ProcessedByUserId")
	VALUES ('40000000-0000-0000-0000-000000000001', 0, 'customer asked for it', '10000000-0000-0000-0000-000000000001')$q$);  -- zero amount
SELECT try($q$INSERT INTO "PaymentRefunds" ("OriginalPaymentId", "RefundAmountValue", "RefundCurrency", "RefundReason", "ProcessedByUserId")
	VALUES ('40000000-0000-0000-0000-000000000001', 1, 'XYZ', 'customer asked for it', '10000000-0000-0000-0000-000000000001')$q$);  -- currency
SELECT try($q$INSERT INTO "PaymentRefunds" ("OriginalPaymentId", "RefundAmountValue", "RefundStatus", "RefundReason", "ProcessedByUserId")
	VALUES ('40000000-0000-0000-0000-000000000001', 1, 3, 'customer asked for it', '10000000-0000-0000-0000-000000000001')$q$);  -- status code

ALTER TABLE "PaymentRefunds" ENABLE ALWAYS TRIGGER "TR_PaymentRefunds_Rules";

-- PaymentFailures: retry count
INSERT INTO "PaymentFailures" ("PaymentId", "FailureCode", "FailureMessage", "RetryCount")
	VALUES ('40000000-0000-0000-0000-000000000001', 'card_declined', 'declined', -1);

-- PaymentAuditLog: action type
INSERT INTO "PaymentAuditLog" ("PaymentId", "ActionType", "ActionDescription")
	VALUES ('40000000-0000-0000-0000-000000000001', 'PaymentDeleted', 'not an action type');

-- PaymentMethods: brand, last four, month, and the expiry rule on new rows
SELECT try($q$INSERT INTO "PaymentMethods" ("Id", "UserId", "EncryptedStripePaymentMethodId", "LastFourDigits", "CardBrand", "ExpiryMonth", "ExpiryYear")
	VALUES ('50000000-0000-0000-0000-000000000011', '10000000-0000-0000-0000-000000000001', payment.encrypt('pm_card_visa', 'PaymentMethods.EncryptedStripePaymentMethodId:50000000-0000-0000-0000-000000000011'), '4242', 'Maestro', 12, 2099)$q$);  -- brand
SELECT try($q$INSERT INTO "PaymentMethods" ("Id", "UserId", "EncryptedStripePaymentMethodId", "LastFourDigits", "CardBrand", "ExpiryMonth", "ExpiryYear")
	VALUES ('50000000-0000-0000-0000-000000000012', '10000000-0000-0000-0000-000000000001', payment.encrypt('pm_card_visa', 'PaymentMethods.EncryptedStripePaymentMethodId:50000000-0000-0000-0000-000000000012'), '42a2', 'Visa', 12, 2099)$q$);  -- last four
SELECT try($q$INSERT INTO "PaymentMethods" ("Id", "UserId", "EncryptedStripePaymentMethodId", "LastFourDigits", "CardBrand", "ExpiryMonth", "ExpiryYear")
	VALUES ('50000000-0000-0000-0000-000000000013', '10000000-0000-0000-0000-000000000001', payment.encrypt('pm_card_visa', 'PaymentMethods.EncryptedStripePaymentMethodId:50000000-0000-0000-0000-000000000013'), '4242', 'Visa', 13, 2099)$q$);  -- month
SELECT try($q$INSERT INTO "PaymentMethods" ("Id", "UserId", "EncryptedStripePaymentMethodId", "LastFourDigits", "CardBrand", "ExpiryMonth", "ExpiryYear")
	VALUES ('50000000-0000-0000-0000-000000000014', '10000000-0000-0000-0000-000000000001', payment.encrypt('pm_card_visa', 'PaymentMethods.EncryptedStripePaymentMethodId:50000000-0000-0000-0000-000000000014'), '4242', 'Visa', 1, 2020)$q$);  -- expired
SELECT split_part(try($q$INSERT INTO "PaymentMethods" ("Id", "UserId", "EncryptedStripePaymentMethodId", "LastFourDigits", "CardBrand", "ExpiryMonth", "ExpiryYear")
	VALUES ('50000000-0000-0000-0000-000000000015', '10000000-0000-0000-0000-000000000001', payment.encrypt('pm_card_visa', 'PaymentMethods.EncryptedStripePaymentMethodId:50000000-0000-0000-0000-000000000015'), '4242', 'Visa',
	        extract(month FROM now() - interval '1 month')::int, extract(year FROM now() - interval '1 month')::int)$q$), ':', 1) AS sqlstate;  -- expired last month (message has the date)
-- the current month is still valid
INSERT INTO "PaymentMethods" ("Id", "UserId", "EncryptedStripePaymentMethodId", "LastFourDigits", "CardBrand", "ExpiryMonth", "ExpiryYear", "IsDefault")
	VALUES ('50000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000001',
	        payment.encrypt('pm_card_visa', 'PaymentMethods.EncryptedStripePaymentMethodId:50000000-0000-0000-0000-000000000001'), '4242', 'Visa',
	        extract(month FROM now())::int, extract(year FROM now())::int, true);
-- one default per user
SELECT try($q$INSERT INTO "PaymentMethods" ("Id", "UserId", "EncryptedStripePaymentMethodId", "LastFourDigits", "CardBrand", "ExpiryMonth", "ExpiryYear", "IsDefault")
	VALUES ('50000000-0000-0000-0000-000000000016', '10000000-0000-0000-0000-000000000001', payment.encrypt('pm_card_mastercard', 'PaymentMethods.EncryptedStripePaymentMethodId:50000000-0000-0000-0000-000000000016'), '4444', 'MasterCard', 1, 2099, true)$q$);  -- second default
-- a stored row that has since expired (as after a restore) stays, and may be
-- updated in other columns; moving its expiry into the past is refused
ALTER TABLE "PaymentMethods" DISABLE TRIGGER "TR_PaymentMethods_Expiry";
UPDATE "PaymentMethods" SET "ExpiryMonth" = 6, "ExpiryYear" = 2021 WHERE "Id" = '50000000-0000-0000-0000-000000000001';
ALTER TABLE "PaymentMethods" ENABLE ALWAYS TRIGGER "TR_PaymentMethods_Expiry";
UPDATE "PaymentMethods" SET "IsActive" = false WHERE "Id" = '50000000-0000-0000-0000-000000000001';
SELECT try($q$UPDATE "PaymentMethods" SET "ExpiryMonth" = 11, "ExpiryYear" = 2022 WHERE "Id" = '50000000-0000-0000-0000-000000000001'$q$);  -- expiry moved into the past
SELECT "ExpiryYear", "IsActive" FROM "PaymentMethods" ORDER BY "Id";

-- the expiry trigger is ALWAYS: replica mode does not switch it off
SET session_replication_role = replica;
SELECT try($q$INSERT INTO "PaymentMethods" ("Id", "UserId", "EncryptedStripePaymentMethodId", "LastFourDigits", "CardBrand", "ExpiryMonth", "ExpiryYear")
	VALUES ('50000000-0000-0000-0000-000000000017', '10000000-0000-0000-0000-000000000001', payment.encrypt('pm_card_visa', 'PaymentMethods.EncryptedStripePaymentMethodId:50000000-0000-0000-0000-000000000017'), '4242', 'Visa', 1, 2020)$q$);  -- expired, in replica mode
RESET session_replication_role;

-- clean up for the next test (superuser: payments are otherwise never
-- deleted, and the audit log that references them is append-only)
TRUNCATE "PaymentAuditLog", payment.audit_chain_heads, "PaymentMethods", "PaymentRefunds",
	"PaymentFailures", payment.outbox, payment.intents, payment.stripe_refs, payment.refund_states,
	payment.disputes, payment.webhook_events, "Payments", "EventRegistrations", "Events", "Users";
