"""dynamic DHCP leases

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 10:00:00.000000
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('leases',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ip', sa.String(length=15), nullable=False),
    sa.Column('mac', sa.String(length=17), nullable=False),
    sa.Column('subnet', sa.String(length=18), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('client_hostname', sa.String(length=253), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('ip')
    )
    with op.batch_alter_table('leases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_leases_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_leases_mac'), ['mac'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('leases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_leases_mac'))
        batch_op.drop_index(batch_op.f('ix_leases_expires_at'))

    op.drop_table('leases')
