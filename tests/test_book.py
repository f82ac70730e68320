"""The book's pages. The API page is built here, alone and strictly (it needs no executed
chapter); the rest reads the built book in headless Chromium: every chapter page loads its
figures and shows no error output. Those run after `make book` (CI does: `make
browser-test`) and are marked ``browser``."""

import importlib
import inspect
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from bs4 import BeautifulSoup

from subnets import claim_tables, claims
from subnets.data import REPO_ROOT

HTML = REPO_ROOT / "_build" / "html"
CHAPTER_PAGES = sorted((HTML / "notebooks").glob("[0-9][0-9]_*.html"))


def _build_alone(page: str, out: Path) -> Path:
    """Build the book's page ``page`` alone into ``out`` (a table of contents with only it,
    no chapter executed) with the book's own configuration and flags (-W -n: a warning
    fails it); its HTML file."""
    config = yaml.safe_load((REPO_ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    config["sphinx"]["local_extensions"] = {
        name: str(REPO_ROOT / path) for name, path in config["sphinx"]["local_extensions"].items()}
    (out / "_config.yml").write_text(yaml.safe_dump(config))
    (out / "_toc.yml").write_text(f"format: jb-book\nroot: {page}\n")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "jupyter-book"), "build", str(REPO_ROOT),
         "--config", str(out / "_config.yml"), "--toc", str(out / "_toc.yml"),
         "--path-output", str(out), "-W", "-n", "--keep-going"],
        capture_output=True, text=True, check=False)
    assert proc.returncode == 0, \
        f"{page} does not build strictly:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return out / "_build" / "html" / f"{page}.html"


def test_the_api_page_builds_strictly_and_lists_every_public_class(tmp_path):
    sys.path.insert(0, str(REPO_ROOT / "book" / "_ext"))
    from api_reference import api_modules

    html = _build_alone("book/api", tmp_path).read_text()
    documented = set(re.findall(r'<dt class="sig sig-object py" id="([^"]+)"', html))
    for name in api_modules():
        module = importlib.import_module(name)
        classes = [n for n in module.__all__ if inspect.isclass(getattr(module, n))]
        missing = [n for n in classes if f"{name}.{n}" not in documented]
        assert not missing, f"{name}: classes of __all__ missing from the API page: {missing}"


def test_the_scorecard_counts_and_draws_what_the_chapters_glued(tmp_path):
    """The Scorecard alone, on rows glued as claim_tables.claims_table glues them (written here
    into myst-nb's output folder, as an executed chapter leaves them)."""
    chapters = sorted(p.stem for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.md"))
    for k, chapter in enumerate(chapters):
        rows = claim_tables.claims_frame([
            claims.Claim.trained(f"claim {k}", "0.9", [0.8, 0.82, 0.81], [0.1, 0.11, 0.1],
                                 claims.Rule(">", 0.5)),
            claims.Claim("band", "1", 1.2, claims.Rule("within", 1.0, 0.1),
                         scope="initialisation"),
            claims.Claim("a setting", "—", 3.0)], numbers=True)
        name = f"ch{chapter[:2]}_claims"
        glued = {f"{name}_rows": {"data": {"text/plain": repr(rows.to_json(orient="records"))}},
                 f"{name}_brief": {"data": {"text/html": claim_tables.brief_table(rows).to_html()}}}
        path = tmp_path / "_build" / "jupyter_execute" / "notebooks" / f"{chapter}.glue.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({key: {"output_type": "display_data", "metadata": {}, **out}
                                    for key, out in glued.items()}))
    page = _build_alone("book/scorecard", tmp_path)
    table = BeautifulSoup(page.read_text(), "html.parser").select_one("table.scorecard-counts")
    header = [th.text for th in table.select("thead th")]
    assert header == ["chapter", "held", "not held", "not decided", "settings"]
    counts = [[td.text for td in tr.select("td")] for tr in table.select("tbody tr")]
    assert counts == [[c[:2], "1", "1", "0", "1"] for c in chapters]
    assert (page.parent.parent / "_images" / "scorecard_forest.png").stat().st_size > 10_000
    assert "claim 0" in page.read_text() and "ᵃ 95% t-interval over 3 seeds" in page.read_text()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    driver_path = shutil.which("chromedriver")
    assert driver_path, "chromedriver not found: apt-get install chromium chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--allow-file-access-from-files"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.mark.browser
def test_book_was_built():
    assert (HTML / "index.html").is_file(), "no _build/html: run `make book` first"
    chapters = {p.stem for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.md")}
    missing = chapters - {p.stem for p in CHAPTER_PAGES}
    assert chapters and not missing, f"chapters without a page in the built book: {sorted(missing)}"


@pytest.mark.browser
@pytest.mark.parametrize("page", CHAPTER_PAGES, ids=[p.stem for p in CHAPTER_PAGES])
def test_chapter_page_shows_figures_and_no_errors(browser, page: Path):
    browser.get(page.as_uri())
    images = browser.execute_script(
        "return Array.from(document.querySelectorAll('.cell_output img'))"
        ".map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0]);")
    assert images, f"{page.name}: no figures in cell outputs"
    broken = [src for src, ok in images if not ok]
    assert not broken, f"{page.name}: figures that did not load: {broken}"
    text = browser.find_element("css selector", "main").text
    assert "Traceback (most recent call last)" not in text
    errors = browser.find_elements("css selector",
                                   ".cell_output .output.traceback, .cell_output .output.error")
    assert not errors, f"{page.name}: a cell shows an error"
    assert browser.find_elements("xpath", "//h2[contains(., 'Paper vs this book')]"), \
        f"{page.name}: no 'Paper vs this book'"
    tables = browser.find_elements("css selector", ".cell_output table")
    assert tables, f"{page.name}: no tables in cell outputs"



@pytest.mark.browser
@pytest.mark.parametrize("page", CHAPTER_PAGES, ids=[p.stem for p in CHAPTER_PAGES])
def test_code_shows_its_100_columns_in_a_1300_px_window(browser, page: Path):
    """Chapter code runs to ruff's 100 columns: at 1300 px a line of 100 characters fits
    every code cell, and no cell's code scrolls sideways (book/_static/wide.css)."""
    browser.set_window_size(1300, 900)
    browser.get(page.as_uri())
    cells = browser.execute_script("""
        return Array.from(document.querySelectorAll('.cell_input pre')).map(pre => {
            const probe = document.createElement('span');
            probe.textContent = 'x'.repeat(100);
            pre.appendChild(probe);
            const style = getComputedStyle(pre);
            const room = pre.clientWidth - parseFloat(style.paddingLeft)
                - parseFloat(style.paddingRight);
            const line = probe.getBoundingClientRect().width;
            probe.remove();
            return [room, line, pre.scrollWidth - pre.clientWidth];
        });""")
    assert cells, f"{page.name}: no code cells"
    room, line, _ = min(cells)
    assert line <= room, f"{page.name}: 100 columns need {line:.0f} px, a cell has {room:.0f}"
    cut = [over for *_, over in cells if over > 0]
    assert not cut, f"{page.name}: {len(cut)} code cells scroll sideways at 1300 px"


@pytest.mark.browser
@pytest.mark.parametrize("page", CHAPTER_PAGES, ids=[p.stem for p in CHAPTER_PAGES])
def test_chapter_page_offers_its_executed_notebook(page: Path):
    html = page.read_text()
    assert "download-notebook-button" in html, f"{page.name}: no .ipynb in the download menu"
    executed = HTML / "_sources" / "notebooks" / f"{page.stem}.ipynb"
    assert executed.is_file() and '"outputs": [\n' in executed.read_text()


@pytest.mark.browser
def test_scorecard_gathers_every_chapters_verdicts(browser):
    browser.get((HTML / "book" / "scorecard.html").as_uri())
    tables = browser.find_elements("css selector", "main table:not(.scorecard-counts)")
    assert len(tables) == len(CHAPTER_PAGES), "one glued table per chapter"
    for table in tables:
        verdicts = {td.text for td in table.find_elements("css selector", "td")}
        assert verdicts & {"held", "not held", "not decided"}, "a table without verdicts"
    counts = browser.find_elements("css selector", "main table.scorecard-counts tbody tr")
    assert len(counts) == len(CHAPTER_PAGES), "one line of verdict counts per chapter"
    assert browser.execute_script(
        "const i = document.querySelector('#scorecard-forest img');"
        "return i !== null && i.complete && i.naturalWidth > 0;"), "no forest plot"
