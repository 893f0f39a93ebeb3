#!/usr/bin/env bash
#
# test/t/sec_priv.sh — issue 16, items 1, 2 and 10, and the offline refund:
# no path from a less privileged role to the rights of code that runs with
# more (doc/security.md, "Access control"), on a cluster of its own:
#   - roles: CREATE EXTENSION refuses an existing role named payment_admin
#     (LOGIN, a password) or payment_reporting (with a member) that it did
#     not create (42710, the hint names payment_ext.adopt_existing_roles),
#     grants it nothing; an ordinary role cannot set that parameter; a
#     superuser who sets it installs; a second database installs with the
#     roles the first one created, and so does a re-install;
#   - application tables: with the application ("mallory") owning schema
#     public and "Users", "Events", "EventRegistrations", CREATE EXTENSION
#     is refused (42501, the hint says ALTER TABLE ... OWNER TO), and so is
#     a trusted table with an inheritance child mallory owns; a 1.1 install
#     that adopted mallory's tables refuses ALTER EXTENSION UPDATE and its
#     privileged functions refuse to read them; once a superuser owns them
#     mallory, owner of the schema and holding every privilege on the tables
#     (TRIGGER included), cannot rename them or hang a rule, a policy or a
#     default on them, her triggers never run, and every SECURITY DEFINER
#     function and trigger that reads them (payment.create, quote, resolve,
#     refund, retry, save_method, client_secret, the audit writer, the refund
#     sync trigger) never runs her code as another role; when she drops
#     "Users" and puts a view calling her function in its place, the audit
#     writer refuses it (42809) and her function never runs as anyone else;
#   - payment_admin records the outcome of a refund made outside Stripe
#     (the payment completed by hand) with a plain UPDATE of "RefundStatus",
#     with "=" for uuid, int4, int8 and text hijacked in public and public
#     first on the session's search_path: the payment becomes
#     PartiallyRefunded, and the hijacking operators never run;
#   - every SECURITY DEFINER, trigger and event trigger function pins
#     search_path; the outbox worker, with ALTER DATABASE ... SET search_path = public,
#     pg_catalog and the same hijacking operators: the payment completes
#     and a refund completes through the worker, and the operators never
#     run as the worker (or anyone).
# Prints TAP.
#
set -uo pipefail
source "$PE_WORK/repo/test/worker_lib.sh"
trap w_cleanup EXIT

echo "1..44"

C=sec_priv
w_standin_start $C
W_NAMES+=("$C")
pe_cluster_start $C \
	"payment_ext.stripe_api_base = '$W_URL'" \
	"payment_ext.max_requests_per_second = 100000" \
	"payment_ext.retry_base_ms = 20" \
	"payment_ext.retry_max_ms = 200" \
	"payment_ext.request_timeout_ms = 1000" \
	"payment_ext.connect_timeout_ms = 1000" || exit 1

# q DB SQL [USER]: run SQL in database DB as USER (postgres), unaligned, with
# verbose errors (SQLSTATE) on the same output; "public" searched after
# pg_catalog whatever the database says
q() {
	PGOPTIONS="-c search_path=public" "$PE_BIN/psql" -h "$PE_WORK/$C.sock" -p 5432 -U "${3:-postgres}" -d "$1" \
		-X -qAt -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -c "$2" 2>&1
}
# qwait SQL EXPECTED SECONDS: poll SQL (database postgres) until it prints
# EXPECTED or the deadline passes; prints the last value
qwait() {
	local got deadline
	deadline=$(($(date +%s%N) + $3 * 1000000000))
	while :; do
		got=$(q postgres "$1")
		if [ "$got" = "$2" ] || [ "$(date +%s%N)" -gt "$deadline" ]; then
			echo "$got"
			return
		fi
		sleep 0.1
	done
}
# has TEXT PATTERN: status 0 when TEXT has a line matching PATTERN (grep -E)
has() { grep -Eq -- "$2" <<<"$1"; }

U1=10000000-0000-0000-0000-000000000001
U2=10000000-0000-0000-0000-000000000002
E1=20000000-0000-0000-0000-000000000001
R1=30000000-0000-0000-0000-000000000001
R2=30000000-0000-0000-0000-000000000002
R3=30000000-0000-0000-0000-000000000003
REASON="refunded in cash at the door"

for db in r1 r2 app1 kinds up1; do q postgres "CREATE DATABASE $db" >/dev/null; done

# --- item 10: the extension's roles ------------------------------------------
q postgres "CREATE ROLE payment_admin LOGIN PASSWORD 'a-test-password'" >/dev/null
OUT=$(q r1 "CREATE EXTENSION payment_ext")
ok $(has "$OUT" '^ERROR:  42710: role "payment_admin" already exists and was not created by payment_ext' &&
	has "$OUT" '^HINT: .*SET payment_ext.adopt_existing_roles = on'; echo $?) \
	"an existing LOGIN role payment_admin (with a password) is refused: 42710, the hint names the setting"
is "$(q r1 "SELECT count(*) FROM pg_extension WHERE extname = 'payment_ext'")|$(q postgres "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'payment\_%'")|$(q postgres "SELECT count(*) FROM pg_shdepend WHERE refobjid = 'payment_admin'::regrole")" \
	"0|1|0" "  nothing installed, no role created, nothing granted to the foreign payment_admin"
q postgres "DROP ROLE payment_admin; CREATE ROLE payment_reporting NOLOGIN; CREATE ROLE someone LOGIN; GRANT payment_reporting TO someone" >/dev/null
OUT=$(q r1 "CREATE EXTENSION payment_ext")
ok $(has "$OUT" '^ERROR:  42710: role "payment_reporting" already exists'; echo $?) \
	"an existing NOLOGIN role payment_reporting with a member is refused (42710)"
OUT=$(q r1 "SET payment_ext.adopt_existing_roles = on" someone)
ok $(has "$OUT" '^ERROR:  42501'; echo $?) "an ordinary role cannot set payment_ext.adopt_existing_roles (42501)"
is "$(q r1 "SET payment_ext.adopt_existing_roles = on; CREATE EXTENSION payment_ext; SELECT extversion FROM pg_extension WHERE extname = 'payment_ext'")" \
	"1.2" "a superuser who sets payment_ext.adopt_existing_roles = on installs with the existing role"
is "$(q postgres "SELECT string_agg(rolname, ' ' ORDER BY rolname) FROM pg_roles WHERE shobj_description(oid, 'pg_authid') LIKE 'payment_ext role%'")" \
	"payment_admin payment_app payment_reporting payment_worker" "  the four roles carry the extension's marker"
is "$(q r2 "CREATE EXTENSION payment_ext; SELECT extversion FROM pg_extension WHERE extname = 'payment_ext'")" \
	"1.2" "a second database of the cluster installs with the roles the first one made"
is "$(q r2 "DROP EXTENSION payment_ext; CREATE EXTENSION payment_ext; SELECT extversion FROM pg_extension WHERE extname = 'payment_ext'")" \
	"1.2" "  and installs again after DROP EXTENSION"

# --- item 1: the application's tables ------------------------------------------
q postgres "CREATE ROLE mallory LOGIN; CREATE ROLE app_login LOGIN IN ROLE payment_app;
            CREATE ROLE admin_login LOGIN IN ROLE payment_admin" >/dev/null
APP_TABLES='
CREATE TABLE "Users" ("Id" uuid PRIMARY KEY, "SceneName" varchar(100) NOT NULL, "Email" varchar(256) NOT NULL);
CREATE TABLE "Events" ("Id" uuid PRIMARY KEY, "Title" varchar(200) NOT NULL, "Description" text,
                       "StartDate" timestamptz NOT NULL, "EndDate" timestamptz NOT NULL,
                       "PricingTiers" jsonb NOT NULL DEFAULT '"'"'[]'"'"');
CREATE TABLE "EventRegistrations" ("Id" uuid PRIMARY KEY, "EventId" uuid NOT NULL REFERENCES "Events",
                                   "UserId" uuid NOT NULL REFERENCES "Users", "Tier" text);'
# pwn(): what mallory would like to run with somebody else's rights
PWN='
CREATE TABLE public.pwned (who text, sess text);
GRANT INSERT ON public.pwned TO PUBLIC;
CREATE FUNCTION public.pwn() RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
	INSERT INTO public.pwned VALUES (current_user, session_user);
	BEGIN
		EXECUTE '"'"'ALTER ROLE mallory SUPERUSER'"'"';
	EXCEPTION WHEN OTHERS THEN NULL;
	END;
	RETURN true;
END $f$;
CREATE FUNCTION public.pwn_trg() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
	PERFORM public.pwn();
	RETURN NULL;
END $f$;'
for db in app1 up1; do
	q $db "ALTER SCHEMA public OWNER TO mallory" >/dev/null
	q $db "$APP_TABLES $PWN" mallory >/dev/null
done

OUT=$(q app1 "CREATE EXTENSION payment_ext")
ok $(has "$OUT" '^ERROR:  42501: table public."Users" is not owned by a trusted role' &&
	has "$OUT" '^HINT:  As a superuser: ALTER TABLE public."Users" OWNER TO postgres;'; echo $?) \
	"CREATE EXTENSION over tables the application owns is refused: 42501, the hint gives ALTER TABLE ... OWNER TO"
is "$(q app1 "SELECT count(*) FROM pg_extension WHERE extname = 'payment_ext'")" "0" "  nothing installed"

# a trusted table with a child the application owns is refused too
q kinds "$APP_TABLES CREATE ROLE kid_owner; CREATE TABLE events_kid () INHERITS (\"Events\"); ALTER TABLE events_kid OWNER TO kid_owner" >/dev/null
OUT=$(q kinds "CREATE EXTENSION payment_ext")
ok $(has "$OUT" '^ERROR:  42501: table public.events_kid is not owned by a trusted role'; echo $?) \
	"a trusted \"Events\" with an inheritance child owned by another role is refused (42501)"

# a 1.1 install that adopted the application's tables: the 1.2 library
# refuses to read them, and the upgrade is refused until a superuser owns them
q up1 "CREATE EXTENSION payment_ext VERSION '1.1'" >/dev/null
q up1 "INSERT INTO \"Events\" VALUES ('$E1', 'Gala', NULL, now(), now(), '[{\"name\": \"standard\", \"price\": 40.00, \"currency\": \"USD\"}]')" mallory >/dev/null
OUT=$(q up1 "SELECT payment.quote('$E1', 'standard')" app_login)
ok $(has "$OUT" '^ERROR:  42501: table public."Events" is not owned by a trusted role'; echo $?) \
	"a 1.1 database with the application's own tables: payment.quote refuses to read them (42501)"
OUT=$(q up1 "ALTER EXTENSION payment_ext UPDATE")
ok $(has "$OUT" '^ERROR:  42501: table public."(Users|Events|EventRegistrations)" is not owned by a trusted role'; echo $?) \
	"  ALTER EXTENSION payment_ext UPDATE is refused (42501)"
is "$(q up1 "SELECT extversion FROM pg_extension WHERE extname = 'payment_ext'")" "1.1" "  and leaves 1.1"
is "$(q up1 "ALTER TABLE \"Users\" OWNER TO postgres; ALTER TABLE \"Events\" OWNER TO postgres;
            ALTER TABLE \"EventRegistrations\" OWNER TO postgres; ALTER EXTENSION payment_ext UPDATE;
            GRANT SELECT ON \"Events\" TO payment_app;
            SELECT extversion FROM pg_extension WHERE extname = 'payment_ext'")|$(q up1 "SELECT payment.quote('$E1', 'standard', 25)" app_login)" \
	"1.2|30.00" "  once a superuser owns the tables: upgraded, and payment.quote reads them"

# the remedy the hint gives: a superuser owns the tables, the application
# keeps every privilege on them and owns schema public
q app1 "ALTER TABLE \"Users\" OWNER TO postgres; ALTER TABLE \"Events\" OWNER TO postgres;
        ALTER TABLE \"EventRegistrations\" OWNER TO postgres;
        GRANT ALL ON \"Users\", \"Events\", \"EventRegistrations\" TO mallory" >/dev/null
is "$(q app1 "CREATE EXTENSION payment_ext; SELECT extversion FROM pg_extension WHERE extname = 'payment_ext'")" \
	"1.2" "after ALTER TABLE ... OWNER TO a superuser, CREATE EXTENSION adopts them"
# payment.quote runs as its caller: the application grants what it reads
q app1 "GRANT SELECT ON \"Events\" TO payment_app" >/dev/null
q app1 "INSERT INTO \"Users\" VALUES ('$U1', 'u1', 'u1@example.org'), ('$U2', 'u2', 'u2@example.org');
        INSERT INTO \"Events\" VALUES ('$E1', 'Gala', NULL, now(), now(), '[{\"name\": \"standard\", \"price\": 40.00, \"currency\": \"USD\"}]');
        INSERT INTO \"EventRegistrations\" VALUES ('$R1', '$E1', '$U1', 'standard'), ('$R2', '$E1', '$U1', 'standard'),
                                                 ('$R3', '$E1', '$U2', 'standard')" mallory >/dev/null

# what the application can no longer do to its tables
OUT=$(q app1 "ALTER TABLE \"Users\" RENAME TO users_old" mallory)
ok $(has "$OUT" '^ERROR:  42501'; echo $?) "the application cannot rename \"Users\" (42501)"
OUT=$(q app1 "CREATE RULE r AS ON UPDATE TO \"EventRegistrations\" DO ALSO SELECT public.pwn()" mallory)
ok $(has "$OUT" '^ERROR:  42501'; echo $?) "  nor hang a rule on \"EventRegistrations\" (42501)"
OUT=$(q app1 "CREATE POLICY p ON \"Events\" USING (public.pwn())" mallory)
ok $(has "$OUT" '^ERROR:  42501'; echo $?) "  nor a policy on \"Events\" (42501)"
OUT=$(q app1 "ALTER TABLE \"Users\" ALTER COLUMN \"Email\" SET DEFAULT public.pwn()::text" mallory)
ok $(has "$OUT" '^ERROR:  42501'; echo $?) "  nor a default on \"Users\" (42501)"
# what it still can: triggers (TRIGGER privilege) on all three, for every event
OUT=$(q app1 "
CREATE TRIGGER pwn_u BEFORE INSERT OR UPDATE OR DELETE ON \"Users\" FOR EACH ROW EXECUTE FUNCTION public.pwn_trg();
CREATE TRIGGER pwn_e BEFORE INSERT OR UPDATE OR DELETE ON \"Events\" FOR EACH ROW EXECUTE FUNCTION public.pwn_trg();
CREATE TRIGGER pwn_r BEFORE INSERT OR UPDATE OR DELETE ON \"EventRegistrations\" FOR EACH ROW EXECUTE FUNCTION public.pwn_trg();
CREATE TRIGGER pwn_rs AFTER INSERT OR UPDATE OR DELETE ON \"EventRegistrations\" FOR EACH STATEMENT EXECUTE FUNCTION public.pwn_trg();
SELECT 'triggers'" mallory)
is "$OUT" "triggers" "  but it holds TRIGGER: its triggers are on all three tables"

# the operators an attacker would hijack, in public, first on admin's path
HIJACK='
CREATE TABLE public.hijacked (who text, sess text, app text);
GRANT INSERT ON public.hijacked TO PUBLIC;'
for t in uuid int4 int8 text; do
	HIJACK="$HIJACK
CREATE FUNCTION public.hj_$t($t, $t) RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog AS \$f\$
BEGIN
	BEGIN
		INSERT INTO public.hijacked VALUES (current_user, session_user, pg_catalog.left(pg_catalog.current_query(), 300));
	EXCEPTION WHEN OTHERS THEN NULL;
	END;
	RETURN \$1 OPERATOR(pg_catalog.=) \$2;
END \$f\$;
CREATE OPERATOR public.= (LEFTARG = $t, RIGHTARG = $t, FUNCTION = public.hj_$t);"
done
q app1 "$HIJACK" mallory >/dev/null
# qa DB SQL USER: as USER, with public first on the path and the request context
qa() {
	q "$1" "SET search_path = public, pg_catalog; SET app.current_user_id = '$U1'; SET app.user_role = 'Admin'; $2" "$3"
}

# every SECURITY DEFINER function and trigger that reads the application's tables
P1=$(qa app1 "SELECT payment.create('$R1', '$U1', 40.00)" app_login)
is "$(qa app1 "SELECT payment.quote('$E1', 'standard', 10)" app_login)" "36.00" "payment.quote reads \"Events\""
ok $(has "$P1" '^[0-9a-f-]{36}$'; echo $?) "payment.create (\"EventRegistrations\", the audit writer on \"Users\") as the application"
is "$(qa app1 "SELECT payment.resolve('$P1', 1, 'paid in cash at the door')" admin_login)|$(q app1 "SELECT \"Status\", \"EncryptedStripePaymentIntentId\" IS NULL FROM \"Payments\" WHERE \"Id\" = '$P1'")" \
	"|1|t" "payment.resolve completes it by hand (no PaymentIntent)"
F1=$(qa app1 "SELECT payment.refund('$P1', 15.00, '$REASON', '$U1')" admin_login)
ok $(has "$F1" '^[0-9a-f-]{36}$'; echo $?) "payment.refund records the offline refund (Processing, no request)"
# the final paragraph of issue 16: the administrator records the outcome
OUT=$(qa app1 "UPDATE \"PaymentRefunds\" SET \"RefundStatus\" = 1 WHERE \"Id\" OPERATOR(pg_catalog.=) '$F1'" admin_login)
is "$OUT|$(q app1 "SELECT \"Status\" || ' ' || \"RefundAmountValue\" || ' ' || \"RefundCurrency\" FROM \"Payments\" WHERE \"Id\" = '$P1'")" \
	"|4 15.00 USD" "payment_admin records the refund made outside Stripe (UPDATE of \"RefundStatus\"): the payment is PartiallyRefunded, 15.00"
OUT=$(qa app1 "UPDATE \"Payments\" SET \"RefundAmountValue\" = 1 WHERE \"Id\" OPERATOR(pg_catalog.=) '$P1'" admin_login)
ok $(has "$OUT" '^ERROR:  42501: permission denied for table Payments'; echo $?) \
	"  still without UPDATE on \"Payments\" itself (42501)"
is "$(q app1 "SELECT payment.verify_audit('$P1')")|$(q app1 "SELECT \"SessionUser\" FROM \"PaymentAuditLog\" WHERE \"PaymentId\" = '$P1' ORDER BY \"ChainSeq\" DESC LIMIT 1")" \
	"t|admin_login" "  audited: the chain verifies, the last entry names admin_login"
P2=$(qa app1 "SELECT payment.create('$R2', '$U1', 40.00)" app_login)
qa app1 "SELECT payment.resolve('$P2', 2, 'the card was declined at the desk')" admin_login >/dev/null
is "$(qa app1 "SELECT payment.retry('$P2')" admin_login)|$(q app1 "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P2'")" \
	"|0" "payment.retry"
M1=$(qa app1 "SELECT payment.save_method('$U1', 'pm_card_visa', '4242', 'Visa', 12, 2040)" app_login)
ok $(has "$M1" '^[0-9a-f-]{36}$'; echo $?) "payment.save_method (foreign key to \"Users\")"
is "$(qa app1 "SELECT coalesce(payment.client_secret('$P2'), 'none')" app_login)" "none" "payment.client_secret"
is "$(qa app1 "UPDATE \"Payments\" SET \"Metadata\" = '{\"note\": \"x\"}' WHERE \"Id\" OPERATOR(pg_catalog.=) '$P2'" admin_login)|$(q app1 "SELECT \"UserId\" FROM \"PaymentAuditLog\" WHERE \"PaymentId\" = '$P2' ORDER BY \"ChainSeq\" DESC LIMIT 1")" \
	"|$U1" "a direct UPDATE by payment_admin: the audit writer finds the user in \"Users\""
q app1 "CREATE ROLE reporter LOGIN IN ROLE payment_reporting" >/dev/null
OUT="$(qa app1 "SELECT payment.rotate_keys()" admin_login) $(qa app1 "SELECT payment.reconcile_all()" admin_login)
     $(qa app1 "SELECT count(*) FROM payment.event_revenue" reporter) $(qa app1 "SELECT count(*) FROM payment.sliding_scale_summary" reporter)"
ok $(! has "$OUT" 'ERROR'; echo $?) "payment.rotate_keys, payment.reconcile_all, the reporting views over \"Events\" and \"EventRegistrations\""
is "$(q app1 "SELECT count(*) FROM public.pwned")|$(q app1 "SELECT count(*) FROM public.hijacked")|$(q app1 "SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'")" \
	"0|0|f" "  the application's triggers and hijacking operators never ran; mallory is no superuser"

# the schema's owner drops "Users" and puts a view calling pwn() in its place
OUT=$(q app1 "DROP TABLE \"Users\" CASCADE;
              CREATE VIEW \"Users\" AS SELECT '$U2'::uuid AS \"Id\", 'x'::varchar AS \"SceneName\", 'x'::varchar AS \"Email\" WHERE public.pwn();
              SELECT 'replaced'" mallory)
is "$(tail -n1 <<<"$OUT")" "replaced" "the owner of schema public replaces \"Users\" by a view that calls its function"
OUT=$(qa app1 "SET app.current_user_id = '$U2'; UPDATE \"Payments\" SET \"Metadata\" = '{\"note\": \"y\"}' WHERE \"Id\" OPERATOR(pg_catalog.=) '$P2'" admin_login)
ok $(has "$OUT" '^ERROR:  42809: public."Users" is not an ordinary table'; echo $?) \
	"  the audit writer refuses to read it (42809), and the change with it"
OUT=$(qa app1 "SET app.current_user_id = '$U2'; SELECT payment.create('$R3', '$U2', 40.00)" app_login)
ok $(has "$OUT" '^ERROR:  42809'; echo $?) "  payment.create too (42809)"
is "$(q app1 "SELECT count(*) FROM public.pwned WHERE who <> 'mallory'")|$(q app1 "SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'")" \
	"0|f" "  its function never ran as another role; mallory is no superuser"

# --- item 2: the outbox worker's search_path -----------------------------------
is "$(q app1 "SELECT count(*) FROM pg_proc
               WHERE pronamespace = 'payment'::regnamespace
                 AND (prosecdef OR prorettype IN ('trigger'::regtype, 'event_trigger'::regtype))
                 AND NOT coalesce(proconfig @> '{\"search_path=pg_catalog, pg_temp\"}', false)")" \
	"0" "every SECURITY DEFINER, trigger and event trigger function of the extension pins search_path"
q postgres "CREATE EXTENSION payment_ext; GRANT CREATE ON SCHEMA public TO mallory" >/dev/null
q postgres "INSERT INTO \"Users\" VALUES ('$U1', 'u1', 'u1@example.org', NULL);
            INSERT INTO \"Events\" (\"Id\", \"Title\", \"StartDate\", \"EndDate\") VALUES ('$E1', 'Gala', now(), now());
            INSERT INTO \"EventRegistrations\" (\"Id\", \"EventId\", \"UserId\") VALUES ('$R1', '$E1', '$U1')" >/dev/null
q postgres "$HIJACK" mallory >/dev/null
q postgres "ALTER DATABASE postgres SET search_path = public, pg_catalog" >/dev/null
# the worker connects again, under the database's search_path
pe_cluster_stop $C
"$PE_BIN/pg_ctl" -D "$PE_WORK/$C" -l "$PE_WORK/$C.log" -w -t 60 start >/dev/null
is "$(q postgres "SHOW search_path" mallory)" "public" "(the test's sessions search public after pg_catalog)"
P3=$(qa postgres "SELECT payment.create('$R1', '$U1', 25.00, stripe_payment_method => 'pm_card_visa')" app_login)
is "$(qwait "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P3'" 1 60)" "1" \
	"the worker completes a payment with public first on the database's search_path"
F3=$(qa postgres "SELECT payment.refund('$P3', 5.00, '$REASON', '$U1')" admin_login)
is "$(qwait "SELECT \"RefundStatus\" FROM \"PaymentRefunds\" WHERE \"Id\" = '$F3'" 1 60)|$(q postgres "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P3'")" \
	"1|4" "  and a refund"
is "$(q postgres "SELECT count(*) FROM public.hijacked")" "0" \
	"  the operators created in public (= for uuid, int4, int8, text) never ran"
is "$(q postgres "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'payment_ext outbox worker'")" "1" \
	"  the worker is running"

w_done
