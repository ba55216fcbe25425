"""What follows one conditional write of the store: its bookkeeping, and the answer to a repeat. I/O.

The purge date kept ahead of expiry, the context's patch log folded, messages archived, a cleared
archive dropped; a repeat answered from what is stored. Speaks pymongo only through the
collections, the expiry and the archive it is given (see storage.store, which holds it).
"""

from __future__ import annotations

import hashlib
import logging

from app import errors
from app.model import Append, Applied, Change, ClearHistory, Expect, Lock, MergeContext, Session
from app.storage import layout
from app.storage.archive import Archive
from app.storage.expiry import Expiry
from app.storage.layout import F
from app.storage.mongo import Collections, storage_errors
from app.storage.updates import Guess

log = logging.getLogger(__name__)
FOLD_AFTER = 8  # patches in the context's log before a worker folds them into the stored text


class Aftermath:
    """After a write of the store landed (`after`) or was found already applied (`replayed`)."""

    def __init__(self, collections: Collections, expiry: Expiry, archive: Archive) -> None:
        self.collections = collections
        self.expiry = expiry
        self.archive = archive

    def replayed(self, stored: Session, change: Change, expect: Expect, now: int, persist: bool) -> Applied:
        """The answer to a repeat: the session as it is, with what the first application got.

        The first application may have failed after its write (a write-concern error, a lost
        answer): a durable repeat first waits for a majority to hold it (a no-op write does), and
        the purge date is kept ahead of expiry as a completed write would have.
        """
        if persist:
            with storage_errors():
                self.collections.durable.update_one(
                    layout.by_id(stored.stored.key, stored.user_id), {"$max": {F.VERSION: 0}}
                )
        if not self.expiry.keep_purgeable_after(stored, persist=persist):
            raise errors.SessionExpired()
        if isinstance(change, Append):
            found = self.archive.seqs_of(stored, expect.request_id)
            seqs = range(found[0], found[-1] + 1) if found else range(0)
            return Applied(stored, replayed=True, seqs=seqs)
        token = stored.stored.lock_token
        held = stored.locked(now) and (
            token == expect.lock_token or token.startswith(lock_token_prefix(expect.request_id))
        )
        return Applied(stored, replayed=True, lock_token=token if isinstance(change, Lock) and held else "")

    def after(self, s: Session, change: Change, guess: Guess, before: dict, persist: bool) -> None:
        """What a write leaves to do: the purge date, folding the patch log, archiving, a cleared archive."""
        if not self.expiry.keep_purgeable_after(s, persist=persist):
            raise errors.SessionExpired()  # the reaper removed it before this write landed
        if isinstance(change, MergeContext) and guess.base is None and s.stored.patches >= FOLD_AFTER:
            try:
                with storage_errors():
                    self.collections.write(persist).update_one(
                        {**layout.by_id(s.stored.key, s.user_id), F.NONCE: s.stored.nonce, F.VERSION: s.version},
                        {"$set": layout.context_fields(s.context)},
                    )
            except errors.ServiceError:  # the merge is stored: answer it; a later merge folds the log
                log.warning("could not fold a context's patch log; a later merge will")
        elif isinstance(change, Append):
            try:
                self.archive.shrink(s, persist=persist)
            except errors.ServiceError:  # the append is stored: answer it; the next append shrinks again
                log.warning("could not archive or trim a session; the next append will")
        elif isinstance(change, ClearHistory):
            self.archive.drop_cleared(layout.from_doc(before), persist=persist)


def lock_token_prefix(request_id: str) -> str:
    """How a lock token taken under a request id starts: its repeat recognises the token as its own."""
    return hashlib.sha256(request_id.encode()).hexdigest()[:16] if request_id else ""
