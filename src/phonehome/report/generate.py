"""Turn raw Allure results into a report that never phones home.

``python -m phonehome.report.generate RESULTS [RESULTS ...] OUT [--history FILE]``

Runs the pinned Allure 3 generator (npm ``allure``, installed by ``npm ci`` from the committed lockfile) with a
config of our own — phonehome's failure categories and the history file CI saves and restores — after adding the
"what changed since the previous run" results (:mod:`phonehome.report.diff`). Allure 3 hard-codes Google Analytics
into every report (upstream allure3#476); a privacy tool's report must not make a single request off the machine,
so every generated file is stripped of it and of any other off-machine reference, and the output is verified:
if anything remains the command fails and the report is removed rather than published.

Several RESULTS folders (one per nightly shard) merge into one report. Exit 0 on success, 2 on bad input, 3 when
the generator failed or the report could not be made clean.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from phonehome.errors import InputError, PhonehomeError
from phonehome.manifest.model import MANIFEST_NAME, RESULTS_COPY_NAME, SIGNATURE_SUFFIX
from phonehome.report import diff, verdicts

#: the generator takes about 2 s for a small run; a farm's month of history and big pcaps need more
GENERATE_TIMEOUT_S = 600
#: how many runs the history file keeps (one JSON line per run)
HISTORY_LIMIT_RUNS = 60
ALLURE_BIN_ENV = "PHONEHOME_ALLURE_BIN"
REPORT_NAME = "phonehome: phones phoning home"
#: where Allure's own page goes: ``index.html`` is the verdict page, the report's opening page
ALLURE_PAGE = "allure.html"

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_FAULT = 3

#: the failure categories of a privacy run. A leak or denied traffic is an assertion (failed); a device or
#: capture problem is an error (broken). The reporter sets the ``verdict`` label; message patterns are a fallback
#: for results written without it.
CATEGORIES: list[dict[str, object]] = [
    {"name": "Traffic to a denied host",
     "matchers": [{"statuses": ["failed"], "labels": {"verdict": "^traffic to a denied host$"}},
                  {"statuses": ["failed"], "message": "[Dd]enied host"}]},
    {"name": "Cleartext identifier leak",
     "matchers": [{"statuses": ["failed"], "labels": {"verdict": "^cleartext identifier leak$"}},
                  {"statuses": ["failed"], "message": "[Cc]leartext"}]},
    {"name": "Capture fault",
     "matchers": [{"statuses": ["broken"], "labels": {"verdict": "^capture fault$"}},
                  {"statuses": ["broken"], "message": "CaptureError"}]},
    {"name": "Device fault",
     "matchers": [{"statuses": ["broken"], "labels": {"verdict": "^device fault$"}},
                  {"statuses": ["broken"], "message": "DeviceError"}]},
]

# --- what counts as "off the machine" ----------------------------------------------------------------------------

#: hosts a report may reference: itself
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
#: XML namespace names are identifiers compared as strings, never fetched; the app needs them to build SVG
XML_NAMESPACES = frozenset({
    "http://www.w3.org/2000/svg", "http://www.w3.org/1999/xhtml", "http://www.w3.org/1998/Math/MathML",
    "http://www.w3.org/XML/1998/namespace", "http://www.w3.org/2000/xmlns/", "http://www.w3.org/1999/xlink",
})
#: tracker fingerprints that must not occur in the app files (data may quote any host a phone contacted)
ANALYTICS_MARKERS = ("googletagmanager", "google-analytics", "gtag(", "dataLayer", "G-LNDJ3J7WT0")
#: files the browser executes or renders as the app; data files (test results, attachments) are evidence and
#: may quote any URL a phone contacted, which is text, not a reference
APP_SUFFIXES = (".html", ".htm", ".js", ".mjs", ".css")
#: license notices sit beside the bundle and are never loaded by the report
LICENSE_SUFFIX = ".LICENSE.txt"

_SCRIPT_BLOCK = re.compile(r"<script\b[^>]*>.*?</script>\s*", re.IGNORECASE | re.DOTALL)
_REMOTE_SRC = re.compile(r"""\bsrc\s*=\s*["']?(?:https?:)?//""", re.IGNORECASE)
_URL_HOST = re.compile(r"""^(?:https?:)?//([A-Za-z0-9.\-]+|\[[0-9a-fA-F:]+\])""")
_ANY_URL = re.compile(r"""https?://[^\s"'`<>()\\]*""")


class ReportError(PhonehomeError):
    """The report could not be generated, or could not be made free of off-machine references."""


@dataclass(frozen=True)
class Leftover:
    """An off-machine reference still present in a generated file."""

    path: Path
    text: str

    def __str__(self) -> str:
        return f"{self.path}: {self.text[:120]}"


# --- locating the generator --------------------------------------------------------------------------------------


def _candidate_roots() -> Iterator[Path]:
    yield from (Path.cwd(), *Path.cwd().parents)
    here = Path(__file__).resolve()
    yield from here.parents


def find_allure() -> Path:
    """The pinned generator: ``$PHONEHOME_ALLURE_BIN``, else ``node_modules/.bin/allure`` of the project."""
    override = os.environ.get(ALLURE_BIN_ENV)
    if override:
        found = shutil.which(override)
        if not found:
            raise InputError(None, f"{ALLURE_BIN_ENV}={override} is not an executable",
                             fix="point it at node_modules/.bin/allure or unset it")
        return Path(found)
    for root in _candidate_roots():
        candidate = root / "node_modules" / ".bin" / "allure"
        if (root / "package.json").is_file() and candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise InputError(None, "the Allure 3 generator is not installed (no node_modules/.bin/allure)",
                     fix="run 'npm ci' in the phonehome checkout, or bash ci/setup.sh")


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise InputError(None, "node is not installed", fix="apt-get install nodejs, or bash ci/setup.sh")
    return node


# --- generating ------------------------------------------------------------------------------------------------


def _check_results(results_dirs: Sequence[Path]) -> None:
    """Fail closed: a report made from nothing would look like a clean night."""
    for results_dir in results_dirs:
        if not results_dir.is_dir():
            raise InputError(results_dir, "no such results folder", fix="pass the folder given to --alluredir")
    if not any(any(d.glob("*-result.json")) for d in results_dirs):
        joined = ", ".join(str(d) for d in results_dirs)
        raise InputError(joined, "no Allure results (*-result.json) in the results folder(s)",
                         fix="run pytest with --alluredir first; an empty run is not a report")


def allure_config(out: Path, history: Path | None) -> dict[str, object]:
    config: dict[str, object] = {"name": REPORT_NAME, "output": str(out), "categories": CATEGORIES}
    if history is not None:
        config["historyPath"] = str(history)
        config["historyLimit"] = HISTORY_LIMIT_RUNS
    return config


def run_generator(results_dirs: Sequence[Path], out: Path, history: Path | None, workdir: Path,
                  *, attachments: Sequence[Path] = ()) -> None:
    config_path = workdir / "allurerc.json"
    config = allure_config(out, history)
    if attachments:  # Allure 3 "global attachments" (glob patterns): the run's evidence manifest
        config["globalAttachments"] = [str(path) for path in attachments]
    config_path.write_text(json.dumps(config, indent=1), encoding="utf-8")
    command = [_node(), str(find_allure()), "generate", "--config", str(config_path), "--output", str(out),
               *(str(d) for d in results_dirs)]
    env = {**os.environ, "ALLURE_NO_ANALYTICS": "true", "NO_COLOR": "1"}
    try:
        proc = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True,
                              timeout=GENERATE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise ReportError(f"allure generate did not finish in {GENERATE_TIMEOUT_S} s: {' '.join(command)}") from None
    if proc.returncode != 0 or not (out / "index.html").is_file():
        tail = (proc.stderr or proc.stdout).strip()[-800:]
        raise ReportError(f"allure generate failed (rc={proc.returncode}): {' '.join(command)}: {tail}")


# --- stripping and verifying -----------------------------------------------------------------------------------


def _is_local(url: str) -> bool:
    match = _URL_HOST.match(url)
    return match is not None and match.group(1).lower() in LOCAL_HOSTS


def _is_off_machine(url: str) -> bool:
    if url.rstrip("/") in {ns.rstrip("/") for ns in XML_NAMESPACES}:
        return False
    if not _URL_HOST.match(url):  # "http://" alone or "https://${host}" built from report data at run time
        return False
    return not _is_local(url)


def _strip_script(block: re.Match[str]) -> str:
    text = block.group(0)
    head = text[: text.find(">") + 1]
    if _REMOTE_SRC.search(head) or any(marker in text for marker in ANALYTICS_MARKERS):
        return ""
    return text


def strip_text(text: str, *, is_html: bool) -> str:
    """Remove tracker scripts (HTML) and neutralise absolute off-machine URL literals (links, viewers)."""
    if is_html:
        text = _SCRIPT_BLOCK.sub(_strip_script, text)
    return _ANY_URL.sub(lambda m: m.group(0) if not _is_off_machine(m.group(0)) else "about:blank", text)


def _app_files(out: Path) -> Iterator[Path]:
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.name.endswith(APP_SUFFIXES) and not path.name.endswith(LICENSE_SUFFIX):
            yield path


def strip_report(out: Path) -> int:
    """Strip every app file of the report in place; returns how many files changed."""
    changed = 0
    for path in _app_files(out):
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        clean = strip_text(text, is_html=path.suffix in (".html", ".htm"))
        if clean != text:
            path.write_text(clean, encoding="utf-8", errors="surrogateescape")
            changed += 1
    return changed


def find_leftovers(out: Path) -> list[Leftover]:
    """Every tracker marker and off-machine reference left in the app files (HTML, scripts, styles)."""
    leftovers: list[Leftover] = []
    for path in _app_files(out):
        text = path.read_text(encoding="utf-8", errors="replace")
        leftovers.extend(Leftover(path, marker) for marker in ANALYTICS_MARKERS if marker in text)
        leftovers.extend(Leftover(path, m.group(0)) for m in _ANY_URL.finditer(text) if _is_off_machine(m.group(0)))
        leftovers.extend(Leftover(path, m.group(0)) for m in re.finditer(r"<script\b[^>]*>", text)
                         if _REMOTE_SRC.search(m.group(0)))
    return leftovers


def make_clean(out: Path) -> None:
    """Strip the report, then verify it; fail closed: a report that would still phone home is removed."""
    strip_report(out)
    leftovers = find_leftovers(out)
    if leftovers:
        shutil.rmtree(out)
        listed = "; ".join(str(item) for item in leftovers[:5])
        raise ReportError(f"the generated report still references hosts off this machine ({len(leftovers)}): "
                          f"{listed}; the report was removed, not published")


# --- the opening page: a verdict per phone ---------------------------------------------------------------------


def manifests_of(results_dirs: Sequence[Path]) -> list[Path]:
    """The evidence manifests the runs left in their results folders (one per shard)."""
    return [d / RESULTS_COPY_NAME for d in results_dirs if (d / RESULTS_COPY_NAME).is_file()]


def copy_manifests(manifests: Sequence[Path], dest: Path) -> list[tuple[str, str]]:
    """Copy each manifest (and its signature) into ``dest`` as ``manifest.json`` (``manifest-2.json``... for
    further shards); returns the (name, file) links of the verdict page."""
    links = []
    for number, source in enumerate(manifests, start=1):
        name = MANIFEST_NAME if number == 1 else MANIFEST_NAME.replace(".json", f"-{number}.json")
        shutil.copyfile(source, dest / name)
        links.append(("evidence manifest" if len(manifests) == 1 else f"evidence manifest {number}", name))
        signature = source.with_name(source.name + SIGNATURE_SUFFIX)
        if signature.is_file():
            shutil.copyfile(signature, dest / (name + SIGNATURE_SUFFIX))
            links.append(("its signature", name + SIGNATURE_SUFFIX))
    return links


def write_verdict_page(results_dirs: Sequence[Path], out: Path) -> Path:
    """Make the report open with one verdict per phone (:mod:`phonehome.report.verdicts`): Allure's own page
    moves to ``allure.html`` (its data loads relative to it; a result opens at ``allure.html#<id>``) and
    ``index.html`` becomes the verdict page, linking into it and to the evidence manifests, copied beside it."""
    index = out / "index.html"
    index.replace(out / ALLURE_PAGE)
    files = copy_manifests(manifests_of(results_dirs), out)
    links = verdicts.report_links(out, allure_page=ALLURE_PAGE, changes_prefix=diff.CHANGES_FULL_NAME_PREFIX,
                                  files=files)
    records = verdicts.load_records(results_dirs)
    warnings = [f"phone {device} ran in {len(dirs)} shards ({', '.join(dirs)}): each capture may hold the other "
                "run's traffic and its results are merged; give each runner its own inventory "
                "(PHONEHOME_INVENTORY)" for device, dirs in verdicts.phones_in_several(results_dirs).items()]
    for warning in warnings:
        print(f"phonehome report: warning: {warning}", file=sys.stderr)
    page = verdicts.verdict_page(verdicts.phone_verdicts(records), records, links, title=REPORT_NAME,
                                 warnings=warnings)
    index.write_text(page, encoding="utf-8")
    return index


def generate(results_dirs: Sequence[Path], out: Path, *, history: Path | None = None) -> Path:
    """Generate the report into ``out`` (emptied first), add the verdict page, strip and verify it; returns
    ``out/index.html`` (the verdict page; the Allure app is ``allure.html`` beside it)."""
    results_dirs = [d.resolve() for d in results_dirs]
    out = out.resolve()
    _check_results(results_dirs)
    if history is not None:
        history = history.resolve()
        history.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        shutil.rmtree(out)  # Allure 3 does not clean its output: stale files would mix two runs
    with tempfile.TemporaryDirectory(prefix="phonehome-report-") as tmp:
        workdir = Path(tmp)
        extra: list[Path] = []
        changes: tuple[diff.Baseline, dict[str, diff.DeviceSnapshot]] | None = None
        if history is not None:
            extra_dir = workdir / "what-changed"
            changes = diff.add_changes(results_dirs, history, extra_dir)
            extra.append(extra_dir)
        attachments = copy_manifests(manifests_of(results_dirs), workdir)
        run_generator([*results_dirs, *extra], out, history, workdir,
                      attachments=[workdir / name for _, name in attachments])
    write_verdict_page(results_dirs, out)
    make_clean(out)
    if history is not None and changes is not None:
        diff.save_baseline(diff.baseline_path_for(history), *changes)
    return out / "index.html"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m phonehome.report.generate",
        description="Generate the Allure report of a phonehome run, with no analytics and no off-machine requests.")
    parser.add_argument("paths", nargs="+", metavar="RESULTS... OUT",
                        help="one or more Allure results folders (one per shard), then the report folder "
                             "(emptied first)")
    parser.add_argument("--history", type=Path, default=None, metavar="FILE",
                        help="Allure history file (JSON lines) to read and append to; the 'what changed' "
                             "baseline is kept next to it. CI saves and restores both.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.paths) < 2:
        print(f"{parser.prog}: error: need RESULTS and OUT (see --help)", file=sys.stderr)
        return EXIT_USAGE
    *results, out = (Path(p) for p in args.paths)
    try:
        index = generate(results, out, history=args.history)
    except InputError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PhonehomeError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_FAULT
    print(f"report: {index}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
