#!/usr/bin/env python3
"""Import circles and upward imports in a Python tree, from the code's own import statements (function-
local imports included). Usage, from the project root:

    python3 ../shared/tools/import_graph.py [--layers model,index,index_builder:search,service:rsir]

--layers lists the top-level packages from the bottom up; packages joined by ':' share a layer. An
import from a lower layer to a higher one is reported as upward. Exit status 1 when anything is found.
Vendored into rsir from the workplace's ../shared/tools/import_graph.py, adding --namespace: rsir
imports its folders as rsir.model, rsir.index, ... (links in rsir/), which the original reads as
imports of the rsir package itself. tests/test_layers.py runs it.
Tests, bench/ and lab/ are skipped by default (--include to add folders back). --namespace rsir: the
project imports its folders as rsir.model, rsir.index, ... (links in rsir/); those names mean the folders."""
import argparse, ast, sys
from pathlib import Path

def modules(root, skip):
    out = {}
    for p in root.rglob("*.py"):
        rel = p.relative_to(root)
        if rel.parts[0] in skip or any(part.startswith(".") for part in rel.parts):
            continue
        name = ".".join(rel.with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out

def edges(mods, namespace=""):
    g = {m: set() for m in mods}
    tops = {m.split(".")[0] for m in mods}
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"), str(p))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join([x for x in parts if x] + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for n in names:
                # `ns.pkg.x` names the folder pkg/ where the project imports its folders under one name
                if namespace and n.startswith(namespace + ".") and n.split(".")[1] in tops:
                    n = n[len(namespace) + 1 :]
                while n and n not in mods:
                    n = n.rpartition(".")[0]
                if n and n != m:
                    g[m].add(n)
    return g

def cycles(g):
    index, low, stack, on, out, i = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(sorted(comp))
    sys.setrecursionlimit(10000)
    for v in g:
        if v not in index: visit(v)
    return out

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".")
    ap.add_argument("--layers", default="")
    ap.add_argument("--skip", default="tests,bench,lab,docs,.venv,build,dist")
    ap.add_argument("--namespace", default="", help="a package whose NAME.pkg imports mean the folder pkg/ "
                    "(rsir: rsir.model is model/)")
    a = ap.parse_args()
    root = Path(a.root).resolve()
    g = edges(modules(root, set(a.skip.split(","))), a.namespace)
    bad = 0
    for c in cycles(g):
        bad += 1; print("circle:", " <-> ".join(c))
    rank = {pkg: r for r, layer in enumerate(a.layers.split(",")) if layer for pkg in layer.split(":")}
    for m, targets in sorted(g.items()):
        for t in sorted(targets):
            a_, b_ = m.split(".")[0], t.split(".")[0]
            if a_ in rank and b_ in rank and rank[b_] > rank[a_]:
                bad += 1; print(f"upward: {m} -> {t}")
    print(f"{len(g)} modules; {bad} problem(s)" if bad else f"{len(g)} modules; no circles, no upward imports")
    return 1 if bad else 0

if __name__ == "__main__":
    sys.exit(main())
