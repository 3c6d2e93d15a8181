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
