import pytest

from conclave.prompts import loader as prompts
from conclave.prompts.loader import PromptError, Registry


def write(tmp_path, name, body):
    (tmp_path / f"{name}.toml").write_text(body)
    return tmp_path


def test_shipped_library_loads_and_every_prompt_renders():
    lib = prompts.library()
    seen = list(lib)
    assert {p.ref for p in seen} >= {"demo@1", "sentiment@1"}
    for p in seen:
        r = p.render(**{v: "x" for v in p.variables})
        assert r.ref == p.ref and (r.text or r.messages)


def test_render_chat_and_text():
    r = prompts.render("demo", question="What is RWKV?")
    assert r.ref == "demo@1" and r.text is None
    assert r.messages[-1] == {"role": "user", "content": "What is RWKV?"}
    t = prompts.render("sentiment", review="Loved it")
    assert t.messages is None and t.text.endswith("Review: Loved it\nSentiment:")


def test_latest_version_is_the_default_and_old_ones_stay(tmp_path):
    write(tmp_path, "greet", '''
id = "greet"
[[versions]]
version = 1
variables = ["name"]
template = "Hi {{ name }}"
[[versions]]
version = 2
variables = ["name", "place"]
template = "Hello {{ name }} from {{ place }}"
''')
    reg = Registry(tmp_path)
    assert reg.render("greet", name="A", place="B").ref == "greet@2"
    assert reg.render("greet", 1, name="A").text == "Hi A"
    assert reg.get("greet@1").version == 1
    with pytest.raises(PromptError, match="no version 3"):
        reg.get("greet", 3)


@pytest.mark.parametrize(
    "body, message",
    [
        ('id = "p"\n[[versions]]\nversion = 1\nvariables = []\ntemplate = "{{ who }}"', "undeclared variables \\['who'\\]"),
        ('id = "p"\n[[versions]]\nversion = 1\nvariables = ["a", "b"]\ntemplate = "{{ a }}"', "never uses \\['b'\\]"),
        ('id = "other"\n[[versions]]\nversion = 1\ntemplate = "x"', "file name"),
        ('id = "p"\n[[versions]]\nversion = 1\ntemplate = "{{ a "\nvariables = ["a"]', "syntax error"),
        ('id = "p"\n[[versions]]\nversion = 1\ntemplate = "x"\nmessages = []', "exactly one"),
        ('id = "p"\n[[versions]]\nversion = 1\nmessages = [{ role = "robot", content = "x" }]', "role"),
        ('id = "p"\n[[versions]]\nversion = 1\ntemplate = "x"\n[[versions]]\nversion = 1\ntemplate = "y"', "duplicate version"),
        ('id = "p"\n[[versions]]\nversion = 0\ntemplate = "x"', "positive integer"),
        ('id = "p"\n[[versions]]\nversion = 1\ntemplate = "x"\ntypo = 1', "unknown keys"),
        ('id = "p"\nversions = [', "invalid TOML"),
        ('id = "p"', "at least one"),
    ],
)
def test_bad_templates_fail_at_load(tmp_path, body, message):
    write(tmp_path, "p", body)
    with pytest.raises(PromptError, match=message):
        Registry(tmp_path)


def test_missing_or_unknown_variables_fail_at_render():
    p = prompts.library().get("demo")
    with pytest.raises(PromptError, match="missing \\['question'\\]"):
        p.render()
    with pytest.raises(PromptError, match="unknown \\['qestion'\\]"):
        p.render(question="a", qestion="b")


def test_unknown_prompt_lists_the_known_ones():
    with pytest.raises(PromptError, match="demo"):
        prompts.library().get("nope")


def test_templates_cannot_reach_python_internals(tmp_path):
    write(tmp_path, "evil", 'id = "evil"\n[[versions]]\nversion = 1\nvariables = ["x"]\ntemplate = "{{ x.__class__.__mro__ }}"')
    with pytest.raises(Exception):
        Registry(tmp_path).render("evil", x="s")
