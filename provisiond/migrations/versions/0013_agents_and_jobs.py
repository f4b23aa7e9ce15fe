"""agents, enrollment tickets, the file store, jobs and their runs

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 13:00:00.000000
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        'agents',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('host_id', sa.Integer(), nullable=True),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('credential_hash', sa.String(length=64), nullable=False),
        sa.Column('hostname', sa.String(length=253), nullable=False),
        sa.Column('machine_id', sa.String(length=64), nullable=False),
        sa.Column('serial', sa.String(length=64), nullable=False),
        sa.Column('version', sa.String(length=32), nullable=False),
        sa.Column('address', sa.String(length=45), nullable=True),
        sa.Column('install_id', sa.Integer(), nullable=True),
        sa.Column('created_at', _TIME, nullable=False),
        sa.Column('decided_at', _TIME, nullable=True),
        sa.Column('decided_by', sa.String(length=128), nullable=True),
        sa.Column('last_seen_at', _TIME, nullable=True),
        sa.Column('facts', sa.JSON(), nullable=False),
        sa.Column('facts_at', _TIME, nullable=True),
        sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], name='fk_agents_host_id_hosts', ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['install_id'], ['installs.id'], name='fk_agents_install_id_installs',
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('credential_hash'),
    )
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agents_host_id'), ['host_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_agents_state'), ['state'], unique=False)
        batch_op.create_index(batch_op.f('ix_agents_machine_id'), ['machine_id'], unique=False)
    op.create_table(
        'enrollment_tickets',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('install_id', sa.Integer(), nullable=False),
        sa.Column('host_id', sa.Integer(), nullable=False),
        sa.Column('ticket_hash', sa.String(length=64), nullable=False),
        sa.Column('created_at', _TIME, nullable=False),
        sa.Column('used_at', _TIME, nullable=True),
        sa.ForeignKeyConstraint(['install_id'], ['installs.id'], name='fk_enrollment_tickets_install_id_installs',
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], name='fk_enrollment_tickets_host_id_hosts',
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('install_id'),
        sa.UniqueConstraint('ticket_hash'),
    )
    with op.batch_alter_table('enrollment_tickets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_enrollment_tickets_host_id'), ['host_id'], unique=False)
    op.create_table(
        'files',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('size', sa.Integer(), nullable=False),
        sa.Column('content', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', _TIME, nullable=False),
        sa.Column('created_by', sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'),
    )
    op.create_table(
        'jobs',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('type', sa.String(length=16), nullable=False),
        sa.Column('payload', sa.JSON(), nullable=False),
        sa.Column('digest', sa.String(length=64), nullable=False),
        sa.Column('summary', sa.Text(), nullable=False),
        sa.Column('targets', sa.JSON(), nullable=False),
        sa.Column('purpose', sa.String(length=16), nullable=False),
        sa.Column('step', sa.Integer(), nullable=True),
        sa.Column('timeout_seconds', sa.Integer(), nullable=False),
        sa.Column('created_by', sa.String(length=128), nullable=False),
        sa.Column('created_at', _TIME, nullable=False),
        sa.Column('deadline', _TIME, nullable=False),
        sa.Column('cancelled_at', _TIME, nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_jobs_created_at'), ['created_at'], unique=False)
    op.create_table(
        'job_runs',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('job_id', sa.Integer(), nullable=False),
        sa.Column('host_id', sa.Integer(), nullable=True),
        sa.Column('serial', sa.String(length=64), nullable=False),
        sa.Column('agent_id', sa.Integer(), nullable=True),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('payload', sa.JSON(), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('delivered_at', _TIME, nullable=True),
        sa.Column('lease_until', _TIME, nullable=True),
        sa.Column('finished_at', _TIME, nullable=True),
        sa.Column('exit_code', sa.Integer(), nullable=True),
        sa.Column('output', sa.Text(), nullable=False),
        sa.Column('output_truncated', sa.Boolean(), nullable=False),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('result_key', sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name='fk_job_runs_job_id_jobs', ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], name='fk_job_runs_host_id_hosts', ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], name='fk_job_runs_agent_id_agents',
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('job_id', 'host_id', name='uq_job_runs_job_host'),
    )
    with op.batch_alter_table('job_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_job_runs_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_job_runs_host_id'), ['host_id'], unique=False)
        batch_op.create_index('ix_job_runs_agent_state', ['agent_id', 'state'], unique=False)
        batch_op.create_index('ix_job_runs_state_lease', ['state', 'lease_until'], unique=False)


def downgrade() -> None:
    op.drop_table('job_runs')
    op.drop_table('jobs')
    op.drop_table('files')
    op.drop_table('enrollment_tickets')
    op.drop_table('agents')
