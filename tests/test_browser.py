"""The course in a real browser: JupyterLab runs every lesson and a student sees it all work.

Each test starts from what a student does: open a lesson, Run All, look, click. A lesson runs once in
JupyterLab for what it renders and for its steppers (on the same page), once in the dark theme and once
where graphviz's dot is missing. JupyterLab runs on
127.0.0.1 (a free port, no token, its config, runtime, settings and workspaces in a temp dir) and
headless chromium drives it through Playwright. Screenshots of every lesson go to the directory
named by COURSE_SCREENSHOTS (a fresh temp dir when it is unset), light and dark theme both.
Needs chromium (Debian's package) and the playwright Python package; skipped without them.
"""
import contextlib
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from types import SimpleNamespace

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LESSONS = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "lessons", "*.ipynb")))


def builds_a_stepper(lesson):
    """Whether the lesson builds a vmkit.viz.stepper.Stepper (or a subclass): the widget whose buttons
    test_steppers_answer_their_buttons clicks. Other lessons are left out rather than run for nothing."""
    import importlib
    import pkgutil
    import nbformat
    import vmkit.viz
    from vmkit.viz.stepper import Stepper
    for module in pkgutil.iter_modules(vmkit.viz.__path__):
        importlib.import_module(f"vmkit.viz.{module.name}")
    kinds, names = [Stepper], set()
    while kinds:
        kind = kinds.pop()
        names.add(kind.__name__)
        kinds.extend(kind.__subclasses__())
    source = "\n".join(c.source for c in nbformat.read(os.path.join(ROOT, lesson), as_version=4).cells
                       if c.cell_type == "code")
    return any(re.search(rf"\b{name}\(", source) for name in names)


STEPPER_LESSONS = [lesson for lesson in LESSONS if builds_a_stepper(lesson)]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
DARK = "JupyterLab Dark"
RUN_ALL_SECONDS = 120

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (sudo apt-get install chromium)")]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
expect = sync_api.expect


# --- JupyterLab, as a student's machine runs it --------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_settings(settings_dir, plugin, name, values):
    folder = os.path.join(settings_dir, plugin)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{name}.jupyterlab-settings"), "w") as f:
        json.dump(values, f)


@contextlib.contextmanager
def jupyterlab(home, *, theme=None, path=None, course_defaults=False):
    """A JupyterLab server on a copy of the lessons; yields its base URL. `theme` names a JupyterLab
    theme, `path` replaces PATH for the server and so for every kernel it starts. The news and the
    update check are off through the test's own settings, or, with `course_defaults`, through only
    what `course.py` writes into the environment (course.jupyterlab_settings), in a prefix of its own."""
    # the browser works on copies: whatever JupyterLab saves never touches the course's notebooks
    root = os.path.join(home, "course")
    shutil.copytree(os.path.join(ROOT, "lessons"), os.path.join(root, "lessons"))
    settings = os.path.join(home, "settings")
    write_settings(settings, "@jupyterlab/docmanager-extension", "plugin", {"autosave": False})
    if not course_defaults:
        # no news, no update check, no pop-ups over the notebook
        write_settings(settings, "@jupyterlab/apputils-extension", "notification",
                       {"fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True})
    # render every cell, not only the ones in view, so every output can be checked
    write_settings(settings, "@jupyterlab/notebook-extension", "tracker", {"windowingMode": "none"})
    if theme:
        write_settings(settings, "@jupyterlab/apputils-extension", "themes", {"theme": theme})
    bindir = os.path.dirname(sys.executable)
    env = dict(os.environ, PATH=bindir + os.pathsep + (path if path is not None else os.environ.get("PATH", "")),
               JUPYTER_CONFIG_DIR=os.path.join(home, "config"), JUPYTER_RUNTIME_DIR=os.path.join(home, "runtime"),
               JUPYTER_DATA_DIR=os.path.join(home, "data"), IPYTHONDIR=os.path.join(home, "ipython"),
               PYTHONPATH=ROOT)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [os.path.join(bindir, "jupyter"), "lab", "--no-browser", "--allow-root",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
               "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={root}",
               f"--LabApp.workspaces_dir={os.path.join(home, 'workspaces')}",
               f"--LabApp.user_settings_dir={settings}"]
    if course_defaults:
        from conftest import load_course  # course.py, a script beside tests/
        prefix = os.path.join(home, "prefix")
        load_course().jupyterlab_settings(prefix)
        command.append(f"--LabApp.app_settings_dir={os.path.join(prefix, 'share', 'jupyter', 'lab', 'settings')}")
        env["JUPYTER_CONFIG_PATH"] = os.path.join(prefix, "etc", "jupyter")
    else:
        command += ["--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    log_path = os.path.join(home, "server.log")
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root,
                                  start_new_session=True)      # its kernels die with it
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/api/status", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    pytest.fail("JupyterLab did not start:\n" + open(log_path).read()[-3000:])
                time.sleep(0.2)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def path_without(program):
    """PATH as it is, except that `program` cannot be found: each directory that holds it is
    replaced by a directory of links to everything else in it."""
    shadow_root = tempfile.mkdtemp(prefix=f"path-without-{program}-")
    dirs = []
    for k, folder in enumerate(os.environ.get("PATH", "").split(os.pathsep)):
        if not os.path.exists(os.path.join(folder, program)):
            dirs.append(folder)
            continue
        shadow = os.path.join(shadow_root, str(k))
        os.mkdir(shadow)
        for name in os.listdir(folder):
            if name != program:
                os.symlink(os.path.join(folder, name), os.path.join(shadow, name))
        dirs.append(shadow)
    return os.pathsep.join(dirs), shadow_root


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab in its default (light) theme."""
    with jupyterlab(str(tmp_path_factory.mktemp("lab"))) as url:
        yield url


@pytest.fixture(scope="module")
def dark_lab(tmp_path_factory):
    """JupyterLab in its dark theme."""
    with jupyterlab(str(tmp_path_factory.mktemp("dark-lab")), theme=DARK) as url:
        yield url


@pytest.fixture(scope="module")
def lab_without_dot(tmp_path_factory):
    """JupyterLab whose kernels cannot find graphviz's dot, as on a machine without graphviz."""
    path, shadow = path_without("dot")
    try:
        with jupyterlab(str(tmp_path_factory.mktemp("lab-without-dot")), path=path) as url:
            yield url
    finally:
        shutil.rmtree(shadow, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def screenshots():
    folder = os.environ.get("COURSE_SCREENSHOTS") or tempfile.mkdtemp(prefix="course-screenshots-")
    os.makedirs(folder, exist_ok=True)
    return folder


# --- what a student does ----------------------------------------------------------------------------

ALL_CELLS_RAN = """() => {
    const prompts = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputArea-prompt')]
        .map(p => p.textContent);
    const ran = prompts.filter(t => /\\[\\d+\\]/.test(t)).length;
    const failed = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) [data-mime-type="application/vnd.jupyter.error"]');
    return prompts.length > 0 && !prompts.some(t => t.includes('*')) && (ran === prompts.length || (failed && ran > 0));
}"""


def open_and_run_all(browser, url, lesson):
    """Open `lesson` in JupyterLab, Run All, and wait until every cell has run (or one failed)."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(30_000)
    page.goto(f"{url}/lab/tree/{lesson}?reset")          # a fresh workspace: no other lesson open beside it
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell")
    # Run All only once the kernel is up, or the first cells wait behind its start-up
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']")
    expect(page.locator(".jp-StatusBar-Widget", has_text="| Idle")).to_have_count(1, timeout=60_000)
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.click("li[data-command='runmenu:run-all']")
    try:
        page.wait_for_function(ALL_CELLS_RAN, timeout=RUN_ALL_SECONDS * 1000, polling=250)
    except sync_api.TimeoutError:
        prompts = page.locator(".jp-CodeCell .jp-InputArea-prompt").all_inner_texts()
        page.screenshot(path=os.path.join(tempfile.gettempdir(), "run-all-timeout.png"))   # to see why
        page.close()
        pytest.fail(f"Run All of {lesson} did not finish in {RUN_ALL_SECONDS} s; prompts: {' '.join(prompts)}")
    return page


def errors_on(page):
    """Tracebacks and stderr text in the notebook's outputs."""
    found = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error'], "
                         ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    return [text[:1500] for text in found.all_inner_texts()]


def save_screens(page, folder, name):
    """One screenshot per screenful of the notebook, which scrolls inside its own panel."""
    scroller = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer")
    height = scroller.evaluate("e => e.scrollHeight")
    shots = []
    for k, top in enumerate(range(0, height, 800)):
        scroller.evaluate(f"e => e.scrollTop = {top}")
        page.wait_for_timeout(150)
        shots.append(os.path.join(folder, f"{name}.{k:02d}.png"))
        page.screenshot(path=shots[-1])
    return shots


def shown(locator):
    return " ".join(locator.inner_text().split())


# --- the tests ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=LESSONS, ids=[os.path.basename(p) for p in LESSONS])
def ran_in_jupyterlab(request, browser, lab):
    """A lesson after Run All in JupyterLab, its page left open for the lesson's two tests below: what it
    renders, then its steppers. pytest runs the tests of one lesson together (the fixture's parameter),
    so each lesson runs once for both."""
    started = time.time()
    page = open_and_run_all(browser, lab, request.param)
    try:
        yield SimpleNamespace(lesson=request.param, page=page, seconds=time.time() - started)
    finally:
        page.close()


@pytest.mark.xdist_group("jupyterlab")          # the tests of one server run on one worker
def test_lesson_runs_in_jupyterlab_and_everything_renders(ran_in_jupyterlab, screenshots):
    """Does Run All in JupyterLab finish without an error, with every diagram drawn and every
    widget showing, and does each diagram carry its text form for readers who cannot see it?"""
    page, lesson, seconds = ran_in_jupyterlab.page, ran_in_jupyterlab.lesson, ran_in_jupyterlab.seconds
    name = os.path.basename(lesson)
    save_screens(page, screenshots, name + ".light")
    assert not errors_on(page), errors_on(page)

    # diagrams: each is a loaded picture whose alt text is the diagram's text form
    diagrams = page.locator(".jp-OutputArea-output figure.vmkit-diagram")
    assert diagrams.count() > 0, "the lesson shows no diagram"
    for k in range(diagrams.count()):
        figure = diagrams.nth(k)
        img = figure.locator("img")
        assert img.evaluate("i => i.complete && i.naturalWidth > 0"), f"diagram {k} did not render"
        alt = img.get_attribute("alt") or ""
        text = figure.locator("details pre").text_content()
        assert alt.strip() and alt == text, f"diagram {k} has no text alternative"
    # any SVG that bypasses Diagram still renders, and still needs words
    for img in page.locator(".jp-OutputArea-output img[src^='data:image/svg+xml']").all():
        assert img.evaluate("i => i.complete && i.naturalWidth > 0")
        assert (img.get_attribute("alt") or "").strip(), "an SVG picture without a text alternative"
    assert page.get_by_text("Cannot display an untrusted SVG").count() == 0

    # widgets: every widget output became a live view, not a placeholder
    # (a widget's output area carries no data-mime-type, unlike every other kind of output)
    views = page.locator(".jp-OutputArea-output:not([data-mime-type])")
    assert views.count() > 0
    for k in range(views.count()):
        view = views.nth(k)
        assert view.locator(".jupyter-widgets").count() > 0, f"widget {k} did not render"
        words = view.inner_text()
        assert "Loading widget" not in words and "model not found" not in words, words[:300]
    print(f"{lesson}: Run All took {seconds:.1f} s; {diagrams.count()} diagrams, {views.count()} widgets")


def stepper_state(stepper):
    return {name: shown(stepper.locator(f".vmkit-stepper-{name}"))
            for name in ("status", "cpl", "registers", "log")}


def badge_agrees(state):
    """The CPL badge and the status line ('ring N · eip ...') name the same ring."""
    ring = re.search(r"ring (\d)", state["status"]).group(1)
    return state["cpl"] == f"CPL {ring}"


def click_and_wait(stepper, button, before):
    """Click a stepper button and wait until the kernel has redrawn the status line."""
    stepper.locator(f".vmkit-stepper-{button}").click()
    status = stepper.locator(".vmkit-stepper-status")
    expect(status).not_to_have_text(before["status"], timeout=15_000)
    # the panels arrive one message each: read them once two looks a moment apart agree
    state, previous = stepper_state(stepper), None
    while state != previous:
        stepper.page.wait_for_timeout(300)
        state, previous = stepper_state(stepper), state
    return state


@pytest.mark.xdist_group("jupyterlab")
def test_steppers_answer_their_buttons(ran_in_jupyterlab, screenshots):
    """Do step, next event and reset, clicked in the browser, move EIP and the registers, log
    the event with the right CPL on the badge, and bring the guest back to its entry? (A lesson
    that builds no stepper shows none: the list of those that do, STEPPER_LESSONS, is right.)"""
    page, lesson = ran_in_jupyterlab.page, ran_in_jupyterlab.lesson
    steppers = page.locator(".vmkit-stepper")
    if lesson not in STEPPER_LESSONS:
        assert steppers.count() == 0, f"{lesson} shows a stepper, but builds_a_stepper did not find it"
        return
    assert steppers.count() > 0, f"{lesson} builds a stepper, but none shows in JupyterLab"
    for k in range(steppers.count()):
        stepper = steppers.nth(k)
        stepper.scroll_into_view_if_needed()
        entry = stepper_state(stepper)
        assert "0 instructions" in entry["status"] and "(none yet)" in entry["log"]
        assert badge_agrees(entry)

        stepped = click_and_wait(stepper, "step", entry)
        assert "1 instructions" in stepped["status"]
        eip = lambda state: re.search(r"eip ([0-9a-f]{8})", state["registers"]).group(1)
        assert eip(stepped) != eip(entry), "step did not move EIP in the register panel"
        assert badge_agrees(stepped)

        event = click_and_wait(stepper, "next", stepped)
        assert event["log"] != stepped["log"] and "(none yet)" not in event["log"], "next event logged nothing"
        newest = stepper.locator(".vmkit-stepper-log b").last.inner_text()
        assert badge_agrees(event)
        if newest.startswith("ring-transition"):      # the badge follows the transition just taken
            assert event["cpl"] == "CPL " + re.search(r"to_ring=(\d)", newest).group(1)
        stepper.screenshot(path=os.path.join(screenshots, f"{os.path.basename(lesson)}.stepper{k}.png"))

        again = click_and_wait(stepper, "reset", event)
        assert again == entry, "reset did not bring back the guest's entry state"


@pytest.mark.xdist_group("jupyterlab-dark")
@pytest.mark.parametrize("lesson", LESSONS, ids=[os.path.basename(p) for p in LESSONS])
def test_lesson_is_readable_in_the_dark_theme(browser, dark_lab, screenshots, lesson):
    """In JupyterLab Dark, does every diagram sit on its own light page (never dark ink on the
    dark background), and does the lesson still run cleanly?"""
    page = open_and_run_all(browser, dark_lab, lesson)
    try:
        assert page.locator("body[data-jp-theme-light='false']").count() == 1, "the dark theme is not on"
        save_screens(page, screenshots, os.path.basename(lesson) + ".dark")
        assert not errors_on(page), errors_on(page)
        for img in page.locator(".jp-OutputArea-output figure.vmkit-diagram img").all():
            # the top-left pixel of the picture: graphviz's page colour, white when set
            corner = img.evaluate("""i => { const c = document.createElement('canvas');
                c.width = i.naturalWidth; c.height = i.naturalHeight;
                const g = c.getContext('2d'); g.drawImage(i, 0, 0);
                return Array.from(g.getImageData(1, 1, 1, 1).data); }""")
            assert corner[3] == 255 and min(corner[:3]) > 200, f"a diagram on a transparent or dark page: {corner}"
    finally:
        page.close()


@pytest.mark.xdist_group("jupyterlab-without-dot")
@pytest.mark.xdist_group("jupyterlab-without-dot")
@pytest.mark.parametrize("lesson", LESSONS, ids=[os.path.basename(p) for p in LESSONS])
def test_lesson_without_graphviz_says_how_to_fix_it(browser, lab_without_dot, screenshots, lesson):
    """Without graphviz's dot, does the lesson still run to the end, show one notice naming the
    fix, and give every diagram in its text form instead?"""
    page = open_and_run_all(browser, lab_without_dot, lesson)
    try:
        save_screens(page, screenshots, os.path.basename(lesson) + ".without-dot")
        assert not errors_on(page), errors_on(page)
        notices = page.locator(".vmkit-tool-notice")
        assert notices.count() == 1, "expected exactly one notice about the missing program"
        assert "apt-get install graphviz" in notices.inner_text()
        assert page.locator(".jp-OutputArea-output figure.vmkit-diagram").count() == 0
        assert page.get_by_text("Shown as text: graphviz's dot is not installed").count() > 0
    finally:
        page.close()


def test_jupyterlab_opens_a_lesson_without_asking_about_news(browser, tmp_path):
    """With only the defaults course.py writes into the environment, does JupyterLab take fetchNews
    "false" and checkForUpdates false, and open the first lesson with no notification over it?"""
    with jupyterlab(str(tmp_path), course_defaults=True) as url:
        with urllib.request.urlopen(f"{url}/lab/api/settings/@jupyterlab/apputils-extension:notification") as r:
            schema = json.load(r)["schema"]["properties"]
        assert schema["fetchNews"]["default"] == "false" and schema["checkForUpdates"]["default"] is False
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        try:
            page.goto(f"{url}/lab/tree/{LESSONS[0]}?reset")
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)
            page.wait_for_timeout(3000)                   # the news question comes a moment after start-up
            assert page.get_by_text("Jupyter news").count() == 0
            assert page.locator(".jp-Notification-Toast, .Toastify__toast").count() == 0
        finally:
            page.close()


# --- the book: the course as a static site, in a browser without a kernel ------------------------------

@pytest.fixture(scope="module")
def book_site(tmp_path_factory, run_lesson):
    """`python3 course.py book`'s site, built once from the session's runs of the lessons (the notebook
    tier checks the same runs). Skipped, with the reason, where the widget manager was not fetched."""
    from conftest import load_book  # the book's builder, a script beside tests/
    book = load_book()
    if not os.path.exists(os.path.join(book.WIDGET_MANAGER, "embed.js")):
        pytest.skip(f"the widget manager's JavaScript is missing ({book.WIDGET_MANAGER}): "
                    "python3 course.py test or book fetches it with npm")
    out = str(tmp_path_factory.mktemp("book") / "book")
    failed = book.build(out, executed=run_lesson)
    assert not failed, f"lessons that raised: {failed}"
    return out


def open_page(browser, path):
    """A page of the book from disk; returns it and the list of addresses it asked for that are not
    on disk or inline (the book must fetch nothing)."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(30_000)
    fetched = []
    page.on("request", lambda request: fetched.append(request.url)
            if not request.url.startswith(("file:", "data:", "blob:")) else None)
    page.goto("file://" + path)
    return page, fetched


@pytest.mark.xdist_group("lessons")             # the book is built from the notebook tier's runs
def test_the_book_lists_the_lessons_in_order_and_the_labs_as_released(browser, book_site):
    """Does the index link every lesson in the course's order and every lab, and does each lab page
    hold no solution and no hidden test?"""
    page, fetched = open_page(browser, os.path.join(book_site, "index.html"))
    try:
        lessons = page.locator(".vmkit-book-lessons a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
        assert lessons == [f"lessons/{os.path.basename(p)[:-6]}.html" for p in LESSONS]
        labs = page.locator(".vmkit-book-labs a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
        sources = [p for p in glob.glob(os.path.join(ROOT, "labs", "*", "*.ipynb"))
                   if os.path.basename(p) == os.path.basename(os.path.dirname(p)) + ".ipynb"]
        assert labs and len(labs) == len(sources), labs
        for href in labs:
            text = open(os.path.join(book_site, href), encoding="utf-8").read()
            assert "YOUR CODE HERE" in text, href
            for marker in ("BEGIN SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
                assert marker not in text, f"{href} holds {marker!r}"
        assert not fetched, fetched
    finally:
        page.close()


def book_page(lesson):
    return f"lessons/{os.path.basename(lesson)[:-6]}.html"


@pytest.mark.xdist_group("lessons")
@pytest.mark.parametrize("lesson", LESSONS, ids=[os.path.basename(p) for p in LESSONS])
def test_a_book_page_shows_the_lesson_as_it_ran(browser, book_site, screenshots, lesson):
    """Without a kernel or a network: does the lesson's page show every diagram drawn with its text
    form, every widget drawn from its saved state, and no error?"""
    page, fetched = open_page(browser, os.path.join(book_site, book_page(lesson)))
    try:
        page.wait_for_load_state("load")
        # the widget manager replaces each widget's saved view with the widget, drawn from its state
        views = page.locator(".jp-OutputArea-output.jupyter-widgets")
        assert views.count() > 0, "the page holds no widget"
        page.wait_for_function("() => [...document.querySelectorAll('.jp-OutputArea-output.jupyter-widgets')]"
                               ".every(v => v.querySelector('.lm-Widget'))", timeout=30_000)
        page.screenshot(path=os.path.join(screenshots, os.path.basename(lesson) + ".book.png"))
        assert page.locator("[data-mime-type='application/vnd.jupyter.error']").count() == 0
        diagrams = page.locator("figure.vmkit-diagram")
        assert diagrams.count() > 0, "the page shows no diagram"
        for k in range(diagrams.count()):
            img = diagrams.nth(k).locator("img")
            assert img.evaluate("i => i.complete && i.naturalWidth > 0"), f"diagram {k} did not render"
            assert (img.get_attribute("alt") or "").strip() == diagrams.nth(k).locator("details pre").text_content().strip()
        words = page.locator("main").inner_text()
        assert "Loading widget" not in words and "model not found" not in words.lower()
        assert not fetched, f"the page asked the network for {fetched}"
    finally:
        page.close()


@pytest.mark.xdist_group("lessons")
@pytest.mark.parametrize("lesson", STEPPER_LESSONS, ids=[os.path.basename(p) for p in STEPPER_LESSONS])
def test_a_book_stepper_replays_its_walk_on_its_buttons(browser, book_site, screenshots, lesson):
    """Without a kernel: does each stepper start at the guest's entry, and do step, next event and
    reset move EIP, log the recorded event with the CPL badge agreeing, and come back to the entry?"""
    page, _ = open_page(browser, os.path.join(book_site, book_page(lesson)))
    try:
        page.wait_for_selector(".vmkit-stepper.vmkit-tape[data-frame]")
        steppers = page.locator(".vmkit-stepper")
        assert steppers.count() > 0
        for k in range(steppers.count()):
            stepper = steppers.nth(k)
            stepper.scroll_into_view_if_needed()
            entry = stepper_state(stepper)
            assert "0 instructions" in entry["status"] and "(none yet)" in entry["log"] and badge_agrees(entry)
            stepped = click_and_wait(stepper, "step", entry)
            assert "1 instructions" in stepped["status"] and badge_agrees(stepped)
            eip = lambda state: re.search(r"eip ([0-9a-f]{8})", state["registers"]).group(1)
            assert eip(stepped) != eip(entry), "step did not move EIP in the register panel"
            event = click_and_wait(stepper, "next", stepped)
            assert event["log"] != stepped["log"] and "(none yet)" not in event["log"] and badge_agrees(event)
            assert stepper.locator(".vmkit-stepper-run").is_disabled(), "a button with no recording to play is enabled"
            stepper.screenshot(path=os.path.join(screenshots, f"{os.path.basename(lesson)}.book.stepper{k}.png"))
            again = click_and_wait(stepper, "reset", event)
            assert again == entry, "reset did not bring back the guest's entry state"
    finally:
        page.close()
