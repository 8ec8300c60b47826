"""Malformed inputs made by seeded mutation of valid ones, for the fuzz test and the bad-input benchmark.

A red-team pass fed the tool 449 malformed files and saw 82 end badly
(tracebacks, hangs, numpy warnings, an 88 MB error line).  These mutants
cover the classes it found and more, by mutating small valid inputs:
truncated and bit-flipped files, absurd header lengths, hostile JSON values
(wrong types, huge integers, deep nesting, lone surrogates, long strings)
put in any field of a safetensors header, ``config.json``,
``tokenizer.json``, a shard index, a role mapping or a population's files,
renamed tensors (huge layer numbers, bad Unicode), reshaped tensors of the
right byte count, shuffled offsets, and special files (FIFOs, devices,
folders, symlink loops, names too long) in every place a file is read.

Each mutant is the command line that reads it; :func:`run` runs it through
``audit.cli.main`` in this process, with a watchdog, and classifies the
outcome.  The only good outcomes are exit 0 (the mutation left a valid
input) and exit 2 with exactly one line on stderr.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import signal
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

HUGE_INT = "1" + "0" * 5000
HOSTILE = (  # JSON texts put in place of a value
    "null", "true", "0", "-1", "1.5", "1e400", "-0.0", '""', '"x"', '"F32"', "[]", "{}", "[1, 2]", '["a"]', '{"a": 1}',
    "[0]", "[0, 0]", "[-5, 3]", "18446744073709551617", HUGE_INT, "[" * 100_000 + "]" * 100_000,
    "[" * 70 + "]" * 70, '{"a":' * 5000 + "1" + "}" * 5000, '"\\ud800"', '"\\udfff\\ud800"', '"' + "x" * 200_000 + '"',
    '"' + "{" * 100 + '"', '"a\\u0000b"', '"\\n\\n"',
)
LAYER_NUMBERS = ("100000000000", "10000000", "9223372036854775808", "9" * 900, "007", "-1", "1e3")
OUTCOMES = ("accepted", "refused", "bad exit code", "internal error", "multi-line", "traceback", "hang")


@dataclass(frozen=True)
class Mutant:
    kind: str  # which input was mutated: header, bytes, names, shapes, offsets, config, tokenizer, index, mapping, population, special
    label: str  # what was done to it
    argv: tuple[str, ...]  # the command that reads it


@dataclass(frozen=True)
class Seeds:
    """Valid inputs to mutate: a model folder (weights, config, tokenizer), a sharded one, a mapping, a population."""

    model: Path
    sharded: Path
    mapping: Path
    population: Path


def make_seeds(root: Path) -> Seeds:
    """Write the valid seed inputs under ``root`` (a few hundred KB; the population has two tiny members)."""
    from audit.baselines import Population
    from audit.roles.families import BUILTINS
    from audit.testing.synth import Dims, make_checkpoint

    dims = Dims(layers=2, hidden=16, mlp=32, heads=2, vocab=20)
    model = make_checkpoint(root / "model", "llama", dims, tokenizer=True).path
    other = make_checkpoint(root / "other", "llama", dims, seed=1, tokenizer=True).path
    sharded = make_checkpoint(root / "sharded", "llama", dims, shards=2).path
    mapping = root / "mapping.json"
    mapping.write_text(json.dumps({**BUILTINS["llama"].source, "family": "my-llama"}))
    population = Population.open_or_create(root / "population", name="seed", seed=0)
    population.add([model, other], workers=1, source="synthetic", licence="CC0", notes="independent draws")
    return Seeds(model, sharded, mapping, root / "population")


# ---- JSON helpers -----------------------------------------------------------------------------------------
def _paths(document: Any, limit: int = 4000) -> list[tuple]:
    """Key paths of every node of ``document`` (iterative, bounded)."""
    found, stack = [], [((), document)]
    while stack and len(found) < limit:
        path, node = stack.pop()
        found.append(path)
        if isinstance(node, dict):
            stack += [((*path, k), v) for k, v in node.items()]
        elif isinstance(node, list):
            stack += [((*path, i), v) for i, v in enumerate(node)]
    return found


def _substituted(document: Any, path: tuple, snippet: str) -> bytes:
    """``document`` as JSON with the node at ``path`` replaced by the raw JSON text ``snippet``."""
    marker = "\x00MUTANT\x00"
    if not path:
        return snippet.encode()
    copy = json.loads(json.dumps(document))
    node = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = marker
    return json.dumps(copy).replace(json.dumps(marker), snippet).encode("utf-8", "surrogatepass")


def _header(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    header.pop("__metadata__", None)
    return header, data[8 + length:]


def _safetensors(header: dict | bytes, body: bytes) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode("utf-8", "surrogatepass")
    return struct.pack("<Q", len(raw)) + raw + body


# ---- the mutants ----------------------------------------------------------------------------------------
class _Maker:
    def __init__(self, seeds: Seeds, root: Path, rng: random.Random) -> None:
        self.seeds, self.root, self.rng, self.n = seeds, root, rng, 0
        self.header, self.body = _header(seeds.model / "model.safetensors")

    def folder(self, seed: Path) -> Path:
        self.n += 1
        target = self.root / f"m{self.n:05d}"
        shutil.copytree(seed, target, symlinks=True)
        return target

    def tensor(self) -> str:
        return self.rng.choice(sorted(self.header))

    def header_value(self) -> Mutant:
        model, name = self.folder(self.seeds.model), self.tensor()
        entry = self.header[name]
        paths = [(name,), *[(name, k) for k in entry], *[(name, k, i) for k in ("shape", "data_offsets") for i in range(len(entry[k]))]]
        if self.rng.random() < 0.15:
            paths = [("__metadata__",), ("__metadata__", "format")]
        path, snippet = self.rng.choice(paths), self.rng.choice(HOSTILE)
        header = {"__metadata__": {"format": "pt"}, **self.header}
        (model / "model.safetensors").write_bytes(_safetensors(_substituted(header, path, snippet), self.body))
        return Mutant("header", f"header{list(path)} = {snippet[:40]}", ("inspect", str(model)))

    def raw_bytes(self) -> Mutant:
        model = self.folder(self.seeds.model)
        data = bytearray((model / "model.safetensors").read_bytes())
        header_end = 8 + struct.unpack("<Q", data[:8])[0]
        how = self.rng.choice(["truncate", "length", "flip", "append", "empty", "header only"])
        if how == "truncate":
            cut = self.rng.randrange(len(data))
            data = data[:cut]
            label = f"truncated at {cut}"
        elif how == "length":
            value = self.rng.choice([0, 1, 2, header_end - 9, header_end, 2**31, 2**63, 2**64 - 1, 100_000_001])
            data[:8] = struct.pack("<Q", value)
            label = f"header length {value}"
        elif how == "flip":
            positions = [self.rng.randrange(8, header_end) for _ in range(self.rng.randint(1, 8))]
            for p in positions:
                data[p] = self.rng.randrange(256)
            label = f"{len(positions)} header bytes changed"
        elif how == "append":
            data += bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, 64)))
            label = "trailing bytes"
        elif how == "empty":
            data, label = bytearray(), "empty file"
        else:
            data, label = data[:header_end], "data section cut off"
        (model / "model.safetensors").write_bytes(bytes(data))
        return Mutant("bytes", label, ("inspect", str(model)))

    def names(self) -> Mutant:
        model, name = self.folder(self.seeds.model), self.tensor()
        header = dict(self.header)
        entry = header.pop(name)
        how = self.rng.choice(["layer", "layer", "surrogate", "long", "empty", "control"])
        if how == "layer" and ".layers." in name:
            number = self.rng.choice(LAYER_NUMBERS)
            new = name.replace(".layers.0.", f".layers.{number}.").replace(".layers.1.", f".layers.{number}.")
        elif how == "surrogate":
            new = name + "\ud800"
        elif how == "long":
            new = name + "x" * self.rng.choice([300, 2000, 100_000])
        elif how == "control":
            new = name.replace(".", "\n", 1)
        else:
            new = ""
        header[new] = entry
        (model / "model.safetensors").write_bytes(_safetensors(header, self.body))
        return Mutant("names", f"'{name}' renamed ({how})", ("inspect", str(model)))

    def shapes(self) -> Mutant:
        model, name = self.folder(self.seeds.model), self.tensor()
        header = json.loads(json.dumps(self.header))
        shape = header[name]["shape"]
        numel = 1
        for d in shape:
            numel *= d
        how = self.rng.choice(["flat", "leading 1", "trailing 1", "reversed", "split", "scalar-ish"])
        new = {"flat": [numel], "leading 1": [1, *shape], "trailing 1": [*shape, 1], "reversed": shape[::-1],
               "split": [2, numel // 2] if numel % 2 == 0 else [numel], "scalar-ish": [numel, 1]}[how]
        header[name]["shape"] = new
        (model / "model.safetensors").write_bytes(_safetensors(header, self.body))
        return Mutant("shapes", f"'{name}' {shape} -> {new}", ("inspect", str(model)))

    def offsets(self) -> Mutant:
        model = self.folder(self.seeds.model)
        header = json.loads(json.dumps(self.header))
        a, b = self.rng.sample(sorted(header), 2)
        how = self.rng.choice(["swap", "shift", "overlap", "reverse"])
        if how == "swap":
            header[a]["data_offsets"], header[b]["data_offsets"] = header[b]["data_offsets"], header[a]["data_offsets"]
        elif how == "shift":
            delta = self.rng.choice([-8, -4, -1, 1, 4, 8])
            header[a]["data_offsets"] = [max(0, o + delta) for o in header[a]["data_offsets"]]
        elif how == "overlap":
            header[a]["data_offsets"] = list(header[b]["data_offsets"])
        else:
            header[a]["data_offsets"] = header[a]["data_offsets"][::-1]
        (model / "model.safetensors").write_bytes(_safetensors(header, self.body))
        return Mutant("offsets", f"{how} '{a}'", ("inspect", str(model)))

    def side(self, kind: str) -> Mutant:
        seed = self.seeds.sharded if kind == "index" else self.seeds.model
        model = self.folder(seed)
        file = model / {"config": "config.json", "tokenizer": "tokenizer.json", "index": "model.safetensors.index.json"}[kind]
        label = self._mutate_json(file)
        return Mutant(kind, label, ("inspect", str(model)))  # inspect reads config, tokenizer and index

    def mapping(self) -> Mutant:
        self.n += 1
        file = self.root / f"m{self.n:05d}.json"
        shutil.copyfile(self.seeds.mapping, file)
        label = self._mutate_json(file)
        return Mutant("mapping", label, ("inspect", str(self.seeds.model), "--mapping", str(file)))

    def population(self) -> Mutant:
        folder = self.folder(self.seeds.population)
        manifest = folder / "population.json"
        document = json.loads(manifest.read_text())
        pairs = (document.get("pairs") or {}).get("sha256")
        targets = ["population.json"] + (["pairs.json"] if pairs else [])
        targets += sorted(str(p.relative_to(folder)) for p in (folder / "models").rglob("*.npz"))
        target = self.rng.choice(targets)
        if target.endswith(".npz"):
            data = bytearray((folder / target).read_bytes())
            cut = self.rng.randrange(len(data))
            data = data[:cut] if self.rng.random() < 0.5 else data[:cut] + bytes([self.rng.randrange(256)]) + data[cut + 1:]
            (folder / target).write_bytes(bytes(data))
            label = f"{target} changed at byte {cut}"
        else:
            label = f"{target}: " + self._mutate_json(folder / target)
        if target != "population.json":  # re-record the digest, so the mutant reaches the parser, not only the hash check
            digest = hashlib.sha256((folder / target).read_bytes()).hexdigest()
            text = manifest.read_text()
            old = pairs if target == "pairs.json" else _recorded(document, target)
            manifest.write_text(text.replace(old, digest) if old else text)
        return Mutant("population", label, ("baseline", "list", str(folder)))

    def special(self) -> Mutant:
        where = self.rng.choice(["checkpoint", "mapping", "config", "tokenizer", "index", "shard", "population"])
        what = self.rng.choice(["fifo", "/dev/null", "/dev/zero", "directory", "loop", "long name", "dangling"])
        model = self.folder(self.seeds.sharded if where in ("index", "shard") else self.seeds.model)
        file = {"checkpoint": model / "model.safetensors", "mapping": self.root / f"m{self.n:05d}.map",
                "config": model / "config.json", "tokenizer": model / "tokenizer.json",
                "index": model / "model.safetensors.index.json", "shard": model / "model-00001-of-00002.safetensors",
                "population": self.root / f"m{self.n:05d}.pop" / "population.json"}[where]
        file.parent.mkdir(parents=True, exist_ok=True)
        if file.exists():
            file.unlink()
        if what == "long name":
            file = file.with_name("x" * 300)
        elif what == "fifo":
            os.mkfifo(file)
        elif what == "directory":
            file.mkdir()
        elif what == "loop":
            file.symlink_to(file.name)
        elif what == "dangling":
            file.symlink_to("nowhere")
        else:
            file.symlink_to(what)
        argv = {"checkpoint": ("inspect", str(file if what == "long name" else model)),
                "mapping": ("inspect", str(self.seeds.model), "--mapping", str(file)),
                "population": ("baseline", "list", str(file.parent))}.get(where, ("inspect", str(model)))
        return Mutant("special", f"{where} is {what}", argv)

    def _mutate_json(self, file: Path) -> str:
        if self.rng.random() < 0.2:
            data = file.read_bytes()
            how = self.rng.choice(["truncate", "not utf-8", "empty", "bom"])
            new = {"truncate": data[: self.rng.randrange(max(1, len(data)))], "not utf-8": data[:5] + b"\xff\xfe" + data[5:],
                   "empty": b"", "bom": b"\xef\xbb\xbf" + data}[how]
            file.write_bytes(new)
            return how
        document = json.loads(file.read_text())
        path, snippet = self.rng.choice(_paths(document)), self.rng.choice(HOSTILE)
        file.write_bytes(_substituted(document, path, snippet))
        return f"{list(path)[:6]} = {snippet[:40]}"


def _recorded(document: dict, target: str) -> str | None:
    """The SHA-256 a population manifest records for a fingerprint file ``models/NAME/KIND.npz``."""
    parts = Path(target).parts
    for member in document.get("members", []):
        if len(parts) == 3 and member.get("name") == parts[1]:
            return member.get("fingerprints", {}).get(parts[2].removesuffix(".npz"))
    return None


WEIGHTS: dict[str, float] = {  # how often each kind of mutant is drawn
    "header_value": 0.2, "raw_bytes": 0.1, "names": 0.08, "shapes": 0.08, "offsets": 0.06, "config": 0.08,
    "tokenizer": 0.06, "index": 0.06, "mapping": 0.12, "population": 0.08, "special": 0.08,
}


def make_mutants(seeds: Seeds, root: Path, count: int, seed: int = 0) -> list[Mutant]:
    """``count`` mutants of ``seeds`` under ``root``, the same ones for the same ``seed``."""
    rng = random.Random(seed)
    maker = _Maker(seeds, Path(root), rng)
    kinds, weights = zip(*WEIGHTS.items())
    found = []
    for _ in range(count):
        kind = rng.choices(kinds, weights)[0]
        make: Callable[[], Mutant] = (lambda k=kind: maker.side(k)) if kind in ("config", "tokenizer", "index") else getattr(maker, kind)
        found.append(make())
    return found


# ---- running them ----------------------------------------------------------------------------------------
class Hang(BaseException):
    """Raised by the watchdog; a BaseException so that the CLI's own handlers let it through."""


@dataclass(frozen=True)
class Outcome:
    mutant: Mutant
    category: str  # one of OUTCOMES
    code: int | None
    stderr: str
    seconds: float


def classify(code: int | None, stderr: str) -> str:
    if code is None:
        return "hang"
    if "Traceback" in stderr:
        return "traceback"
    if code == 0:
        return "accepted"
    if stderr.count("\n") != 1:
        return "multi-line"
    if code == 3:
        return "internal error"
    return "refused" if code == 2 and stderr.startswith("audit: error: ") else "bad exit code"


def run(mutant: Mutant, *, timeout: float = 30.0) -> Outcome:
    """Run one mutant through ``audit.cli.main`` in this process, with a SIGALRM watchdog of ``timeout`` seconds."""
    from audit.cli import main

    def alarm(*_: object) -> None:
        raise Hang()

    out, err = io.StringIO(), io.StringIO()
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code: int | None = main(list(mutant.argv))
    except Hang:
        code = None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return Outcome(mutant, classify(code, err.getvalue()), code, err.getvalue(), time.perf_counter() - start)
