"""power_operations.last_command_at: the gap between two commands to one BMC,
kept across workers

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 13:00:00.000000

When a worker finishes an operation it records when its last command to the
BMC ended; the worker that claims that BMC's next operation (perhaps on
another machine) waits out bmc_min_gap_ms from then.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('power_operations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_command_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('power_operations', schema=None) as batch_op:
        batch_op.drop_column('last_command_at')
