#!/usr/bin/env python3
"""tools/callgraph.py -- the file-level call graph of src/, from the objects.

    python3 tools/callgraph.py [--src DIR] [--layers FILE] [--edges] [--dot]

Reads every object file below DIR (default: src/ beside this tool; build
first: make), with nm: a C file calls another when its object uses (nm type
U) a global symbol, function or variable, that the other's object defines.
Only the objects that make builds count; an object without its C file
(a stale one left by a moved file) is passed over, and a C file without an
object is reported.

Prints:
  cycle: N files: a.c b.c ...   each strongly connected component of more
                                than one file (files that call each other,
                                directly or not)
  violation: a.c -> b.c (...)   each call against the layer table (FILE,
                                default DIR/LAYERS), with the symbols used
  unmapped: a.c                 a C file the table gives no layer
  no object: a.c                a C file with no object (not in OBJS?)
then one summary line.  --edges also prints every file's calls, --dot the
graph in Graphviz's dot language.  Exits 0 when there is no cycle, no
violation, no unmapped file and no file without an object; 1 otherwise;
2 on bad usage.

The layer table (see src/LAYERS): a line "layers L1 L2 ...", lowest layer
first, then one line per subsystem: its path below DIR (a folder, with a
trailing slash, or one file), its layer, and the subsystems of the same
layer it may call.  A file belongs to the longest path that holds it.  A
file may call the files of its own subsystem, of the subsystems its line
names, and of every lower layer; nothing else.
"""
import argparse
import os
import subprocess
import sys


def read_objects(src):
    """{c file (relative to src): (defined symbols, used symbols)}, and the
    C files that have no object."""
    files = {}
    missing = []
    for root, dirs, names in os.walk(src):
        dirs.sort()
        for name in sorted(names):
            if not name.endswith(".c"):
                continue
            cfile = os.path.join(root, name)
            rel = os.path.relpath(cfile, src)
            obj = cfile[:-2] + ".o"
            if not os.path.exists(obj):
                missing.append(rel)
                continue
            out = subprocess.run(["nm", "-P", obj], check=True,
                                 capture_output=True, text=True).stdout
            defined, used = set(), set()
            for line in out.splitlines():
                parts = line.split()
                if len(parts) < 2:
                    continue
                sym, kind = parts[0], parts[1]
                if kind == "U":
                    used.add(sym)
                elif kind.isupper():
                    defined.add(sym)
            files[rel] = (defined, used)
    return files, missing


def build_graph(files):
    """{file: {callee file: [symbols]}}"""
    owner = {}
    for f, (defined, _) in files.items():
        for sym in defined:
            owner[sym] = f
    graph = {f: {} for f in files}
    for f, (_, used) in files.items():
        for sym in used:
            g = owner.get(sym)
            if g is not None and g != f:
                graph[f].setdefault(g, []).append(sym)
    for f in graph:
        for g in graph[f]:
            graph[f][g].sort()
    return graph


def strongly_connected(graph):
    """Tarjan's algorithm, iterative; components as sorted lists."""
    index, low, on_stack, stack, comps = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                comps.append(sorted(comp))
    return comps


def read_layers(path):
    """(layer order {name: rank}, [(subsystem path, layer, allowed)])"""
    order = None
    subsystems = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if words[0] == "layers":
                if order is not None or len(words) < 2:
                    sys.exit(f"{path}:{n}: one \"layers\" line with at least one layer")
                order = {name: i for i, name in enumerate(words[1:])}
                continue
            if order is None:
                sys.exit(f"{path}:{n}: the \"layers\" line comes first")
            if len(words) < 2 or words[1] not in order:
                sys.exit(f"{path}:{n}: want: <path> <layer> [<subsystem> ...]")
            subsystems.append((words[0], words[1], words[2:]))
    if order is None:
        sys.exit(f"{path}: no \"layers\" line")
    # a subsystem named in an allow list: its path, with or without the "/"
    paths = {s[0]: s[0] for s in subsystems}
    paths.update({s[0].rstrip("/"): s[0] for s in subsystems})
    resolved = []
    for sub, layer, allowed in subsystems:
        full = []
        for a in allowed:
            if a not in paths:
                sys.exit(f"{path}: {sub} may call {a}, which the table does not list")
            other = next(s for s in subsystems if s[0] == paths[a])
            if other[1] != layer:
                sys.exit(f"{path}: {sub} may call {a}: list only subsystems of its own layer "
                         "(lower layers are always allowed)")
            full.append(paths[a])
        resolved.append((sub, layer, full))
    return order, resolved


def subsystem_of(f, subsystems):
    best = None
    for sub in subsystems:
        path = sub[0]
        if (path.endswith("/") and f.startswith(path)) or f == path:
            if best is None or len(path) > len(best[0]):
                best = sub
    return best


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", default=os.path.join(here, "..", "src"))
    ap.add_argument("--layers")
    ap.add_argument("--edges", action="store_true")
    ap.add_argument("--dot", action="store_true")
    args = ap.parse_args()
    src = os.path.normpath(args.src)
    layers_path = args.layers or os.path.join(src, "LAYERS")

    files, missing = read_objects(src)
    if not files:
        print(f"no objects below {src}: build first (make)")
        return 1
    graph = build_graph(files)
    order, subsystems = read_layers(layers_path)
    problems = 0

    if args.edges:
        for f in sorted(graph):
            calls = ", ".join(f"{g} ({len(s)})" for g, s in sorted(graph[f].items()))
            print(f"{f} -> {calls or '(nothing)'}")
    if args.dot:
        print("digraph src {")
        for f in sorted(graph):
            for g in sorted(graph[f]):
                print(f'  "{f}" -> "{g}";')
        print("}")

    for rel in missing:
        print(f"no object: {rel}")
        problems += 1

    cycles = [c for c in strongly_connected(graph) if len(c) > 1]
    for comp in sorted(cycles, key=lambda c: (-len(c), c)):
        print(f"cycle: {len(comp)} files: {' '.join(comp)}")
        problems += 1

    sub_of = {}
    for f in sorted(graph):
        sub_of[f] = subsystem_of(f, subsystems)
        if sub_of[f] is None:
            print(f"unmapped: {f}")
            problems += 1
    violations = 0
    for f in sorted(graph):
        a = sub_of[f]
        if a is None:
            continue
        for g, syms in sorted(graph[f].items()):
            b = sub_of[g]
            if b is None:
                continue
            ra, rb = order[a[1]], order[b[1]]
            if rb < ra or a is b or (ra == rb and b[0] in a[2]):
                continue
            why = "a higher layer" if rb > ra else "a subsystem of its own layer it may not call"
            shown = ", ".join(syms[:6]) + (", ..." if len(syms) > 6 else "")
            print(f"violation: {f} ({a[0]}, {a[1]}) -> {g} ({b[0]}, {b[1]}): "
                  f"{why}: {shown}")
            violations += 1
    problems += violations

    largest = max((len(c) for c in cycles), default=0)
    print(f"{len(graph)} files, {sum(len(v) for v in graph.values())} file-to-file calls, "
          f"{len(cycles)} cycles (largest {largest} files), {violations} layer violations")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
