
-- ---------------------------------------------------------------------------
-- token vault: sealing, keys, rotation (src/vault.c, src/sealed.c)
--
-- Sealed values are "pe1:<key-id>:<base64 of nonce|ciphertext|tag>",
-- AES-256-GCM with the context as additional authenticated data.  A column
-- named Encrypted... holds only values sealed with the context
-- '<Table>.<Column>:' || "Id".
-- ---------------------------------------------------------------------------
CREATE FUNCTION payment.encrypt(plaintext text, context text DEFAULT '')
RETURNS text
AS 'MODULE_PATHNAME', 'pe_encrypt'
LANGUAGE C VOLATILE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION payment.encrypt(text, text) IS
	'seals plaintext (AES-256-GCM, newest key, fresh nonce) bound to context; refuses card numbers';

CREATE FUNCTION payment.decrypt(sealed text, context text DEFAULT '')
RETURNS text
AS 'MODULE_PATHNAME', 'pe_decrypt'
LANGUAGE C VOLATILE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION payment.decrypt(text, text) IS
	'opens a sealed value under its context; any change, wrong context or wrong key is an error (SQLSTATE PE002/PE003)';

CREATE FUNCTION payment.keyring_keys(OUT key_id text, OUT "position" integer, OUT newest boolean)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'pe_keyring_keys'
LANGUAGE C VOLATILE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION payment.keyring_keys() IS
	'the key ids of payment_ext.keyring_file in file order (never key material); the last one seals';

CREATE FUNCTION payment.rotate_keys()
RETURNS bigint
AS 'MODULE_PATHNAME', 'pe_rotate_keys'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION payment.rotate_keys() IS
	're-seals every sealed value under the newest key, in batches with one audit summary row each; returns the rows re-sealed';

CREATE FUNCTION payment.contains_card_number(value text, identifier boolean DEFAULT false)
RETURNS boolean
AS 'MODULE_PATHNAME', 'pe_contains_card_number_text'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION payment.contains_card_number(text, boolean) IS
	'does value hold a card number (README "Card-number guard"); identifier => also one glued to a prefix';

CREATE FUNCTION payment.contains_card_number(value jsonb)
RETURNS boolean
AS 'MODULE_PATHNAME', 'pe_contains_card_number_jsonb'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION payment.contains_card_number(jsonb) IS
	'does a document hold a card number in any key, string or number at any depth, or a key naming a card security code';

CREATE FUNCTION payment.save_method(user_id uuid, stripe_payment_method text, last_four text,
                                    card_brand text, expiry_month integer, expiry_year integer,
                                    make_default boolean DEFAULT false)
RETURNS uuid
AS 'MODULE_PATHNAME', 'pe_save_method'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION payment.save_method(uuid, text, text, text, integer, integer, boolean) IS
	'saves a card set up with Stripe: seals the pm_ id, refuses expired cards and card numbers, make_default moves the default atomically';

-- ---------------------------------------------------------------------------
-- sealed columns: only values sealed for their column and row
-- ---------------------------------------------------------------------------
CREATE FUNCTION payment.sealed_columns_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'pe_sealed_columns_trigger'
LANGUAGE C;
COMMENT ON FUNCTION payment.sealed_columns_trigger() IS
	'refuses a value in an Encrypted... column that does not open under ''<Table>.<Column>:<Id>''';

CREATE TRIGGER "TR_Payments_Sealed"
	BEFORE INSERT OR UPDATE ON "Payments"
	FOR EACH ROW EXECUTE FUNCTION payment.sealed_columns_trigger();
ALTER TABLE "Payments" ENABLE ALWAYS TRIGGER "TR_Payments_Sealed";
CREATE TRIGGER "TR_PaymentMethods_Sealed"
	BEFORE INSERT OR UPDATE ON "PaymentMethods"
	FOR EACH ROW EXECUTE FUNCTION payment.sealed_columns_trigger();
ALTER TABLE "PaymentMethods" ENABLE ALWAYS TRIGGER "TR_PaymentMethods_Sealed";
CREATE TRIGGER "TR_PaymentRefunds_Sealed"
	BEFORE INSERT OR UPDATE ON "PaymentRefunds"
	FOR EACH ROW EXECUTE FUNCTION payment.sealed_columns_trigger();
ALTER TABLE "PaymentRefunds" ENABLE ALWAYS TRIGGER "TR_PaymentRefunds_Sealed";
CREATE TRIGGER "TR_PaymentFailures_Sealed"
	BEFORE INSERT OR UPDATE ON "PaymentFailures"
	FOR EACH ROW EXECUTE FUNCTION payment.sealed_columns_trigger();
ALTER TABLE "PaymentFailures" ENABLE ALWAYS TRIGGER "TR_PaymentFailures_Sealed";

-- ---------------------------------------------------------------------------
-- views: which keys still seal values
-- ---------------------------------------------------------------------------
CREATE VIEW payment.key_usage AS
WITH sealed(v) AS (
	SELECT "EncryptedStripePaymentIntentId" FROM "Payments"
	UNION ALL SELECT "EncryptedStripeCustomerId" FROM "Payments"
	UNION ALL SELECT "EncryptedStripeRefundId" FROM "Payments"
	UNION ALL SELECT "EncryptedStripePaymentMethodId" FROM "PaymentMethods"
	UNION ALL SELECT "EncryptedStripeRefundId" FROM "PaymentRefunds"
	UNION ALL SELECT "EncryptedStripeErrorDetails" FROM "PaymentFailures"
	UNION ALL SELECT e.value FROM payment.outbox o, pg_catalog.jsonb_each_text(o.request) e
	           WHERE pg_catalog.starts_with(e.value, 'pe1:')
), used AS (
	SELECT pg_catalog.split_part(v, ':', 2) AS key_id, pg_catalog.count(*) AS sealed_values
	  FROM sealed
	 WHERE v IS NOT NULL
	 GROUP BY 1
)
SELECT COALESCE(k.key_id, u.key_id) AS key_id,
       COALESCE(u.sealed_values, 0) AS sealed_values,
       k.key_id IS NOT NULL AS in_keyring,
       COALESCE(k.newest, false) AS newest
  FROM payment.keyring_keys() k
  FULL JOIN used u ON u.key_id OPERATOR(pg_catalog.=) k.key_id;
COMMENT ON VIEW payment.key_usage IS
	'per key id: how many sealed values it still seals, whether it is in the keyring and whether it is the newest; a key with 0 values can leave the keyring';

-- ---------------------------------------------------------------------------
-- grants
-- ---------------------------------------------------------------------------
REVOKE ALL ON FUNCTION payment.encrypt(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION payment.decrypt(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION payment.keyring_keys() FROM PUBLIC;
REVOKE ALL ON FUNCTION payment.rotate_keys() FROM PUBLIC;
REVOKE ALL ON FUNCTION payment.save_method(uuid, text, text, text, integer, integer, boolean) FROM PUBLIC;
REVOKE ALL ON payment.key_usage FROM PUBLIC;

GRANT EXECUTE ON FUNCTION payment.encrypt(text, text) TO payment_app, payment_admin, payment_worker;
GRANT EXECUTE ON FUNCTION payment.decrypt(text, text) TO payment_admin, payment_worker;
GRANT EXECUTE ON FUNCTION payment.keyring_keys() TO payment_admin, payment_reporting;
GRANT EXECUTE ON FUNCTION payment.rotate_keys() TO payment_admin;
GRANT EXECUTE ON FUNCTION payment.save_method(uuid, text, text, text, integer, integer, boolean) TO payment_app, payment_admin;
GRANT SELECT ON payment.key_usage TO payment_admin, payment_reporting;
