"""The banking core, the bottom layer: the domain (pure), the wire format, settings from the
environment, Kafka client factories and the command bus. Imports nothing of the layers above."""
