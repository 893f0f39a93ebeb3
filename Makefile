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
OBJS = \
	src/payment_ext.o \
	src/state.o \
	src/methods.o \
	src/pricing.o \
	src/refund.o \
	src/payments.o \
	src/security.o \
	src/audit.o \
	src/audit_context.o \
	src/audit_describe.o \
	src/audit_chain.o \
	src/audit_store.o \
	src/vault.o \
	src/keyring.o \
	src/cardguard.o \
	src/sealed.o \
	src/save_method.o \
	src/http.o \
	src/outbox_worker.o \
	src/outbox_outcome.o \
	src/outbox_settle.o \
	src/outbox_request.o \
	src/operations.o \
	src/webhook.o \
	src/webhook_apply.o \
	src/resolve.o

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

PG_CPPFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -DPE_VERSION='"$(EXTVERSION)"'
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
src/operations.o: $(EXTENSION).control

# test/run-tests asks for the pg_regress schedule
print-regress:
	@echo $(REGRESS)
.PHONY: print-regress
