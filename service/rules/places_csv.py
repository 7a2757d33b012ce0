"""Places from a spreadsheet: a CSV file whose first line is a header.

    id,name,lat,lon,radius_m,neighborhood
    soho,Soho Roasters,40.7233,-74.0030,60,SoHo

`id`, `name`, `lat` and `lon` are required columns (in any order, any case), `radius_m`
is optional, every other column is a property of the place, as text (`02` stays `02`:
zip codes and phone numbers keep their zeros); an empty cell is no property. The `id`
column is the place id - never the row's position, which changes when the sheet is
sorted, and with it a shop's stats and cooldowns would move to another shop.

What spreadsheets write is accepted: Excel's UTF-8 byte order mark, CRLF line ends, cells
over several lines in quotes, rows of empty cells and empty cells past the header's
columns. Every problem is `(line, message)` with the row's first line in the file (the
header is line 1), for the loader to report as `file:line: message`.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .places import MAX_ABS_LAT, Place, number

REQUIRED = ("id", "name", "lat", "lon")
KNOWN = (*REQUIRED, "radius_m")
# Names a sheet often has instead of the required ones: named in the error, not guessed.
ALIASES = {"lat": ("latitude",), "lon": ("longitude", "lng", "long")}
_DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+")

# Where an id was first seen: (file, CSV line or None, GeoJSON feature index).
Taken = dict[str, tuple[str, int | None, int]]


@dataclass
class CsvPlaces:
    places: list[Place] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)
    warnings: list[tuple[int, str]] = field(default_factory=list)
    usable: bool = False  # the file has a usable header (its rows may still have errors)


def load_csv_places(
    files: list[Path],
    read: Callable[[Path], str | None],
    err: Callable[[Path, int, str], None],
    warn: Callable[[Path, int, str], None],
    loaded: Mapping[Path, list[Place]],
) -> dict[Path, list[Place]]:
    """The places of each CSV file that could be read (a file that cannot, or whose
    header is unusable, is left out after its error). ``read`` gives a file's text or
    None after reporting why not; ``loaded``: the places of the other files, whose ids
    a CSV row must not take again."""
    taken: Taken = {p.id: (p.file, p.line, p.index) for ps in loaded.values() for p in ps}
    out: dict[Path, list[Place]] = {}
    for path in files:
        text = read(path)
        if text is None:
            continue
        found = parse_places_csv(text, str(path), taken)
        for line, message in found.errors:
            err(path, line, message)
        for line, message in found.warnings:
            warn(path, line, message)
        if found.usable:
            out[path] = found.places
    return out


def parse_places_csv(text: str, file: str, taken: Taken | None = None) -> CsvPlaces:
    """The places of one CSV file and its problems; ``taken`` (updated) holds the ids
    already used by other files. Never raises on any text."""
    taken = {} if taken is None else taken
    out = CsvPlaces()
    # newline="": the csv module sees \r\n, \r and \n line ends and quoted line breaks.
    # strict: a stray quote is an error at its row, not a cell that silently swallows the
    # rows after it.
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
    header: list[str] | None = None
    header_line = 1
    columns: dict[str, int] = {}
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            out.errors.append((start, _csv_problem(exc)))
            if header is None or reader.line_num < start:
                return out  # no header to read the rows by, or nothing more to read
            continue  # the reader goes on at the next line
        if not any(cell.strip() for cell in row):
            continue  # a blank line, or a row of empty cells
        if header is None:
            header, header_line = [cell.strip() for cell in row], start
            problem = _header_problem(header)
            if problem is not None:
                out.errors.append((start, problem))
                return out
            columns = {_key(name): i for i, name in enumerate(header) if name}
            out.usable = True
            continue
        problem, place = _row(row, start, len(out.places), header, columns, file, taken)
        if problem is not None:
            out.errors.append((start, problem))
        elif place is not None:
            out.places.append(place)
    if header is None and not out.errors:
        out.errors.append(
            (1, "the file is empty; the first line must be the header id,name,lat,lon")
        )
    elif not out.places and not out.errors:
        out.warnings.append((header_line, "no places"))
    return out


def _csv_problem(exc: csv.Error) -> str:
    if str(exc) == "unexpected end of data":
        return 'a cell opened with " is never closed'
    if '"' in str(exc):
        return f'not valid CSV: {exc} (a quoted cell must end with its "; write "" for a " in it)'
    return f"not valid CSV: {exc}"


def _key(name: str) -> str:
    """The known columns in any case; other columns keep their name as the property's."""
    return name.lower() if name.lower() in KNOWN else name


def _header_problem(header: list[str]) -> str | None:
    named = [name for name in header if name]
    if len(named) == 1:
        for sep in (";", "\t", "|"):
            if sep in named[0]:
                return (
                    f"the header is one column {named[0]!r}: columns must be separated by "
                    f'commas, not {sep!r} (save as "CSV UTF-8 (Comma delimited)")'
                )
    seen: set[str] = set()
    for name in named:
        if _key(name) in seen:
            return f"the header has the column {name!r} twice"
        seen.add(_key(name))
    missing = [c for c in REQUIRED if c not in seen]
    if not missing:
        return None
    renames = [
        f"{name!r} to {column}"
        for column in missing
        for name in named
        if name.lower() in ALIASES.get(column, ())
    ]
    has = ", ".join(named) or "nothing"
    hint = f"; rename {', '.join(renames)}" if renames else ""
    return f"the header has no column {', '.join(map(repr, missing))} (it has: {has}{hint})"


def _row(
    row: list[str],
    line: int,
    index: int,
    header: list[str],
    columns: dict[str, int],
    file: str,
    taken: Taken,
) -> tuple[str | None, Place | None]:
    if any(cell.strip() for cell in row[len(header) :]):
        return f"the row has {len(row)} cells, the header {len(header)}", None

    def cell(column: str) -> str:
        i = columns.get(column)
        return row[i].strip() if i is not None and i < len(row) else ""

    pid = cell("id")
    if not pid:
        return "id is empty", None
    if pid in taken:
        return f"duplicate id {pid!r} (also {_where(taken[pid], file)})", None
    taken[pid] = (file, line, index)
    name = cell("name")
    if not name:
        return "name is empty", None
    lat, problem = _coordinate(cell("lat"), "lat", 90.0)
    if problem is None and abs(lat) > MAX_ABS_LAT:
        problem = f"lat {cell('lat')} is beyond the supported +-{MAX_ABS_LAT:g} degrees"
    if problem is None:
        lon, problem = _coordinate(cell("lon"), "lon", 180.0)
    if problem is not None:
        return problem, None
    radius: float | None = None
    if cell("radius_m"):
        radius = number(cell("radius_m"))
        if radius is None or radius <= 0:
            shown = cell("radius_m") if radius is not None else repr(cell("radius_m"))
            return f"radius_m {shown} must be a positive number of metres", None
    properties: dict[str, Any] = {"id": pid, "name": name}
    for column, i in columns.items():
        if column not in KNOWN and i < len(row) and row[i].strip():
            properties[column] = row[i].strip()
    if radius is not None:
        properties["radius_m"] = radius
    place = Place.point(
        file=file,
        index=index,
        id=pid,
        properties=properties,
        lat=lat,
        lon=lon,
        radius_m=radius,
        line=line,
    )
    return None, place


def _coordinate(text: str, name: str, limit: float) -> tuple[float, str | None]:
    if not text:
        return 0.0, f"{name} is empty"
    value = number(text)
    if value is None:
        problem = f"{name} {text!r} is not a number"
        if _DECIMAL_COMMA.fullmatch(text):
            problem += f" (write decimals with a dot: {text.replace(',', '.')})"
        return 0.0, problem
    if abs(value) > limit:
        return value, f"{name} {text} is outside -{limit:g}..{limit:g}"
    return value, None


def _where(first: tuple[str, int | None, int], file: str) -> str:
    other, line, index = first
    if line is None:
        return f"{other} feature {index}"
    return f"line {line}" if other == file else f"{other}:{line}"
