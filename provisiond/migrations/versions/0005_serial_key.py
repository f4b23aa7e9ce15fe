"""serial numbers: one alphabet, unique and looked up regardless of case

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 18:00:00.000000

``hosts.serial_key`` is the serial number in lower case, unique: the
hardware check already compared serials without regard to case, and now
uniqueness and every lookup do too. The migration refuses to run over a
database that holds two serials differing only in case, or a serial outside
the alphabet (letters, digits, ``_ . : -``; a ``/`` made a host unreachable
by URL), naming them, and changes nothing.
"""
from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

SERIAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


def upgrade() -> None:
    connection = op.get_bind()
    serials = [row[0] for row in connection.execute(sa.text("SELECT serial FROM hosts ORDER BY serial"))]
    _refuse_bad_serials(serials)
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('serial_key', sa.String(length=64), nullable=True))
    connection.execute(sa.text("UPDATE hosts SET serial_key = lower(serial)"))
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.alter_column('serial_key', existing_type=sa.String(length=64), nullable=False)
        batch_op.create_unique_constraint('uq_hosts_serial_key', ['serial_key'])


def _refuse_bad_serials(serials: list[str]) -> None:
    problems = []
    bad = [s for s in serials if not SERIAL.fullmatch(s)]
    if bad:
        problems.append("serial numbers outside the alphabet (letters, digits, '_', '.', ':', '-'; at most 64): "
                        + ", ".join(repr(s) for s in bad))
    by_key: dict[str, list[str]] = {}
    for serial in serials:
        by_key.setdefault(serial.lower(), []).append(serial)
    clashes = [group for group in by_key.values() if len(group) > 1]
    if clashes:
        problems.append("serial numbers that differ only in case: "
                        + "; ".join(" and ".join(group) for group in clashes))
    if problems:
        raise RuntimeError(
            "cannot upgrade the schema to 0005 (serial numbers unique regardless of case): "
            + "; ".join(problems) + ". Nothing was changed. Rename or delete these hosts (for example "
            "UPDATE hosts SET serial = 'NEW' WHERE serial = 'OLD'), then run `provisiond db upgrade` again.")


def downgrade() -> None:
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.drop_constraint('uq_hosts_serial_key', type_='unique')
        batch_op.drop_column('serial_key')
