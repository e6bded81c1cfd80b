#!/usr/bin/env python3
"""Generate wire/messages/ from Kafka's JSON message schemas.

    python scripts/generate_wire.py [--schemas DIR | --jar kafka-clients.jar] [--out wire/messages]

Reads every ``*.json`` schema (``//`` comment lines stripped) and the internal key/value schemas
under ``internal/``, and writes one plain Python module per schema: a class with ``__slots__`` per
message and nested struct, and straight-line decode/encode functions per version. Output is
deterministic: regenerating from the same schemas gives byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import keyword
import re
import sys
import zipfile
from pathlib import Path

INF = 32767
DEFAULT_SCHEMAS = Path(__file__).resolve().parent.parent.parent / "shared" / "kafka-message-schemas"
DEFAULT_ERRORS = DEFAULT_SCHEMAS.parent / "kafka-error-codes.tsv"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "wire" / "messages"

FIXED = {"int8": ("b", 1), "int16": ("h", 2), "uint16": ("H", 2), "int32": ("i", 4), "uint32": ("I", 4),
         "int64": ("q", 8), "float64": ("d", 8), "bool": ("?", 1), "uuid": ("16s", 16)}
PRIMITIVES = set(FIXED) | {"string", "bytes", "records"}


# ---------------------------------------------------------------- schema model

class Versions:
    __slots__ = ("lo", "hi")

    def __init__(self, lo: int, hi: int):
        self.lo, self.hi = lo, hi

    @classmethod
    def parse(cls, s) -> "Versions":
        s = str(s).strip()
        if s in ("none", ""):
            return cls(1, 0)
        if s.endswith("+"):
            return cls(int(s[:-1]), INF)
        if "-" in s:
            a, b = s.split("-")
            return cls(int(a), int(b))
        return cls(int(s), int(s))

    def __contains__(self, v: int) -> bool:
        return self.lo <= v <= self.hi

    def empty(self) -> bool:
        return self.lo > self.hi


def snake(name: str) -> str:
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    s = s.lower()
    return s + "_" if keyword.iskeyword(s) or s in ("unknown_tagged_fields",) else s


class Field:
    def __init__(self, d: dict, msg: "Schema"):
        self.name = d["name"]
        self.attr = snake(self.name)
        t = d["type"]
        self.is_array = t.startswith("[]")
        self.elem = t[2:] if self.is_array else t
        self.versions = Versions.parse(d.get("versions", "0+"))
        self.nullable = Versions.parse(d.get("nullableVersions", "none"))
        self.tagged = Versions.parse(d["taggedVersions"]) if "taggedVersions" in d else Versions(1, 0)
        self.tag = None if d.get("tag") is None else int(d["tag"])
        self.flex_override = Versions.parse(d["flexibleVersions"]) if "flexibleVersions" in d else None
        self.raw_default = d.get("default")
        self.has_default = "default" in d
        self.struct: Struct | None = None
        if self.elem not in PRIMITIVES:
            if "fields" in d:
                self.struct = Struct(self.elem, d["fields"], msg, Versions.parse(d.get("versions", "0+")))
                msg.add_struct(self.struct)
            else:
                self.struct = msg.common_ref(self.elem)

    def is_tagged(self, v: int) -> bool:
        return v in self.tagged

    def is_nullable(self, v: int) -> bool:
        return v in self.nullable

    def compact(self, v: int, flexible: bool) -> bool:
        if self.flex_override is not None:
            return v in self.flex_override
        return flexible

    # Python literal for the default value (None for "make a fresh one" of lists/structs).
    def default_literal(self) -> str:
        d = self.raw_default
        ds = None if d is None else str(d)
        if self.is_array:
            return "None"
        if self.struct is not None:
            return "None"
        e = self.elem
        if e in ("int8", "int16", "uint16", "int32", "uint32", "int64"):
            return str(int(ds, 0)) if ds not in (None, "") else "0"
        if e == "float64":
            return repr(float(ds)) if ds not in (None, "") else "0.0"
        if e == "bool":
            return "True" if ds is not None and ds.lower() == "true" else "False"
        if e == "string":
            if ds is None:
                return "''"
            return "None" if ds == "null" else repr(ds)
        if e in ("bytes", "records"):
            if e == "records" or ds == "null":
                return "None"
            return "b''"
        if e == "uuid":
            return "_ZERO_UUID"
        raise ValueError(f"no default for {e}")

    def default_is_null(self) -> bool:
        if self.elem == "records":
            return True
        if not self.has_default:
            return False
        return self.raw_default is None or str(self.raw_default) in ("null", "None")   # JSON null or the word

    def fresh_default(self) -> str:
        """Expression for the default value of an absent field, evaluated per object."""
        if self.is_array:
            return "None" if self.default_is_null() else "[]"
        if self.struct is not None:
            return "None" if self.default_is_null() else f"{self.struct.name}()"
        return self.default_literal()


class Struct:
    def __init__(self, name: str, fields: list, msg: "Schema", versions: Versions):
        self.name = name
        self.versions = versions
        self.fields = [Field(f, msg) for f in fields]


class Schema:
    def __init__(self, d: dict, source: str):
        self.source = source
        self.name = d["name"]
        self.kind = d["type"]
        self.api_key = d.get("apiKey")
        self.valid = Versions.parse(d["validVersions"])
        self.flexible = Versions.parse(d.get("flexibleVersions", "none"))
        self.structs: list[Struct] = []
        self._common_defs = {c["name"]: c for c in d.get("commonStructs", [])}
        self._common: dict[str, Struct] = {}
        self.top = Struct(self.name, d["fields"], self, self.valid)
        self.structs.insert(0, self.top)

    def add_struct(self, s: Struct) -> None:
        if any(x.name == s.name for x in self.structs):
            raise ValueError(f"{self.name}: duplicate struct {s.name}")
        self.structs.append(s)

    def common_ref(self, name: str) -> Struct:
        if name not in self._common:
            c = self._common_defs.get(name)
            if c is None:
                raise ValueError(f"{self.name}: unknown type {name}")
            s = Struct(name, c["fields"], self, Versions.parse(c.get("versions", "0+")))
            self._common[name] = s
            self.add_struct(s)
        return self._common[name]

    def versions(self) -> range:
        return range(self.valid.lo, self.valid.hi + 1)


def load_text(text: str, source: str) -> Schema:
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
    return Schema(json.loads(body), source)


# ---------------------------------------------------------------- code emission

class Emitter:
    def __init__(self):
        self.lines: list[str] = []
        self.where: dict[int, str] = {}   # 1-based line -> "Struct.field"
        self.structs: dict[str, str] = {}  # format -> constant name

    def fmt(self, f: str) -> str:
        if f not in self.structs:
            self.structs[f] = "_S_" + f.replace("?", "o").replace("16s", "u")
        return self.structs[f]


class Body:
    """Lines of one function; ``ctx`` marks which field each line decodes."""

    def __init__(self):
        self.lines: list[tuple[str, str | None]] = []
        self.ctx: str | None = None

    def add(self, indent: int, text: str) -> None:
        self.lines.append(("    " * indent + text, self.ctx))


_counter = [0]


def uniq(prefix: str) -> str:
    """A fresh local variable name (reset per module, so output is deterministic)."""
    _counter[0] += 1
    return f"{prefix}{_counter[0]}"


def reset_uniq() -> None:
    _counter[0] = 0


def fixed_runs(fields: list[Field]) -> list[list[Field]]:
    """Consecutive fixed-width scalar fields grouped (one struct call reads or writes a group); others alone."""
    out: list[list[Field]] = []
    for f in fields:
        fixed = f.elem in FIXED and not f.is_array and f.elem != "uuid" and f.struct is None
        if fixed and out and out[-1][-1].elem in FIXED and not out[-1][-1].is_array and out[-1][-1].elem != "uuid":
            out[-1].append(f)
        else:
            out.append([f])
    return out


class Gen:
    def __init__(self, schema: Schema):
        self.s = schema
        self.em = Emitter()
        self.need_isdef: set[str] = set()   # structs whose "is it the default value?" test is needed

    # ----- decode

    def dec_len(self, b: Body, ind: int, buf: str, pos: int | str, var: str, compact: bool, wide: bool) -> None:
        """Read a length into ``var``: compact = uvarint N+1 (so -1 is null); else int16/int32."""
        if compact:
            # one- and two-byte unsigned varints inline (lengths up to 16383); longer ones in read_uvarint
            b.add(ind, f"{var} = {buf}[{pos}]")
            b.add(ind, f"if {var} < 128:")
            b.add(ind + 1, f"{pos} += 1")
            b.add(ind, f"elif {buf}[{pos} + 1] < 128:")
            b.add(ind + 1, f"{var} = ({var} & 127) | ({buf}[{pos} + 1] << 7)")
            b.add(ind + 1, f"{pos} += 2")
            b.add(ind, "else:")
            b.add(ind + 1, f"{var}, {pos} = _ruv({buf}, {pos})")
            b.add(ind, f"{var} -= 1")
        elif wide:
            b.add(ind, f"{var} = _I32u({buf}, {pos})[0]")
            b.add(ind, f"{pos} += 4")
        else:
            b.add(ind, f"{var} = _I16u({buf}, {pos})[0]")
            b.add(ind, f"{pos} += 2")

    def dec_value(self, b: Body, ind: int, f: Field, v: int, flex: bool, target: str, buf: str, pos: str,
                  elem: bool = False) -> None:
        """Decode one value of field ``f`` (or one element of it when ``elem``) into ``target``."""
        e = f.elem
        nullable = f.is_nullable(v) and not elem
        compact = f.compact(v, flex)
        what = f"{b.ctx}"
        if not elem and f.is_array:
            n = uniq("_n")
            self.dec_len(b, ind, buf, pos, n, compact, True)
            b.add(ind, f"if {n} < 0:")
            if nullable:
                b.add(ind + 1, f"{target} = None")
            else:
                b.add(ind + 1, f"raise _DecodeError('null array in a non-nullable field', {what!r})")
            b.add(ind, "else:")
            b.add(ind + 1, f"_chk({n}, {buf}, {pos}, {what!r})")
            if e in ("int8", "int16", "int32", "int64", "uint16", "uint32", "float64") and e != "bool":
                ch, size = FIXED[e]
                b.add(ind + 1, f"{target} = list(_unpack_from('>%d{ch}' % {n}, {buf}, {pos}))")
                b.add(ind + 1, f"{pos} += {size} * {n}")
            else:
                b.add(ind + 1, f"{target} = []")
                it = uniq("_x")
                b.add(ind + 1, f"for _ in range({n}):")
                self.dec_value(b, ind + 2, f, v, flex, it, buf, pos, elem=True)
                b.add(ind + 2, f"{target}.append({it})")
            return
        if f.struct is not None:
            fn = f"_d_{f.struct.name}_v{v}"
            if nullable:
                b.add(ind, f"if _I8u({buf}, {pos})[0] < 0:")
                b.add(ind + 1, f"{target} = None")
                b.add(ind + 1, f"{pos} += 1")
                b.add(ind, "else:")
                b.add(ind + 1, f"{target}, {pos} = {fn}({buf}, {pos} + 1)")
            else:
                b.add(ind, f"{target}, {pos} = {fn}({buf}, {pos})")
            return
        if e in FIXED:
            ch, size = FIXED[e]
            if e == "uuid":
                b.add(ind, f"if {pos} + 16 > len({buf}):")
                b.add(ind + 1, f"raise _trunc({what!r}, 16, len({buf}) - {pos})")
                b.add(ind, f"{target} = _uuid({buf}[{pos}:{pos} + 16])")
            else:
                b.add(ind, f"{target} = {self.em.fmt(ch)}u({buf}, {pos})[0]")
            b.add(ind, f"{pos} += {size}")
            return
        # string / bytes / records
        n = uniq("_n")
        self.dec_len(b, ind, buf, pos, n, compact, e != "string")
        b.add(ind, f"if {n} < 0:")
        if nullable:
            b.add(ind + 1, f"{target} = None")
        else:
            b.add(ind + 1, f"raise _DecodeError('null value in a non-nullable field', {what!r})")
        b.add(ind, "else:")
        end = uniq("_end")
        b.add(ind + 1, f"{end} = {pos} + {n}")
        b.add(ind + 1, f"if {end} > len({buf}):")
        b.add(ind + 2, f"raise _trunc({what!r}, {n}, len({buf}) - {pos})")
        if e == "string":
            b.add(ind + 1, f"{target} = str({buf}[{pos}:{end}], 'utf-8')")
        elif e == "bytes":
            b.add(ind + 1, f"{target} = bytes({buf}[{pos}:{end}])")
        else:
            b.add(ind + 1, f"{target} = {buf}[{pos}:{end}]")
        b.add(ind + 1, f"{pos} = {end}")

    def decode_fn(self, st: Struct, v: int) -> Body:
        flex = v in self.s.flexible
        b = Body()
        present = [f for f in st.fields if v in f.versions]
        regular = [f for f in present if not (flex and f.is_tagged(v))]
        tagged = [f for f in present if flex and f.is_tagged(v)]
        values = {}
        for group in fixed_runs(regular):
            if len(group) > 1:
                fmt = "".join(FIXED[g.elem][0] for g in group)
                size = sum(FIXED[g.elem][1] for g in group)
                names = ", ".join(f"_f_{g.attr}" for g in group)
                b.ctx = f"{st.name}." + "/".join(g.attr for g in group)
                b.add(1, f"{names} = {self.em.fmt(fmt)}u(buf, pos)")
                b.add(1, f"pos += {size}")
                for g in group:
                    values[g.attr] = f"_f_{g.attr}"
                continue
            f = group[0]
            b.ctx = f"{st.name}.{f.attr}"
            self.dec_value(b, 1, f, v, flex, f"_f_{f.attr}", "buf", "pos")
            values[f.attr] = f"_f_{f.attr}"
        unk = "None"
        if flex:
            b.ctx = f"{st.name}.<tagged fields>"
            for f in tagged:
                b.add(1, f"_f_{f.attr} = {f.fresh_default()}")
                values[f.attr] = f"_f_{f.attr}"
            b.add(1, "if buf[pos] == 0:")
            b.add(2, "pos += 1")
            b.add(2, "_unk = None")
            b.add(1, "else:")
            known = "frozenset((" + "".join(f"{f.tag}, " for f in tagged) + "))"
            b.add(2, f"_tags, _unk, pos = _rtags(buf, pos, {known}, {st.name + '.<tagged fields>'!r})")
            for f in tagged:
                b.ctx = f"{st.name}.{f.attr}"
                b.add(2, f"if {f.tag} in _tags:")
                b.add(3, f"_tb = _tags[{f.tag}]")
                b.add(3, "_tp = 0")
                self.dec_value(b, 3, f, v, flex, f"_f_{f.attr}", "_tb", "_tp")
            unk = "_unk"
        b.ctx = None
        # build the object without __init__ (its default handling is for callers, not for decoded values)
        b.add(1, f"_o = _new({st.name})")
        for f in st.fields:
            b.add(1, f"_o.{f.attr} = {values.get(f.attr, f.fresh_default())}")
        b.add(1, f"_o.unknown_tagged_fields = {unk}")
        b.add(1, "return _o, pos")
        return b

    # ----- encode

    def enc_len(self, b: Body, ind: int, w: str, expr: str, compact: bool, wide: bool) -> None:
        if compact:
            b.add(ind, f"_l = {expr} + 1")
            b.add(ind, f"{w}(_UV1[_l] if _l < 128 else _wuv(_l))")
        elif wide:
            b.add(ind, f"{w}(_I32p({expr}))")
        else:
            b.add(ind, f"{w}(_I16p({expr}))")

    def enc_null(self, b: Body, ind: int, w: str, compact: bool, wide: bool) -> None:
        if compact:
            b.add(ind, f"{w}(b'\\x00')")
        elif wide:
            b.add(ind, f"{w}(b'\\xff\\xff\\xff\\xff')")
        else:
            b.add(ind, f"{w}(b'\\xff\\xff')")

    def enc_value(self, b: Body, ind: int, f: Field, v: int, flex: bool, expr: str, w: str,
                  elem: bool = False) -> None:
        e = f.elem
        nullable = f.is_nullable(v) and not elem
        compact = f.compact(v, flex)
        if not elem and f.is_array:
            x = uniq("_a")
            b.add(ind, f"{x} = {expr}")
            if nullable:
                b.add(ind, f"if {x} is None:")
                self.enc_null(b, ind + 1, w, compact, True)
                b.add(ind, "else:")
                ind += 1
            if e in ("int8", "int16", "int32", "int64", "uint16", "uint32", "float64"):
                ch = FIXED[e][0]
                b.add(ind, f"_l = len({x})")
                if compact:
                    b.add(ind, f"{w}(_UV1[_l + 1] if _l < 127 else _wuv(_l + 1))")
                    b.add(ind, "if _l:")
                    b.add(ind + 1, f"{w}(_packer({ch!r}, _l)(*{x}))")
                else:
                    b.add(ind, f"{w}(_counted_packer({ch!r}, _l)(_l, *{x}))")
            else:
                self.enc_len(b, ind, w, f"len({x})", compact, True)
                it = uniq("_e")
                b.add(ind, f"for {it} in {x}:")
                self.enc_value(b, ind + 1, f, v, flex, it, w, elem=True)
            return
        if f.struct is not None:
            fn = f"_e_{f.struct.name}_v{v}"
            if nullable:
                x = uniq("_s")
                b.add(ind, f"{x} = {expr}")
                b.add(ind, f"if {x} is None:")
                b.add(ind + 1, f"{w}(b'\\xff')")
                b.add(ind, "else:")
                b.add(ind + 1, f"{w}(b'\\x01')")
                b.add(ind + 1, f"{fn}({x}, {w})")
            else:
                b.add(ind, f"{fn}({expr}, {w})")
            return
        if e in FIXED:
            ch, _ = FIXED[e]
            if e == "uuid":
                b.add(ind, f"{w}({expr}.bytes)")
            else:
                b.add(ind, f"{w}({self.em.fmt(ch)}p({expr}))")
            return
        x = uniq("_v")
        b.add(ind, f"{x} = {expr}")
        if nullable:
            b.add(ind, f"if {x} is None:")
            self.enc_null(b, ind + 1, w, compact, e != "string")
            b.add(ind, "else:")
            ind += 1
        if e == "string":
            b.add(ind, f"{x} = {x}.encode()")
        self.enc_len(b, ind, w, f"len({x})", compact, e != "string")
        b.add(ind, f"{w}({x})")

    def encode_fn(self, st: Struct, v: int) -> Body:
        flex = v in self.s.flexible
        b = Body()
        present = [f for f in st.fields if v in f.versions]
        regular = [f for f in present if not (flex and f.is_tagged(v))]
        tagged = [f for f in present if flex and f.is_tagged(v)]
        for group in fixed_runs(regular):
            if len(group) > 1:
                fmt = "".join(FIXED[g.elem][0] for g in group)
                b.add(1, f"w({self.em.fmt(fmt)}p({', '.join('o.' + g.attr for g in group)}))")
            else:
                self.enc_value(b, 1, group[0], v, flex, f"o.{group[0].attr}", "w")
        if flex:
            if not tagged:
                b.add(1, "_u = o.unknown_tagged_fields")
                b.add(1, "if _u:")
                b.add(2, "_wtags(w, list(_u.items()))")
                b.add(1, "else:")
                b.add(2, "w(b'\\x00')")
            else:
                b.add(1, "_t = []")
                for f in tagged:
                    val = f"o.{f.attr}"
                    if f.is_array:
                        cond = f"{val} is not None" if f.default_is_null() else f"{val}"
                    elif f.struct is not None:
                        self.need_isdef.add(f.struct.name)
                        cond = f"{val} is not None" if f.default_is_null() else f"not _isdef_{f.struct.name}({val})"
                    else:
                        lit = f.default_literal()
                        cond = f"{val} is not None" if lit == "None" else f"{val} != {lit}"
                    b.add(1, f"if {cond}:")
                    b.add(2, "_o = []")
                    self.enc_value(b, 2, f, v, flex, val, "_o.append")
                    b.add(2, f"_t.append(({f.tag}, b''.join(_o)))")
                b.add(1, "_u = o.unknown_tagged_fields")
                b.add(1, "if _u:")
                b.add(2, "_t.extend(_u.items())")
                b.add(1, "if _t:")
                b.add(2, "_wtags(w, _t)")
                b.add(1, "else:")
                b.add(2, "w(b'\\x00')")
        if not b.lines:
            b.add(1, "pass")
        return b

    # ----- module

    def struct_versions(self, st: Struct) -> list[int]:
        return [v for v in self.s.versions() if v in st.versions]

    def module(self) -> str:
        reset_uniq()
        s = self.s
        out: list[str] = []
        where: dict[int, str] = {}
        classes: list[str] = []
        for st in s.structs:
            classes.extend(self.class_src(st))
            classes.append("")
            classes.append("")
        funcs: list[tuple[str, Body | str]] = []
        for kind, maker in (("d", self.decode_fn), ("e", self.encode_fn)):
            for st in s.structs[1:] + [s.top]:   # nested structs are listed children first
                seen: dict[str, list[int]] = {}
                alias = self._aliases.setdefault((kind, st.name), {})
                for v in self.struct_versions(st):
                    body = maker(st, v)
                    text = "\n".join(line for line, _ in body.lines)
                    # nested calls name their version; normalise so identical layouts can share a function
                    key = re.sub(r"(_[de]_\w+?)_v\d+\(", r"\1_vN(", text)
                    key = re.sub(r"_[a-z]+\d+\b", "_", key)
                    name = f"_{kind}_{st.name}_v{v}"
                    # a version shares a function only if every nested call resolves to a shared one too
                    same = next((u for u in seen.get(key, ()) if self._same_nested(st, u, v, kind)), None)
                    if same is not None:
                        funcs.append((name, f"{name} = _{kind}_{st.name}_v{same}\n"))
                        alias[v] = same
                    else:
                        seen.setdefault(key, []).append(v)
                        funcs.append((name, body))
                        alias[v] = v
        header = [
            f"# Generated by scripts/generate_wire.py from {s.source}. Do not edit by hand.",
            f"# Kafka {s.kind} schema {s.name}" + (f" (api key {s.api_key})" if s.api_key is not None else "")
            + f", versions {s.valid.lo}-{s.valid.hi}" + (f", flexible from v{s.flexible.lo}"
                                                        if not s.flexible.empty() else ", never flexible") + ".",
            "# ruff: noqa",
            "from struct import Struct as _Struct, pack as _pack, unpack_from as _unpack_from",
            "",
            "from wire.errors import DecodeError as _DecodeError",
            "from wire.primitives import (DEFAULT as _D, I8 as _I8, I16 as _I16, I32 as _I32, Message as _Message,"
            " UVARINT1 as _UV1, ZERO_UUID as _ZERO_UUID,",
            "    check_count as _chk, counted_packer as _counted_packer, new as _new, packer as _packer,",
            "    read_unknown_tags as _rtags, read_uvarint as _ruv, register_lines as _reg,",
            "    truncated as _trunc, uuid_from_bytes as _uuid, write_tags as _wtags, write_uvarint as _wuv)",
            "",
            "_I8u = _I8.unpack_from",
            "_I16u = _I16.unpack_from",
            "_I32u = _I32.unpack_from",
            "_I16p = _I16.pack",
            "_I32p = _I32.pack",
        ]
        body_lines: list[str] = []
        for name, fn in funcs:
            if isinstance(fn, str):
                body_lines.append(fn)
                continue
            kind = name[1]
            if kind == "d":
                body_lines.append(f"def {name}(buf, pos):")
            else:
                body_lines.append(f"def {name}(o, w):")
            for line, ctx in fn.lines:
                if ctx is not None:
                    where[len(body_lines)] = ctx
                body_lines.append(line)
            body_lines.append("")
            body_lines.append("")
        body_lines += self.isdef_src()
        consts = [f"{name} = _Struct('>{fmt}')" for fmt, name in sorted(self.em.structs.items())]
        consts += [f"{name}u = {name}.unpack_from" for fmt, name in sorted(self.em.structs.items())]
        consts += [f"{name}p = {name}.pack" for fmt, name in sorted(self.em.structs.items())]
        top = s.top.name
        tail = [
            "",
            f"MESSAGE = {top}",
            f"VERSIONS = ({s.valid.lo}, {s.valid.hi})",
            f"FLEXIBLE_FROM = {s.flexible.lo if not s.flexible.empty() else None}",
            "DECODERS = {" + ", ".join(f"{v}: _d_{top}_v{v}" for v in s.versions()) + "}",
            "ENCODERS = {" + ", ".join(f"{v}: _e_{top}_v{v}" for v in s.versions()) + "}",
        ]
        pre = header + [""] + consts + ["", ""] + classes
        offset = len(pre)
        out = pre + body_lines + tail
        lines_table = {offset + k + 1: ctx for k, ctx in where.items()}
        out.append("_reg(__file__, {")
        for k in sorted(lines_table):
            out.append(f"    {k}: {lines_table[k]!r},")
        out.append("})")
        return "\n".join(out) + "\n"

    _aliases: dict

    def isdef_src(self) -> list[str]:
        """``_isdef_X(o)``: True when struct ``o`` equals a default-constructed X (tagged fields are written only
        when they differ from their default), field by field, without building a default object."""
        by_name = {st.name: st for st in self.s.structs}
        done: set[str] = set()
        out: list[str] = []
        while self.need_isdef - done:
            name = sorted(self.need_isdef - done)[0]
            done.add(name)
            terms = []
            for f in by_name[name].fields:
                val = f"o.{f.attr}"
                if f.is_array:
                    terms.append(f"{val} is None" if f.default_is_null() else f"not {val}")
                elif f.struct is not None:
                    if f.default_is_null():
                        terms.append(f"{val} is None")
                    else:
                        self.need_isdef.add(f.struct.name)
                        terms.append(f"_isdef_{f.struct.name}({val})")
                else:
                    lit = f.default_literal()
                    terms.append(f"{val} is None" if lit == "None" else f"{val} == {lit}")
            terms.append("not o.unknown_tagged_fields")
            out += [f"def _isdef_{name}(o):", "    return (" + "\n            and ".join(terms) + ")", "", ""]
        return out

    def _same_nested(self, st: Struct, v1: int, v2: int, kind: str) -> bool:
        """Two versions of ``st`` may share code only if each nested struct's code is shared too."""
        for f in st.fields:
            if f.struct is None:
                continue
            if (v1 in f.versions) != (v2 in f.versions):
                return False
            if v1 in f.versions:
                al = self._aliases.get((kind, f.struct.name), {})
                if al.get(v1, v1) != al.get(v2, v2):
                    return False
        return True

    def class_src(self, st: Struct) -> list[str]:
        vs = self.struct_versions(st)
        lines = [f"class {st.name}(_Message):"]
        lines.append(f"    \"\"\"{self.s.name} {'' if st is self.s.top else 'struct ' + st.name + ' '}"
                     f"(versions {vs[0] if vs else '-'}-{vs[-1] if vs else '-'}).\"\"\"")
        lines.append("")
        slots = [f.attr for f in st.fields] + ["unknown_tagged_fields"]
        lines.append(f"    __slots__ = ({''.join(repr(x) + ', ' for x in slots)})")
        spec = []
        for f in st.fields:
            t = ("[]" if f.is_array else "") + f.elem
            spec.append(f"({f.attr!r}, {f.name!r}, {t!r}, {f.versions.lo}, {f.versions.hi}, "
                        f"{f.nullable.lo}, {f.nullable.hi}, {f.tag!r}, {f.tagged.lo}, {f.tagged.hi}, "
                        f"{(f.struct.name if f.struct else None)!r}, "
                        f"{(None if f.flex_override is None else f.flex_override.lo)!r})")
        lines.append("    # (attr, kafka name, type, versions lo/hi, nullable lo/hi, tag, tagged lo/hi, struct, "
                     "flexible-override lo)")
        lines.append("    FIELDS = (")
        for sp in spec:
            lines.append(f"        {sp},")
        lines.append("    )")
        lines.append("")
        # lists and structs get a fresh default per object; ``_D`` marks "not given" (None means null)
        fresh = [f for f in st.fields if (f.is_array or f.struct is not None) and not f.default_is_null()]
        params = [f"{f.attr}={'_D' if f in fresh else f.default_literal()}" for f in st.fields]
        params.append("unknown_tagged_fields=None")
        lines.append(f"    def __init__(self, {', '.join(params)}):")
        for f in st.fields:
            if f in fresh and f.is_array:
                lines.append(f"        self.{f.attr} = [] if {f.attr} is _D else {f.attr}")
            elif f in fresh:
                lines.append(f"        self.{f.attr} = {f.struct.name}() if {f.attr} is _D else {f.attr}")
            else:
                lines.append(f"        self.{f.attr} = {f.attr}")
        lines.append("        self.unknown_tagged_fields = unknown_tagged_fields")
        return lines


# ---------------------------------------------------------------- driver

def module_name(schema_name: str) -> str:
    return snake(schema_name).rstrip("_")


def read_sources(schemas: Path | None, jar: Path | None) -> list[tuple[str, str, str]]:
    """[(relative name, text, source description)] for every schema file."""
    out = []
    if jar is not None:
        with zipfile.ZipFile(jar) as z:
            for n in sorted(z.namelist()):
                if n.startswith("common/message/") and n.endswith(".json"):
                    out.append((n.rsplit("/", 1)[1], z.read(n).decode(), f"{jar.name}:{n}"))
        return out
    assert schemas is not None
    for p in sorted(schemas.glob("*.json")) + sorted((schemas / "internal").glob("*.json")):
        rel = p.relative_to(schemas).as_posix()
        out.append((rel, p.read_text(), f"kafka-message-schemas/{rel}"))
    return out


def generate(sources) -> dict[str, str]:
    files: dict[str, str] = {}
    apis: dict[int, dict] = {}
    data: dict[str, str] = {}
    headers: dict[str, str] = {}
    digest = hashlib.sha256()
    for rel, text, src in sources:
        digest.update(rel.encode() + b"\0" + text.encode() + b"\0")
        schema = load_text(text, src)
        gen = Gen(schema)
        gen._aliases = {}
        mod = module_name(schema.name)
        files[f"{mod}.py"] = gen.module()
        if schema.kind in ("request", "response"):
            a = apis.setdefault(schema.api_key, {})
            a[schema.kind] = mod
            a["name"] = re.sub(r"(Request|Response)$", "", schema.name)
            a[f"{schema.kind}_valid"] = (schema.valid.lo, schema.valid.hi)
            a["flexible"] = None if schema.flexible.empty() else schema.flexible.lo
        elif schema.kind == "header":
            headers[schema.name] = mod
        else:
            data[schema.name] = mod
    reg = [
        f"# Generated by scripts/generate_wire.py from {len(sources)} schema files "
        f"(sha256 {digest.hexdigest()[:16]}). Do not edit by hand.",
        "# ruff: noqa",
        '"""Registry of the generated message modules: api key -> (name, versions, flexible-from, modules).',
        "",
        "Modules are imported lazily (see wire.protocol), so importing the registry is cheap.",
        '"""',
        "",
        "# api key: (name, min version, max version, first flexible version or None, request module, response module)",
        "APIS = {",
    ]
    for k in sorted(apis):
        a = apis[k]
        lo, hi = a["request_valid"]
        if a["response_valid"] != a["request_valid"]:
            raise ValueError(f"api {k}: request and response versions differ")
        reg.append(f"    {k}: ({a['name']!r}, {lo}, {hi}, {a['flexible']!r}, {a['request']!r}, {a['response']!r}),")
    reg.append("}")
    reg.append("")
    reg.append("HEADERS = {")
    for n in sorted(headers):
        reg.append(f"    {n!r}: {headers[n]!r},")
    reg.append("}")
    reg.append("")
    reg.append("# internal and embedded data schemas (__consumer_offsets, __transaction_state, consumer protocol)")
    reg.append("DATA = {")
    for n in sorted(data):
        reg.append(f"    {n!r}: {data[n]!r},")
    reg.append("}")
    files["__init__.py"] = "\n".join(reg) + "\n"
    return files


def error_codes_module(tsv: Path) -> str:
    rows = []
    for line in tsv.read_text().splitlines()[1:]:
        if line.strip():
            code, name, retriable = line.split("\t")[:3]
            rows.append((int(code), name.strip(), retriable.strip().lower() == "true"))
    out = [
        f"# Generated by scripts/generate_wire.py from {tsv.name}. Do not edit by hand.",
        "# ruff: noqa",
        '"""Kafka\'s error codes: ErrorCode.NAME is the code; RETRIABLE holds the retriable ones."""',
        "from enum import IntEnum",
        "",
        "",
        "class ErrorCode(IntEnum):",
    ]
    for code, name, _ in rows:
        out.append(f"    {name} = {code}")
    out += ["", "", "RETRIABLE = frozenset((", *[f"    ErrorCode.{n}," for _, n, r in rows if r], "))"]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--schemas", type=Path, help="directory of Kafka JSON schemas (default: ../shared/...)")
    src.add_argument("--jar", type=Path, help="a kafka-clients jar: read common/message/*.json from it")
    ap.add_argument("--errors", type=Path, default=DEFAULT_ERRORS, help="kafka-error-codes.tsv")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true", help="exit 1 if the output would change")
    args = ap.parse_args(argv)
    schemas = args.schemas or (None if args.jar else DEFAULT_SCHEMAS)
    files = generate(read_sources(schemas, args.jar))
    files["error_codes.py"] = error_codes_module(args.errors)
    changed = []
    for name, text in sorted(files.items()):
        p = args.out / name
        if not p.exists() or p.read_text() != text:
            changed.append(name)
            if not args.check:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(text)
    if not args.check:
        for p in args.out.glob("*.py"):
            if p.name not in files:
                p.unlink()
                changed.append(p.name)
    buf = io.StringIO()
    print(f"{len(files)} modules, {len(changed)} changed" + (": " + ", ".join(changed[:10]) if changed else ""),
          file=buf)
    sys.stdout.write(buf.getvalue())
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
