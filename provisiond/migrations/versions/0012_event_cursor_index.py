"""events: an index on the cursor's own order, (COALESCE(txid, 0), id)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 09:00:00.000000

Readers order and page events by (COALESCE(txid, 0), id) (txid is NULL on
SQLite); the plain (txid, id) index could not serve that expression, so a
follower of every event scanned the table. The expression index can.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_events_txid_id', table_name='events')
    op.create_index('ix_events_cursor', 'events', [sa.text('COALESCE(txid, 0)'), 'id'])


def downgrade() -> None:
    op.drop_index('ix_events_cursor', table_name='events')
    op.create_index('ix_events_txid_id', 'events', ['txid', 'id'])
