"""The data stage: QA sources, batched generation, grading, and the labeled-set builder.

Public entry points: `stage.run_data_stage(cfg)`, `stage.label_qa_rows(...)`,
`generation.generate_answers(...)`, `grading.grade(...)`, `sources.read_qa_jsonl(path)`.
"""
