"""The SDK's npm package (sdk/): `npm pack` works, the package is built from the one source
(service/static/momentcast.js and sw.js, byte for byte), it loads as an ES module and as
CommonJS, its hand-written types pass `tsc --noEmit` on a small consumer (and catch misuse),
declare every export, and its version is the server's.

TypeScript comes from the npm registry through `npm ci` and sdk/package-lock.json.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SDK = REPO / "sdk"
STATIC = REPO / "service" / "static"
NODE = shutil.which("node")
NPM = shutil.which("npm")

needs_node = pytest.mark.skipif(
    NODE is None or NPM is None,
    reason="node and npm are not installed (Debian packages `nodejs` and `npm`)",
)

PACKED_FILES = {
    "package.json",
    "README.md",
    "dist/momentcast.cjs",
    "dist/momentcast.mjs",
    "dist/momentcast.d.cts",
    "dist/momentcast.d.mts",
    "dist/sw.js",
}


def run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, (
        f"{' '.join(args)} in {cwd} exited {result.returncode}\n"
        f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return result


@dataclass
class Packed:
    tarball: Path
    files: set[str]
    root: Path  # the tarball unpacked


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Packed]:
    assert NPM is not None
    run([NPM, "ci", "--no-audit", "--no-fund"], SDK)
    out = tmp_path_factory.mktemp("pack")
    result = run([NPM, "pack", "--json", "--pack-destination", str(out)], SDK)
    [info] = json.loads(result.stdout)
    tarball = out / info["filename"]
    with tarfile.open(tarball) as tar:
        tar.extractall(out / "unpacked", filter="data")
    yield Packed(tarball, {f["path"] for f in info["files"]}, out / "unpacked" / "package")


@pytest.fixture(scope="module")
def consumer(packed: Packed, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small project that installs the tarball, as a site would."""
    assert NPM is not None
    root = tmp_path_factory.mktemp("consumer")
    (root / "package.json").write_text(
        json.dumps({"name": "consumer", "private": True, "type": "module"})
    )
    # A tarball without dependencies installs without the registry.
    run([NPM, "install", "--offline", "--no-audit", "--no-fund", str(packed.tarball)], root)
    for name, text in CONSUMER_FILES.items():
        (root / name).write_text(text)
    return root


def python_version() -> str:
    return metadata.version("momentcast")


def test_version_is_the_servers() -> None:
    package = json.loads((SDK / "package.json").read_text())
    lock = json.loads((SDK / "package-lock.json").read_text())
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert package["version"] == pyproject["project"]["version"] == python_version()
    assert lock["version"] == lock["packages"][""]["version"] == package["version"]


@needs_node
def test_pack_holds_the_served_files_byte_for_byte(packed: Packed) -> None:
    assert packed.files == PACKED_FILES
    dist = packed.root / "dist"
    # No second copy to drift: the package's CommonJS file is what /momentcast.js serves.
    assert (dist / "momentcast.cjs").read_bytes() == (STATIC / "momentcast.js").read_bytes()
    assert (dist / "sw.js").read_bytes() == (STATIC / "sw.js").read_bytes()
    for name in ("momentcast.d.cts", "momentcast.d.mts"):
        assert (dist / name).read_bytes() == (SDK / name).read_bytes()
    esm = (dist / "momentcast.mjs").read_text()
    assert (STATIC / "momentcast.js").read_text() in esm
    manifest = json.loads((packed.root / "package.json").read_text())
    assert manifest["version"] == python_version()
    for target in _targets(manifest["exports"]):
        assert (packed.root / target).is_file(), target


def _targets(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _targets(value)


@needs_node
def test_types_check_on_a_consumer(consumer: Path) -> None:
    """tsc --noEmit with node16 (import and require) and bundler resolution. The consumer's
    @ts-expect-error lines are misuse the types must refuse: tsc fails on an unused one."""
    assert NODE is not None
    tsc = SDK / "node_modules" / "typescript" / "bin" / "tsc"
    for config in ("tsconfig.json", "tsconfig.bundler.json"):
        run([NODE, str(tsc), "--noEmit", "-p", config], consumer)


@needs_node
def test_types_fail_on_misuse(consumer: Path) -> None:
    """The same check fails once a misuse is not marked as expected: the types are not `any`."""
    assert NODE is not None
    (consumer / "misuse").mkdir(exist_ok=True)
    (consumer / "misuse" / "wrong.ts").write_text(
        'import { create } from "momentcast";\ncreate({ serviceWorker: 42 });\n'
    )
    (consumer / "misuse" / "tsconfig.json").write_text(
        json.dumps({"extends": "../tsconfig.json", "include": ["wrong.ts"]})
    )
    tsc = SDK / "node_modules" / "typescript" / "bin" / "tsc"
    result = subprocess.run(
        [NODE, str(tsc), "--noEmit", "-p", "misuse/tsconfig.json"],
        cwd=consumer,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode != 0
    assert "wrong.ts(2," in result.stdout, result.stdout
    assert "not assignable to type 'string | ServiceWorkerRegistration" in result.stdout


def declared(path: Path, pattern: str) -> set[str]:
    return set(re.findall(pattern, path.read_text(), flags=re.MULTILINE))


@needs_node
def test_esm_and_commonjs_load_and_every_export_is_typed(consumer: Path) -> None:
    assert NODE is not None
    esm = json.loads(run([NODE, "run.mjs"], consumer).stdout)
    cjs = json.loads(run([NODE, "run.cjs"], consumer).stdout)
    assert esm["keys"] == cjs["keys"]
    assert esm["named"] == esm["keys"], "every property is also a named export"
    # A module leaves no global behind; the <script> (test_browser.py) defines Momentcast.
    assert esm["global"] == cjs["global"] == "undefined"
    assert esm["error"] == cjs["error"] == ["MomentcastError", "config", True]
    keys = set(esm["keys"])
    types = SDK / "momentcast.d.cts"
    assert declared(types, r"^  (?:function|class|const) ([A-Za-z_$][\w$]*)") == keys
    esm_types = SDK / "momentcast.d.mts"
    assert declared(esm_types, r"^export declare const ([A-Za-z_$][\w$]*)") == keys


CONSUMER_FILES = {
    "tsconfig.json": json.dumps(
        {
            "compilerOptions": {
                "strict": True,
                "noEmit": True,
                "target": "es2022",
                "module": "node16",
                "moduleResolution": "node16",
                "lib": ["es2022", "dom"],
                "types": [],
                "skipLibCheck": False,
            },
            "files": ["esm.ts", "cjs.cts"],
        }
    ),
    # Vite, webpack, esbuild: ES modules, bundler resolution; and the <script> global.
    "tsconfig.bundler.json": json.dumps(
        {
            "compilerOptions": {
                "strict": True,
                "noEmit": True,
                "target": "es2022",
                "module": "esnext",
                "moduleResolution": "bundler",
                "lib": ["es2022", "dom"],
                "types": [],
            },
            "files": ["esm.ts", "global.ts"],
        }
    ),
    "esm.ts": """\
import Momentcast, { create, DEFAULT_WORKER, MomentcastError } from "momentcast";
import type { Client, Moment, Options, Profile, Registration } from "momentcast";

const options: Options = { server: "https://push.example.com", serviceWorker: "/app-sw.js" };
const mc: Client = create(options);
mc.on("error", (error: MomentcastError) => console.log(error.code, error.status))
  .on("status", (status: string) => console.log(status))
  .on("registration", (registration: Registration | null) => console.log(registration?.id));

export async function start(registration: ServiceWorkerRegistration): Promise<string> {
  const own = Momentcast.create({ serviceWorker: registration, retries: 2 });
  const profile: Profile = {
    topics: ["food"], attributes: { tier: "gold", visits: 3 }, location_consent: true,
  };
  const { id } = await own.subscribe(profile);
  const moment: Moment = "go";
  own.startTracking({ moment });
  await own.signal({ moment: "know", context: { page: "menu" } });
  const updated = await own.updateProfile({ paused: true });
  try {
    await own.unsubscribe();
  } catch (error) {
    if (error instanceof MomentcastError && error.code === "not-subscribed") return DEFAULT_WORKER;
  }
  return `${id} ${updated.paused}`;
}

// Misuse the types must refuse (tsc fails on an unused @ts-expect-error).
// @ts-expect-error a number is no service worker
create({ serviceWorker: 42 });
// @ts-expect-error topics are a list
void mc.subscribe({ topics: "food" });
// @ts-expect-error not a moment
mc.setMoment("eat");
// @ts-expect-error no such method
mc.track();
// @ts-expect-error no such event
mc.on("push", () => undefined);
""",
    "cjs.cts": """\
import Momentcast = require("momentcast");

const mc: Momentcast.Client = Momentcast.create({ server: "https://push.example.com" });
const error: Momentcast.MomentcastError = new Momentcast.MomentcastError("config", "bad");
export const ok: boolean = mc.subscribed && error.code === "config";
// @ts-expect-error retries is a number
Momentcast.create({ retries: "4" });
""",
    "global.ts": """\
/// <reference types="momentcast" />
// A page that loads /momentcast.js with a <script>: the global Momentcast.
const page = Momentcast.create({ server: "https://push.example.com" });
page.setMoment("buy");
// @ts-expect-error not a moment
page.setMoment("sell");
""",
    "run.mjs": """\
import Momentcast, * as named from "momentcast";

const error = new named.MomentcastError("config", "bad");
const client = named.create({ server: "https://push.example.com" });
console.log(JSON.stringify({
  keys: Object.keys(Momentcast).sort(),
  named: Object.keys(named).filter((k) => k !== "default").sort(),
  global: typeof globalThis.Momentcast,
  error: [error.name, error.code, client instanceof named.Client],
}));
""",
    "run.cjs": """\
const Momentcast = require("momentcast");

const error = new Momentcast.MomentcastError("config", "bad");
const client = Momentcast.create({ server: "https://push.example.com" });
console.log(JSON.stringify({
  keys: Object.keys(Momentcast).sort(),
  global: typeof globalThis.Momentcast,
  error: [error.name, error.code, client instanceof Momentcast.Client],
}));
""",
}
