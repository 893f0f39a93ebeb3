# payment_ext/Makefile — PGXS build
#
# The version is written once, in payment_ext.control; the install script
# payment_ext--$(EXTVERSION).sql is built from the numbered parts in src/sql/
# in the order listed below.

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
	src/audit_chain.o

# Install script parts, in this order.
SQL_PARTS = \
	src/sql/00_header.sql \
	src/sql/10_tables.sql \
	src/sql/15_outbox.sql \
	src/sql/20_functions.sql \
	src/sql/30_triggers.sql \
	src/sql/35_audit.sql \
	src/sql/60_views.sql

DATA_built = $(EXTENSION)--$(EXTVERSION).sql

REGRESS = install schema sample_queries pricing payments refunds audit views
REGRESS_OPTS = --inputdir=.

PG_CPPFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter
SHLIB_LINK = -lssl -lcrypto -lcurl

EXTRA_CLEAN = $(DATA_built) regression.diffs regression.out results tmp_check

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

$(EXTENSION)--$(EXTVERSION).sql: $(SQL_PARTS) $(EXTENSION).control
	cat $(SQL_PARTS) > $@

# test/run-tests asks for the pg_regress schedule
print-regress:
	@echo $(REGRESS)
.PHONY: print-regress
