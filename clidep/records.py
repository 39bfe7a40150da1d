"""The JSON records clidep writes and reads back (an export's manifest.json, a compress run's run.json) as
dataclasses: ``Record`` gives each its ``from_dict`` and ``to_dict``.

A key a record does not declare (one an older or newer clidep wrote, or a file's own settings) is kept in
``extra`` and written back unchanged, so every record written so far loads and comes back the same JSON; a
field that is None (unknown, not measured, not asked for) is left out, as clidep has always left it out.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any


class Record:
    """A JSON object as a dataclass: declared fields, and ``extra`` for the keys it does not declare."""

    extra: dict[str, Any]

    @classmethod
    def from_dict(cls, record: dict):
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in record.items() if k in names}
        return cls(**known, extra={k: v for k, v in record.items() if k not in names})

    def to_dict(self) -> dict:
        """The JSON object: the declared fields that are set, nested records as dicts, then ``extra``."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "extra" and value is not None:
                out[f.name] = value.to_dict() if isinstance(value, Record) else value
        return {**out, **self.extra}
