"""The revision counter (``meta``, ``_id`` ``revision``): it grows with every change a worker must
react to (a control, a reload of the read models), so workers re-read the read models only when
something changed."""

from __future__ import annotations

from pymongo.asynchronous.database import AsyncDatabase

from mailwarden_runtime.documents import Stored
from mailwarden_runtime.mongo import Document

META = "meta"
REVISION = "revision"


class RevisionDoc(Stored):
    n: int = 0


class Revision:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._meta = db[META]

    async def bump(self) -> None:
        await self._meta.update_one({"_id": REVISION}, {"$inc": {"n": 1}}, upsert=True)

    async def current(self) -> int:
        doc = await self._meta.find_one({"_id": REVISION})
        return 0 if doc is None else RevisionDoc.model_validate(doc).n
