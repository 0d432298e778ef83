"""The kill -9 soak at a small size: two SIGKILLs at random moments and their resumes end exactly where an
uninterrupted run ends (benchmarks/soak_kill_resume.py runs the long version)."""

from benchmarks import soak_kill_resume


def test_kills_and_resumes_end_exactly_like_an_uninterrupted_run(tmp_path):
    args = soak_kill_resume.Args(kills=2, max_delay=3.0, total_steps=160, seed=1, work_dir=str(tmp_path))
    result = soak_kill_resume.soak(args)
    assert result["kills"] == 2 and result["resumes"] >= 2
    assert result["differences"] == []
