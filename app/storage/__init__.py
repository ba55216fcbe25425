"""Session storage on MongoDB: the only package that imports pymongo or spells a stored field name.

`database.Database` owns the client of one process; its `store()` is the SessionStore the core asks
for typed changes (app.model) under typed conditions. The admin CLI reads and writes whole sessions
as export records (`store.transfer()`, `records`), and counts and erases (`store.census`,
`store.wipe_user`). This file imports nothing, so importing any module of the package never loads
the others.
"""
