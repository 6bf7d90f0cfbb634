"""Knowledge graphs: the standard link-prediction layout, reverse triples, the filter index of all
true triples, and a synthetic generator with planted analogical structure.

Layout of a dataset folder (as in the RotatE / NeuralKG / AnKGE code): `train.txt`, `valid.txt`,
`test.txt` with one tab-separated `head<TAB>relation<TAB>tail` triple per line, and optionally
`entities.dict` / `relations.dict` with `id<TAB>name` lines (ids 0..n-1). When a dict is absent
it is built from the names in the order they first appear in train, valid, test. Triples are
`[N, 3] int32` arrays of `(head, relation, tail)` ids. Malformed lines (not 3 / 2 tab-separated
fields, an empty name, a name with leading or trailing whitespace, text that is not UTF-8), names
missing from a dict, duplicate or non-contiguous ids and an empty train.txt raise ValueError
naming the file and the line.

Reverse triples: `(t, r + R, h)` for R relations, so that head prediction is tail prediction with
the reverse relation; models then hold 2R relation embeddings.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

SPLITS = ("train", "valid", "test")


@dataclasses.dataclass
class KG:
    """A link-prediction dataset.

    Attributes:
      entities, relations: names by id.
      train, valid, test: [N, 3] int32 (head, relation, tail) ids, original direction only.
    """

    name: str
    entities: list[str]
    relations: list[str]
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray

    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        """Relations in the data (R); models with reverse triples use 2R."""
        return len(self.relations)

    def split(self, name: str) -> np.ndarray:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    def summary(self) -> dict[str, int | str]:
        return {
            "name": self.name,
            "entities": self.num_entities,
            "relations": self.num_relations,
            **{s: len(self.split(s)) for s in SPLITS},
        }


def _lines(path: str):
    """`(line number, line without its end)` of every non-blank line of a UTF-8 text file."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not UTF-8 text ({err})") from None
            line = line.rstrip("\n").rstrip("\r")
            if line.strip():
                yield lineno, line


def _check_names(path: str, lineno: int, line: str, names: list[str]) -> None:
    """Names are non-empty and carry no leading / trailing whitespace (`"a "` and `"a"` would
    silently become two entities when the ids are built from the triples)."""
    for name in names:
        if not name or name != name.strip():
            what = "an empty name" if not name.strip() else f"name {name!r} padded with spaces"
            raise ValueError(
                f"{path}:{lineno}: {what} (fields are separated by single tabs), got {line!r}"
            )


def read_dict(path: str) -> list[str]:
    """Reads an `id<TAB>name` file; returns the names by id (ids must be exactly 0..n-1)."""
    names: dict[int, str] = {}
    seen: dict[str, int] = {}
    for lineno, line in _lines(path):
        parts = line.split("\t")
        if len(parts) != 2 or not parts[1]:
            raise ValueError(f"{path}:{lineno}: expected 'id<TAB>name', got {line!r}")
        _check_names(path, lineno, line, parts[1:])
        try:
            idx = int(parts[0])
        except ValueError:
            raise ValueError(f"{path}:{lineno}: id {parts[0]!r} is not an integer") from None
        if idx in names:
            raise ValueError(f"{path}:{lineno}: duplicate id {idx} (also {names[idx]!r})")
        if parts[1] in seen:
            raise ValueError(
                f"{path}:{lineno}: duplicate name {parts[1]!r} (ids {seen[parts[1]]} and {idx})"
            )
        names[idx], seen[parts[1]] = parts[1], idx
    if sorted(names) != list(range(len(names))):
        missing = sorted(set(range(len(names))) - set(names))[:5]
        raise ValueError(f"{path}: ids must be 0..{len(names) - 1}; missing e.g. {missing}")
    return [names[i] for i in range(len(names))]


def read_triple_names(path: str) -> list[tuple[str, str, str, int]]:
    """`(head, relation, tail, line number)` of every non-empty line of a triple file."""
    out = []
    for lineno, line in _lines(path):
        parts = line.split("\t")
        if len(parts) != 3 or not all(parts):
            raise ValueError(
                f"{path}:{lineno}: expected 'head<TAB>relation<TAB>tail', got {line!r}"
            )
        _check_names(path, lineno, line, parts)
        out.append((parts[0], parts[1], parts[2], lineno))
    return out


def _to_ids(
    path: str,
    rows: list[tuple[str, str, str, int]],
    ent2id: dict[str, int],
    rel2id: dict[str, int],
) -> np.ndarray:
    ids = np.zeros((len(rows), 3), np.int32)
    for i, (h, r, t, lineno) in enumerate(rows):
        for col, (name, table, kind) in enumerate(
            ((h, ent2id, "entity"), (r, rel2id, "relation"), (t, ent2id, "entity"))
        ):
            if name not in table:
                raise ValueError(
                    f"{path}:{lineno}: unknown {kind} {name!r} (not in the {kind} dict)"
                )
            ids[i, col] = table[name]
    return ids


def load_kg(data_dir: str) -> KG:
    """Loads `data_dir/{train,valid,test}.txt` (+ `entities.dict`, `relations.dict` if present)."""
    if not os.path.isdir(data_dir):
        if os.path.exists(data_dir):
            raise NotADirectoryError(f"knowledge-graph folder {data_dir} is not a folder")
        raise FileNotFoundError(f"knowledge-graph folder {data_dir} does not exist")
    rows = {}
    for split in SPLITS:
        path = os.path.join(data_dir, f"{split}.txt")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} is missing (expected {', '.join(SPLITS)} .txt files)")
        rows[split] = read_triple_names(path)
    if not rows["train"]:
        raise ValueError(
            f"{os.path.join(data_dir, 'train.txt')}: no triples (expected one "
            "'head<TAB>relation<TAB>tail' line or more)"
        )
    names = {}
    for kind, cols in (("entities", (0, 2)), ("relations", (1,))):
        path = os.path.join(data_dir, f"{kind}.dict")
        if os.path.exists(path):
            names[kind] = read_dict(path)
        else:  # first appearance in train, valid, test
            order: dict[str, None] = {}
            for split in SPLITS:
                for row in rows[split]:
                    for c in cols:
                        order.setdefault(row[c], None)
            names[kind] = list(order)
    ent2id = {n: i for i, n in enumerate(names["entities"])}
    rel2id = {n: i for i, n in enumerate(names["relations"])}
    triples = {
        s: _to_ids(os.path.join(data_dir, f"{s}.txt"), rows[s], ent2id, rel2id) for s in SPLITS
    }
    name = os.path.basename(os.path.normpath(data_dir))
    return KG(name, names["entities"], names["relations"], **triples)


def add_reverse(triples: np.ndarray, num_relations: int) -> np.ndarray:
    """`[N, 3]` -> `[2N, 3]`: the triples, then their reverses `(t, r + num_relations, h)`."""
    triples = np.asarray(triples, np.int32)
    rev = np.stack([triples[:, 2], triples[:, 1] + num_relations, triples[:, 0]], axis=1)
    return np.concatenate([triples, rev]).astype(np.int32)


def pair_key(a: np.ndarray, b: np.ndarray, num_b: int) -> np.ndarray:
    """int64 key of id pairs `(a, b)` with `0 <= b < num_b`."""
    return np.asarray(a, np.int64) * num_b + np.asarray(b, np.int64)


def pair_counts(a: np.ndarray, b: np.ndarray, num_b: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct pair keys (sorted) of `(a, b)` and how often each occurs."""
    return np.unique(pair_key(a, b, num_b), return_counts=True)


def lookup_counts(
    keys: np.ndarray, counts: np.ndarray, query: np.ndarray, default: int = 0
) -> np.ndarray:
    """Counts of `query` keys in the sorted `keys` (`default` where absent)."""
    pos = np.clip(np.searchsorted(keys, query), 0, max(len(keys) - 1, 0))
    found = (keys[pos] == query) if len(keys) else np.zeros(np.shape(query), bool)
    return np.where(found, counts[pos] if len(keys) else 0, default)


@dataclasses.dataclass
class FilterIndex:
    """For queries `(h, r)` (r may be a reverse relation), every true tail in train + valid + test.

    Attributes:
      tails: [Q, K] int32 true tails of each query, padded with -1 (K = the largest count).
      counts: [Q] int32 number of true tails per query (includes the query's own answer).
    """

    tails: np.ndarray
    counts: np.ndarray


def filter_index(kg: KG, queries: np.ndarray) -> FilterIndex:
    """True tails of each `(h, r)` in `queries` ([Q, >=2] ids, r < 2R), from all splits with
    reverses: the index filtered ranking uses to skip other true answers."""
    all_true = add_reverse(np.concatenate([kg.train, kg.valid, kg.test]), kg.num_relations)
    num_rel = 2 * kg.num_relations
    all_true = np.unique(all_true, axis=0)
    key = pair_key(all_true[:, 0], all_true[:, 1], num_rel)
    order = np.argsort(key, kind="stable")
    key, tails_sorted = key[order], all_true[order, 2]
    qkey = pair_key(queries[:, 0], queries[:, 1], num_rel)
    lo = np.searchsorted(key, qkey, side="left")
    hi = np.searchsorted(key, qkey, side="right")
    counts = (hi - lo).astype(np.int32)
    width = max(int(counts.max(initial=0)), 1)
    offs = np.arange(width)
    idx = lo[:, None] + offs[None, :]
    valid = offs[None, :] < counts[:, None]
    tails = np.where(valid, tails_sorted[np.minimum(idx, len(key) - 1)], -1).astype(np.int32)
    return FilterIndex(tails=tails, counts=counts)


def eval_queries(kg: KG, split: str) -> np.ndarray:
    """[2N, 3] queries of a split: tail prediction on the triples and on their reverses (head
    prediction), i.e. `add_reverse(split)`; column 2 is the answer."""
    return add_reverse(kg.split(split), kg.num_relations)


def synthetic_kg(
    num_groups: int = 40,
    *,
    group_size: int = 4,
    num_relations: int = 4,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> KG:
    """A small KG with planted analogical structure, learnable by translation / rotation models.

    Entity `(g, i)` (id `g * group_size + i`) is member i of group g. Relation r moves every
    member of every group to the same member of a group `shift_r` further on (cyclically):
    `(g, i) -r-> ((g + shift_r) mod num_groups, i)`, with distinct shifts 1, 2, ... So every
    triple has many analogues (the same relation between other members / other groups), which is
    what AnKGE's retrieval finds, and held-out triples follow from the training ones (a rotation
    per relation). Triples are shuffled into train / valid / test; valid and test only contain
    entities seen in training. Entity ids are shuffled so that nothing follows from the ids.
    """
    rng = np.random.default_rng(seed)
    num_entities = num_groups * group_size
    ent = rng.permutation(num_entities)
    triples = [
        (ent[g * group_size + i], r, ent[((g + r + 1) % num_groups) * group_size + i])
        for r in range(num_relations)
        for g in range(num_groups)
        for i in range(group_size)
    ]
    triples = np.unique(np.asarray(triples, np.int32), axis=0)
    triples = triples[rng.permutation(len(triples))]
    n_valid = int(round(valid_fraction * len(triples)))
    n_test = int(round(test_fraction * len(triples)))
    train = triples[n_valid + n_test :]
    held = triples[: n_valid + n_test]
    seen = np.zeros(num_entities, bool)
    seen[train[:, 0]] = seen[train[:, 2]] = True
    ok = seen[held[:, 0]] & seen[held[:, 2]]
    train = np.concatenate([train, held[~ok]])
    held = held[ok]
    n_valid = min(n_valid, len(held) // 2)
    return KG(
        name="synthetic",
        entities=[f"e{i}" for i in range(num_entities)],
        relations=[f"r{i}" for i in range(num_relations)],
        train=train,
        valid=held[:n_valid],
        test=held[n_valid:],
    )


def write_kg(kg: KG, data_dir: str) -> None:
    """Writes `kg` in the standard layout (dicts and the three triple files)."""
    os.makedirs(data_dir, exist_ok=True)
    for kind, names in (("entities", kg.entities), ("relations", kg.relations)):
        with open(os.path.join(data_dir, f"{kind}.dict"), "w") as f:
            f.writelines(f"{i}\t{n}\n" for i, n in enumerate(names))
    for split in SPLITS:
        with open(os.path.join(data_dir, f"{split}.txt"), "w") as f:
            f.writelines(
                f"{kg.entities[h]}\t{kg.relations[r]}\t{kg.entities[t]}\n"
                for h, r, t in kg.split(split)
            )
