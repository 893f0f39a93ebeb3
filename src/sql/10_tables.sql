
-- ---------------------------------------------------------------------------
-- tables the spec references: "Users", "Events", "EventRegistrations"
--
-- A table of that name that already exists in the target schema with a uuid
-- "Id" primary key is used as it is and stays out of the extension;
-- otherwise a minimal one is created from the spec's ERD and belongs to the
-- extension.
-- ---------------------------------------------------------------------------
DO $pe_reuse$
DECLARE
	t text;
	rel regclass;
BEGIN
	FOREACH t IN ARRAY ARRAY['Users', 'Events', 'EventRegistrations'] LOOP
		rel := pg_catalog.to_regclass(pg_catalog.quote_ident('@extschema@') || '.' || pg_catalog.quote_ident(t));
		IF rel IS NULL THEN
			CONTINUE;
		END IF;
		IF NOT EXISTS (
			SELECT 1
			  FROM pg_catalog.pg_constraint c
			  JOIN pg_catalog.pg_attribute a
			    ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
			 WHERE c.conrelid = rel
			   AND c.contype = 'p'
			   AND pg_catalog.array_length(c.conkey, 1) = 1
			   AND a.attname = 'Id'
			   AND a.atttypid = 'pg_catalog.uuid'::pg_catalog.regtype)
		THEN
			RAISE EXCEPTION 'table %.% exists but has no uuid "Id" primary key', '@extschema@', t
				USING ERRCODE = 'invalid_table_definition',
				      HINT = 'payment_ext reuses an existing table only when its primary key is a single uuid column named "Id".';
		END IF;
	END LOOP;

	IF pg_catalog.to_regclass(pg_catalog.quote_ident('@extschema@') || '."Users"') IS NULL THEN
		CREATE TABLE "Users" (
			"Id"                 uuid         NOT NULL DEFAULT gen_random_uuid(),
			"SceneName"          varchar(100) NOT NULL,
			"Email"              varchar(256) NOT NULL,
			"EncryptedLegalName" text         NULL,
			"CreatedAt"          timestamptz  NOT NULL DEFAULT now(),
			"UpdatedAt"          timestamptz  NOT NULL DEFAULT now(),
			CONSTRAINT "PK_Users" PRIMARY KEY ("Id"),
			CONSTRAINT "UX_Users_SceneName" UNIQUE ("SceneName"),
			CONSTRAINT "UX_Users_Email" UNIQUE ("Email")
		);
		COMMENT ON TABLE "Users" IS 'minimal users table created by payment_ext (the spec''s ApplicationUser)';
		PERFORM pg_catalog.pg_extension_config_dump('"Users"', '');
	END IF;

	IF pg_catalog.to_regclass(pg_catalog.quote_ident('@extschema@') || '."Events"') IS NULL THEN
		CREATE TABLE "Events" (
			"Id"           uuid         NOT NULL DEFAULT gen_random_uuid(),
			"Title"        varchar(200) NOT NULL,
			"Description"  text         NULL,
			"StartDate"    timestamptz  NOT NULL,
			"EndDate"      timestamptz  NOT NULL,
			"Capacity"     integer      NOT NULL DEFAULT 0 CHECK ("Capacity" >= 0),
			"IsPublished"  boolean      NOT NULL DEFAULT false,
			"PricingTiers" jsonb        NOT NULL DEFAULT '[]',
			"CreatedAt"    timestamptz  NOT NULL DEFAULT now(),
			"UpdatedAt"    timestamptz  NOT NULL DEFAULT now(),
			CONSTRAINT "PK_Events" PRIMARY KEY ("Id"),
			CONSTRAINT "CHK_Events_Dates" CHECK ("EndDate" >= "StartDate"),
			CONSTRAINT "CHK_Events_PricingTiers_Array"
				CHECK (jsonb_typeof("PricingTiers") = 'array')
		);
		COMMENT ON TABLE "Events" IS 'minimal events table created by payment_ext; "PricingTiers" is a JSON array of {"name", "price", "currency"}';
		PERFORM pg_catalog.pg_extension_config_dump('"Events"', '');
	END IF;

	IF pg_catalog.to_regclass(pg_catalog.quote_ident('@extschema@') || '."EventRegistrations"') IS NULL THEN
		CREATE TABLE "EventRegistrations" (
			"Id"        uuid        NOT NULL DEFAULT gen_random_uuid(),
			"EventId"   uuid        NOT NULL,
			"UserId"    uuid        NOT NULL,
			"Tier"      text        NULL,
			"CreatedAt" timestamptz NOT NULL DEFAULT now(),
			CONSTRAINT "PK_EventRegistrations" PRIMARY KEY ("Id"),
			CONSTRAINT "FK_EventRegistrations_Events"
				FOREIGN KEY ("EventId") REFERENCES "Events"("Id") ON DELETE RESTRICT,
			CONSTRAINT "FK_EventRegistrations_Users"
				FOREIGN KEY ("UserId") REFERENCES "Users"("Id") ON DELETE RESTRICT,
			CONSTRAINT "UX_EventRegistrations_Event_User" UNIQUE ("EventId", "UserId")
		);
		CREATE INDEX "IX_EventRegistrations_UserId" ON "EventRegistrations"("UserId");
		COMMENT ON TABLE "EventRegistrations" IS 'minimal registrations table created by payment_ext: one user at one event';
		PERFORM pg_catalog.pg_extension_config_dump('"EventRegistrations"', '');
	END IF;
END
$pe_reuse$;

-- ---------------------------------------------------------------------------
-- "Payments"
-- ---------------------------------------------------------------------------
CREATE TABLE "Payments" (
    "Id" UUID NOT NULL DEFAULT gen_random_uuid(),
    "EventRegistrationId" UUID NOT NULL,
    "UserId" UUID NOT NULL,

    -- Money value object storage
    "AmountValue" DECIMAL(10,2) NOT NULL CHECK ("AmountValue" >= 0),
    "Currency" VARCHAR(3) NOT NULL DEFAULT 'USD',

    -- Sliding scale pricing
    "SlidingScalePercentage" DECIMAL(5,2) NOT NULL DEFAULT 0.00
        CHECK ("SlidingScalePercentage" >= 0 AND "SlidingScalePercentage" <= 75.00),

    -- Payment processing
    "Status" INTEGER NOT NULL DEFAULT 0,        -- PaymentStatus: see payment.status_name()
    "PaymentMethodType" INTEGER NOT NULL,       -- 0 SavedCard .. 4 Venmo

    -- Sealed Stripe identifiers (never card numbers)
    "EncryptedStripePaymentIntentId" TEXT NULL,
    "EncryptedStripeCustomerId" TEXT NULL,

    "ProcessedAt" TIMESTAMPTZ NULL,
    "CreatedAt" TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    "UpdatedAt" TIMESTAMPTZ NOT NULL DEFAULT NOW(),

    -- Refund tracking
    "RefundAmountValue" DECIMAL(10,2) NULL CHECK ("RefundAmountValue" >= 0),
    "RefundCurrency" VARCHAR(3) NULL,
    "RefundedAt" TIMESTAMPTZ NULL,
    "EncryptedStripeRefundId" TEXT NULL,
    "RefundReason" TEXT NULL,
    "RefundedByUserId" UUID NULL,

    "Metadata" JSONB NOT NULL DEFAULT '{}',

    CONSTRAINT "PK_Payments" PRIMARY KEY ("Id"),

    CONSTRAINT "FK_Payments_Users_UserId"
        FOREIGN KEY ("UserId") REFERENCES "Users"("Id") ON DELETE RESTRICT,
    CONSTRAINT "FK_Payments_Users_RefundedByUserId"
        FOREIGN KEY ("RefundedByUserId") REFERENCES "Users"("Id") ON DELETE SET NULL,
    -- not in the spec: the registration a payment is for (DESIGN.md)
    CONSTRAINT "FK_Payments_EventRegistrations_EventRegistrationId"
        FOREIGN KEY ("EventRegistrationId") REFERENCES "EventRegistrations"("Id") ON DELETE RESTRICT,

    CONSTRAINT "CHK_Payments_Currency_Valid"
        CHECK ("Currency" IN ('USD', 'EUR', 'GBP', 'CAD')),
    CONSTRAINT "CHK_Payments_RefundCurrency_Valid"
        CHECK ("RefundCurrency" IS NULL OR "RefundCurrency" IN ('USD', 'EUR', 'GBP', 'CAD')),
    CONSTRAINT "CHK_Payments_RefundAmount_NotExceedOriginal"
        CHECK ("RefundAmountValue" IS NULL OR "RefundAmountValue" <= "AmountValue"),
    CONSTRAINT "CHK_Payments_RefundRequiresOriginalPayment"
        CHECK (("RefundAmountValue" IS NULL AND "RefundedAt" IS NULL) OR
               ("RefundAmountValue" IS NOT NULL AND "RefundedAt" IS NOT NULL)),
    CONSTRAINT "CHK_Payments_CurrencyConsistency"
        CHECK (("RefundCurrency" IS NULL) OR ("RefundCurrency" = "Currency")),
    -- not in the spec: the status codes of DESIGN.md
    CONSTRAINT "CHK_Payments_Status_Valid"
        CHECK ("Status" BETWEEN 0 AND 5),
    CONSTRAINT "CHK_Payments_PaymentMethodType_Valid"
        CHECK ("PaymentMethodType" BETWEEN 0 AND 4),
    CONSTRAINT "CHK_Payments_NotRequired_ZeroAmount"
        CHECK (("Status" = 5) = ("AmountValue" = 0))
);

CREATE INDEX "IX_Payments_UserId" ON "Payments"("UserId");
CREATE INDEX "IX_Payments_EventRegistrationId" ON "Payments"("EventRegistrationId");
CREATE INDEX "IX_Payments_Status" ON "Payments"("Status");
CREATE INDEX "IX_Payments_ProcessedAt" ON "Payments"("ProcessedAt" DESC);
CREATE INDEX "IX_Payments_CreatedAt" ON "Payments"("CreatedAt" DESC);
CREATE INDEX "IX_Payments_SlidingScalePercentage" ON "Payments"("SlidingScalePercentage");

CREATE INDEX "IX_Payments_PendingStatus" ON "Payments"("CreatedAt" DESC)
    WHERE "Status" = 0;
CREATE INDEX "IX_Payments_FailedStatus" ON "Payments"("ProcessedAt" DESC)
    WHERE "Status" = 2;
CREATE INDEX "IX_Payments_RefundedStatus" ON "Payments"("RefundedAt" DESC)
    WHERE "RefundedAt" IS NOT NULL;

CREATE INDEX "IX_Payments_Metadata_Gin" ON "Payments" USING GIN ("Metadata");

CREATE UNIQUE INDEX "UX_Payments_EventRegistration_Completed"
    ON "Payments"("EventRegistrationId")
    WHERE "Status" = 1;
-- not in the spec: at most one live (Pending or Completed) payment per
-- registration (DESIGN.md)
CREATE UNIQUE INDEX "UX_Payments_EventRegistration_Live"
    ON "Payments"("EventRegistrationId")
    WHERE "Status" IN (0, 1);

COMMENT ON TABLE "Payments" IS 'one payment per attempt to pay for a registration; a financial record, never deleted';
COMMENT ON COLUMN "Payments"."Status" IS '0 Pending, 1 Completed, 2 Failed, 3 Refunded, 4 PartiallyRefunded, 5 NotRequired (payment.status_name)';
COMMENT ON COLUMN "Payments"."PaymentMethodType" IS '0 SavedCard, 1 NewCard, 2 BankTransfer, 3 PayPal, 4 Venmo';
COMMENT ON COLUMN "Payments"."AmountValue" IS 'amount charged, after the sliding-scale discount, rounded half-up to the cent';
COMMENT ON COLUMN "Payments"."RefundAmountValue" IS 'sum of this payment''s refunds that are not Failed; NULL when none';
COMMENT ON COLUMN "Payments"."EncryptedStripePaymentIntentId" IS 'sealed (pe1:...) Stripe PaymentIntent id';

-- ---------------------------------------------------------------------------
-- "PaymentMethods"
-- ---------------------------------------------------------------------------
CREATE TABLE "PaymentMethods" (
    "Id" UUID NOT NULL DEFAULT gen_random_uuid(),
    "UserId" UUID NOT NULL,

    "EncryptedStripePaymentMethodId" TEXT NOT NULL,

    "LastFourDigits" VARCHAR(4) NOT NULL,
    "CardBrand" VARCHAR(20) NOT NULL,
    "ExpiryMonth" INTEGER NOT NULL CHECK ("ExpiryMonth" >= 1 AND "ExpiryMonth" <= 12),
    -- The spec's CHECK ("ExpiryYear" >= EXTRACT(YEAR FROM NOW())) would make
    -- last year's rows fail to restore from a dump: the expiry rule is checked
    -- on new rows by the trigger "TR_PaymentMethods_Expiry" instead.
    "ExpiryYear" INTEGER NOT NULL CHECK ("ExpiryYear" BETWEEN 2000 AND 9999),

    "IsDefault" BOOLEAN NOT NULL DEFAULT FALSE,
    "IsActive" BOOLEAN NOT NULL DEFAULT TRUE,

    "CreatedAt" TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    "UpdatedAt" TIMESTAMPTZ NOT NULL DEFAULT NOW(),

    CONSTRAINT "PK_PaymentMethods" PRIMARY KEY ("Id"),

    CONSTRAINT "FK_PaymentMethods_Users"
        FOREIGN KEY ("UserId") REFERENCES "Users"("Id") ON DELETE CASCADE,

    CONSTRAINT "CHK_PaymentMethods_CardBrand"
        CHECK ("CardBrand" IN ('Visa', 'MasterCard', 'American Express', 'Discover', 'JCB', 'Diners Club')),
    CONSTRAINT "CHK_PaymentMethods_LastFourDigits"
        CHECK ("LastFourDigits" ~ '^\d{4}$')
);

CREATE INDEX "IX_PaymentMethods_UserId" ON "PaymentMethods"("UserId");
CREATE INDEX "IX_PaymentMethods_IsDefault" ON "PaymentMethods"("UserId", "IsDefault")
    WHERE "IsDefault" = TRUE;
CREATE INDEX "IX_PaymentMethods_IsActive" ON "PaymentMethods"("UserId", "IsActive")
    WHERE "IsActive" = TRUE;

CREATE UNIQUE INDEX "UX_PaymentMethods_UserDefault"
    ON "PaymentMethods"("UserId")
    WHERE "IsDefault" = TRUE AND "IsActive" = TRUE;

COMMENT ON TABLE "PaymentMethods" IS 'saved payment methods: a sealed Stripe PaymentMethod id and display data, never card numbers';

-- ---------------------------------------------------------------------------
-- "PaymentRefunds"
-- ---------------------------------------------------------------------------
CREATE TABLE "PaymentRefunds" (
    "Id" UUID NOT NULL DEFAULT gen_random_uuid(),
    "OriginalPaymentId" UUID NOT NULL,

    "RefundAmountValue" DECIMAL(10,2) NOT NULL CHECK ("RefundAmountValue" > 0),
    "RefundCurrency" VARCHAR(3) NOT NULL DEFAULT 'USD',

    "RefundReason" TEXT NOT NULL,
    "RefundStatus" INTEGER NOT NULL DEFAULT 0,  -- 0 Processing, 1 Completed, 2 Failed
    "EncryptedStripeRefundId" TEXT NULL,

    "ProcessedByUserId" UUID NOT NULL,
    "ProcessedAt" TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    "CreatedAt" TIMESTAMPTZ NOT NULL DEFAULT NOW(),

    "Metadata" JSONB NOT NULL DEFAULT '{}',

    CONSTRAINT "PK_PaymentRefunds" PRIMARY KEY ("Id"),

    -- The spec says ON DELETE CASCADE; a refund is a financial record that
    -- outlives nothing it belongs to, so deleting its payment is refused.
    CONSTRAINT "FK_PaymentRefunds_Payments"
        FOREIGN KEY ("OriginalPaymentId") REFERENCES "Payments"("Id") ON DELETE RESTRICT,
    CONSTRAINT "FK_PaymentRefunds_Users"
        FOREIGN KEY ("ProcessedByUserId") REFERENCES "Users"("Id") ON DELETE RESTRICT,

    CONSTRAINT "CHK_PaymentRefunds_Currency"
        CHECK ("RefundCurrency" IN ('USD', 'EUR', 'GBP', 'CAD')),
    CONSTRAINT "CHK_PaymentRefunds_ReasonRequired"
        CHECK (LENGTH(TRIM("RefundReason")) >= 10),
    -- not in the spec: the status codes of DESIGN.md
    CONSTRAINT "CHK_PaymentRefunds_RefundStatus_Valid"
        CHECK ("RefundStatus" BETWEEN 0 AND 2)
);

CREATE INDEX "IX_PaymentRefunds_OriginalPaymentId" ON "PaymentRefunds"("OriginalPaymentId");
CREATE INDEX "IX_PaymentRefunds_ProcessedByUserId" ON "PaymentRefunds"("ProcessedByUserId");
CREATE INDEX "IX_PaymentRefunds_ProcessedAt" ON "PaymentRefunds"("ProcessedAt" DESC);
CREATE INDEX "IX_PaymentRefunds_RefundStatus" ON "PaymentRefunds"("RefundStatus");

CREATE INDEX "IX_PaymentRefunds_Metadata_Gin" ON "PaymentRefunds" USING GIN ("Metadata");

COMMENT ON TABLE "PaymentRefunds" IS 'refunds, partial or whole; the sum of those not Failed never exceeds the payment';
COMMENT ON COLUMN "PaymentRefunds"."RefundStatus" IS '0 Processing, 1 Completed, 2 Failed (payment.refund_status_name)';

-- ---------------------------------------------------------------------------
-- "PaymentAuditLog"
-- ---------------------------------------------------------------------------
CREATE TABLE "PaymentAuditLog" (
    "Id" UUID NOT NULL DEFAULT gen_random_uuid(),
    -- The spec has NOT NULL: saved payment methods have no payment, and their
    -- changes are audited too ("TableName"/"RowId" say what a row concerns).
    "PaymentId" UUID NULL,
    "UserId" UUID NULL,

    "ActionType" VARCHAR(50) NOT NULL,
    "ActionDescription" TEXT NOT NULL,

    "OldValues" JSONB NULL,
    "NewValues" JSONB NULL,

    "IpAddress" INET NULL,
    "UserAgent" TEXT NULL,

    "CreatedAt" TIMESTAMPTZ NOT NULL DEFAULT NOW(),

    -- not in the spec: what the row concerns, and tamper evidence
    "TableName" TEXT NULL,
    "RowId" UUID NULL,
    "PrevHash" BYTEA NULL,
    "RowHash" BYTEA NULL,

    CONSTRAINT "PK_PaymentAuditLog" PRIMARY KEY ("Id"),

    -- The spec has ON DELETE CASCADE and ON DELETE SET NULL: either would
    -- erase or rewrite history, so both are RESTRICT.
    CONSTRAINT "FK_PaymentAuditLog_Payments"
        FOREIGN KEY ("PaymentId") REFERENCES "Payments"("Id") ON DELETE RESTRICT,
    CONSTRAINT "FK_PaymentAuditLog_Users"
        FOREIGN KEY ("UserId") REFERENCES "Users"("Id") ON DELETE RESTRICT,

    CONSTRAINT "CHK_PaymentAuditLog_ActionType"
        CHECK ("ActionType" IN (
            'PaymentInitiated', 'PaymentProcessed', 'PaymentCompleted',
            'PaymentFailed', 'PaymentRetried', 'RefundInitiated',
            'RefundCompleted', 'RefundFailed', 'StatusChanged',
            'MetadataUpdated', 'SystemAction'
        ))
);

CREATE INDEX "IX_PaymentAuditLog_PaymentId_CreatedAt"
    ON "PaymentAuditLog"("PaymentId", "CreatedAt" DESC);
CREATE INDEX "IX_PaymentAuditLog_UserId_CreatedAt"
    ON "PaymentAuditLog"("UserId", "CreatedAt" DESC);
CREATE INDEX "IX_PaymentAuditLog_ActionType"
    ON "PaymentAuditLog"("ActionType");
CREATE INDEX "IX_PaymentAuditLog_CreatedAt"
    ON "PaymentAuditLog"("CreatedAt" DESC);

CREATE INDEX "IX_PaymentAuditLog_OldValues_Gin"
    ON "PaymentAuditLog" USING GIN ("OldValues");
CREATE INDEX "IX_PaymentAuditLog_NewValues_Gin"
    ON "PaymentAuditLog" USING GIN ("NewValues");

CREATE INDEX "IX_PaymentAuditLog_FailedActions"
    ON "PaymentAuditLog"("CreatedAt" DESC)
    WHERE "ActionType" IN ('PaymentFailed', 'RefundFailed');

COMMENT ON TABLE "PaymentAuditLog" IS 'append-only audit trail of every change of the payment tables';

-- ---------------------------------------------------------------------------
-- "PaymentFailures"
-- ---------------------------------------------------------------------------
CREATE TABLE "PaymentFailures" (
    "Id" UUID NOT NULL DEFAULT gen_random_uuid(),
    "PaymentId" UUID NOT NULL,

    "FailureCode" VARCHAR(50) NOT NULL,
    "FailureMessage" TEXT NOT NULL,
    "EncryptedStripeErrorDetails" TEXT NULL,

    "RetryCount" INTEGER NOT NULL DEFAULT 0 CHECK ("RetryCount" >= 0),
    "FailedAt" TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    "CreatedAt" TIMESTAMPTZ NOT NULL DEFAULT NOW(),

    CONSTRAINT "PK_PaymentFailures" PRIMARY KEY ("Id"),

    -- The spec says ON DELETE CASCADE; see "FK_PaymentRefunds_Payments".
    CONSTRAINT "FK_PaymentFailures_Payments"
        FOREIGN KEY ("PaymentId") REFERENCES "Payments"("Id") ON DELETE RESTRICT
);

CREATE INDEX "IX_PaymentFailures_PaymentId" ON "PaymentFailures"("PaymentId");
CREATE INDEX "IX_PaymentFailures_FailureCode" ON "PaymentFailures"("FailureCode");
CREATE INDEX "IX_PaymentFailures_FailedAt" ON "PaymentFailures"("FailedAt" DESC);
CREATE INDEX "IX_PaymentFailures_RetryCount" ON "PaymentFailures"("RetryCount")
    WHERE "RetryCount" > 0;

COMMENT ON TABLE "PaymentFailures" IS 'one row per failed attempt to charge a payment';

SELECT pg_catalog.pg_extension_config_dump('"Payments"', '');
SELECT pg_catalog.pg_extension_config_dump('"PaymentMethods"', '');
SELECT pg_catalog.pg_extension_config_dump('"PaymentRefunds"', '');
SELECT pg_catalog.pg_extension_config_dump('"PaymentAuditLog"', '');
SELECT pg_catalog.pg_extension_config_dump('"PaymentFailures"', '');
