"""Notebook 14's checkers accept the right answers and explain the usual wrong ones."""
from peftlab.course.exercises import nb14_graduation as nb14
from peftlab.workbook import load_base_model


def stub(*_):
    raise NotImplementedError


def last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_allreduce_bytes(capsys):
    model = load_base_model()[0]
    assert not nb14.check_allreduce_bytes(None, model)
    assert "not attempted" in last_line(capsys)
    right = 4 * 4 * 8 * (2 * (128 + 128) + 2 * (128 + 64))
    assert nb14.check_allreduce_bytes(right, model)
    assert not nb14.check_allreduce_bytes(right // 4, model)
    assert "4 bytes" in last_line(capsys)
    assert not nb14.check_allreduce_bytes(4 * 8 * 4 * 4 * 256, model)
    assert "64 wide" in last_line(capsys)
    assert not nb14.check_allreduce_bytes(4 * 1_045_760, model)
    assert "full fine-tuning" in last_line(capsys)
    assert all(p.requires_grad for p in model.parameters()), "the checker works on a copy"


def test_cluster_plan(capsys):
    """Every GPU count is tried, not only powers of two: 13B full fine-tuning fits on 3 with ZeRO-3."""
    assert nb14.plan_for() == (3, 3)
    assert not nb14.check_cluster_plan(None, 2)
    assert "not attempted" in last_line(capsys)
    assert nb14.check_cluster_plan(3, 3)
    assert "65.0 GiB each (ZeRO-2 needs 81.2)" in last_line(capsys)
    assert not nb14.check_cluster_plan(8, 0)
    assert "more GPUs never help" in last_line(capsys)
    assert not nb14.check_cluster_plan(3, 2)
    assert "over 80" in last_line(capsys)
    assert not nb14.check_cluster_plan(4, 2)                 # the old, powers-of-two answer: it fits, on too many
    assert "fewer GPUs" in last_line(capsys)
    assert not nb14.check_cluster_plan(5, 3)
    assert "fewer GPUs" in last_line(capsys)
    assert not nb14.check_cluster_plan(3, 5)
    assert "0, 1, 2 or 3" in last_line(capsys)


def test_the_stage_hint_is_given_only_where_a_lower_stage_really_fits(capsys):
    """On 5 GPUs ZeRO-1 fits: a learner who answers (5, 3) is told fewer GPUs would do, and never that a
    lower stage fits where it does not (ZeRO-2 on 3 GPUs needs 81.2 GiB)."""
    from peftlab.workbook.memory import data_parallel_memory
    assert data_parallel_memory("13B", "full", 3, 2)["total"] / 2**30 > 80
    assert nb14.check_cluster_plan(3, 3)
    assert "lower stage" not in last_line(capsys)


def test_rank_loss(capsys):
    right = lambda s, n, total, world: s * world / total
    measured = {"mean of rank means": (23.0 / 16 + 31.5 / 17) / 2, "batch mean": (23.0 + 31.5) / (16 + 17)}
    assert not nb14.check_rank_loss(None, None, right)
    assert "not attempted" in last_line(capsys)
    assert not nb14.check_rank_loss(False, measured, stub)
    assert "not attempted" in last_line(capsys)
    assert not nb14.check_rank_loss(True, measured, right)
    assert "'different', not 'equal'" in last_line(capsys)
    assert not nb14.check_rank_loss(False, {"mean of rank means": 1.6, "batch mean": 1.6}, right)
    assert "measure both" in last_line(capsys)
    assert not nb14.check_rank_loss("no", measured, right)
    assert "predict True" in last_line(capsys)
    assert nb14.check_rank_loss(False, measured, right)
    assert not nb14.check_rank_loss(False, measured, lambda s, n, total, world: s / n)
    assert "each rank's own mean" in last_line(capsys)
    assert not nb14.check_rank_loss(False, measured, lambda s, n, total, world: s / total)
    assert "multiply by world_size" in last_line(capsys)
