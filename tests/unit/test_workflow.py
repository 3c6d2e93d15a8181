import pytest

from aragog.common.workflow import WorkflowError, parse_workflow
from aragog.stack import shipped_workflow

POOL = ["llm-8b", "llm-14b", "llm-32b", "llm-70b"]


def wf_yaml(stages: str, extra: str = "") -> str:
    return f"id: w\nstages:\n{stages}{extra}"


LLAMA = ["llama3-3b", "llama3-8b", "llama3-70b"]


def test_shipped_chain_parses_with_its_space():
    wf = parse_workflow(shipped_workflow("chain3"), LLAMA)
    assert [s.name for s in wf.llm_stages] == ["draft", "critique", "refine"]
    assert wf.num_configurations == 27  # candidates left to the pool: 3 models per stage
    assert wf.sink.name == "refine"
    assert wf.depths() == {"draft": 0, "critique": 1, "refine": 2}


def test_candidates_left_to_the_pool_need_a_pool():
    with pytest.raises(WorkflowError, match="or omitted"):
        parse_workflow(shipped_workflow("chain3"))


def test_config_index_round_trips_every_configuration():
    wf = parse_workflow(shipped_workflow("chain3"), LLAMA)
    seen = set()
    for i in range(wf.num_configurations):
        models = wf.config_models(i)
        assert wf.config_index(models) == i
        seen.add(tuple(models))
    assert len(seen) == 27
    # stage 0 is the fastest-varying digit
    assert wf.config_models(1) == ["llama3-8b", "llama3-3b", "llama3-3b"]


def test_diamond_depths_and_tool_stage():
    text = wf_yaml(
        "  - {name: a, prompt: '{input}', candidates: [llm-8b]}\n"
        "  - {name: b, depends_on: [a], prompt: '{a}', candidates: [llm-8b, llm-70b]}\n"
        "  - {name: c, kind: tool, depends_on: [a], prompt: 'tool {a}'}\n"
        "  - {name: d, depends_on: [b, c], prompt: '{b} {c}', candidates: [llm-14b]}\n"
    )
    wf = parse_workflow(text, POOL)
    assert wf.depths() == {"a": 0, "b": 1, "c": 1, "d": 2}
    assert [s.name for s in wf.llm_stages] == ["a", "b", "d"]
    assert wf.num_configurations == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id: w\nstages: [", "does not parse"),
        ("- just a list", "must be a mapping"),
        ("id: BAD ID\nstages: []", "`id`"),
        (wf_yaml("  - {name: a, prompt: '{input}', candidates: []}\n"), "candidates"),
        (wf_yaml("  - {name: a, prompt: '{input}', candidates: [gpt-9]}\n"), "not in the pool"),
        (wf_yaml("  - {name: a, depends_on: [b], prompt: '{input}', candidates: [llm-8b]}\n"),
         "not declared before"),
        (wf_yaml("  - {name: a, prompt: '{nope}', candidates: [llm-8b]}\n"), "only {input}"),
        (wf_yaml("  - {name: a, prompt: '{input}', candidates: [llm-8b]}\n"
                 "  - {name: b, prompt: '{input}', candidates: [llm-8b]}\n"), "exactly one stage"),
        (wf_yaml("  - {name: a, prompt: '{input}', candidates: [llm-8b], output_tokens: 0}\n"),
         "output_tokens"),
        (wf_yaml("  - {name: a, prompt: '{input}', candidates: [llm-8b]}\n",
                 "per_workflow: [llm-70b]\n"), "not a candidate"),
        (wf_yaml("  - {name: a, kind: tool, prompt: '{input}'}\n"), "at least one llm"),
        (wf_yaml("  - {name: a, prompt: '{input:>99999999999}', candidates: [llm-8b]}\n"),
         "no format spec"),
        (wf_yaml("  - {name: a, prompt: '{input!r}', candidates: [llm-8b]}\n"), "no format spec"),
        (wf_yaml("  - {name: a, prompt: '{input.x}', candidates: [llm-8b]}\n"), "no format spec"),
    ],
)
def test_invalid_declarations_say_what_is_wrong(text, message):
    with pytest.raises(WorkflowError, match=message.replace("{", r"\{").replace("(", r"\(")):
        parse_workflow(text, POOL)


def alias_bomb(field: str, levels: int = 7) -> str:
    """Billion laughs: each anchor names 9 copies of the one before; `field` holds 9**levels."""
    lines = ["id: w", "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    lines += [f"{field}: *l{levels - 1}",
              "stages: [{name: a, prompt: '{input}', candidates: [llm-8b]}]"]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (alias_bomb("description"), "anchors and aliases"),
        (alias_bomb("per_workflow"), "anchors and aliases"),
        (wf_yaml("  - {name: a, prompt: '{input}', candidates: &c [llm-8b]}\n"),
         "anchors and aliases"),
        ("id: w\nstages: " + "[" * 50_000 + "]" * 50_000, "nested deeper than"),
        ("id: w\nx:\n" + "".join(" " * i + "- \n" for i in range(2000)), "nested deeper than"),
        (wf_yaml("  - {name: a, prompt: '{input}', candidates: [llm-8b]}\n",
                 f"description: {'x' * 1001}\n"), "`description` must be a string"),
        (wf_yaml("  - {name: a, prompt: '{input}', candidates: [llm-8b]}\n",
                 "description: [a, b]\n"), "`description` must be a string"),
        (wf_yaml("  - {name: a, prompt: '{input}', candidates: [llm-8b], output_tokens: "
                 + "9" * 5000 + "}\n"), "does not parse"),
        ('id: "w\\n"\nstages: []', "`id` must be"),
        ('id: "a:b"\nstages: []', "`id` must be"),
        (wf_yaml('  - {name: "a\\n", prompt: "{input}", candidates: [llm-8b]}\n'), "`name` must"),
        ("\x1f", "does not parse"),  # the reader refuses it as the loader is built
        ("id: w\x00\n", "does not parse"),
    ],
    ids=["bomb-description", "bomb-other-field", "anchor", "deep-flow", "deep-block",
         "long-description", "description-not-string", "huge-int", "id-newline", "id-colon",
         "stage-newline", "control-character", "nul"],
)
def test_hostile_yaml_is_refused_before_anything_large_is_built(text, message):
    """Refused with WorkflowError (INVALID_ARGUMENT at the router), never RecursionError or a
    walk over an expansion; the message stays short."""
    with pytest.raises(WorkflowError) as err:
        parse_workflow(text, POOL)
    assert message in str(err.value)
    assert len(str(err.value)) <= 500


LONG = "k" * 100_000


@pytest.mark.parametrize(
    ("text", "tail"),
    [
        (wf_yaml(f"  - {{name: a, kind: {LONG}, prompt: '{{input}}'}}\n"), ""),
        (wf_yaml(f"  - {{name: a, depends_on: [{LONG}], prompt: '{{input}}'}}\n"),
         "cycles are not allowed)"),
        (wf_yaml(f"  - {{name: a, prompt: '{{input}} {{{LONG}}}', candidates: [llm-8b]}}\n"),
         "can be referenced"),
        (wf_yaml(f"  - {{name: a, prompt: '{{input}}', candidates: [{LONG}]}}\n"),
         "llm-70b)"),
    ],
    ids=["kind", "depends_on", "placeholder", "candidate"],
)
def test_messages_quote_client_values_briefly(text, tail):
    """A value the client sent is quoted short, so what the message says to change stays."""
    with pytest.raises(WorkflowError) as err:
        parse_workflow(text, POOL)
    message = str(err.value)
    assert len(message) < 300 and "…" in message and message.endswith(tail)
