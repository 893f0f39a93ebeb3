#!/usr/bin/env bash
#
# test/t/cardguard_property.sh — property test of the card-number guard
# (test/cardguard_property.py): planted card numbers behind random prefixes
# up to 1 MB (the reported repeat('1 ', 61) bypass among them) are found, the
# rule's non-card cases never match, the server agrees with a reference
# implementation of the rule on random text and jsonb, and the cost is
# linear in the input's length.  Fixed seed (CARDGUARD_SEED), printed.
# Prints TAP.  Needs PGHOST/PGPORT/PE_WORK of the cluster tools/run started.
#
set -uo pipefail

DB=pe_cardguard_prop
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null 2>&1
psql -X -q -d "$DB" -c "CREATE EXTENSION payment_ext" >/dev/null
python3 "$PE_WORK/repo/test/cardguard_property.py" "$DB"
rc=$?
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1
exit $rc
