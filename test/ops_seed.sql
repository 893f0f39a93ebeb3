-- test/ops_seed.sql — a database with one of everything payment_ext keeps,
-- for the operations tests (upgrade, dump and restore): users, an event,
-- registrations; Pending payments with their outbox requests (one with a
-- sealed Stripe PaymentMethod id, one with an idempotency key), a payment
-- completed by hand and refunded in two steps (PartiallyRefunded, then
-- Refunded), a NotRequired one, a Failed one with its failure row, a saved
-- card, a PaymentIntent's sealed client secret, and the audit trail of it
-- all.  Works with version 1.0 and later; runs as a superuser.
\set ON_ERROR_STOP 1
INSERT INTO "Users" ("Id", "SceneName", "Email")
SELECT ('40000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, 'ops' || i, 'ops' || i || '@example.org'
  FROM generate_series(1, 6) i;
INSERT INTO "Events" ("Id", "Title", "StartDate", "EndDate", "PricingTiers")
VALUES ('50000000-0000-0000-0000-000000000001', 'Operations test', '2030-01-01', '2030-01-02',
        '[{"name": "standard", "price": 40.00, "currency": "USD"}]');
INSERT INTO "EventRegistrations" ("Id", "EventId", "UserId")
SELECT ('60000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, '50000000-0000-0000-0000-000000000001',
       ('40000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid
  FROM generate_series(1, 6) i;

-- p1: Pending, a card from Stripe.js (sealed in the outbox), an idempotency key
SELECT payment.create('60000000-0000-0000-0000-000000000001', '40000000-0000-0000-0000-000000000001',
                      40.00, stripe_payment_method => 'pm_card_visa', idempotency_key => 'ops-seed-1') AS p1 \gset
-- p2: Pending, no method (an unconfirmed PaymentIntent), 25 % off, in EUR
SELECT payment.create('60000000-0000-0000-0000-000000000002', '40000000-0000-0000-0000-000000000002',
                      30.00, 25, 'EUR') AS p2 \gset
INSERT INTO payment.intents (payment_id, client_secret, stripe_status, next_action)
VALUES (:'p2', payment.encrypt('pi_ops_secret_x', 'payment.intents.client_secret:' || :'p2'),
        'requires_payment_method', NULL);
-- p3: completed by hand, refunded 10.00 then 40.00: PartiallyRefunded, then Refunded
SELECT payment.create('60000000-0000-0000-0000-000000000003', '40000000-0000-0000-0000-000000000003', 50.00) AS p3 \gset
UPDATE payment.outbox SET state = 'done', completed_at = now() WHERE payment_id = :'p3';
UPDATE "Payments" SET "Status" = 1 WHERE "Id" = :'p3';
SELECT payment.refund(:'p3', 10.00, 'Attendee could not come', '40000000-0000-0000-0000-000000000006',
                      idempotency_key => 'ops-seed-r1') AS r1 \gset
UPDATE "PaymentRefunds" SET "RefundStatus" = 1 WHERE "Id" = :'r1';
SELECT payment.refund(:'p3', 40.00, 'Event moved to another date', '40000000-0000-0000-0000-000000000006') AS r2 \gset
UPDATE "PaymentRefunds" SET "RefundStatus" = 1 WHERE "Id" = :'r2';
-- p4: a zero amount, NotRequired
SELECT payment.create('60000000-0000-0000-0000-000000000004', '40000000-0000-0000-0000-000000000004', 0) AS p4 \gset
-- p5: Failed, with its failure row
SELECT payment.create('60000000-0000-0000-0000-000000000005', '40000000-0000-0000-0000-000000000005', 20.00) AS p5 \gset
UPDATE payment.outbox SET state = 'done', completed_at = now() WHERE payment_id = :'p5';
UPDATE "Payments" SET "Status" = 2 WHERE "Id" = :'p5';
INSERT INTO "PaymentFailures" ("PaymentId", "FailureCode", "FailureMessage")
VALUES (:'p5', 'card_declined', 'Your card was declined.');
-- a saved card, the default
SELECT payment.save_method('40000000-0000-0000-0000-000000000006', 'pm_card_mastercard', '4444',
                           'MasterCard', 12, 2099, true) AS m1 \gset
