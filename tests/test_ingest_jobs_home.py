"""One home for the job table: every SQL statement on ``ingest_jobs`` is in comfyvn/ingest/jobstore.py
(the schema in comfyvn/store/migrations.py), so a change of its columns or of the outbox rule is made once."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "comfyvn"
HOMES = {PACKAGE / "ingest" / "jobstore.py", PACKAGE / "store" / "migrations.py"}
SQL_ON_JOBS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|FROM|INTO)\b[^;]*\bingest_jobs\b", re.IGNORECASE | re.DOTALL)


def statements_on_jobs(source: str) -> list[int]:
    """Lines of the string constants (f-string parts included) that read or write ``ingest_jobs``."""
    return [node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_ON_JOBS.search(node.value)]


def test_every_statement_on_ingest_jobs_lives_in_the_job_store() -> None:
    found = {f"{path.relative_to(PACKAGE.parent)}:{line}"
             for path in PACKAGE.rglob("*.py") if path not in HOMES
             for line in statements_on_jobs(path.read_text(encoding="utf-8"))}
    assert found == set()


def test_the_check_sees_a_statement() -> None:
    assert statements_on_jobs('conn.execute("UPDATE ingest_jobs SET status = ? WHERE job_id = ?", row)') == [1]
    assert statements_on_jobs('x = f"SELECT * FROM ingest_jobs WHERE job_id IN ({marks})"') == [1]
    assert statements_on_jobs('"""Jobs live in the table ``ingest_jobs``."""') == []
