"""The web UI in a real browser: `conclave ui` serves it, Debian's headless Chromium (driven by
Playwright) opens every page and runs two workflows on the real SmolLM2, and the results
must render. Screenshots go to artifacts/ui/ (CI keeps them)."""

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(600)  # a page, a model load and a workflow run on two cores

from conclave.app.cli import ui_came_up
from conclave.local_models import catalog

SHOTS = Path(os.environ.get("CONCLAVE_UI_SHOTS", Path(__file__).resolve().parents[1] / "artifacts" / "ui"))
PAGES = {"": "Conclave", "EvoPrompt": "EvoPrompt", "Map-reduce": "Map-reduce", "FLARE": "FLARE", "Loss_lab": "Loss lab",
         "Figure_team": "Figure team", "Legal_audit": "Legal audit", "Model_lab": "Model lab", "Runs": "Runs",
         "Monitoring": "Monitoring", "Models": "Models"}  # url path: heading


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:  # a missing browser is a broken setup, not a reason to skip: .ci/run installs it
        pytest.fail("no chromium on PATH: apt-get install chromium (Debian's package; .ci/run installs it)")
    return path


@pytest.fixture(scope="module")
def ui(model_dir, tmp_path_factory):
    """`conclave ui` on a free port, over a fresh data dir that holds the session's pulled models."""
    data = tmp_path_factory.mktemp("ui-data")
    (data / "models").symlink_to(catalog.models_dir(model_dir), target_is_directory=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONCLAVE_") and k not in ("OPENAI_BASE_URL", "OPENAI_API_KEY")}
    env.update(CONCLAVE_DATA_DIR=str(data), XDG_CONFIG_HOME=str(data / "config"), CONCLAVE_N_CTX="2048")
    log = open(data / "ui.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "conclave.app.cli", "ui", "--port", str(port)], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        if not ui_came_up(url, proc, 90):
            pytest.fail(f"conclave ui did not come up:\n{(data / 'ui.log').read_text()}")
        yield url, data, env
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, request):
    page = browser.new_page(viewport={"width": 1400, "height": 2600})  # tall: whole pages in the screenshots
    yield page
    shot(page, f"{request.node.name}-end")  # how the test left it: the first thing to look at when one fails
    page.close()


def open_page(page, url: str, path: str):
    page.goto(f"{url}/{path}")
    page.get_by_role("heading", name=PAGES[path], exact=True).first.wait_for(timeout=60_000)
    page.wait_for_load_state("networkidle")


def no_exception(page) -> None:
    errors = page.locator('[data-testid="stException"]').all_inner_texts()
    assert not errors, errors


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / f"{name}.png", full_page=True)


def test_every_page_opens_without_an_error(ui, page):
    url, _, _ = ui
    for path in PAGES:
        open_page(page, url, path)
        no_exception(page)
        shot(page, path or "home")
    # the navigation names every workflow
    for name in ("Home", "EvoPrompt", "Map-reduce", "FLARE", "Loss lab", "Figure team", "Legal audit", "Model lab", "Runs",
                 "Monitoring", "Models"):
        assert page.get_by_test_id("stSidebarNav").get_by_text(name, exact=True).is_visible()


def test_evoprompt_runs_in_the_background_and_its_result_renders(ui, page):
    url, data, _ = ui
    open_page(page, url, "EvoPrompt")
    for label, value in (("Population", "2"), ("Generations", "1"), ("Dev examples", "6"), ("Test examples", "4")):
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_role("button", name="Evolve").click()
    # live progress while it runs, and the page stays usable meanwhile
    page.get_by_text("running for").first.wait_for(timeout=60_000)
    page.get_by_test_id("stMetric").filter(has_text="best dev").first.wait_for(timeout=240_000)  # not the history's column
    no_exception(page)
    page.locator('[data-testid="stImage"] img').first.wait_for(timeout=30_000)  # the fitness plot
    page.locator('[data-testid="stDataFrame"]').nth(1).wait_for(timeout=30_000)  # the run history, then the prompts
    shot(page, "evoprompt-result")
    from conclave.app.store import RunStore

    [run] = RunStore(data / "conclave.db").list_runs("evoprompt")
    assert run.status == "done" and run.result["population"]


def test_mapreduce_runs_on_an_uploaded_document(ui, page, tmp_path):
    url, data, _ = ui
    doc = tmp_path / "notes.txt"
    doc.write_text("\n\n".join(f"Section {i}. The lighthouse keeper logged {i * 7} ships on day {i}; the weather was "
                               f"{'calm' if i % 2 else 'stormy'} and the lamp burned {i + 3} litres of oil."
                               for i in range(1, 41)), encoding="utf-8")
    open_page(page, url, "Map-reduce")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(doc))
    page.get_by_text("notes.txt").first.wait_for(timeout=30_000)
    page.get_by_label("Tokens per part (0: what fits the context)").fill("300")
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("running for").first.wait_for(timeout=60_000)
    page.locator('[data-testid="stVegaLiteChart"]').first.wait_for(timeout=240_000)  # answer tokens per part
    no_exception(page)
    page.locator('[data-testid="stDataFrame"]').nth(1).wait_for(timeout=30_000)  # the run history, then the map answers
    shot(page, "mapreduce-result")
    from conclave.app.store import RunStore

    [run] = RunStore(data / "conclave.db").list_runs("mapreduce")
    assert run.status == "done" and len(run.result["parts"]) >= 2


def test_loss_lab_scores_the_builtin_losses_in_the_sandbox(ui, page):
    url, data, _ = ui
    from conclave.agents.losslab import BUILTIN
    from conclave.app.store import RunStore

    open_page(page, url, "Loss_lab")
    page.get_by_label("Proposals", exact=True).fill("0")
    page.get_by_label("Training steps", exact=True).fill("20")
    page.get_by_label("Seeds", exact=True).fill("0")
    page.get_by_role("button", name="Discover").click()
    page.get_by_test_id("stMetric").filter(has_text="DPO fitness").first.wait_for(timeout=240_000)
    page.locator('[data-testid="stImage"] img').first.wait_for(timeout=30_000)
    no_exception(page)
    shot(page, "losslab-result")
    [run] = RunStore(data / "conclave.db").list_runs("losslab")
    assert run.status == "done" and [c["name"] for c in run.result["candidates"]] == list(BUILTIN)
    assert all(c["valid"] for c in run.result["candidates"])


def test_the_figure_team_runs_on_an_uploaded_file_and_a_run_renders_its_figure(ui, page, tmp_path):
    from conclave.agents.figure import FigureConfig, run
    from conclave.app.store import RunStore
    from tests.scripted import ScriptedLLM
    from tests.test_figure import BARE, GOOD, fenced

    url, data, _ = ui
    csv = tmp_path / "weather.csv"
    csv.write_text("date,temperature,humidity\n" + "".join(f"2024-01-{d:02d},{10 + d % 7},{50 + d % 5}\n"
                                                          for d in range(1, 29)))
    open_page(page, url, "Figure_team")
    page.get_by_label("Request").fill("Plot temperature and humidity over time")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(csv))
    page.get_by_label("Iterations", exact=True).fill("1")
    page.get_by_role("button", name="Make the figure").click()
    page.get_by_test_id("stMetric").filter(has_text="stopped").first.wait_for(timeout=300_000)
    no_exception(page)
    store = RunStore(data / "conclave.db")
    [real] = store.list_runs("figure")
    assert real.status == "done" and len(real.result["iterations"]) == 1
    # a run whose coder did its job: the page shows the chosen figure and every iteration
    with store.run("figure", {"figure": {"request": "r"}, "spec": {"coder": "scripted"}}) as run_id:
        res = run(FigureConfig(request="Plot temperature and humidity over time", data=csv),
                  ScriptedLLM([fenced(BARE), '{"issues": ["add a legend"], "verdict": "REVISE"}', fenced(GOOD),
                               '{"issues": [], "verdict": "NO_ISSUES"}']))
        store.finish_run(run_id, res.to_dict())
    open_page(page, url, "Figure_team")
    page.get_by_text("Final figure: iteration 1 (the critic found no issues)").first.wait_for(timeout=60_000)
    page.locator('[data-testid="stImage"] img').first.wait_for(timeout=30_000)
    no_exception(page)
    shot(page, "figure-result")


def test_a_legal_audit_runs_from_its_page_and_renders_its_report(ui, page):
    from conclave.app.store import RunStore

    url, data, _ = ui
    open_page(page, url, "Legal_audit")
    page.get_by_label("Queries per category (0: all)").fill("1")
    page.get_by_label("Longest answer (tokens)").fill("48")
    page.get_by_role("button", name="Audit").click()
    page.get_by_test_id("stMetric").filter(has_text="closed-book: hallucinated").first.wait_for(timeout=400_000)
    no_exception(page)
    [run] = RunStore(data / "conclave.db").list_runs("legal_audit")
    assert run.status == "done" and len(run.result["items"]) == 8
    page.get_by_text("rag: correctness × groundedness").first.wait_for(timeout=30_000)
    page.get_by_role("heading", name="Worked examples").first.wait_for(timeout=30_000)
    shot(page, "legal-audit-result")


def test_a_model_lab_recipe_runs_from_its_page_and_renders_its_tables(ui, page):
    from conclave.app.store import RunStore

    url, data, _ = ui
    page.goto(f"{url}/Model_lab?recipe=squash")  # a link to one recipe's form
    page.get_by_role("heading", name="Model lab", exact=True).first.wait_for(timeout=60_000)
    page.wait_for_load_state("networkidle")
    page.get_by_label("Settings (JSON; every key is optional)").fill('{"lengths": [2, 6], "count_lengths": [3]}')
    page.get_by_role("button", name="Run").click()
    page.get_by_text("Counting the run").first.wait_for(timeout=300_000)
    no_exception(page)
    [run] = RunStore(data / "conclave.db").list_runs("squash")
    assert run.status == "done" and run.result["config"]["lengths"] == [2, 6]
    page.locator('[data-testid="stImage"] img').first.wait_for(timeout=30_000)  # the plots
    shot(page, "model-lab-result")


def test_a_stopped_evoprompt_run_resumes_from_its_page(ui, page):
    from conclave.agents.evoprompt import EvoConfig, run
    from conclave.app.store import RunStore
    from tests.scripted import ScriptedLLM
    from conclave.app.evoprompt import load_task
    from tests.test_evoprompt import evolver, task_model

    url, data, _ = ui
    store = RunStore(data / "conclave.db")
    config = EvoConfig(population=2, generations=2, seed=0, max_concurrency=4)
    spec = {"task": "rotten-tomatoes", "kind": "classification", "verbalizer": None, "prompts": None, "text_field": "text",
            "label_field": "label", "dev_size": 4, "test_size": 4, "split_seed": 0, "model": catalog.DEFAULT_MODEL,
            "backend": None, "evolver": catalog.DEFAULT_MODEL, "evolver_backend": None}
    def stopped_run() -> str:  # a run that stopped after generation 0, as a crash leaves it
        with pytest.raises(RuntimeError):
            with store.run("evoprompt", {"evoprompt": config.model_dump(), "spec": spec}) as run_id:
                def stop(g, state):
                    store.save_checkpoint(run_id, g, state)
                    raise RuntimeError("killed")
                # the spec's own task: a checkpoint of another task is refused on resume
                run(config, ScriptedLLM(evolver), ScriptedLLM(scores=task_model), load_task(spec), checkpoint=stop)
        return run_id

    with ThreadPoolExecutor(1) as pool:  # off the main thread, where Playwright's event loop runs
        run_id = pool.submit(stopped_run).result()
    open_page(page, url, "EvoPrompt")
    page.get_by_text("Its last checkpoint is generation 0").wait_for(timeout=30_000)  # the newest run is shown
    page.get_by_role("button", name="Resume it from its checkpoint").click()
    page.get_by_test_id("stMetric").filter(has_text="best dev").first.wait_for(timeout=240_000)  # not the history's column
    page.locator('[data-testid="stImage"] img').first.wait_for(timeout=30_000)
    no_exception(page)
    resumed = store.get_run(run_id)
    assert resumed.status == "done" and len(resumed.result["generations"]) == 3


def test_runs_and_monitoring_show_the_logged_calls(ui, page):
    url, _, env = ui
    # a run with logged calls, whatever ran before: the CLI's, which the UI must show as its own
    cli = subprocess.run([sys.executable, "-m", "conclave.app.cli", "evoprompt", "--task", "rotten-tomatoes", "-n", "2", "-g", "0",
                          "--dev-size", "4", "--test-size", "2"], env=env, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    open_page(page, url, "Runs")
    no_exception(page)
    page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=30_000)
    page.get_by_role("tab", name="Model calls").click()
    page.get_by_text("calls,", exact=False).first.wait_for()
    shot(page, "runs")
    open_page(page, url, "Monitoring")
    no_exception(page)
    page.locator('[data-testid="stVegaLiteChart"]').nth(3).wait_for(timeout=30_000)  # calls, latency, tokens, errors
    shot(page, "monitoring")


def test_background_runs_report_events_results_and_errors():
    from conclave.app.ui.background import Registry

    runs = Registry()
    gate = threading.Event()

    def work(on_event):
        on_event({"kind": "run", "run_id": "r1"})
        gate.wait(10)
        on_event({"kind": "generation", "generation": 1})
        return "r1", {"best": 1.0}

    bg = runs.start("evoprompt", "a run", work)
    deadline = time.time() + 10
    while bg.run_id is None and time.time() < deadline:
        time.sleep(0.01)
    assert bg.run_id == "r1" and not bg.done and runs.active() == [bg]  # visible while it works
    gate.set()
    bad = runs.start("evoprompt", "a bad run", lambda on_event: 1 / 0)
    while not (bg.done and bad.done) and time.time() < deadline:
        time.sleep(0.01)
    assert bg.result == {"best": 1.0} and bg.error is None and bg.last("generation")["generation"] == 1
    assert bad.error == "ZeroDivisionError: division by zero" and bad.last("error")["trace"]
    assert runs.of("evoprompt") == [bad, bg] and runs.of("mapreduce") == [] and runs.active() == []


def test_ui_once_comes_up_then_stops(tmp_path):
    """What CI does with the README's first command, which ends by starting the UI (the pages
    themselves are loaded in the browser by the tests above)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CONCLAVE_DATA_DIR": str(tmp_path / "data"), "CONCLAVE_UI_ONCE": "1"}
    r = subprocess.run([sys.executable, "-m", "conclave.app.cli", "ui", "--port", str(port)], env=env, capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "the UI came up" in r.stderr
