"""events: a cursor that never misses a line, and lines that outlive their host

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 09:00:00.000000

- ``txid``: on PostgreSQL the id of the transaction that wrote the event (the
  column's default), so a reader can return events in an order no later
  commit can slip into (see provisiond.events); NULL on SQLite, where writers
  take turns.
- ``serial``: the host's serial number, kept with the event.
- ``host_id`` is set to NULL when the host is deleted (it used to delete the
  host's timeline with it): the events stay, found by serial.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

_SQLITE_NAMES = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    txid_default = sa.text("(pg_current_xact_id()::text::bigint)") if postgresql else None
    with op.batch_alter_table('events', schema=None, naming_convention=_SQLITE_NAMES) as batch_op:
        batch_op.add_column(sa.Column('txid', sa.BigInteger(), nullable=True, server_default=txid_default))
        batch_op.add_column(sa.Column('serial', sa.String(length=64), nullable=True))
        batch_op.drop_constraint('events_host_id_fkey' if postgresql else 'fk_events_host_id_hosts',
                                 type_='foreignkey')
        batch_op.create_foreign_key('fk_events_host_id_hosts', 'hosts', ['host_id'], ['id'], ondelete='SET NULL')
        batch_op.create_index('ix_events_serial', ['serial'], unique=False)
        batch_op.create_index('ix_events_txid_id', ['txid', 'id'], unique=False)
    op.execute("UPDATE events SET serial = (SELECT hosts.serial FROM hosts WHERE hosts.id = events.host_id) "
               "WHERE host_id IS NOT NULL")


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.execute("DELETE FROM events WHERE host_id IS NULL AND serial IS NOT NULL")
    with op.batch_alter_table('events', schema=None, naming_convention=_SQLITE_NAMES) as batch_op:
        batch_op.drop_index('ix_events_txid_id')
        batch_op.drop_index('ix_events_serial')
        batch_op.drop_constraint('fk_events_host_id_hosts', type_='foreignkey')
        batch_op.create_foreign_key('events_host_id_fkey' if postgresql else 'fk_events_host_id_hosts', 'hosts',
                                    ['host_id'], ['id'], ondelete='CASCADE')
        batch_op.drop_column('serial')
        batch_op.drop_column('txid')
