"""installs: the address the first %pre report came from

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 21:00:00.000000

The first hardware report binds the install to the machine that sent it:
later installer calls with its token from any other address get the same
404 as a wrong token, so a token copied from a boot entry is useless
anywhere else.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('installs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bound_address', sa.String(length=45), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('installs', schema=None) as batch_op:
        batch_op.drop_column('bound_address')
