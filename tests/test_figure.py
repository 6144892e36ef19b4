"""The figure team: the harness and checklist on real matplotlib code in the sandbox, the
parsers for small models' replies, the AgentChat adapter, the team's loop on a scripted model
at the seam, and an end-to-end run on the embedded SmolLM2."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pandas as pd
import pytest

from conclave.agents import sandbox
from conclave.agents.figure import FigureConfig, FigureError, FigureResult, run
from conclave.agents.figure.checklist import ITEMS, check
from conclave.agents.figure.data import describe
from conclave.agents.figure.execute import run_code
from conclave.agents.figure.replies import extract_code, parse_critique
from conclave.agents.llm import EndpointUnreachable, UnsupportedFeature
from tests.scripted import ScriptedLLM

LIMITS = sandbox.Limits(timeout_s=60, output_bytes=200_000)


@pytest.fixture
def weather(tmp_path):
    t = np.arange(60)
    df = pd.DataFrame({"date": pd.date_range("2024-01-01", periods=60).strftime("%Y-%m-%d"),
                       "temperature": np.sin(t / 5) * 10 + 15, "humidity": np.cos(t / 7) * 20 + 50})
    path = tmp_path / "weather.csv"
    df.to_csv(path, index=False)
    return path


def fenced(code: str) -> str:
    return f"Here is the script.\n```python\n{code.strip()}\n```"


GOOD = """
import pandas as pd
import matplotlib.pyplot as plt
df = pd.read_csv('weather.csv', parse_dates=['date'])
fig, ax = plt.subplots()
ax.plot(df['date'], df['temperature'], label='temperature')
ax.plot(df['date'], df['humidity'], label='humidity')
ax.set_title('Weather'); ax.set_xlabel('date'); ax.set_ylabel('value'); ax.legend()
fig.autofmt_xdate()
fig.savefig('figure.png')
"""
BARE = """
import pandas as pd
import matplotlib.pyplot as plt
df = pd.read_csv('weather.csv')
plt.plot(df['temperature'])
plt.plot(df['humidity'])
plt.savefig('figure.png')
"""
CROWDED = """
import matplotlib.pyplot as plt
names = ['category number %d' % i for i in range(30)]
fig, ax = plt.subplots()
ax.bar(names, range(30), label='count')
ax.set_title('t'); ax.set_xlabel('x'); ax.set_ylabel('y')
{fix}
fig.savefig('figure.png')
"""


# --- the harness and the checklist, in the sandbox ---------------------------------------


def test_a_good_figure_passes_every_check_and_is_described(weather):
    r = run_code(GOOD, weather, LIMITS)
    checks = check(r.report, ["temperature", "humidity"])
    assert r.status == "figure" and r.png.startswith(b"\x89PNG") and r.error is None
    assert checks == {k: True for k in ITEMS}
    ax = r.report["figure"]["axes"][0]
    assert ax["title"] == "Weather" and ax["legend"] == ["temperature", "humidity"]
    assert [(s["kind"], s["label"], s["points"]) for s in ax["series"]] == [("line", "temperature", 60),
                                                                             ("line", "humidity", 60)]
    assert ax["series"][0]["x"] == ["2024-01-01", "2024-02-29"]  # dates read back as dates
    assert ax["series"][1]["y"] == pytest.approx([30.0, 70.0], abs=0.1)


def test_a_bare_figure_fails_the_checks_it_should(weather):
    from conclave.agents.figure.checklist import describe as text

    r = run_code(BARE, weather, LIMITS)
    checks = check(r.report, ["temperature", "humidity"])
    assert r.status == "figure"
    assert checks == {"runs": True, "figure_written": True, "series_present": False, "title_and_labels": False,
                      "legend": False, "ticks_readable": True}
    report = text(r.report, ["temperature", "humidity"])
    assert "line (no label), 60 points" in report and "legend none" in report
    assert ("- the requested series are present: show and label the series temperature, humidity\n"
            "- there is a title and axis labels: add the title and the x label and the y label\n"
            "- there is a legend when there are several series: add a legend: 2 series are drawn") in report


def test_overlapping_tick_labels_are_caught_and_rotating_them_is_the_fix():
    crowded = run_code(CROWDED.format(fix=""), None, LIMITS)
    rotated = run_code(CROWDED.format(fix="ax.tick_params(axis='x', labelrotation=90)\nfig.tight_layout()"), None, LIMITS)
    assert crowded.report["figure"]["axes"][0]["xticks_overlap"] > 10
    assert not check(crowded.report, ["count"])["ticks_readable"]
    assert rotated.report["figure"]["axes"][0]["xticks_overlap"] == 0
    assert check(rotated.report, ["count"]) == {k: True for k in ITEMS}


def test_a_label_cut_off_at_the_edge_of_the_image_does_not_count():
    code = """
import matplotlib.pyplot as plt
fig, ax = plt.subplots()
ax.bar(['United Kingdom of Great Britain %d' % i for i in range(8)], range(8), label='population')
ax.set_title('t'); ax.set_xlabel('country'); ax.set_ylabel('population')
ax.tick_params(axis='x', labelrotation=60)
{fix}fig.savefig('figure.png'{tight})
"""
    cut = run_code(code.format(fix="", tight=""), None, LIMITS).report
    assert cut["figure"]["axes"][0]["cut_off"] == ["x label", "x tick labels"]
    assert not check(cut, ["population"])["title_and_labels"]
    from conclave.agents.figure.checklist import describe as text

    report = text(cut, [])
    assert "cut off at the edge of the image: x label, x tick labels" in report
    assert "the x label is cut off at the edge of the image: call plt.tight_layout() before saving" in report
    for fix, tight in (("fig.tight_layout()\n", ""), ("", ", bbox_inches='tight'")):
        fixed = run_code(code.format(fix=fix, tight=tight), None, LIMITS).report
        assert fixed["figure"]["axes"][0]["cut_off"] == [] and check(fixed, ["population"]) == {k: True for k in ITEMS}


def test_a_box_plot_is_one_series_and_an_errorbar_keeps_its_label():
    code = """
import numpy as np, matplotlib.pyplot as plt
fig, (a, b) = plt.subplots(1, 2)
a.boxplot([np.arange(50) for _ in range(3)], tick_labels=['alpha', 'beta', 'gamma'])
a.set_title('t'); a.set_xlabel('server'); a.set_ylabel('ms')
b.errorbar([1, 2, 3, 4], [1, 2, 3, 4], yerr=0.1, label='e', capsize=3)
b.violinplot([np.arange(30), np.arange(30)])
b.set_title('u'); b.set_xlabel('x'); b.set_ylabel('y')
fig.savefig('figure.png')
"""
    r = run_code(code, None, LIMITS)
    box, mixed = r.report["figure"]["axes"]
    assert box["series"] == [{"kind": "box", "label": None, "points": 3}]
    assert [(s["kind"], s["label"]) for s in mixed["series"]] == [("violin", None), ("line", "e")]
    # the box plot needs no legend; a violin beside an errorbar series does
    assert check(r.report, ["ms"]) == {k: k != "legend" for k in ITEMS}


def test_a_crash_comes_back_as_the_codes_own_traceback(weather):
    r = run_code("import pandas as pd\ndf = pd.read_csv('weather.csv')\ndf['nope'].plot()\n", weather, LIMITS)
    assert r.status == "error" and r.png is None
    assert "KeyError: 'nope'" in r.error and 'figure_code.py", line 3' in r.error
    assert "_harness.py" not in r.error and "runpy" not in r.error


def test_code_that_never_saves_is_told_so_and_still_described():
    from conclave.agents.figure.checklist import describe as text

    r = run_code("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.title('x')\nplt.show()\n", None, LIMITS)
    assert r.status == "no_figure" and r.report["figure"]["axes"][0]["title"] == "x"
    checks = check(r.report, [])
    assert checks["runs"] and not checks["figure_written"] and not checks["title_and_labels"]
    assert "wrote no figure.png: call plt.savefig('figure.png')" in text(r.report, [])


@pytest.mark.parametrize("code, timeout, status, says", [
    ("while True:\n    pass\n", 4, "timeout", "timed out"),
    ("import sys\nsys.exit(3)\n", 30, "error", "sys.exit(3)"),
    ("while True:\n    print('x' * 10000)\n", 4, "timeout", "timed out"),
    ("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.savefig('figure.png', dpi=300)\n", 60, "error", "MB"),
])
def test_loops_exits_floods_and_huge_figures_end_with_a_clear_status(code, timeout, status, says):
    r = run_code(code, None, sandbox.Limits(timeout_s=timeout, output_bytes=2_000))
    assert r.status == status and says in r.error and r.seconds < timeout + 10


# --- replies from small models -----------------------------------------------------------


@pytest.mark.parametrize("reply, code", [
    ("```python\nimport matplotlib\n```", "import matplotlib"),
    ("Sure!\n```py\nx = 1\n```\nand the plot:\n```\nimport matplotlib.pyplot as plt\nplt.plot([1])\n```",
     "import matplotlib.pyplot as plt\nplt.plot([1])"),
    ("```python\nimport matplotlib.pyplot as plt\nplt.plot([1", "import matplotlib.pyplot as plt\nplt.plot([1"),
    ("import matplotlib.pyplot as plt\nplt.plot([1])", "import matplotlib.pyplot as plt\nplt.plot([1])"),
    ("I would draw a line chart of the data.", None),
    ("", None),
])
def test_code_is_read_from_fences_cut_replies_and_bare_scripts(reply, code):
    assert extract_code(reply) == code


@pytest.mark.parametrize("reply, verdict, issues, parsed", [
    ('{"issues": [], "verdict": "NO_ISSUES"}', "NO_ISSUES", [], True),
    ('Review: {"issues": ["add a legend"], "verdict": "REVISE"} done', "REVISE", ["add a legend"], True),
    ('{"issues": ["the title is wrong"], "verdict": "NO_ISSUES"}', "REVISE", ["the title is wrong"], True),
    ('{"issues": "label the y axis", "verdict": "revise"}', "REVISE", ["label the y axis"], True),
    ("NO_ISSUES", "NO_ISSUES", [], False),
    ("Problems:\n- add a title\n2. rotate the labels", "REVISE", ["add a title", "rotate the labels"], False),
    ("the figure is bad", "REVISE", ["the figure is bad"], False),
])
def test_critiques_are_read_whatever_form_they_come_in(reply, verdict, issues, parsed):
    c = parse_critique(reply)
    assert (c.verdict, c.issues, c.parsed) == (verdict, issues, parsed)


# --- the data file -----------------------------------------------------------------------


def test_the_coder_gets_the_schema_and_head_not_the_file(weather):
    info = describe(weather)
    assert info.rows == 60 and [c for c, _ in info.columns] == ["date", "temperature", "humidity"]
    schema = info.schema()
    assert "pd.read_csv('weather.csv')" in schema and "temperature: float64" in schema
    assert schema.count("\n2024-") == 5  # the head, not the 60 rows
    assert "column 'date' holds dates as text" in schema
    assert info.named_in("Plot the Temperature against the date") == ["date", "temperature"]


def test_bad_data_files_are_refused_before_any_model_runs(tmp_path):
    (tmp_path / "x.csv").write_text("")
    (tmp_path / "x.docx").write_text("a")
    (tmp_path / "bad.json").write_text("{not json")
    for name, says in [("missing.csv", "does not exist"), ("x.docx", "unknown kind .docx"),
                       ("x.csv", "cannot read data file x.csv"), ("bad.json", "cannot read data file bad.json")]:
        with pytest.raises(FigureError, match=says):
            describe(tmp_path / name)


# --- the AgentChat adapter ---------------------------------------------------------------


def test_the_adapter_carries_messages_usage_and_prompt_refs_to_the_seam():
    from autogen_core import Image
    from autogen_core.models import AssistantMessage, SystemMessage, UserMessage
    from PIL import Image as PILImage

    from conclave.agents.agentchat import SeamClient

    records = []
    llm = ScriptedLLM(["one two three", "four five", "six"], sink=records.append)
    text = SeamClient(llm, prompt_ref="p@1", max_tokens=50)
    msgs = [SystemMessage(content="sys"), UserMessage(content="hi", source="user"),
            AssistantMessage(content="hello", source="a"),
            UserMessage(content=["look", Image.from_pil(PILImage.new("RGB", (4, 4)))], source="u")]
    out = asyncio.run(text.create(msgs))
    assert out.content == "one two three" and out.finish_reason == "stop" and out.usage.completion_tokens == 3
    assert llm.requests[0].messages == [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"},
                                        {"role": "assistant", "content": "hello"},
                                        {"role": "user", "content": "look\n[image]"}]
    assert records[0].prompt_ref == "p@1" and text.model_info["vision"] is False

    async def stream():
        return [x async for x in text.create_stream(msgs[:2])]

    parts = asyncio.run(stream())
    assert "".join(parts[:-1]) == "four five" and parts[-1].content == "four five"
    assert text.total_usage().completion_tokens == 5
    vision = SeamClient(llm, vision=True)
    asyncio.run(vision.create(msgs[3:]))
    part = llm.requests[-1].messages[0]["content"][1]
    assert part["type"] == "image_url" and part["image_url"]["url"].startswith("data:image/png;base64,")
    with pytest.raises(UnsupportedFeature, match="function calling"):
        asyncio.run(text.create(msgs, tools=[{"name": "f", "parameters": {}}]))


def test_a_text_only_backend_cannot_be_made_a_vision_critic(engine):
    from conclave.agents.agentchat import SeamClient
    from conclave.agents.backends.local import LocalLLM

    with pytest.raises(UnsupportedFeature, match="reads text only"):
        SeamClient(LocalLLM(engine, backend="llamacpp", model="smollm2-135m-instruct"), vision=True)


# --- the team's loop, on a scripted model at the seam ------------------------------------


def roles(res: FigureResult) -> list[str]:
    return [m["source"] for m in res.transcript]


def test_the_critic_loop_revises_until_no_issues(weather):
    llm = ScriptedLLM([fenced(BARE), '{"issues": ["add a title", "add a legend"], "verdict": "REVISE"}',
                       fenced(GOOD), '{"issues": [], "verdict": "NO_ISSUES"}'])
    events = []
    res = run(FigureConfig(request="Plot temperature and humidity over time", data=weather), llm,
              on_event=events.append)
    assert roles(res) == ["commander", "coder", "executor", "critic", "coder", "executor", "critic", "commander"]
    assert [it.score for it in res.iterations] == [pytest.approx(3 / 6), 1.0]
    assert res.stopped == "approved" and res.final == 1 and res.figure.startswith(b"\x89PNG")
    assert res.iterations[0].critique == {"verdict": "REVISE", "issues": ["add a title", "add a legend"],
                                          "parsed": True}
    assert "Final figure: iteration 1 (the critic found no issues)" in res.answer
    # the coder revised with the run's description and the critique in view
    second = llm.requests[2].messages
    assert "legend none" in second[-2]["content"] and "add a legend" in second[-1]["content"]
    # the critic read the brief and the figure report, not the code
    critic = llm.requests[1].messages
    assert "first message is the request" in critic[0]["content"] and "Request: Plot" in critic[1]["content"]
    assert "line (no label)" in critic[-1]["content"] and "import" not in critic[-1]["content"]
    assert [e["kind"] for e in events if e["kind"] in ("iteration", "critique")] == ["iteration", "critique"] * 2
    back = FigureResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert back.figure == res.figure and back.iterations[0].checks == res.iterations[0].checks
    assert "| 1 | figure | 1.00 |" in back.report()


def test_a_traceback_goes_back_to_the_coder_and_not_to_the_critic(weather):
    broken = fenced("import pandas as pd\ndf = pd.read_csv('weather.csv')\ndf['temp'].plot()")
    llm = ScriptedLLM([broken, fenced(GOOD), '{"issues": [], "verdict": "NO_ISSUES"}'])
    res = run(FigureConfig(request="Plot temperature and humidity", data=weather), llm)
    assert roles(res) == ["commander", "coder", "executor", "coder", "executor", "critic", "commander"]
    assert [it.status for it in res.iterations] == ["error", "figure"]
    assert res.iterations[0].critique is None and res.iterations[0].checks["runs"] is False
    assert "KeyError: 'temp'" in llm.requests[1].messages[-1]["content"]


def test_at_the_limit_the_best_scoring_figure_is_chosen(weather):
    nagging = '{"issues": ["make it prettier"], "verdict": "REVISE"}'
    llm = ScriptedLLM([fenced(BARE), nagging, fenced(GOOD), nagging, fenced(BARE), nagging])
    res = run(FigureConfig(request="Plot temperature and humidity", data=weather, max_iterations=3), llm)
    assert len(res.iterations) == 3 and res.stopped == "limit" and res.final == 1
    assert roles(res)[-2:] == ["critic", "commander"] and all(it.critique for it in res.iterations)
    assert "the limit of 3 iterations was reached" in res.answer


def test_a_coder_that_writes_no_code_ends_with_no_figure(weather):
    llm = ScriptedLLM(["I cannot do that."] * 2)
    res = run(FigureConfig(request="Plot temperature", data=weather, max_iterations=2), llm)
    assert [it.status for it in res.iterations] == ["no_code", "no_code"] and res.final is None
    assert res.answer.startswith("No figure: none of the 2 iterations") and res.figure is None
    assert "no Python code" in llm.requests[1].messages[-1]["content"]


def test_a_vision_critic_is_handed_the_png(weather):
    llm = ScriptedLLM([fenced(GOOD), "NO_ISSUES"])
    res = run(FigureConfig(request="Plot temperature and humidity", data=weather, critic_sees="image"), llm)
    parts = llm.requests[1].messages[-1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url"]
    assert res.stopped == "approved" and res.iterations[0].critique["parsed"] is False


def test_an_unreachable_model_fails_the_run_with_its_reason(weather):
    llm = ScriptedLLM([EndpointUnreachable("cannot reach http://nowhere:1/v1")])
    with pytest.raises(EndpointUnreachable, match="nowhere"):
        run(FigureConfig(request="Plot temperature", data=weather), llm)


def test_bad_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="blank"):
        FigureConfig(request="   ")
    with pytest.raises(ValueError, match="max_iterations"):
        FigureConfig(request="x", max_iterations=0)
    (tmp_path / "report.json").write_text('{"a": [1]}')
    with pytest.raises(FigureError, match="rename the file"):
        run(FigureConfig(request="x", data=tmp_path / "report.json"), ScriptedLLM([]))


def test_the_cli_refuses_a_bad_data_file_before_loading_a_model_or_recording_a_run(tmp_path):
    import os
    import subprocess
    import sys

    from conclave.app.store import RunStore

    bad = subprocess.run([sys.executable, "-m", "conclave.app.cli", "figure", "Plot x", "--data", str(tmp_path / "nope.csv")],
                         env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "data file" in bad.stderr and "does not exist" in bad.stderr
    assert "loading" not in bad.stderr and "Traceback" not in bad.stderr
    assert RunStore(tmp_path / "data" / "conclave.db").list_runs("figure") == []


# --- end to end, on the embedded model ---------------------------------------------------


def test_the_cli_runs_the_team_on_smollm2_and_records_every_iteration(with_model, weather, tmp_path):
    """SmolLM2 is no coder: what this shows is that the team ends on a real model with a
    clear status for every iteration, whatever the model writes."""
    import os
    import subprocess
    import sys

    from conclave.app.store import RunStore

    (tmp_path / "fig.toml").write_text(f'request = "Plot temperature and humidity over time"\ndata = "{weather}"\n'
                                       'max_iterations = 2\ncoder_max_tokens = 400\ncritic_max_tokens = 120\n')
    done = subprocess.run([sys.executable, "-m", "conclave.app.cli", "run", "figure", "--config", str(tmp_path / "fig.toml"),
                           "--out", str(tmp_path / "r.json")], env=dict(os.environ), capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    its = result["iterations"]
    assert 1 <= len(its) <= 2 and result["tokens"] > 0 and "Figure team" in done.stdout
    for it in its:
        assert it["status"] in ("figure", "no_figure", "error", "timeout", "no_code")
        assert it["checks"]["figure_written"] == (it["status"] == "figure")
        assert (it["png"] is not None) == (it["status"] == "figure")
    res = FigureResult.from_dict(result)
    assert roles(res)[:2] == ["commander", "coder"]
    # the outcome: the coder is shown the table's real columns, and each failed draft's error
    # goes back to it before the next one
    assert all(col in res.transcript[0]["text"] for col in ("date", "temperature", "humidity"))
    coder_turns = [i for i, m in enumerate(res.transcript) if m["source"] == "coder"]
    for it, turn in zip(res.iterations[:-1], coder_turns[1:]):
        fed_back = " ".join(m["text"] for m in res.transcript[coder_turns[it.index] + 1:turn])
        if it.status in ("error", "timeout"):
            assert it.error.strip().splitlines()[-1][:60] in fed_back
        elif it.status == "no_code":
            assert "held no Python code" in fed_back
    (run_,) = RunStore(with_model / "conclave.db").list_runs("figure")
    assert run_.status == "done" and len(run_.result["iterations"]) == len(its)
    calls = RunStore(with_model / "conclave.db").calls(run_id=run_.id)
    assert {c["prompt_ref"] for c in calls} <= {"figure_coder@1", "figure_critic@1"} and calls
