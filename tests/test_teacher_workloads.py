"""The varied-length teacher workload: fixed by its seed, every kind of task present, one system prompt."""

from resources.doubles.teacher_workloads import TASKS, VARIED_SYSTEM, varied_conversations


def test_varied_workload_is_seeded_and_spans_every_task_kind():
    convs = varied_conversations(20, seed=3)
    assert convs == varied_conversations(20, seed=3)
    assert convs != varied_conversations(20, seed=4)
    assert {c[0]["content"] for c in convs} == {VARIED_SYSTEM}
    users = [c[1]["content"] for c in convs]
    for _, template in TASKS:  # one-word answers and long essays both present
        opening = template.split("{")[0]
        assert sum(u.startswith(opening) for u in users) == 20 // len(TASKS)
