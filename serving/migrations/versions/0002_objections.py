"""Objections (serving.objections): the same table and index as the SQLite watch store's.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """CREATE TABLE objections (
        id TEXT PRIMARY KEY, subject TEXT NOT NULL, record_kind TEXT NOT NULL,
        record_ref TEXT NOT NULL, record_dated TEXT NOT NULL, reasons TEXT NOT NULL,
        statement TEXT NOT NULL, opened_at TEXT NOT NULL, opened_by TEXT NOT NULL,
        resolved_at TEXT, resolved_by TEXT, outcome TEXT)"""
    )
    op.execute("CREATE INDEX objections_subject ON objections (subject)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS objections")
