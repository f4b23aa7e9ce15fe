"""installs, power operations, group install caps

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 12:28:13.918928
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('installs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('host_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('token_sealed', sa.Text(), nullable=False),
    sa.Column('profile', sa.String(length=64), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('outcome', sa.String(length=32), nullable=True),
    sa.Column('armed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('armed_by', sa.String(length=64), nullable=True),
    sa.Column('booted_mac', sa.String(length=17), nullable=True),
    sa.Column('queued_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('slot_granted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    with op.batch_alter_table('installs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_installs_active'), ['active'], unique=False)
        batch_op.create_index(batch_op.f('ix_installs_host_id'), ['host_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_installs_queued_at'), ['queued_at'], unique=False)

    op.create_table('power_operations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('host_id', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('argument', sa.String(length=32), nullable=False),
    sa.Column('persistent', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('power_operations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_power_operations_host_id'), ['host_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_power_operations_status'), ['status'], unique=False)

    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('install_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_events_install_id_installs', 'installs', ['install_id'], ['id'], ondelete='SET NULL')

    with op.batch_alter_table('groups', schema=None) as batch_op:
        batch_op.add_column(sa.Column('install_cap', sa.Integer(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('groups', schema=None) as batch_op:
        batch_op.drop_column('install_cap')

    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_constraint('fk_events_install_id_installs', type_='foreignkey')
        batch_op.drop_column('install_id')

    with op.batch_alter_table('power_operations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_power_operations_status'))
        batch_op.drop_index(batch_op.f('ix_power_operations_host_id'))

    op.drop_table('power_operations')
    with op.batch_alter_table('installs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_installs_queued_at'))
        batch_op.drop_index(batch_op.f('ix_installs_host_id'))
        batch_op.drop_index(batch_op.f('ix_installs_active'))

    op.drop_table('installs')
