"""The answer pool reuses an answer only for the question it answered."""

from __future__ import annotations

from collections import Counter

from calibtune.data.pool import AnswerPool, LabeledPart


def test_a_pooled_answer_is_reused_only_for_the_same_question_choices_and_gold(tmp_path):
    asked = {"id": "q1", "question": "Capital of Peru?", "answers": ["Lima"], "choices": None}
    answered = {**asked, "response": "Lima", "correct": 1.0, "grader": "exact"}
    AnswerPool(tmp_path, {}).add(LabeledPart([answered], None, Counter()))
    pool = AnswerPool(tmp_path, {})  # read back from its folder
    others = [
        {**asked, "question": "Capital of Chile?"},  # another file's row under the same id
        {**asked, "answers": ["Lima", "Ciudad de los Reyes"]},  # edited aliases: grade afresh
        {**asked, "choices": ["Lima", "Cusco"]},
        {**asked, "id": "q2"},
    ]
    taken, missing = pool.take([{**asked, "split": "test"}, *others])
    assert [r["response"] for r in taken.rows] == ["Lima"] and taken.rows[0]["split"] == "test"
    assert missing == others
    assert taken.work["pooled_rows"] == 1
