"""power operation queue: BMC key, result, pacing and lease columns

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 16:00:00.000000
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('power_operations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bmc_key', sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column('result', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('requested_by', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('install_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('not_before', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('started_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'))
        batch_op.create_index(batch_op.f('ix_power_operations_bmc_key'), ['bmc_key'], unique=False)
        batch_op.create_foreign_key('fk_power_operations_install_id_installs', 'installs',
                                    ['install_id'], ['id'], ondelete='SET NULL')


def downgrade() -> None:
    with op.batch_alter_table('power_operations', schema=None) as batch_op:
        batch_op.drop_constraint('fk_power_operations_install_id_installs', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_power_operations_bmc_key'))
        for column in ('attempts', 'lease_until', 'started_at', 'not_before', 'install_id', 'requested_by',
                       'result', 'bmc_key'):
            batch_op.drop_column(column)
