"""Collectives in a compiled (optimized) HLO module, with the bytes they move per step.

Reads the text of `compiled.as_text()`. Every collective instruction is counted once where it
appears ("static") and as many times as it runs per step ("executed"): an instruction inside a
`while` body runs once per trip, so each computation gets a multiplier from its callers. XLA's
TPU HLO text carries no trip-count annotation; a scan loop's condition compares its counter
(tuple element 0, starting at 0) with a constant, and that constant is taken as the trip count.
A loop whose condition has another form counts once and is reported in `unknown_loops`.

Bytes of one instruction: the larger of its result and its operands (an all-gather's result, a
reduce-scatter's input, an all-to-all's buffer), as laid out in the program (shapes without the
tiling padding). Async pairs (`all-gather-start` / `-done`) count at the start.
"""

from __future__ import annotations

import dataclasses
import re

COLLECTIVES = ("all-to-all", "ragged-all-to-all", "all-gather", "reduce-scatter", "all-reduce", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
                "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "f8e4m3fn": 1, "f8e5m2": 1, "s4": 1, "u4": 1}
_COMP_HEAD = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->.*\{\s*$")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s+([\w\-]+)\((.*)$")
_ARRAY = re.compile(r"\b([a-z]+\d*(?:e\d+m\d+(?:fn)?)?)\[([\d,]*)\]")
_CALLS = re.compile(r"\b(?:condition|body|calls|to_apply|true_computation|false_computation)=%?([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")


def _bytes_of(type_text: str) -> int:
    """Bytes of every array in an HLO type string (tuples summed; layouts ignored)."""
    total = 0
    for dtype, dims in _ARRAY.findall(re.sub(r"\{[^{}]*\}", "", type_text)):
        if dtype not in _DTYPE_BYTES:
            continue
        n = 1
        for d in filter(None, dims.split(",")):
            n *= int(d)
        total += n * _DTYPE_BYTES[dtype]
    return total


def _largest_array(type_text: str) -> int:
    sizes = [_bytes_of(f"{d}[{s}]") for d, s in _ARRAY.findall(re.sub(r"\{[^{}]*\}", "", type_text))]
    return max(sizes, default=0)


@dataclasses.dataclass
class _Instr:
    name: str
    type_text: str
    opcode: str
    rest: str
    computation: str


def _parse(text: str):
    comps: dict[str, list[_Instr]] = {}
    entry, current = None, None
    for line in text.splitlines():
        head = _COMP_HEAD.match(line)
        if head and not line.startswith(" "):
            current = head.group(1)
            comps[current] = []
            if line.startswith("ENTRY"):
                entry = current
            continue
        if current is None:
            continue
        if line.startswith("}"):
            current = None
            continue
        m = _INSTR.match(line)
        if m:
            comps[current].append(_Instr(m.group(1), m.group(2), m.group(3), m.group(4), current))
    return comps, entry


def _trip_count(cond: list[_Instr]) -> int | None:
    consts = {}
    for ins in cond:
        if ins.opcode == "constant":
            m = re.match(r"\s*(-?\d+)\)", ins.rest)
            if m:
                consts[ins.name] = int(m.group(1))
    for ins in cond:
        if ins.opcode == "compare" and "direction=LT" in ins.rest:
            ops = re.findall(r"%([\w.\-]+)", ins.rest.split(")", 1)[0])
            if len(ops) == 2 and ops[1] in consts:
                return consts[ops[1]]
    return None


def _multipliers(comps, entry):
    """How many times each computation runs per execution of the entry computation, the while
    loops whose trip count is unknown, and the computations that run inside a loop."""
    mult = {entry: 1}
    unknown = []
    looped = set()
    order = [entry]
    i = 0
    while i < len(order):
        name = order[i]
        i += 1
        for ins in comps.get(name, ()):
            callees = _CALLS.findall(ins.rest)
            for group in _BRANCHES.findall(ins.rest):
                callees += re.findall(r"%?([\w.\-]+)", group)
            factor = 1
            if ins.opcode == "while":
                cond = re.search(r"condition=%?([\w.\-]+)", ins.rest)
                trips = _trip_count(comps.get(cond.group(1), [])) if cond else None
                if trips is None:
                    unknown.append(ins.name)
                factor = trips or 1
            for callee in callees:
                if callee not in comps:
                    continue
                if ins.opcode == "while" or name in looped:
                    looped.add(callee)
                m = mult[name] * factor
                if callee not in mult:
                    order.append(callee)
                    mult[callee] = m
                else:
                    mult[callee] = max(mult[callee], m)
    return mult, unknown, looped


def _kind(opcode: str) -> str | None:
    base = opcode[:-len("-start")] if opcode.endswith("-start") else opcode
    return base if base in COLLECTIVES else None


def collectives(text: str) -> dict:
    """Collectives of a compiled HLO module.

    Returns:
      {"ops": {kind: {"count": static instructions, "executed": runs per step, "bytes": bytes moved
      per step}}, "unknown_loops": [while instructions whose trip count was not found],
      "instructions": [(kind, bytes, runs per step, computation, op_name)],
      "in_loops": {kind: static instructions inside a while loop (known trip count or not)}}.
    """
    comps, entry = _parse(text)
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text")
    mult, unknown, looped = _multipliers(comps, entry)
    types = {name: {ins.name: ins.type_text for ins in instrs} for name, instrs in comps.items()}
    ops: dict[str, dict] = {}
    listing = []
    in_loops: dict[str, int] = {}
    for name, instrs in comps.items():
        runs = mult.get(name)
        if runs is None:
            continue
        for ins in instrs:
            kind = _kind(ins.opcode)
            if kind is None:
                continue
            operands = re.findall(r"%([\w.\-]+)", ins.rest.split("),", 1)[0])
            size = max(_largest_array(ins.type_text) if ins.opcode.endswith("-start") else _bytes_of(ins.type_text),
                       sum(_bytes_of(types[name].get(o, "")) for o in operands))
            e = ops.setdefault(kind, {"count": 0, "executed": 0, "bytes": 0})
            e["count"] += 1
            e["executed"] += runs
            e["bytes"] += size * runs
            m = re.search(r'op_name="([^"]*)"', ins.rest)
            listing.append((kind, size, runs, name, m.group(1) if m else ""))
            if name in looped:
                in_loops[kind] = in_loops.get(kind, 0) + 1
    return {"ops": ops, "unknown_loops": unknown, "instructions": listing, "in_loops": in_loops}


def all_gathers_of(text: str, shape_dims: tuple[int, ...]) -> list[tuple]:
    """All-gather instructions whose result contains an array with all of `shape_dims` among its dims.

    Used to look for the gather of a weight (e.g. (E, D, F) of the expert weights) in a program.
    """
    found = []
    comps, _ = _parse(text)
    for instrs in comps.values():
        for ins in instrs:
            if _kind(ins.opcode) != "all-gather":
                continue
            for _, dims in _ARRAY.findall(re.sub(r"\{[^{}]*\}", "", ins.type_text)):
                d = [int(x) for x in filter(None, dims.split(","))]
                rest = list(d)
                ok = True
                for want in shape_dims:
                    if want in rest:
                        rest.remove(want)
                    else:
                        ok = False
                        break
                if ok:
                    found.append((ins.name, ins.type_text))
    return found
