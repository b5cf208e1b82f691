"""The row format of the built-in suite: one QA row per phrasing of a fact."""

from __future__ import annotations


def phrasing_rows(
    domain: str, key: str, group: str | list[str], phrasings, answers, grader: str, **fields
) -> list[dict]:
    """One QA row per phrasing of one fact about the entity `group`."""
    qid = f"{domain}/{key}"
    return [
        {
            "id": f"{qid}/{i}",
            "qid": qid,
            "group": group,
            "domain": domain,
            "question": phrasing.format(**fields),
            "answers": list(answers),
            "choices": None,
            "grader": grader,
        }
        for i, phrasing in enumerate(phrasings)
    ]
