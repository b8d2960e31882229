"""Lists a crate's public API from rustdoc's JSON, one item per line, sorted.

Used by `scripts/public-api`: it walks the crate from its root the way a user reaches items (public
modules, `pub use` re-exports), and prints each reachable item with its kind, and for functions and
methods their signature, so that a change of the surface shows as a line in a diff of the
committed `public-api.txt`. Standard library only.
"""

import json
import sys


class Api:
    def __init__(self, doc):
        self.index = doc["index"]
        self.paths = doc["paths"]
        self.root = doc["root"]
        self.lines = set()
        self.seen = set()

    # ---- types -------------------------------------------------------------------------------

    def path_name(self, p):
        name = p.get("path") or p.get("name") or "?"
        args = p.get("args")
        return name + self.generic_args(args)

    def generic_args(self, args):
        if not args:
            return ""
        if "angle_bracketed" in args:
            parts = []
            for a in args["angle_bracketed"].get("args", []):
                if "type" in a:
                    parts.append(self.ty(a["type"]))
                elif "lifetime" in a:
                    parts.append(a["lifetime"])
                elif "const" in a:
                    parts.append(str(a["const"].get("expr", "_")))
            for c in args["angle_bracketed"].get("constraints", []):
                binding = c.get("binding", {})
                if "equality" in binding and "type" in binding["equality"]:
                    parts.append(f"{c['name']} = {self.ty(binding['equality']['type'])}")
                else:
                    parts.append(c["name"])
            return "<" + ", ".join(parts) + ">" if parts else ""
        if "parenthesized" in args:
            p = args["parenthesized"]
            out = "(" + ", ".join(self.ty(t) for t in p.get("inputs", [])) + ")"
            if p.get("output"):
                out += " -> " + self.ty(p["output"])
            return out
        return ""

    def bounds(self, bounds):
        out = []
        for b in bounds:
            if "trait_bound" in b:
                out.append(self.path_name(b["trait_bound"]["trait"]))
            elif "outlives" in b:
                out.append(b["outlives"])
        return " + ".join(out)

    def ty(self, t):
        if t is None:
            return "()"
        if "resolved_path" in t:
            return self.path_name(t["resolved_path"])
        if "primitive" in t:
            return t["primitive"]
        if "generic" in t:
            return t["generic"]
        if "borrowed_ref" in t:
            r = t["borrowed_ref"]
            life = (r.get("lifetime") + " ") if r.get("lifetime") else ""
            return "&" + life + ("mut " if r.get("is_mutable") else "") + self.ty(r["type"])
        if "tuple" in t:
            return "(" + ", ".join(self.ty(x) for x in t["tuple"]) + ")"
        if "slice" in t:
            return "[" + self.ty(t["slice"]) + "]"
        if "array" in t:
            return "[" + self.ty(t["array"]["type"]) + "; " + str(t["array"]["len"]) + "]"
        if "impl_trait" in t:
            return "impl " + self.bounds(t["impl_trait"])
        if "dyn_trait" in t:
            traits = [self.path_name(x["trait"]) for x in t["dyn_trait"]["traits"]]
            return "dyn " + " + ".join(traits)
        if "raw_pointer" in t:
            r = t["raw_pointer"]
            return ("*mut " if r.get("is_mutable") else "*const ") + self.ty(r["type"])
        if "qualified_path" in t:
            q = t["qualified_path"]
            return f"<{self.ty(q['self_type'])}>::{q['name']}"
        if "function_pointer" in t:
            return "fn(..)"
        return "_"

    def signature(self, f):
        sig = f["sig"]
        header = f.get("header", {})
        prefix = ("async " if header.get("is_async") else "") + (
            "unsafe " if header.get("is_unsafe") else ""
        )
        ins = []
        for name, t in sig["inputs"]:
            if name == "self":
                ref = t.get("borrowed_ref") if isinstance(t, dict) else None
                ins.append(("&mut self" if ref.get("is_mutable") else "&self") if ref else "self")
            else:
                ins.append(f"{name}: {self.ty(t)}")
        out = " -> " + self.ty(sig["output"]) if sig.get("output") else ""
        generics = [
            p["name"]
            for p in f.get("generics", {}).get("params", [])
            if "type" in p.get("kind", {}) and not p["kind"]["type"].get("is_synthetic")
        ]
        g = "<" + ", ".join(generics) + ">" if generics else ""
        return prefix, g, "(" + ", ".join(ins) + ")" + out

    # ---- walk --------------------------------------------------------------------------------

    def add(self, line):
        self.lines.add(line)

    def item(self, id_, path):
        """Lists item `id_`, reachable under `path` (a list of names)."""
        item = self.index.get(str(id_))
        if item is None:
            # An item of another crate, re-exported.
            p = self.paths.get(str(id_))
            ext = "::".join(p["path"]) if p else "?"
            self.add(f"pub use {'::'.join(path)} = {ext}")
            return
        key = (str(id_), tuple(path))
        if key in self.seen:
            return
        self.seen.add(key)
        inner = item["inner"]
        kind = next(iter(inner))
        name = "::".join(path)
        body = inner[kind]
        if kind == "module":
            self.add(f"pub mod {name}")
            self.module(body, path)
        elif kind == "use":
            self.use(body, path[:-1])
        elif kind == "function":
            prefix, g, sig = self.signature(body)
            self.add(f"pub {prefix}fn {name}{g}{sig}")
        elif kind == "struct":
            self.add(f"pub struct {name}")
            fields = body.get("kind", {})
            if "plain" in fields:
                for fid in fields["plain"].get("fields", []):
                    self.field(fid, name)
            elif "tuple" in fields:
                for i, fid in enumerate(fields["tuple"]):
                    if fid is not None:
                        self.field(fid, name, str(i))
            self.impls(body.get("impls", []), name)
        elif kind == "enum":
            self.add(f"pub enum {name}")
            for vid in body.get("variants", []):
                v = self.index[str(vid)]
                self.add(f"pub {name}::{v['name']}")
            self.impls(body.get("impls", []), name)
        elif kind == "trait":
            self.add(f"pub trait {name}")
            for mid in body.get("items", []):
                m = self.index.get(str(mid))
                if m and "function" in m["inner"]:
                    prefix, g, sig = self.signature(m["inner"]["function"])
                    self.add(f"pub {prefix}fn {name}::{m['name']}{g}{sig}")
        elif kind == "type_alias":
            self.add(f"pub type {name} = {self.ty(body['type'])}")
        elif kind == "constant":
            self.add(f"pub const {name}: {self.ty(body['type'])}")
        elif kind == "static":
            self.add(f"pub static {name}: {self.ty(body['type'])}")
        elif kind in ("macro", "proc_macro"):
            self.add(f"pub macro {name}!")
        else:
            self.add(f"pub {kind} {name}")

    def field(self, fid, owner, label=None):
        f = self.index.get(str(fid))
        if f and f.get("visibility") == "public":
            self.add(f"pub {owner}.{label or f['name']}: {self.ty(f['inner']['struct_field'])}")

    def impls(self, ids, owner):
        for iid in ids:
            imp = self.index.get(str(iid))
            if not imp:
                continue
            body = imp["inner"]["impl"]
            if body.get("is_synthetic") or body.get("blanket_impl"):
                continue
            trait = body.get("trait")
            if trait:
                self.add(f"impl {self.path_name(trait)} for {owner}")
                continue
            for mid in body.get("items", []):
                m = self.index.get(str(mid))
                if not m or m.get("visibility") != "public":
                    continue
                if "function" in m["inner"]:
                    prefix, g, sig = self.signature(m["inner"]["function"])
                    self.add(f"pub {prefix}fn {owner}::{m['name']}{g}{sig}")
                elif "assoc_const" in m["inner"]:
                    self.add(f"pub const {owner}::{m['name']}")

    def use(self, body, path):
        target = body.get("id")
        if target is None:
            self.add(f"pub use {'::'.join(path + [body['name']])} = {body['source']}")
            return
        if body.get("is_glob"):
            module = self.index.get(str(target))
            if module and "module" in module["inner"]:
                self.module(module["inner"]["module"], path)
            else:
                self.add(f"pub use {'::'.join(path)}::* = {body['source']}::*")
            return
        self.item(target, path + [body["name"]])

    def module(self, body, path):
        for cid in body.get("items", []):
            child = self.index.get(str(cid))
            if child is None or child.get("visibility") != "public":
                continue
            if "use" in child["inner"]:
                self.use(child["inner"]["use"], path)
            else:
                self.item(cid, path + [child["name"]])


def main():
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    api = Api(doc)
    root = api.index[str(api.root)]
    name = root["name"]
    api.module(root["inner"]["module"], [name])
    for line in sorted(api.lines):
        print(line)


if __name__ == "__main__":
    main()
