"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 12:13:48.272060
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name'),
    sa.UniqueConstraint('token_hash')
    )
    op.create_table('groups',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('variables', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('hosts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('serial', sa.String(length=64), nullable=False),
    sa.Column('hostname', sa.String(length=253), nullable=False),
    sa.Column('ip', sa.String(length=15), nullable=True),
    sa.Column('prefix', sa.Integer(), nullable=True),
    sa.Column('gateway', sa.String(length=15), nullable=True),
    sa.Column('dns', sa.JSON(), nullable=False),
    sa.Column('bmc_type', sa.String(length=16), nullable=True),
    sa.Column('bmc_address', sa.String(length=253), nullable=True),
    sa.Column('bmc_port', sa.Integer(), nullable=True),
    sa.Column('bmc_user', sa.String(length=64), nullable=True),
    sa.Column('bmc_secret', sa.Text(), nullable=True),
    sa.Column('manufacturer', sa.String(length=128), nullable=True),
    sa.Column('model', sa.String(length=128), nullable=True),
    sa.Column('expected_cpus', sa.Integer(), nullable=True),
    sa.Column('expected_memory_mib', sa.Integer(), nullable=True),
    sa.Column('expected_disks', sa.JSON(), nullable=True),
    sa.Column('profile', sa.String(length=64), nullable=False),
    sa.Column('os', sa.String(length=64), nullable=True),
    sa.Column('owner', sa.String(length=128), nullable=True),
    sa.Column('site', sa.String(length=64), nullable=True),
    sa.Column('rack', sa.String(length=64), nullable=True),
    sa.Column('protected', sa.Boolean(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('state_reason', sa.String(length=32), nullable=True),
    sa.Column('variables', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('hostname'),
    sa.UniqueConstraint('ip'),
    sa.UniqueConstraint('serial')
    )
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_hosts_rack'), ['rack'], unique=False)
        batch_op.create_index(batch_op.f('ix_hosts_site'), ['site'], unique=False)
        batch_op.create_index(batch_op.f('ix_hosts_state'), ['state'], unique=False)

    op.create_table('events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('host_id', sa.Integer(), nullable=True),
    sa.Column('time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_events_host_id'), ['host_id'], unique=False)

    op.create_table('host_groups',
    sa.Column('host_id', sa.Integer(), nullable=False),
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('host_id', 'group_id')
    )
    with op.batch_alter_table('host_groups', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_host_groups_group_id'), ['group_id'], unique=False)

    op.create_table('nics',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('host_id', sa.Integer(), nullable=False),
    sa.Column('mac', sa.String(length=17), nullable=False),
    sa.Column('name', sa.String(length=32), nullable=True),
    sa.Column('primary', sa.Boolean(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('mac')
    )
    with op.batch_alter_table('nics', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_nics_host_id'), ['host_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('nics', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_nics_host_id'))

    op.drop_table('nics')
    with op.batch_alter_table('host_groups', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_host_groups_group_id'))

    op.drop_table('host_groups')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_events_host_id'))

    op.drop_table('events')
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_hosts_state'))
        batch_op.drop_index(batch_op.f('ix_hosts_site'))
        batch_op.drop_index(batch_op.f('ix_hosts_rack'))

    op.drop_table('hosts')
    op.drop_table('groups')
    op.drop_table('api_tokens')
