#!/usr/bin/env python3
"""test/validate_meta.py META.json CONTROL — check a PGXN META.json against
the PGXN Meta Spec v1.0.0 (https://pgxn.org/meta/spec.txt) without network:
required keys and their types, semantic versions, licenses, prereqs,
resources, provides (each file present in the tree), and that its version
is the control file's default_version.  Prints TAP, one line per check."""
import json
import os
import re
import sys

SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$")
LICENSES = {"agpl_3", "apache_1_1", "apache_2_0", "artistic_1", "artistic_2", "bsd", "freebsd",
            "gfdl_1_2", "gfdl_1_3", "gpl_1", "gpl_2", "gpl_3", "lgpl_2_1", "lgpl_3_0", "mit",
            "mozilla_1_0", "mozilla_1_1", "openssl", "perl_5", "postgresql", "qpl_1_0",
            "ssleay", "sun", "zlib", "open_source", "restricted", "unrestricted", "unknown"}
PHASES = {"configure", "build", "test", "runtime", "develop"}
RELATIONS = {"requires", "recommends", "suggests", "conflicts"}
STATUSES = {"stable", "testing", "unstable"}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]+$")

meta_path, control_path = sys.argv[1], sys.argv[2]
root = os.path.dirname(os.path.abspath(meta_path))
checks = []


def check(cond, what):
    checks.append((bool(cond), what))


def is_str(v):
    return isinstance(v, str) and v.strip() != ""


def version_ok(v):
    return isinstance(v, str) and (SEMVER.match(v) is not None or v == "0")


try:
    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    check(isinstance(meta, dict), "META.json is a JSON object")
except (OSError, ValueError) as e:
    meta = {}
    check(False, "META.json parses as JSON (%s)" % e)

# required keys
for key in ("name", "abstract", "version", "maintainer", "license", "provides", "meta-spec"):
    check(key in meta, "required key %s is present" % key)
check(is_str(meta.get("name")) and NAME.match(meta.get("name", "")), "name is a distribution name")
check(is_str(meta.get("abstract")), "abstract is a non-empty string")
check(version_ok(meta.get("version")) and meta.get("version") != "0", "version is a semantic version")
m = meta.get("maintainer")
check(is_str(m) or (isinstance(m, list) and m and all(is_str(x) for x in m)),
      "maintainer is a string or a non-empty list of strings")
lic = meta.get("license")
check((isinstance(lic, str) and lic in LICENSES)
      or (isinstance(lic, list) and lic and all(x in LICENSES for x in lic))
      or (isinstance(lic, dict) and lic and all(is_str(k) and is_str(v) for k, v in lic.items())),
      "license is a known license string, a list of them, or a map of names to URLs")
ms = meta.get("meta-spec")
check(isinstance(ms, dict) and ms.get("version") == "1.0.0", "meta-spec.version is 1.0.0")
check(isinstance(ms, dict) and ("url" not in ms or is_str(ms["url"])), "meta-spec.url, if present, is a string")

# provides
prov = meta.get("provides")
check(isinstance(prov, dict) and prov, "provides is a non-empty object")
for ext, p in (prov or {}).items() if isinstance(prov, dict) else []:
    check(isinstance(p, dict) and is_str(p.get("file")), "provides.%s.file is a string" % ext)
    check(isinstance(p, dict) and os.path.isfile(os.path.join(root, p.get("file", ""))),
          "provides.%s.file exists in the tree" % ext)
    check(isinstance(p, dict) and version_ok(p.get("version")) and p.get("version") != "0",
          "provides.%s.version is a semantic version" % ext)
    check(isinstance(p, dict) and ("docfile" not in p or os.path.isfile(os.path.join(root, p["docfile"]))),
          "provides.%s.docfile, if present, exists" % ext)
    check(isinstance(p, dict) and ("abstract" not in p or is_str(p["abstract"])),
          "provides.%s.abstract, if present, is a string" % ext)
    check(isinstance(p, dict) and set(p) <= {"file", "version", "abstract", "docfile"},
          "provides.%s has only file, version, abstract, docfile" % ext)

# optional keys
pre = meta.get("prereqs", {})
ok = isinstance(pre, dict) and set(pre) <= PHASES
if ok:
    for phase in pre.values():
        if not (isinstance(phase, dict) and set(phase) <= RELATIONS):
            ok = False
            break
        for rel in phase.values():
            if not (isinstance(rel, dict) and all(is_str(k) and version_ok(v) for k, v in rel.items())):
                ok = False
check(ok, "prereqs: phases, relations and semantic versions")
check("release_status" not in meta or meta["release_status"] in STATUSES, "release_status is stable, testing or unstable")
tags = meta.get("tags", [])
check(isinstance(tags, list) and all(is_str(t) and len(t) <= 255 for t in tags), "tags are non-empty strings")
res = meta.get("resources", {})
check(isinstance(res, dict) and set(res) <= {"homepage", "bugtracker", "repository"}, "resources has only known keys")
check("description" not in meta or is_str(meta["description"]), "description, if present, is a string")
known = {"name", "abstract", "version", "maintainer", "license", "provides", "meta-spec", "description",
         "prereqs", "release_status", "resources", "tags", "no_index", "generated_by"}
check(all(k in known or k.lower().startswith("x_") for k in meta), "no unknown keys (custom ones start with x_)")

# one version: the control file's
with open(control_path, encoding="utf-8") as f:
    m2 = re.search(r"^default_version\s*=\s*'([^']*)'", f.read(), re.M)
ctl = m2.group(1) if m2 else None
want = ctl + ".0" if ctl and ctl.count(".") == 1 else ctl
check(meta.get("version") == want, "version %s is the control file's default_version %s" % (meta.get("version"), ctl))
check(isinstance(prov, dict) and all(isinstance(p, dict) and p.get("version") == want for p in prov.values()),
      "provides versions are the control file's default_version")

print("1..%d" % len(checks))
for i, (good, what) in enumerate(checks, 1):
    print("%s %d - %s" % ("ok" if good else "not ok", i, what))
sys.exit(0 if all(g for g, _ in checks) else 1)
