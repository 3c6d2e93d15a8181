"""A user's dataset, graders, profile checkpoints and the artifacts' manifest check."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from aragog.common.pool import load_pool
from aragog.common.workflow import parse_workflow
from aragog.routing import artifacts
from aragog.stack import shipped_workflow
from aragog.training import dataset, graders, profiler
from aragog.training.dataset import DatasetError
from aragog.training.graders import GraderError


def write(tmp_path, lines: list[str]) -> str:
    p = tmp_path / "data.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(p)


def test_dataset_loads_and_splits_by_id_alone(tmp_path):
    lines = [json.dumps({"id": f"q{i}", "input": f"question {i}", "expected": i}) for i in range(400)]
    recs = dataset.load(write(tmp_path, lines))
    assert [r.expected for r in recs[:3]] == ["0", "1", "2"]
    share = np.mean([r.split == "train" for r in recs])
    assert 0.63 < share < 0.77
    # reordering or dropping lines never moves another request between splits
    again = {r.id: r.split for r in dataset.load(write(tmp_path, lines[::-1][:100]))}
    assert all(again[r.id] == r.split for r in recs if r.id in again)
    # another seed, another split; the user's own `split` wins
    other = dataset.load(write(tmp_path, lines), seed=1)
    assert [r.split for r in other] != [r.split for r in recs]
    mine = dataset.load(write(tmp_path, [json.dumps({"id": "a", "input": "x", "split": "test"}),
                                         json.dumps({"id": "b", "input": "y", "split": "train"})]))
    assert [r.split for r in mine] == ["test", "train"]


@pytest.mark.parametrize("line, message", [
    ("{not json", "line 2: not a JSON object"),
    ('["a"]', "line 2: each line must be a JSON object"),
    ('{"id": "q1", "input": "again"}', "line 2: id 'q1' repeats line 1"),
    ('{"id": "q2"}', "line 2 (id 'q2'): `input` must be a non-empty string"),
    ('{"id": "q2", "input": {"question": "x"}}', "`input` must be a non-empty string"),
    ('{"id": "q2", "input": "x", "split": "dev"}', "`split` must be train or test"),
    ('{"id": "q2", "input": "x", "expected": [1]}', "`expected` must be a string or a number"),
    ('{"id": "q2", "input": "x", "answer": "1"}', "unknown fields ['answer']"),
    ('{"id": "a\\nb", "input": "x"}', "without control characters"),
])
def test_a_bad_line_is_named(tmp_path, line, message):
    path = write(tmp_path, ['{"id": "q1", "input": "first", "split": "train"}', line])
    with pytest.raises(DatasetError, match=None) as e:
        dataset.load(path)
    assert message in str(e.value) and path in str(e.value)


def test_graders_match_as_documented():
    assert graders.make("exact").match(" 42 ", "42")
    assert not graders.make("exact").match("42.", "42")
    assert graders.make("normalized").match("The  Answer, is: PARIS!", "the answer is paris")
    num = graders.make("numeric:0.01")
    assert num.match("so the total is 1,234.5 dollars", "1234.5")
    tight = graders.make("numeric:0.001")  # relative or absolute
    assert tight.match("x = 100.5", "100") is False and tight.match("about 100.9", "101")
    assert graders.make("numeric").match("3.0", "3") and not graders.make("numeric").match("n/a", "3")
    ch = graders.make("choice")
    for text in ("B", "(B) because", "B. Paris", "The answer is B.", "I pick (B)"):
        assert ch.match(text, "B"), text
    assert not ch.match("A", "B") and not ch.match("no idea", "B")
    rx = graders.make(r"regex:SQL: (\w+)")
    assert rx.match("thinking... SQL: select", "select") and not rx.match("select", "select")
    user = graders.make("operator:eq")  # module:function, any importable callable
    assert user.match("Paris", "Paris") is True and user.match("Paris", "paris") is False


def test_preserving_with_labels_and_without():
    exact = graders.make("exact")
    # as good as the largest: right, or the largest is wrong too
    assert exact.preserves("4", reference="4", expected="4")
    assert not exact.preserves("5", reference="4", expected="4")
    assert exact.preserves("6", reference="5", expected="4")
    agree = graders.make("agree")
    assert agree.preserves("Paris.", reference="paris", expected=None)
    assert not agree.preserves("London", reference="paris", expected="London")  # agreement only
    assert agree.largest_correct("paris", None) and not agree.largest_correct("paris", "rome")


@pytest.mark.parametrize("spec, message", [
    ("fuzzy", "unknown grader 'fuzzy'"),
    ("numeric:abc", "needs a number"),
    ("regex:(", "bad pattern"),
    ("exact:1", "takes no argument"),
    ("nosuchmodule_xyz:fn", "cannot import fn"),
    ("agree:agree", "takes a matching grader"),
])
def test_a_bad_grader_spec_says_what_is_known(spec, message):
    with pytest.raises(GraderError, match=None) as e:
        graders.make(spec)
    assert message in str(e.value)


def test_graders_check_the_labels_they_need():
    recs = [dataset.Record("a", "x", "B", "train", 1), dataset.Record("b", "y", None, "train", 2)]
    with pytest.raises(GraderError, match="line 2 .*no `expected`"):
        graders.check(graders.make("choice"), recs)
    graders.check(graders.make("agree"), recs)
    with pytest.raises(GraderError, match="line 1 .*not an option letter"):
        graders.check(graders.make("choice"), [dataset.Record("a", "x", "Paris", "train", 1)])


def test_checkpoint_resumes_and_refuses_another_run(tmp_path):
    path = str(tmp_path / "ck.jsonl")
    head = {"workflow": "w1", "pool": "p", "dataset": "d", "grader": "exact"}
    ck = profiler.Checkpoint(path, head, 4)
    keep = np.array([True, False, True, True])
    with open(path, "a") as f:
        ck.add(f, "r1", profiler.RequestProfile(keep, True, 5, 100, 0.5))
        f.write('{"id": "r2", "preserving": [0')  # killed mid-write
    again = profiler.Checkpoint(path, head, 4)
    assert list(again.done) == ["r1"] and (again.done["r1"].preserving == keep).all()
    with pytest.raises(profiler.ProfileError, match="another grader"):
        profiler.Checkpoint(path, {**head, "grader": "choice"}, 4)


def test_artifacts_manifest_refuses_a_changed_workflow_or_pool(tmp_path):
    pool = load_pool("llama3")
    wf = parse_workflow(shipped_workflow("chain3"), pool.names)
    assert artifacts.load(str(tmp_path), pool, wf)[1].startswith("no routing artifacts")
    d = tmp_path / "llama3" / "chain3"
    d.mkdir(parents=True)
    good = {"format": artifacts.FORMAT, "workflow": artifacts.workflow_digest(wf),
            "pool": artifacts.pool_digest(pool, wf)}
    (d / "summary.json").write_text(json.dumps({"manifest": good}))
    # the manifest matches: it gets as far as reading the (absent) files
    assert "unreadable" in artifacts.load(str(tmp_path), pool, wf)[1]
    other_wf = parse_workflow(shipped_workflow("chain3").replace("output_tokens: ", "output_tokens: 1", 1),
                              pool.names)
    assert "workflow definition changed" in artifacts.load(str(tmp_path), pool, other_wf)[1]
    slower = dataclasses.replace(pool, models=tuple(
        dataclasses.replace(m, tpot_ms=m.tpot_ms * 2) for m in pool.models))
    assert "candidate models changed" in artifacts.load(str(tmp_path), slower, wf)[1]
    scaled = dataclasses.replace(pool, models=tuple(
        dataclasses.replace(m, instances=m.instances * 4) for m in pool.models))
    assert artifacts.pool_digest(scaled, wf) == artifacts.pool_digest(pool, wf)
