"""Loading a rules directory into a Ruleset, collecting every error.

Every message is `path:line: message` with the path as the directory was
given, so editors and terminals can jump straight to it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ValidationError

from service.errors import PlaceError, RuleLoadError, SourceError, TemplateError
from service.vocabulary import MAX_PAYLOAD_BYTES
from service.webpush.message import rendered_size_bound

from .conditions import Condition
from .models import (
    RULE_ID,
    Action,
    ConditionOps,
    LocalisedText,
    Message,
    PolicyModel,
    RuleModel,
    Variant,
)
from .places import Place, is_places_file, make_place
from .places_csv import load_csv_places
from .ruleset import (
    MESSAGE_FIELDS,
    CompiledAction,
    CompiledMessage,
    CompiledRule,
    CompiledVariant,
    Ruleset,
)
from .source import MAX_SOURCE_BYTES, Located, load_located
from .templates import (
    Template,
    json_bytes,
    longest_place_values,
    parse_template,
    text_value,
    worst_case_bytes,
)

M = TypeVar("M", bound=BaseModel)

log = logging.getLogger(__name__)

# GeoJSON of places is data, not hand-written text, and may hold tens of thousands of
# places; it is parsed by the json module (no aliases, linear), so it gets a larger bound.
MAX_PLACES_BYTES: Final = 64 << 20


@dataclass
class _Load:
    root: Path
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    digest: Any = field(default_factory=hashlib.sha256)

    def err(self, file: Path | str, line: int, message: str) -> None:
        self.errors.append(f"{file}:{line}: {message}")

    def warn(self, file: Path | str, line: int, message: str) -> None:
        self.warnings.append(f"{file}:{line}: warning: {message}")

    def read(self, path: Path, limit: int = MAX_SOURCE_BYTES) -> str | None:
        """The file's text, or None after an error: anything but a regular file (a FIFO
        would block the reader forever), more than ``limit`` bytes (refused before it is
        read whole or parsed), unreadable, not UTF-8."""
        what = "a places file" if limit == MAX_PLACES_BYTES else "a rules file"
        try:
            # Non-blocking: opening a FIFO to read would wait for a writer.
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            with os.fdopen(fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    self.err(path, 1, "not a regular file")
                    return None
                raw = handle.read(limit + 1)  # the file may grow after any size check
                size = max(len(raw), os.fstat(handle.fileno()).st_size)
        except OSError as exc:
            self.err(path, 1, f"cannot read: {exc.strerror or exc}")
            return None
        if size > limit:
            self.err(
                path,
                1,
                f"the file has {size} bytes; {what} may have at most {limit} ({limit >> 20} MiB)",
            )
            return None
        self.digest.update(str(path.relative_to(self.root)).encode() + b"\0" + raw + b"\0")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            excel = ' (in Excel: save as "CSV UTF-8 (Comma delimited)")'  # not "CSV": cp1252
            self.err(
                path, line, "not UTF-8 text" + (excel if path.suffix.lower() == ".csv" else "")
            )
            return None

    def located(self, path: Path) -> Located | None:
        text = self.read(path)
        if text is None:
            return None
        try:
            loc = load_located(text)
        except SourceError as exc:
            self.err(path, exc.line, exc.message)
            return None
        for line, msg in loc.duplicates:
            self.err(path, line, msg)
        return loc

    @contextmanager
    def guard(self, file: Path | str) -> Iterator[None]:
        """Whatever a file's content makes a step raise ends as an error of that file, so
        the hot reloader, the reload endpoint and the start-up get ``file:line: message``
        rather than an exception (a loader bug must not take a process down either)."""
        try:
            yield
        except RuleLoadError:
            raise
        except SourceError as exc:
            self.err(file, exc.line, exc.message)
        except RecursionError:
            self.err(file, 1, "nested too deeply")
        except Exception as exc:
            log.warning("loading %s raised %r", file, exc, exc_info=exc)
            self.err(file, 1, f"cannot be loaded ({type(exc).__name__}: {_clip(str(exc))})")


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dotted(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _validate(load: _Load, file: Path, loc: Located, model: type[M]) -> M | None:
    data = loc.data if loc.data is not None else {}
    if not isinstance(data, dict):
        load.err(file, 1, "the file must be a mapping of keys to values")
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        seen: set[tuple[str | int, ...]] = set()
        for e in exc.errors():
            path, kind = _data_path(data, e["loc"]), e["type"]
            if kind == "extra_forbidden":
                fields = _fields_at(model, path[:-1])
                hint = difflib.get_close_matches(str(path[-1]), fields, n=1)
                msg = f"unknown key {path[-1]!r}" + (
                    f" (did you mean {hint[0]!r}?)" if hint else f" (allowed: {', '.join(fields)})"
                )
                where = _dotted(path[:-1])
            elif kind == "missing":
                msg, where = f"missing required key {path[-1]!r}", _dotted(path[:-1])
            else:
                msg = str(e["msg"]).removeprefix("Value error, ")
                where = _dotted(path)
            if tuple(path) in seen:
                continue  # a union reports each alternative; the first says enough
            seen.add(tuple(path))
            load.err(file, loc.line_of(path), f"{where}: {msg}" if where else msg)
        return None


def _data_path(data: Any, loc: Sequence[str | int]) -> list[str | int]:
    """Drop pydantic's union/validator tags so the path follows the file."""
    out: list[str | int] = []
    cur = data
    for i, part in enumerate(loc):
        in_dict = isinstance(cur, dict) and isinstance(part, str) and part in cur
        in_list = isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur)
        if in_dict or in_list:
            out.append(part)
            cur = cur[part]
        elif i == len(loc) - 1 and isinstance(part, str) and isinstance(cur, dict):
            out.append(part)  # a missing key
    return out


def _fields_at(model: type[BaseModel], path: Sequence[str | int]) -> list[str]:
    current: Any = model
    for part in path:
        if isinstance(part, int) or current is None:
            continue
        info = current.model_fields.get(part)
        current = None
        if info is not None:
            for arg in _type_args(info.annotation):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    current = arg
    return sorted(current.model_fields) if current is not None else []


def _type_args(annotation: Any) -> list[Any]:
    args = getattr(annotation, "__args__", None)
    if not args:
        return [annotation]
    return [a for arg in args for a in _type_args(arg)]


def _load_places(load: _Load, files: list[Path]) -> dict[Path, list[Place]]:
    out: dict[Path, list[Place]] = {}
    seen_ids: dict[str, str] = {}
    for path in files:
        with load.guard(path):
            places = _places_of(load, path, seen_ids)
            if places is not None:
                out[path] = places
    return out


def _places_of(load: _Load, path: Path, seen_ids: dict[str, str]) -> list[Place] | None:
    text = load.read(path, MAX_PLACES_BYTES)
    if text is None:
        return None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        load.err(path, exc.lineno, f"not valid JSON: {exc.msg}")
        return None
    except RecursionError:
        load.err(path, 1, "not valid GeoJSON: nested too deeply")
        return None
    if (
        not isinstance(doc, dict)
        or doc.get("type") != "FeatureCollection"
        or not isinstance(doc.get("features"), list)
    ):
        load.err(path, 1, "a places file must be a GeoJSON FeatureCollection")
        return None
    lines: Located | None = None

    def line(i: int, key: str | None = None) -> int:
        # Line numbers are only needed for errors, so the slower line-aware parse runs
        # only then; a file too large (or too deep) for it names the feature on line 1.
        nonlocal lines
        if lines is None:
            try:
                lines = load_located(text)
            except SourceError:
                lines = Located(data=None)
        return lines.line_of(("features", i) if key is None else ("features", i, key))

    places: list[Place] = []
    for i, feature in enumerate(doc["features"]):
        try:
            place = make_place(str(path), i, feature, path.stem)
        except PlaceError as exc:
            load.err(path, line(i, "geometry"), str(exc))
            continue
        if place.id in seen_ids:
            load.err(
                path,
                line(i, "properties"),
                f"feature {i}: duplicate place id {place.id!r} (also {seen_ids[place.id]})",
            )
            continue
        seen_ids[place.id] = f"{path} feature {place.index}"
        places.append(place)
    if not doc["features"]:
        load.warn(path, 1, "no features")
    return places


def load_ruleset(path: str | Path) -> Ruleset:
    """Load and check a rules directory; raises RuleLoadError with all errors, and no other
    exception whatever the files hold (they are untrusted text)."""
    root = Path(path)
    load = _Load(root=root)
    try:
        return _load_ruleset(root, load)
    except RuleLoadError:
        raise
    except Exception as exc:  # a step outside every file's guard: name the folder
        log.warning("loading %s raised %r", root, exc, exc_info=exc)
        message = f"{root}:1: cannot be loaded ({type(exc).__name__}: {_clip(str(exc))})"
        raise RuleLoadError([*load.errors, message], load.warnings) from None


def _load_ruleset(root: Path, load: _Load) -> Ruleset:
    """Load and check the rules directory ``root``, collecting its problems in ``load``."""
    if not root.is_dir():
        raise RuleLoadError([f"{root}:1: rules directory not found"])
    policy = _load_policy(root, load)
    place_files = sorted(p for p in (root / "places").glob("*") if is_places_file(p))
    rule_files = sorted(
        p
        for p in [*root.glob("*.yaml"), *root.glob("*.yml")]
        if p.name not in ("policy.yaml", "policy.yml")
    )
    parsed = _parse_rule_files(root, load, rule_files, place_files)
    by_file = _load_place_files(load, place_files)
    resolved = {p.resolve(): v for p, v in by_file.items()}
    all_places: list[Place] = [p for v in by_file.values() for p in v]
    index_of = {id(p): i for i, p in enumerate(all_places)}
    rules = _compile_rules(load, root, parsed, policy, resolved, index_of)
    if not rule_files:
        load.warn(root, 1, "no rule files (*.yaml) found")
    _priority_ties(
        load, rules, {r.id: (f, loc) for f, loc, _ in parsed for r in rules if r.file == str(f)}
    )
    from .checks import check_rules  # windows vs quiet hours, campaigns, stray places

    found = check_rules(
        rules,
        policy,
        all_places,
        {str(f): loc for f, loc, _ in parsed},
        today=datetime.now(UTC).date(),
        read_text=lambda f: Path(f).read_text(encoding="utf-8"),
    )
    load.errors.extend(found.errors)
    load.warnings.extend(found.warnings)
    if load.errors or policy is None:
        raise RuleLoadError(load.errors, load.warnings)
    return Ruleset(
        rules=rules,
        policy=policy,
        places=all_places,
        version=load.digest.hexdigest()[:16],
        root=str(root),
        warnings=load.warnings,
        loaded_at=datetime.now(UTC),
    )


def _load_policy(root: Path, load: _Load) -> PolicyModel | None:
    """The folder's policy.yaml, or None when it is missing or invalid."""
    policy_file = root / "policy.yaml"
    policy: PolicyModel | None = None
    if policy_file.is_file():
        with load.guard(policy_file):
            ploc = load.located(policy_file)
            if ploc is not None:
                policy = _validate(load, policy_file, ploc, PolicyModel)
    else:
        load.err(policy_file, 1, "policy.yaml is missing (dayparts, quiet_hours, limits)")
    return policy


def _parse_rule_files(
    root: Path, load: _Load, rule_files: list[Path], place_files: list[Path]
) -> list[tuple[Path, Located, RuleModel]]:
    """The valid rule files, parsed; the places files they name join ``place_files``."""
    parsed: list[tuple[Path, Located, RuleModel]] = []
    for rf in rule_files:
        with load.guard(rf):
            loc = load.located(rf)
            if loc is None:
                continue
            model = _validate(load, rf, loc, RuleModel)
            if model is None:
                continue
            parsed.append((rf, loc, model))
            for extra in model.where.files if model.where else []:
                target = (root / extra).resolve()
                if (
                    is_places_file(target)
                    and target.is_file()
                    and target not in [p.resolve() for p in place_files]
                ):
                    place_files.append(root / extra)
    return parsed


def _load_place_files(load: _Load, place_files: list[Path]) -> dict[Path, list[Place]]:
    """The places of every GeoJSON and CSV places file, by file."""
    csv_files = [p for p in place_files if p.suffix.lower() == ".csv"]
    by_file = _load_places(load, [p for p in place_files if p not in csv_files])
    # A sheet of shops is data, like GeoJSON: the places limit, not the rule files' 1 MiB.
    by_file.update(
        load_csv_places(
            csv_files, lambda p: load.read(p, MAX_PLACES_BYTES), load.err, load.warn, by_file
        )
    )
    return by_file


def _compile_rules(
    load: _Load,
    root: Path,
    parsed: list[tuple[Path, Located, RuleModel]],
    policy: PolicyModel | None,
    resolved: dict[Path, list[Place]],
    index_of: dict[int, int],
) -> list[CompiledRule]:
    """The compiled rules, in file order, without the ones that fail or repeat an id."""
    rules: list[CompiledRule] = []
    ids: dict[str, Path] = {}
    for rf, loc, model in parsed:
        rule: CompiledRule | None = None
        with load.guard(rf):
            rule = _compile_rule(load, root, rf, loc, model, policy, resolved, index_of, len(rules))
        if rule is None:
            continue
        if rule.id in ids:
            load.err(
                rf, loc.line_of(("id",)), f"duplicate rule id {rule.id!r} (also {ids[rule.id]})"
            )
            continue
        ids[rule.id] = rf
        rules.append(rule)
    return rules


def _compile_rule(
    load: _Load,
    root: Path,
    rf: Path,
    loc: Located,
    model: RuleModel,
    policy: PolicyModel | None,
    places_by_file: dict[Path, list[Place]],
    index_of: dict[int, int],
    index: int,
) -> CompiledRule | None:
    before = len(load.errors)
    rule_id = model.id or rf.stem
    if model.id is None and not _valid_id(rule_id):
        load.err(
            rf,
            1,
            f"the file name gives rule id {rule_id!r}; use lower-case letters, "
            "digits, - and _ or set id:",
        )
    matched = _rule_places(load, root, rf, loc, model, places_by_file)
    conditions = _conditions(load, rf, loc, model)
    _allocation(load, rf, loc, model)
    # Time windows.
    windows = list(model.when.windows) if model.when else []
    if model.when and model.when.dayparts:
        known = policy.dayparts if policy else {}
        for i, name in enumerate(model.when.dayparts):
            if name in known:
                windows.append(known[name])
            elif policy is not None:
                load.err(
                    rf,
                    loc.line_of(("when", "dayparts", i)),
                    f"when.dayparts[{i}]: unknown daypart {name!r} "
                    f"(policy.yaml defines: {', '.join(sorted(known)) or 'none'})",
                )
    # Templates and payload size.
    values: list[dict[str, Any]] = [{**p.properties, "id": p.id, "name": p.name} for p in matched]
    radius = model.where.radius_m if model.where else None
    variants = _variants(
        load,
        rf,
        loc,
        model,
        rule_id,
        values,
        max((p.radius_m or radius or 0.0) for p in matched) if matched else 0.0,
    )
    if len(load.errors) > before:
        return None
    return CompiledRule(
        id=rule_id,
        index=index,
        file=str(rf),
        model=model,
        place_idx=[index_of[id(p)] for p in matched],
        windows=windows,
        variants=variants,
        conditions=conditions,
    )


def _allocation(load: _Load, rf: Path, loc: Located, model: RuleModel) -> None:
    """allocation and min_share together: adaptive needs two variants that can be sent (weight
    over 0), and every one of them keeping min_share must fit in the whole traffic."""
    given = "min_share" in model.model_fields_set
    if model.allocation != "adaptive":
        if given:
            load.err(
                rf,
                loc.line_of(("min_share",)),
                "min_share: only used with allocation: adaptive (fixed allocation follows the "
                "weights)",
            )
        return
    active = sum(1 for v in model.variants or [] if v.weight > 0)
    if active < 2:
        load.err(
            rf,
            loc.line_of(("allocation",)),
            f"allocation: adaptive needs at least 2 variants with a weight over 0 (has {active})",
        )
    elif model.min_share * active > 1.0 + 1e-9:
        load.err(
            rf,
            loc.line_of(("min_share",) if given else ("allocation",)),
            f"min_share: {model.min_share:g} for each of {active} variants is "
            f"{model.min_share * active:g} of the pushes, over 1: lower min_share",
        )


def _conditions(load: _Load, rf: Path, loc: Located, model: RuleModel) -> tuple[Condition, ...]:
    """who.attributes and who.context as conditions; one that can never hold is an error."""
    out: list[Condition] = []
    who = model.who
    if who is None:
        return ()
    for source, specs in (("attributes", who.attributes), ("context", who.context)):
        for key, spec in (specs or {}).items():
            op, value = spec.operator if isinstance(spec, ConditionOps) else ("eq", spec)
            cond = Condition(source, key, op, value)  # type: ignore[arg-type]
            why = cond.never_applies()
            if why is not None:
                load.err(
                    rf,
                    loc.line_of(("who", source, key)),
                    f"who.{source}.{key}: this condition can never hold: {why}",
                )
                continue
            out.append(cond)
    return tuple(out)


def _rule_places(
    load: _Load,
    root: Path,
    rf: Path,
    loc: Located,
    model: RuleModel,
    places_by_file: dict[Path, list[Place]],
) -> list[Place]:
    """The places of ``where`` after its filter (none for a location-free rule)."""
    where = model.where
    if where is None:
        return []
    chosen: list[Place] = []
    for i, name in enumerate(where.files):
        key: tuple[str | int, ...] = ("where", "places")
        if isinstance(where.places, list):
            key = (*key, i)
        target = (root / name).resolve()
        if target not in places_by_file:
            load.err(
                rf, loc.line_of(key), f"where.places: {name!r} {_unusable(load, target, root)}"
            )
            continue
        chosen.extend(places_by_file[target])
    flt = where.filter or {}
    matched = [p for p in chosen if all(p.has(k, v) for k, v in flt.items())]
    if flt and chosen and not matched:
        present = sorted({text_value(p.properties.get(k)) for p in chosen for k in flt})[:8]
        load.err(
            rf,
            loc.line_of(("where", "filter")),
            f"where.filter {flt} matches none of the {len(chosen)} places "
            f"(values present: {', '.join(present)})",
        )
    unsized = [p.id for p in matched if p.kind == "point" and p.radius_m is None]
    if unsized and where.radius_m is None:
        load.err(
            rf,
            loc.line_of(("where",)),
            f"where: {len(unsized)} point places have no radius_m (e.g. {unsized[0]!r}); "
            "set where.radius_m",
        )
    return matched


def _unusable(load: _Load, target: Path, root: Path) -> str:
    """Why a rule's places file gave no places. The file's own errors are named here, not
    "above": `rules check` of one rule file, the reload log and GET /v1/rules may show
    this error without them."""
    if not target.is_file():
        return f"not found under {root}"
    if not is_places_file(target):
        return "is not a places file; use .csv (id,name,lat,lon) or GeoJSON (.geojson or .json)"
    own = [e for e in load.errors if _error_file(e) == target]
    if not own:  # every places file that is read and left out has an error; just in case
        return "could not be loaded"
    return f"has {len(own)} error{'' if len(own) == 1 else 's'}: {own[0]}"


def _error_file(entry: str) -> Path | None:
    """The file of a ``file:line: message`` entry (a path may hold ": " itself)."""
    head, sep, rest = entry.partition(": ")
    while sep:
        file, colon, line = head.rpartition(":")
        if colon and line.isdigit():
            return Path(file).resolve()
        more, sep, rest = rest.partition(": ")
        head += ": " + more
    return None


def _valid_id(rule_id: str) -> bool:
    return RULE_ID.match(rule_id) is not None


def _variants(
    load: _Load,
    rf: Path,
    loc: Located,
    model: RuleModel,
    rule_id: str,
    values: list[dict[str, Any]],
    max_radius: float,
    roots: frozenset[str] | None = None,
) -> list[CompiledVariant]:
    """Each variant's message per locale. Per field the most specific wins: variant+locale,
    variant, message+locale, message; actions are replaced whole, never merged."""
    ctx = _TemplateContext(load, rf, loc, values, location_free=model.where is None, roots=roots)
    base = ctx.texts(model.message, ("message",))
    base_locales = {
        tag.lower(): ctx.texts(text, ("message", "locales", tag))
        for tag, text in (model.message.locales or {}).items()
    }
    specs = model.variants or []
    out: list[CompiledVariant] = []
    for i, spec in enumerate(specs or [None]):
        key: tuple[str | int, ...] = ("variants", i, "message")
        own = ctx.texts(spec.message, key) if spec and spec.message else _Texts()
        own_locales = {
            tag.lower(): ctx.texts(text, (*key, "locales", tag))
            for tag, text in ((spec.message.locales or {}) if spec and spec.message else {}).items()
        }
        messages = {"": base.merged(own).compiled("")}
        for tag in sorted({*base_locales, *own_locales}):
            merged = base.merged(base_locales.get(tag, _Texts()), own)
            merged = merged.merged(own_locales.get(tag, _Texts()))
            messages[tag] = merged.compiled(tag)
        name, weight = (spec.name, spec.weight) if spec else ("default", 1)
        out.append(CompiledVariant(name=name, weight=weight, messages=messages))
    digits = len(str(int(max_radius + 0.5))) + 1
    for i, variant in enumerate(out):
        for tag, message in variant.messages.items():
            names = {f[1] for t in message.all_templates for f in t.fields if f[0] == "place"}
            longest = longest_place_values(names, values)
            size = _worst_payload(message, variant.name, longest, digits, rule_id)
            if size > MAX_PAYLOAD_BYTES:
                what = f"variant {variant.name}" if specs else "message"
                if tag:
                    what += f", locale {tag}"
                line = loc.line_of(("variants", i) if specs else ("message",))
                load.err(
                    rf,
                    line,
                    f"{what}: the push payload can reach {size} bytes with the longest place "
                    f"and attribute values (limit {MAX_PAYLOAD_BYTES}); shorten the texts or "
                    "the place names",
                )
    return out


@dataclass
class _Texts:
    """Some of a message's fields, compiled; ``actions`` None means "not given"."""

    templates: dict[str, Template] = field(default_factory=dict)
    actions: tuple[CompiledAction, ...] | None = None

    def merged(self, *more: _Texts) -> _Texts:
        out = _Texts(dict(self.templates), self.actions)
        for t in more:
            out.templates.update(t.templates)
            if t.actions is not None:
                out.actions = t.actions
        return out

    def compiled(self, lang: str) -> CompiledMessage:
        return CompiledMessage(lang=lang, templates=self.templates, actions=self.actions or ())


@dataclass
class _TemplateContext:
    load: _Load
    rf: Path
    loc: Located
    values: list[dict[str, Any]]
    location_free: bool
    # The template roots a message may use; None: every one rules know (campaigns: attributes).
    roots: frozenset[str] | None = None

    def texts(self, text: Message | LocalisedText, key: tuple[str | int, ...]) -> _Texts:
        out = _Texts()
        for name in MESSAGE_FIELDS:
            source = getattr(text, name)
            if source is not None:
                tpl = self.template((*key, name), source)
                if tpl is not None:
                    out.templates[name] = tpl
        if text.actions is not None:
            out.actions = tuple(
                self.action((*key, "actions", i), action) for i, action in enumerate(text.actions)
            )
        return out

    def action(self, key: tuple[str | int, ...], action: Action) -> CompiledAction:
        title = self.template((*key, "title"), action.title)
        url = self.template((*key, "url"), action.url) if action.url is not None else None
        return CompiledAction(action.action, title or parse_template(""), url)

    def template(self, key: tuple[str | int, ...], text: str) -> Template | None:
        where = _dotted(key)
        line = self.loc.line_of(key)
        try:
            tpl = parse_template(text)
        except TemplateError as exc:
            self.load.err(self.rf, line, f"{where}: {exc}")
            return None
        for root_name, name in tpl.fields:
            if self.roots is not None and root_name not in self.roots:
                shown = "{rule.id}" if root_name == "rule" else f"{{{root_name}.{name}}}"
                if root_name == "distance_m":
                    shown = "{distance_m}"
                allowed = ", ".join(f"{{{r}.<name>}}" for r in sorted(self.roots))
                self.load.err(
                    self.rf,
                    line,
                    f"{where}: template field {shown} is not available here; use {allowed}",
                )
                return None
            if self.location_free and root_name in ("place", "distance_m"):
                field_name = "{distance_m}" if root_name == "distance_m" else f"{{place.{name}}}"
                self.load.err(
                    self.rf,
                    line,
                    f"{where}: template field {field_name} needs where (places); this rule "
                    "has none",
                )
                return None
            if root_name != "place":
                continue
            missing = [v["id"] for v in self.values if name not in v]
            if missing:
                self.load.err(
                    self.rf,
                    line,
                    f"{where}: template field {{place.{name}}} is missing on {len(missing)} "
                    f"of {len(self.values)} places (e.g. {missing[0]!r})",
                )
                return None
        return tpl


def _worst_payload(
    message: CompiledMessage, variant: str, longest_place: dict[str, int], digits: int, rule_id: str
) -> int:
    """The largest push the message can become: each field at its longest rendering (ASCII
    stand-ins of its worst JSON-escaped size), wrapped as the sender wraps it (declarative
    envelope, click links, event token, the longest PUBLIC_URL)."""

    def longest(template: Template) -> str:
        return "x" * worst_case_bytes(template, longest_values, digits, rule_id)

    longest_values = longest_place
    skeleton: dict[str, Any] = {name: longest(t) for name, t in message.templates.items()}
    if message.lang:
        skeleton["lang"] = message.lang
    if message.actions:
        skeleton["actions"] = [
            {
                "action": a.action,
                "title": longest(a.title),
                "url": longest(a.url) if a.url is not None else skeleton.get("url", ""),
            }
            for a in message.actions
        ]
    return rendered_size_bound(skeleton, rule=rule_id, variant=variant)


class _FieldErrors(_Load):
    """Errors of a message that comes from no file: ``field: message``, without file:line."""

    def err(self, file: Path | str, line: int, message: str) -> None:
        self.errors.append(message)


def compile_message(
    message: Message,
    variants: Sequence[Variant] | None,
    *,
    name: str,
    roots: frozenset[str] = frozenset({"attributes"}),
) -> list[CompiledVariant]:
    """A message and its variants compiled as a rule's are (locales, actions, the worst-case
    payload), for senders that are no rule file (campaigns). ``name`` stands for the rule id
    in the payload's size; templates may use only the fields under ``roots``. Raises
    RuleLoadError whose errors read ``field: message`` (``message.title: ...``)."""
    load = _FieldErrors(root=Path("."))
    try:
        model = RuleModel.model_validate(
            {"message": message, "variants": list(variants) if variants is not None else None}
        )
    except ValidationError as exc:  # the variants' names and weights
        messages = [str(e["msg"]).removeprefix("Value error, ") for e in exc.errors()]
        raise RuleLoadError(messages) from None
    out = _variants(load, Path(name), Located(data=None), model, name, [], 0.0, roots)
    if load.errors:
        raise RuleLoadError(load.errors)
    return out


def _priority_ties(
    load: _Load, rules: list[CompiledRule], where: dict[str, tuple[Path, Located]]
) -> None:
    for i, a in enumerate(rules):
        for b in rules[i + 1 :]:
            if a.priority != b.priority:
                continue
            shared = set(a.place_idx) & set(b.place_idx)
            if shared:
                f, loc = where[b.id]
                load.warn(
                    f,
                    loc.line_of(("priority",)),
                    f"rule {b.id!r} ties with {a.id!r} at priority {a.priority} on "
                    f"{len(shared)} shared places; the nearer place, then the rule id "
                    "decides - give them different priorities",
                )


__all__ = ["RuleLoadError", "compile_message", "json_bytes", "load_ruleset"]
