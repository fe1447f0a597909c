"""`make lab` in a real browser: JupyterLab, started by cutlib.lab as `make lab` starts it, driven by Debian's
Chromium (headless, through Playwright; no browser is downloaded). The suite's notebooks are opened, edited and
run from the UI, and the test asserts what a person looks at: the PASS table, inline images, widget progress
bars, no red output, the one-line error of a bad parameter, and what a save leaves on disk.

Screenshots (PNG), timings.json and the JupyterLab log go to runs/lab-test/: emptied when the module starts,
kept afterwards, so a failure leaves them (and <test>-FAILED.png) to look at. JupyterLab serves a copy of
notebooks/, so edits and autosaves never touch the checkout.
"""
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from cutlib.nbbuild import NOTEBOOK_DIR, NOTEBOOKS, render

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "runs" / "lab-test"
CHROMIUM = os.environ.get("CUTLIB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
# As root Chromium needs --no-sandbox; the rest keep it from calling out (this machine has no network to offer).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TOKEN = "cutlib-lab-test"
RUN_TIMEOUT_S = 300  # one notebook's Run All: 01 and 03 take 20-60 s on 2 busy cores at smoke sizes

pytestmark = pytest.mark.slow
TIMES: dict[str, float] = {}


@contextmanager
def timed(name):
    t0 = time.perf_counter()
    yield
    TIMES[name] = round(time.perf_counter() - t0, 1)


@pytest.fixture(scope="module")
def shots():
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    t0 = time.perf_counter()
    yield SHOTS
    TIMES["module total"] = round(time.perf_counter() - t0, 1)
    (SHOTS / "timings.json").write_text(json.dumps(TIMES, indent=1) + "\n")


@pytest.fixture(scope="module")
def chromium():
    if not CHROMIUM:
        if os.environ.get("CI"):  # .ci/run installs it: a skip there would hide a broken install
            pytest.fail("no Chromium in CI: .ci/run should have installed Debian's chromium")
        pytest.skip("no Chromium here (Debian: apt-get install chromium; .ci/run installs it)")
    return CHROMIUM


@pytest.fixture(scope="module")
def smoke():
    from cutlib.config import load_yaml

    return load_yaml(ROOT / "params/smoke.yaml")


@pytest.fixture(scope="module")
def lab(chromium, shots, tmp_path_factory):
    """JupyterLab as `make lab` starts it, on 127.0.0.1 with a token, serving a copy of notebooks/, with its
    own Jupyter folders (so neither this machine's Jupyter settings nor the test's leak either way)."""
    project, home = tmp_path_factory.mktemp("project"), tmp_path_factory.mktemp("jupyter-home")
    shutil.copytree(NOTEBOOK_DIR, project / "notebooks")
    env = {**os.environ, "CUTLIB_DEMO_DIR": str(home / "demo"), "CUTLIB_CACHE_DIR": str(home / "cache"),
           "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_DATA_DIR": str(home / "data"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces")}
    # A user-level "python3" kernelspec that runs something else: `make lab` must still use the venv's own.
    decoy = home / "data" / "kernels" / "python3"
    decoy.mkdir(parents=True)
    (decoy / "kernel.json").write_text(json.dumps({"argv": ["/usr/bin/false", "{connection_file}"],
                                                  "display_name": "someone else's Python", "language": "python"}))
    # What a person answers once to JupyterLab's "get notified about official Jupyter news?" toast: no.
    notif = home / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notif.parent.mkdir(parents=True)
    notif.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    log = open(shots / "jupyterlab.log", "w")
    with timed("jupyterlab start, demo data meanwhile"):
        proc = subprocess.Popen(
            [sys.executable, "-m", "cutlib.lab", f"--root={project}", "--no-browser", "--ServerApp.ip=127.0.0.1",
             "--ServerApp.port=0", f"--IdentityProvider.token={TOKEN}"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            from cutlib.data import make_demo_data

            # the kernels' "demo" data, made here while JupyterLab starts (two cores, two single-threaded jobs)
            make_demo_data(env["CUTLIB_DEMO_DIR"])
            url = _wait_for_server(proc, home / "runtime", shots / "jupyterlab.log")
        except BaseException:
            proc.kill()
            raise
    try:
        yield {"url": url, "env": env, "project": project}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _wait_for_server(proc, runtime: Path, log: Path, timeout: float = 120) -> str:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            pytest.fail(f"JupyterLab exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        for info in runtime.glob("jpserver-*.json"):  # written once the server listens; names its port
            try:
                url = json.loads(info.read_text())["url"].rstrip("/")
                _api(url, "/api/status")
                return url
            except (ValueError, KeyError, OSError):
                pass
        time.sleep(0.3)
    pytest.fail(f"JupyterLab not up after {timeout} s:\n{log.read_text()[-3000:]}")


def _api(url, path, method="GET"):
    req = urllib.request.Request(f"{url}{path}", method=method, headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
    return json.loads(body) if body else None


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, lab, request):
    """A fresh browser tab; on failure its last state is saved as <test name>-FAILED.png."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    if getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed:
        pg.screenshot(path=str(SHOTS / f"{request.node.name}-FAILED.png"))
    for s in _api(lab["url"], "/api/sessions"):  # each test's kernel ends with it (torch is ~0.5 GB a kernel)
        _api(lab["url"], f"/api/sessions/{s['id']}", "DELETE")
    ctx.close()


# --- the UI, as a person uses it -----------------------------------------------------------------------------

def open_notebook(page, lab, name):
    # ?reset: a fresh workspace, so the one notebook asked for is the one open tab
    page.goto(f"{lab['url']}/lab/tree/notebooks/{name}?reset&token={TOKEN}")
    cells = len(NOTEBOOKS[name]()["cells"])
    page.wait_for_function(  # the file's cells are in (JupyterLab shows one empty cell while it loads)
        f"() => document.querySelectorAll('.jp-NotebookPanel .jp-Notebook-cell').length == {cells}")
    # the status bar names the kernel and says it is idle: the venv's kernel started
    page.locator(".jp-StatusBar-TextItem", has_text=re.compile(r"^Python 3 \(ipykernel\) \| Idle$")).wait_for(
        timeout=120_000)
    return page.locator(".jp-NotebookPanel:visible")


def set_parameter(panel, page, name, value) -> tuple[str, str]:
    """Type a new value over the old one on the parameter's line, keeping its type and help; (old, new) line."""
    line = panel.locator(".cm-line").filter(has_text=re.compile(rf"^{name}: \w+ = "))
    assert line.count() == 1, f"parameter line for {name!r}"
    old = line.inner_text()
    new = re.sub(r"^(\w+: \w+ = )(.*?)((  #.*)?)$", lambda m: f"{m[1]}{value!r}{m[3]}", old)
    line.click()
    page.keyboard.press("Home")
    page.keyboard.press("Shift+End")
    page.keyboard.insert_text(new)
    assert panel.locator(".cm-line").filter(has_text=re.compile(rf"^{name}: ")).inner_text() == new
    return old, new


def set_smoke_parameters(panel, page, name, smoke, skip=("data",)) -> dict[str, str]:
    """The test's small sizes (params/smoke.yaml) typed into those lines of the parameters cell that exist."""
    import papermill

    declared = papermill.inspect_notebook(str(NOTEBOOK_DIR / name))
    return dict(set_parameter(panel, page, key, value) for key, value in smoke.items()
                if key in declared and key not in skip)


def run_all(panel, page, timeout_s=RUN_TIMEOUT_S):
    """Run > Run All Cells from the menu bar; returns when no cell is queued or running and the kernel is idle."""
    page.keyboard.press("Escape")  # leave the cell editor, as a person does after typing
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    page.wait_for_function(
        """() => {
            const nb = [...document.querySelectorAll('.jp-NotebookPanel')].find(p => p.offsetParent);
            const prompts = [...nb.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.textContent);
            const idle = nb.querySelector(".jp-Notebook-ExecutionIndicator[data-status='idle']");
            return idle && prompts.some(p => /\\d/.test(p)) && !prompts.some(p => p.includes('*'));
        }""", timeout=timeout_s * 1000, polling=500)


def outputs(panel, mime=None):
    return panel.locator(".jp-OutputArea-output" + (f"[data-mime-type='{mime}']" if mime else ""))


def prompts(panel):
    return [p.strip() for p in panel.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()]


def shot(page, name):
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def assert_ran_cleanly(panel):
    """Every code cell ran, and nothing shows on red: no error, no warning, no stray stderr text."""
    assert all(re.fullmatch(r"\[\d+\]:", p) for p in prompts(panel)), prompts(panel)
    red = outputs(panel, "application/vnd.jupyter.stderr")
    assert red.count() == 0, red.all_inner_texts()


def assert_inline_images(panel, at_least):
    """PNG outputs drawn in the page: decoded by the browser and laid out at a visible size."""
    from playwright.sync_api import expect

    imgs = outputs(panel, "image/png").locator("img")
    assert imgs.count() >= at_least
    for img in imgs.all():
        img.scroll_into_view_if_needed()
        expect(img).to_be_visible()
        assert img.evaluate("i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0")
        box = img.bounding_box()
        assert box["width"] >= 32 and box["height"] >= 32, box


# --- the tests -----------------------------------------------------------------------------------------------

def test_make_lab_serves_the_venvs_own_kernel(lab):
    dry = subprocess.run(["make", "-n", "lab"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "-m cutlib.lab" in dry  # what the fixture `lab` starts
    specs = _api(lab["url"], "/api/kernelspecs")
    assert specs["default"] == "python3"
    assert specs["kernelspecs"]["python3"]["spec"]["argv"][0] == sys.executable  # not the user-level decoy


def test_01_sanity_runs_from_the_ui(page, lab, smoke):
    from playwright.sync_api import expect

    with timed("01_sanity open"):
        panel = open_notebook(page, lab, "01_sanity.ipynb")
    edits = set_smoke_parameters(panel, page, "01_sanity.ipynb", smoke)
    with timed("01_sanity run all"):
        run_all(panel, page)
    table = outputs(panel).filter(has_text="OVERALL: PASS")
    assert table.count() == 1  # once: the cell used to print it twice
    table.scroll_into_view_if_needed()
    expect(table).to_be_visible()
    text = table.inner_text()
    for check in ("environment", "data", "networks", "training step"):
        assert re.search(rf"^{check}\s+PASS\s+\S", text, re.M), (check, text)
    assert "ETA" in text and text.count("OVERALL") == 1
    shot(page, "01_sanity")
    assert_inline_images(panel, 2)  # the data grid and the photo -> output grid
    assert_ran_cleanly(panel)

    # Ctrl+S writes the stored notebook with the person's edits and nothing else: no outputs, no counts,
    # no kernel metadata (cutlib.lab's pre-save hook), in the stored layout: `git diff` shows the edits alone.
    page.keyboard.press("Control+s")
    expect(page.locator(".lm-TabBar-tab.jp-mod-dirty")).to_have_count(0)
    expected = NOTEBOOKS["01_sanity.ipynb"]()
    for cell in expected["cells"]:
        cell["source"] = [edits.get(s.rstrip("\n"), s.rstrip("\n")) + "\n" * s.endswith("\n") for s in cell["source"]]
    assert (lab["project"] / "notebooks/01_sanity.ipynb").read_text() == render(expected)


@pytest.fixture(scope="module")
def trained_run(lab, smoke):
    """A checkpoint where `make demo` leaves one (cutlib.suite's layout under runs/demo), from 4 real
    training steps at 32 px: 03's default run_dir must find it there."""
    from cutlib.config import DEMO_OUT, TrainConfig, suite_layout
    from cutlib.data import make_demo_data
    from cutlib.train import train

    with timed("checkpoint for 03 (4 steps)"):
        demo = make_demo_data(lab["env"]["CUTLIB_DEMO_DIR"])  # made by the fixture `lab`: found complete
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        cfg = TrainConfig(**{**{k: v for k, v in smoke.items() if k in fields}, "data": str(demo),
                             "eval_every": 0, "out_dir": str(lab["project"] / suite_layout(DEMO_OUT)["out_dir"])})
        train(cfg, progress=False)
    return Path(cfg.out_dir)


def test_03_generate_zip_runs_from_the_ui(page, lab, smoke, trained_run):
    from playwright.sync_api import expect

    with timed("03_generate_zip open"):
        panel = open_notebook(page, lab, "03_generate_zip.ipynb")
    # run_dir keeps its default, relative to the project root as for `make demo` (the kernel's cwd)
    set_smoke_parameters(panel, page, "03_generate_zip.ipynb", smoke)
    # No MiFID here: Inception on CPU took 2 of this test's 2.5 minutes; test_notebooks runs it through papermill
    set_parameter(panel, page, "evaluate", False)
    with timed("03_generate_zip run all"):
        run_all(panel, page)
    # tqdm drawn as an ipywidgets progress bar (a text bar without the widget manager in the page)
    rows = outputs(panel).filter(has=page.locator(".widget-hprogress"))
    assert rows.count() == 1, rows.all_inner_texts()
    translate = rows.first
    translate.scroll_into_view_if_needed()
    expect(translate).to_be_visible()
    expect(translate).to_contain_text("translate: 100%")
    expect(translate).to_contain_text("30/30")
    bar = translate.locator(".widget-hprogress .progress-bar")
    expect(bar).to_have_class(re.compile(r"\bprogress-bar-success\b"))  # green: finished
    assert bar.evaluate("b => b.getBoundingClientRect().width / b.parentElement.getBoundingClientRect().width") > 0.99
    shot(page, "03_generate_zip")
    assert_inline_images(panel, 1)  # random photo | painting pairs
    expect(outputs(panel).filter(has_text="'valid': True")).to_have_count(1)  # generate_zip's result
    assert_ran_cleanly(panel)
    from cutlib.generate import validate_zip

    assert validate_zip(trained_run / "images.zip", 30, 30)["count"] == 30


def test_02_bad_parameter_shows_one_line_error(page, lab):
    from playwright.sync_api import expect

    with timed("02_train open"):
        panel = open_notebook(page, lab, "02_train.ipynb")
    set_parameter(panel, page, "steps", -5)
    with timed("02_train run all"):
        run_all(panel, page, timeout_s=120)
    red = outputs(panel, "application/vnd.jupyter.stderr")
    assert red.count() == 1, red.all_inner_texts()
    red.first.scroll_into_view_if_needed()
    expect(red.first).to_be_visible()
    shot(page, "02_train_bad_parameter")
    # the whole red box is the one line, with no frames of cutlib or contextlib above it
    assert red.first.inner_text().strip() == "NotebookError: ConfigError: steps=-5: must be >= 1"
    # Run All stopped at the failing cell (the third code cell, after the imports and the parameters)
    code_cells = sum(c["cell_type"] == "code" for c in NOTEBOOKS["02_train.ipynb"]()["cells"])
    assert code_cells > 3
    assert prompts(panel) == ["[1]:", "[2]:", "[3]:"] + ["[ ]:"] * (code_cells - 3)
