#!/usr/bin/env bash
# TAP tests of the Stripe stand-in (test/stripe_standin.py); see test/t/standin.py.
set -u
exec python3 "$(dirname "${BASH_SOURCE[0]}")/standin.py"
