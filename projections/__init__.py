"""Read models: the projection tables, the pure functions that fold events into rows, the
store that writes them, replay/verify, the live-update messages and the owner-scoped queries.
Built on the core (`bank`) only."""
