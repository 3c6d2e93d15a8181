"""The recorded engines: RouteLLM's real MMLU outcomes shipped with the package, and the
answers the mmlu-recorded pool's models give from them."""

import collections
import importlib.util
import pathlib

import pytest
from aragog.common.pool import load_pool
from aragog.emulation import recorded
from aragog.emulation.answer import answer as pool_answer
from aragog.training import dataset

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "routellm-mmlu"


def test_the_shipped_file_holds_routellms_outcomes():
    recs = recorded.records()
    assert len(recs) == 14042
    assert len({r.subject for r in recs}) == 57
    assert len({r.id for r in recs}) == len(recs)
    # the overall figures the data README states (GPT-4 80.6%, Mixtral 68.1%)
    assert sum(r.strong_correct for r in recs) == 11315
    assert sum(r.weak_correct for r in recs) == 9560
    assert sum(r.weak_correct and not r.strong_correct for r in recs) == 742


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data/routellm-mmlu")
def test_the_shipped_file_is_the_compaction_of_the_release():
    spec = importlib.util.spec_from_file_location(
        "compact", ROOT / "scripts" / "compact_routellm_mmlu.py")
    compact = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compact)
    shipped = ROOT / "services" / "emulation" / "data" / "routellm-mmlu.csv.gz"
    assert compact.compact(SHARED) == shipped.read_bytes()


def test_recorded_models_answer_the_real_correctness_with_the_designated_letter():
    recs = recorded.records()
    first: dict[str, recorded.Record] = {}
    for r in recs:
        first.setdefault(recorded.normalise(r.prompt), r)
    right = collections.Counter()
    for r in recs[::7]:
        truth = recorded.designated_letter(r.prompt)
        wrong = recorded.wrong_letter(r.prompt)
        assert truth in "ABCD" and wrong in "ABCD" and wrong != truth
        source = first[recorded.normalise(r.prompt)]  # duplicates answer from the first
        for model in recorded.MODELS:
            got = recorded.answer(model, r.prompt)
            assert got == (truth if source.correct(model) else wrong)
            right[model] += got == truth
    n = len(recs[::7])
    assert right[recorded.STRONG] / n == pytest.approx(0.806, abs=0.02)
    assert right[recorded.WEAK] / n == pytest.approx(0.681, abs=0.02)


def test_two_recordings_of_one_prompt_with_different_outcomes_answer_from_the_first():
    by_prompt = collections.defaultdict(list)
    for r in recorded.records():
        by_prompt[recorded.normalise(r.prompt)].append(r)
    clashes = [rs for rs in by_prompt.values()
               if len({(r.weak_correct, r.strong_correct) for r in rs}) > 1]
    assert len(clashes) == 4
    for rs in clashes:
        assert recorded.find(rs[1].prompt) is rs[0]


def test_designated_letters_are_spread_over_the_options():
    letters = collections.Counter(row["expected"] for row in recorded.dataset())
    assert set(letters) == set("ABCD")
    assert all(0.22 < k / sum(letters.values()) < 0.28 for k in letters.values())


@pytest.mark.parametrize("template", [
    "{input}",
    "  {input}  \n",
    "Answer the question concisely.\nQuestion: {input}",
    "Question: {input}\nDraft answer: (B)\nList the draft's mistakes.",
    "You are an expert.\n\n{input}\nReply with one letter.",
])
def test_a_stage_template_may_wrap_the_prompt(template):
    recs = recorded.records()
    # a one-paragraph question and one with a multi-line passage
    for r in (recs[0], max(recs, key=lambda r: r.prompt.count("\n"))):
        prompt = template.format(input=r.prompt)
        assert recorded.find(prompt) is recorded.find(r.prompt)
        for model in recorded.MODELS:
            assert recorded.answer(model, prompt) == recorded.answer(model, r.prompt)


def test_unknown_prompts_and_other_models_get_none():
    r = recorded.records()[0]
    assert recorded.answer("llama3-8b", r.prompt) is None
    assert recorded.answer(recorded.STRONG, "What is 2 + 2?\nAnswer:") is None
    lines = r.prompt.split("\n")
    assert recorded.find("\n".join(lines[1:])) is None  # part of a prompt is not the prompt
    assert recorded.find(r.prompt.replace("A.", "A)", 1)) is None  # exact match only


def test_the_pool_answer_function_dispatches_recorded_models():
    r = recorded.records()[0]
    prompt = f"Question: {r.prompt}"
    for model in recorded.MODELS:
        assert pool_answer(model, "answer", prompt) == recorded.answer(model, r.prompt)
    digest = pool_answer(recorded.STRONG, "answer", "Why is the sky blue?")
    assert digest.startswith(f"[{recorded.STRONG}/answer] ")
    # a non-recorded model does not read the records
    assert pool_answer("llama3-8b", "answer", prompt).startswith("[llama3-8b/answer] ")


def test_the_dataset_is_written_as_a_dataset_aragog_routing_reads(tmp_path):
    out = tmp_path / "mmlu.jsonl"
    rows = recorded.dataset(str(out))
    assert len(rows) == 14042
    assert set(rows[0]) == {"id", "input", "expected", "subject"}
    assert rows[0]["input"] == recorded.records()[0].prompt
    loaded = dataset.load(str(out))
    assert [(r.id, r.input, r.expected) for r in loaded] == [
        (row["id"], row["input"], row["expected"]) for row in rows]
    assert all(row["subject"] in row["id"] for row in rows)


def test_the_recorded_pool_serves_the_recorded_models():
    pool = load_pool("mmlu-recorded")
    assert tuple(pool.names) == recorded.MODELS
    weak, strong = (pool.model(m) for m in recorded.MODELS)
    assert weak.params_b < strong.params_b  # the configuration space ranks them so
