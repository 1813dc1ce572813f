"""The Kafka workers: the command processor and the projector, with the worker loop they share.
(The browser's live updates, the Channels consumer among them, live in live/.)"""
