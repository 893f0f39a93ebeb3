-- test/ops_catalog.sql — everything payment_ext puts in a database, one
-- line per fact, sorted: test/t/ops_upgrade.sh compares an upgraded
-- database with a fresh install by diffing this output.  Names, not OIDs.
WITH ext AS (
	SELECT oid FROM pg_extension WHERE extname = 'payment_ext'
), members AS (
	SELECT classid, objid FROM pg_depend
	 WHERE refclassid = 'pg_extension'::regclass AND refobjid = (SELECT oid FROM ext) AND deptype = 'e'
), rels AS (
	SELECT objid AS oid FROM members WHERE classid = 'pg_class'::regclass
)
SELECT line FROM (
	-- extension itself and its config tables
	SELECT 'extension ' || extname || ' version=' || extversion || ' schema=' || extnamespace::regnamespace
	       || ' relocatable=' || extrelocatable || ' owner=' || extowner::regrole AS line
	  FROM pg_extension WHERE oid = (SELECT oid FROM ext)
	UNION ALL
	SELECT 'extconfig ' || c::regclass || ' condition=' || coalesce(cond, '')
	  FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS u(c, cond)
	 WHERE e.oid = (SELECT oid FROM ext)
	UNION ALL
	-- membership
	SELECT 'member ' || pg_describe_object(classid, objid, 0) FROM members
	UNION ALL
	-- functions: the whole definition (language, volatility, strictness,
	-- parallel safety, security, SET config, body or C symbol), ACL, comment
	SELECT 'function ' || p.oid::regprocedure || E'\n' || pg_get_functiondef(p.oid)
	       || ' acl=' || coalesce(p.proacl::text, '') || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '')
	  FROM pg_proc p WHERE p.oid IN (SELECT objid FROM members WHERE classid = 'pg_proc'::regclass)
	UNION ALL
	-- relations
	SELECT 'relation ' || c.oid::regclass || ' kind=' || c.relkind::text || ' persistence=' || c.relpersistence::text
	       || ' rls=' || c.relrowsecurity || '/' || c.relforcerowsecurity
	       || ' options=' || coalesce(c.reloptions::text, '') || ' acl=' || coalesce(c.relacl::text, '')
	       || ' owner=' || c.relowner::regrole || ' comment=' || coalesce(obj_description(c.oid, 'pg_class'), '')
	  FROM pg_class c WHERE c.oid IN (SELECT oid FROM rels)
	UNION ALL
	SELECT 'column ' || c.oid::regclass || '.' || quote_ident(a.attname) || ' #' || a.attnum
	       || ' ' || format_type(a.atttypid, a.atttypmod) || ' notnull=' || a.attnotnull
	       || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '') || ' identity=' || a.attidentity::text
	       || ' generated=' || a.attgenerated::text || ' collation=' || a.attcollation::regcollation
	       || ' acl=' || coalesce(a.attacl::text, '') || ' comment=' || coalesce(col_description(c.oid, a.attnum), '')
	  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
	  LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
	 WHERE c.oid IN (SELECT oid FROM rels) AND a.attnum > 0 AND NOT a.attisdropped
	UNION ALL
	SELECT 'constraint ' || conrelid::regclass || ' ' || quote_ident(conname) || ' ' || pg_get_constraintdef(oid)
	       || ' deferrable=' || condeferrable || ' validated=' || convalidated
	       || ' comment=' || coalesce(obj_description(oid, 'pg_constraint'), '')
	  FROM pg_constraint WHERE conrelid IN (SELECT oid FROM rels)
	UNION ALL
	SELECT 'index ' || pg_get_indexdef(i.indexrelid) || ' comment=' || coalesce(obj_description(i.indexrelid, 'pg_class'), '')
	  FROM pg_index i WHERE i.indrelid IN (SELECT oid FROM rels)
	UNION ALL
	SELECT 'trigger ' || pg_get_triggerdef(t.oid) || ' enabled=' || t.tgenabled::text
	       || ' comment=' || coalesce(obj_description(t.oid, 'pg_trigger'), '')
	  FROM pg_trigger t WHERE t.tgrelid IN (SELECT oid FROM rels) AND NOT t.tgisinternal
	UNION ALL
	SELECT 'policy ' || polrelid::regclass || ' ' || quote_ident(polname) || ' cmd=' || polcmd::text
	       || ' permissive=' || polpermissive
	       || ' roles=' || (SELECT string_agg(CASE WHEN r = 0 THEN 'public' ELSE r::regrole::text END, ',' ORDER BY 1)
	                           FROM unnest(polroles) r)
	       || ' using=' || coalesce(pg_get_expr(polqual, polrelid), '')
	       || ' check=' || coalesce(pg_get_expr(polwithcheck, polrelid), '')
	  FROM pg_policy WHERE polrelid IN (SELECT oid FROM rels)
	UNION ALL
	SELECT 'view ' || c.oid::regclass || E'\n' || pg_get_viewdef(c.oid)
	  FROM pg_class c WHERE c.oid IN (SELECT oid FROM rels) AND c.relkind IN ('v', 'm')
	UNION ALL
	SELECT 'sequence ' || seqrelid::regclass || ' ' || format_type(seqtypid, NULL) || ' start=' || seqstart
	       || ' inc=' || seqincrement || ' min=' || seqmin || ' max=' || seqmax || ' cache=' || seqcache || ' cycle=' || seqcycle
	  FROM pg_sequence WHERE seqrelid IN (SELECT oid FROM rels)
	UNION ALL
	SELECT 'schema ' || n.nspname || ' owner=' || n.nspowner::regrole || ' acl=' || coalesce(n.nspacl::text, '')
	       || ' comment=' || coalesce(obj_description(n.oid, 'pg_namespace'), '')
	  FROM pg_namespace n
	 WHERE n.oid IN (SELECT objid FROM members WHERE classid = 'pg_namespace'::regclass)
	    OR n.oid = (SELECT extnamespace FROM pg_extension WHERE oid = (SELECT oid FROM ext))
	UNION ALL
	SELECT 'type ' || t.oid::regtype || ' type=' || t.typtype::text || ' acl=' || coalesce(t.typacl::text, '')
	  FROM pg_type t WHERE t.oid IN (SELECT objid FROM members WHERE classid = 'pg_type'::regclass)
	UNION ALL
	SELECT 'event trigger ' || quote_ident(evtname) || ' on=' || evtevent || ' function=' || evtfoid::regprocedure
	       || ' enabled=' || evtenabled::text || ' tags=' || coalesce(evttags::text, '')
	       || ' owner=' || evtowner::regrole || ' comment=' || coalesce(obj_description(oid, 'pg_event_trigger'), '')
	  FROM pg_event_trigger WHERE oid IN (SELECT objid FROM members WHERE classid = 'pg_event_trigger'::regclass)
	UNION ALL
	-- the initial privileges pg_dump compares ACLs with
	SELECT 'initpriv ' || pg_describe_object(classoid, objoid, objsubid) || ' ' || privtype::text || ' ' || initprivs::text
	  FROM pg_init_privs WHERE (classoid, objoid) IN (SELECT classid, objid FROM members)
	UNION ALL
	-- the roles the extension relies on
	SELECT 'role ' || rolname || ' login=' || rolcanlogin
	  FROM pg_roles WHERE rolname IN ('payment_app', 'payment_admin', 'payment_reporting', 'payment_worker')
) x
ORDER BY line COLLATE "C";
