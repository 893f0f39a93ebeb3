#!/usr/bin/env bash
#
# test/t/ops_meta.sh — META.json against the PGXN Meta Spec v1.0.0
# (test/validate_meta.py), its version the control file's.  Prints TAP.
#
exec python3 "$PE_WORK/repo/test/validate_meta.py" "$PE_WORK/repo/META.json" "$PE_WORK/repo/payment_ext.control"
