# payment_ext/Makefile — PGXS build
#
# The version is written once, in payment_ext.control (default_version).
# The install script of the first version, payment_ext--$(BASE_VERSION).sql,
# is the numbered parts in src/sql/ in the order listed below, exactly as
# that version shipped.  Each later version adds one upgrade script in
# src/sql/updates/ (listed in UPDATES, in order); the fresh install script
# payment_ext--$(EXTVERSION).sql is the parts followed by every upgrade
# script, so a fresh install and an upgraded one create the same objects.

EXTENSION  = payment_ext
EXTVERSION = $(shell sed -n "s/^default_version[[:space:]]*=[[:space:]]*'\([^']*\)'.*/\1/p" $(EXTENSION).control)

MODULE_big = payment_ext
# The C code, by layer (src/LAYERS; tools/callgraph.py checks it): base,
# then the rules, then the flows that use them, then the module.
OBJS = \
	src/base/guc.o \
	src/base/spi.o \
	src/base/trigger.o \
	src/base/text.o \
	src/base/scrub.o \
	src/base/call.o \
	src/base/xact.o \
	src/base/status.o \
	src/base/security.o \
	src/guard/cardguard.o \
	src/audit/relmap.o \
	src/audit/audit.o \
	src/audit/context.o \
	src/audit/describe.o \
	src/audit/hash.o \
	src/audit/chain.o \
	src/audit/verify.o \
	src/audit/store.o \
	src/rules/pricing.o \
	src/rules/state.o \
	src/rules/refund.o \
	src/rules/methods.o \
	src/vault/keyring.o \
	src/vault/vault.o \
	src/vault/sealed.o \
	src/vault/rotate.o \
	src/stripe/queue.o \
	src/stripe/refs.o \
	src/stripe/ledger.o \
	src/api/idempotency.o \
	src/api/payments.o \
	src/api/refunds.o \
	src/api/resolve.o \
	src/api/save_method.o \
	src/api/client_secret.o \
	src/api/operations.o \
	src/outbox/http.o \
	src/outbox/status.o \
	src/outbox/state.o \
	src/outbox/request.o \
	src/outbox/claim.o \
	src/outbox/send.o \
	src/outbox/outcome.o \
	src/outbox/record_intent.o \
	src/outbox/record_refund.o \
	src/outbox/record.o \
	src/outbox/settle.o \
	src/outbox/worker.o \
	src/webhook/webhook.o \
	src/webhook/apply.o \
	src/payment_ext.o

# Install script parts, in this order.
SQL_PARTS = \
	src/sql/00_header.sql \
	src/sql/05_roles.sql \
	src/sql/10_tables.sql \
	src/sql/15_outbox.sql \
	src/sql/20_functions.sql \
	src/sql/30_triggers.sql \
	src/sql/35_audit.sql \
	src/sql/40_vault.sql \
	src/sql/50_worker.sql \
	src/sql/60_webhooks.sql \
	src/sql/65_views.sql \
	src/sql/70_security.sql \
	src/sql/90_grants.sql

# Upgrade scripts, oldest first; BASE_VERSION is the "from" version of the
# first one (the version the parts above install).
UPDATES = \
	src/sql/updates/$(EXTENSION)--1.0--1.1.sql \
	src/sql/updates/$(EXTENSION)--1.1--1.2.sql
BASE_VERSION = $(word 2,$(subst --, ,$(basename $(notdir $(firstword $(UPDATES))))))

DATA_built = $(EXTENSION)--$(EXTVERSION).sql $(EXTENSION)--$(BASE_VERSION).sql
DATA = $(UPDATES)

REGRESS = install schema sample_queries pricing payments refunds audit vault cardguard memory views
REGRESS_OPTS = --inputdir=.

PG_CPPFLAGS = -I$(srcdir)/src -Wall -Wextra -Werror -Wno-unused-parameter -DPE_VERSION='"$(EXTVERSION)"'
SHLIB_LINK = -lssl -lcrypto -lcurl

EXTRA_CLEAN = $(DATA_built) regression.diffs regression.out results tmp_check

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

$(EXTENSION)--$(BASE_VERSION).sql: $(SQL_PARTS) Makefile
	cat $(SQL_PARTS) > $@

# The fresh install script: the header names its version, then the parts,
# then every upgrade script (CREATE EXTENSION drops their \echo guards).
$(EXTENSION)--$(EXTVERSION).sql: $(SQL_PARTS) $(UPDATES) $(EXTENSION).control Makefile
	{ sed '2s/version $(BASE_VERSION)\./version $(EXTVERSION) (the $(BASE_VERSION) parts, then src\/sql\/updates\/)./' $(firstword $(SQL_PARTS)); \
	  cat $(wordlist 2,$(words $(SQL_PARTS)),$(SQL_PARTS)) $(UPDATES); } > $@

# payment.version() is compiled in from the control file
src/api/operations.o: $(EXTENSION).control

# test/run-tests asks for the pg_regress schedule
print-regress:
	@echo $(REGRESS)
.PHONY: print-regress
